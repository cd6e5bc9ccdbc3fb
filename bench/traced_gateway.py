"""The gateway's command line under tracemalloc, to find what grows (benchmarks only).

`python -m bench.traced_gateway <app.cli arguments>`: on SIGUSR1 the process writes a
tracemalloc snapshot and a count of its objects by type (after a full collection) to
$BENCH_SNAPSHOT_DIR/<n>.snap and <n>.json. Tracing slows the gateway down.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import signal
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType

from app.cli import main

FRAMES = 6


def _dumper(out: Path) -> None:
    numbers = itertools.count()

    def dump(signum: int, frame: FrameType | None) -> None:
        n = next(numbers)
        gc.collect()
        tracemalloc.take_snapshot().dump(str(out / f"{n}.snap"))
        types = Counter(type(o).__qualname__ for o in gc.get_objects())
        (out / f"{n}.json").write_text(json.dumps(dict(types.most_common(400))))

    signal.signal(signal.SIGUSR1, dump)


if __name__ == "__main__":
    tracemalloc.start(FRAMES)
    _dumper(Path(os.environ["BENCH_SNAPSHOT_DIR"]))
    main(sys.argv[1:])
