"""Entry point: `python -m bench` (full run) or `python -m bench --smoke` (seconds per scenario)."""

from bench.runner import main

raise SystemExit(main())
