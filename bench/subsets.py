"""`python -m bench waiting | soak | cpu`: benchmarks that run on their own stage.

Each writes its raw figures to docs/performance-waiting/<name>.json (bench/results/ with
`--smoke`) and re-renders docs/performance-waiting.md from whichever of them exist.
`smoke(stage)` runs the tiny variants inside `python -m bench --smoke`.
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from app.core.settings import Settings
from bench import soak, waiting
from bench.measure import Broken
from bench.soak_report import chart as soak_chart
from bench.soak_report import checks as soak_checks
from bench.stage import Stage
from bench.subsets_report import DATA, write_report
from bench.waiting_client import raise_fd_limit
from bench.waiting_stats import checks as waiting_checks

NAMES = ("waiting", "soak")
DEFAULT_CACHE_MIB: int = Settings.model_fields["result_cache_mib"].default
SMOKE_SOAK_MINUTES = 0.15
RESULTS = Path(__file__).resolve().parent / "results"
FD_LIMIT = 30_000  # the gateway (a child process) inherits it: 10,000 sockets and more


def _step(name: str) -> None:
    print(f"[bench] {time.strftime('%H:%M:%S')} {name}", flush=True)


def run_waiting(stage: Stage, smoke: bool, size: str | None = None) -> dict[str, Any]:
    """The waiting-clients subset, with its checks."""
    chosen = waiting.SMOKE if smoke else waiting.FULL
    if size:
        jobs, connections, processes = (int(x) for x in size.split(","))
        chosen = replace(chosen, jobs=jobs, connections=connections, client_processes=processes)
    result = waiting.run(stage, chosen)
    result["checks"] = waiting_checks(result)
    return result


def run_soak(stage: Stage, minutes: float, cache_mib: int = DEFAULT_CACHE_MIB) -> dict[str, Any]:
    """The soak subset, with its checks (a short probe and frequent samples when short)."""
    probe_s = 20 if minutes >= 5 else 5 if minutes >= 1 else 3
    sample_s = 3 if minutes >= 5 else 1
    result = soak.run(stage, minutes, probe_s=probe_s, sample_s=sample_s, cache_mib=cache_mib)
    result["checks"] = soak_checks(result)
    return result


def smoke(stage: Stage) -> dict[str, Any]:
    """Tiny variants of every subset on the running stage (for `python -m bench --smoke`)."""
    raise_fd_limit(FD_LIMIT)
    _step("waiting clients (smoke)")
    results = {"waiting": run_waiting(stage, smoke=True)}
    _step("soak (smoke)")
    results["soak"] = run_soak(stage, SMOKE_SOAK_MINUTES)
    return results


def _timeout(signum: int, frame: object) -> None:
    raise TimeoutError("benchmark run exceeded its time budget")


def main(argv: list[str]) -> int:
    """CLI of the subsets."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=NAMES)
    parser.add_argument("--smoke", action="store_true", help="a tiny variant (seconds)")
    parser.add_argument("--minutes", type=float, default=10, help="soak: how long")
    parser.add_argument(
        "--cache-mib",
        type=int,
        default=DEFAULT_CACHE_MIB,
        help="soak: the gateway's X402R_RESULT_CACHE_MIB",
    )
    parser.add_argument("--size", help="waiting: JOBS,CONNECTIONS,PROCESSES (experiments)")
    options = parser.parse_args(argv)
    if options.smoke and options.name == "soak":
        options.minutes = SMOKE_SOAK_MINUTES
    raise_fd_limit(FD_LIMIT)
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(int(options.minutes * 60) + 900)
    stage = Stage(log_dir=Path(tempfile.mkdtemp(prefix="x402r-bench-logs-")))
    started = time.monotonic()
    try:
        _step(f"{options.name}; logs in {stage.log_dir}")
        stage.start()
        if options.name == "waiting":
            result = run_waiting(stage, options.smoke, options.size)
        else:
            result = run_soak(stage, options.minutes, options.cache_mib)
    except Broken as exc:
        print(f"bench: BROKEN: {exc} (logs: {stage.log_dir})")
        return 1
    finally:
        signal.alarm(0)
        stage.stop()
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    smoke_run = options.smoke or (options.name == "soak" and options.minutes < 5)
    out_dir = RESULTS if smoke_run else DATA
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"{options.name}.json"
    raw.write_text(json.dumps(result, indent=2, default=str))
    if options.name == "soak":
        soak_chart(result, out_dir / "soak.svg")
    for item in result["checks"]:
        mark = "ok  " if item["ok"] else "MISS"
        print(f"[bench] {mark} {item['name']}: {item['value']} (target {item['target']})")
    if not smoke_run:
        print(f"[bench] wrote {raw} and {write_report()}")
    else:
        print(f"[bench] wrote {raw} (a short run: the document is left as it is)")
    return 0
