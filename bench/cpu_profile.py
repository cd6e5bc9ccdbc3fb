"""The paid path's own CPU, A/B: `python -m bench.cpu_profile [--base REV] [--calls N]`.

Gateway CPU per paid call = the gateway process's user + system time (from /proc) over a
block of sequential paid calls, divided by the calls: what the gateway itself burns,
whatever the facilitator, chain and upstream take. With `--base REV`, a second gateway runs
that revision's code (a git worktree in a temporary directory) on the same world and
database, and blocks of calls alternate between the two, so both see the same machine.
`--profile` records the current code's gateway with py-spy (raw stacks in the log dir);
`--perf` samples it with `perf` and prints its CPU by binary (interpreter, kernel, extensions:
see `bench.oncpu`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from bench.oncpu import by_binary, perf_record
from bench.paid import _paid_call
from bench.seed import park_jobs
from bench.stage import SERVER_CORE, Stage
from bench.subsets_report import DATA, write_report
from bench.waiting import py_spy
from bench.world_jobs import cpu_seconds

ROOT = Path(__file__).resolve().parent.parent


async def _block(stage: Stage, index: int, calls: int, jobs: list[str]) -> dict[str, float]:
    """`calls` sequential paid calls on gateway `index`: CPU and gateway time per call."""
    import httpx

    pid = stage.gateway_pid(index)
    url = stage.w.gateway_url(index) + "/v1/images/edit"
    cpu, own = 0.0, []
    async with httpx.AsyncClient(timeout=60) as http:
        for i in range(calls):
            await park_jobs(stage.database_url, jobs)  # as bench.paid does
            before = cpu_seconds(pid)
            accepted, timing = await _paid_call(http, url, stage, f"cpu {index} {i}")
            await asyncio.sleep(0.02)  # anything the gateway does after answering
            cpu += cpu_seconds(pid) - before
            jobs.append(accepted["jobId"])
            own.append(timing["gateway"])
    return {"cpu_ms": cpu * 1000 / calls, "gateway_p50_ms": median(own)}


def _worktree(rev: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="x402r-base-")) / "tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev],
        check=True,
        capture_output=True,
    )
    return path


def run(
    base: str | None, calls: int, blocks: int, profile_s: int, perf_s: int = 0
) -> dict[str, Any]:
    """Warm each gateway up, then alternate blocks of calls between them."""
    stage = Stage(log_dir=Path(tempfile.mkdtemp(prefix="x402r-bench-logs-")))
    tree = _worktree(base) if base else None
    results: dict[str, list[dict[str, float]]] = {"current": []}
    on_cpu: list[tuple[str, float]] = []
    try:
        stage.start()
        gateways = {"current": 0}
        if tree is not None:
            stage.w.gateway_cwd = tree
            # The database is at this revision's head, which an older one does not know.
            stage.w.gateway_env["X402R_AUTO_MIGRATE"] = "false"
            stage.start_gateway(1, core=SERVER_CORE)
            del stage.w.gateway_env["X402R_AUTO_MIGRATE"]
            stage.w.gateway_cwd = None
            gateways["base"] = 1
            results["base"] = []
        jobs: list[str] = []
        for index in gateways.values():
            asyncio.run(_block(stage, index, 20, jobs))  # warm-up, unrecorded
        profiler = py_spy(stage.gateway_pid(0), stage.log_dir / "paid.txt", profile_s)
        perf_data = stage.log_dir / "paid.perf"
        sampler = perf_record(stage.gateway_pid(0), perf_data, perf_s)
        for _ in range(blocks):
            for name, index in gateways.items():
                results[name].append(asyncio.run(_block(stage, index, calls, jobs)))
        if profiler is not None:
            profiler.wait()
        if sampler is not None:
            sampler.wait()
            on_cpu = by_binary(perf_data)
    finally:
        stage.stop()
        if tree is not None:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )
    out: dict[str, Any] = {"calls_per_block": calls, "blocks": results}
    if on_cpu:
        out["on_cpu_by_binary"] = on_cpu
    return out | {"logs": str(stage.log_dir)}


def main() -> None:
    """CLI."""
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_profile")
    parser.add_argument("--base", help="git revision to compare with (A/B)")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, help="py-spy seconds")
    parser.add_argument("--perf", type=int, default=0, help="perf record seconds")
    parser.add_argument("--write", action="store_true", help="store and render the figures")
    options = parser.parse_args()
    started = time.monotonic()
    result = run(options.base, options.calls, options.blocks, options.profile, options.perf)
    result["elapsed_s"] = round(time.monotonic() - started)
    result["base"] = options.base
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for name, blocks in result["blocks"].items():
        cpu = [round(b["cpu_ms"], 2) for b in blocks]
        own = [round(b["gateway_p50_ms"], 2) for b in blocks]
        print(f"[bench] {name}: CPU ms per paid call {cpu}; gateway time p50 ms {own}")
    for binary, share in result.get("on_cpu_by_binary", []):
        print(f"[bench] on CPU (perf): {share:5.1f} % {binary}")
    if options.write:
        DATA.mkdir(parents=True, exist_ok=True)
        (DATA / "cpu.json").write_text(json.dumps(result, indent=2))
        print(f"[bench] wrote {DATA / 'cpu.json'} and {write_report()}")


if __name__ == "__main__":
    main()
