"""Entry point: `python -m bench` (full run) or `python -m bench --smoke` (seconds per scenario).

`python -m bench waiting | soak …` runs one of the subsets with a stage of its own.
"""

import sys

from bench.runner import main
from bench.subsets import NAMES
from bench.subsets import main as subset_main

if len(sys.argv) > 1 and sys.argv[1] in NAMES:
    raise SystemExit(subset_main(sys.argv[1:]))
raise SystemExit(main())
