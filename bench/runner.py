"""Run every scenario on one stage, in an order where each feeds the next, and report."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from app.jobs.models import JobState
from bench import amplify, machine, memory, paid, scaleout, status, subsets, unpaid
from bench.growth_cli import render as render_growth
from bench.growth_cli import run_growth
from bench.measure import Broken
from bench.profile import FULL, SMOKE, Profile
from bench.report import render
from bench.seed import clone_jobs, job_row, park_jobs
from bench.stage import Stage
from bench.wrk import WrkMissing, wrk_path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "performance.md"
BUDGET_S = {"full": 1200, "smoke": 240}  # the whole run stops by itself after this


def _step(name: str) -> None:
    print(f"[bench] {time.strftime('%H:%M:%S')} {name}", flush=True)


SCENARIOS = ("paid", "unpaid", "status", "amplify", "scaleout", "memory")


def run_all(stage: Stage, profile: Profile, only: set[str]) -> dict[str, Any]:
    """The scenarios in `only` (paid always runs: it makes the jobs the others poll)."""
    results: dict[str, Any] = {}
    _step("paid path")
    results["paid"] = asyncio.run(paid.run(stage, profile))
    processing = results["paid"]["jobs"][-1]
    upstream = stage.w.upstream_base
    db = stage.database_url
    # One real job stays in progress for the status runs; the others would only add
    # background polling (two upstream calls a second each) to every measurement.
    asyncio.run(park_jobs(db, results["paid"]["jobs"][:-1]))
    completed = asyncio.run(
        clone_jobs(db, processing, 1, state=JobState.COMPLETED, upstream=upstream)
    )
    cold = asyncio.run(
        clone_jobs(db, processing, profile.cold_jobs, state=JobState.SUBMITTED, upstream=upstream)
    )
    if "unpaid" in only:
        _step("unpaid 402")
        results["unpaid"] = unpaid.run(stage, profile)
    if "status" in only:
        _step("status reads")
        results["status"] = status.run(
            stage, profile, processing=processing, completed=completed[0], cold=cold
        )
    if "amplify" in only:
        _step("upstream amplification")
        upstream_job = asyncio.run(job_row(db, processing))["upstream_job_id"]
        results["amplify"] = amplify.run(
            stage, profile, job_id=processing, upstream_job_id=upstream_job
        )
    if "scaleout" in only:
        _step("scale-out")
        results["scaleout"] = scaleout.run(stage, profile, job_id=processing)
    if "memory" in only:
        _step("memory")
        results["memory"] = asyncio.run(memory.run(stage, profile, template=processing))
    if profile.smoke:  # `python -m bench waiting | soak` run the full ones on their own
        results.update(subsets.smoke(stage))
    return results


def wait_for_quiet(limit_s: float, load: float = 1.0) -> None:
    """Give other work on the machine up to `limit_s` to calm down before measuring."""
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] > load and time.monotonic() < deadline:
        _step(f"load average {os.getloadavg()[0]:.2f}; waiting for the machine to calm down")
        time.sleep(15)


def _timeout(signum: int, frame: FrameType | None) -> None:
    raise TimeoutError("benchmark run exceeded its time budget")


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"bench: stopped by signal {signum}")


def _report_checks(checks: list[dict[str, Any]]) -> int:
    for item in checks:
        mark = "ok  " if item["ok"] else "MISS"
        print(f"[bench] {mark} {item['name']}: {item['value']} (target {item['target']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI; exit 1 when something is broken (never because of the numbers themselves)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "subset", nargs="?", choices=["growth"], help="growth: only the 10k/100k/1M-jobs runs"
    )
    parser.add_argument("--smoke", action="store_true", help="seconds per scenario (CI)")
    parser.add_argument("--out", type=Path, help="markdown report path")
    parser.add_argument("--json", type=Path, help="raw results path")
    parser.add_argument("--no-doc", action="store_true", help="write the JSON only")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="only re-render the report from a JSON run"
    )
    parser.add_argument(
        "--only", help=f"comma-separated subset of {','.join(SCENARIOS)} (implies --no-doc)"
    )
    parser.add_argument("--sizes", help="growth: comma-separated job counts (JSON only)")
    parser.add_argument(
        "--reports-only", action="store_true", help="growth: time only the reports (JSON only)"
    )
    options = parser.parse_args(argv)
    only = set(options.only.split(",")) if options.only else set(SCENARIOS)
    if not only <= set(SCENARIOS):
        parser.error(f"--only takes {','.join(SCENARIOS)}")
    if options.only:
        options.no_doc = True
    profile = SMOKE if options.smoke else FULL
    if options.subset == "growth":
        if options.render is not None:  # the doc, charts and plans again from a run's JSON
            render_growth(json.loads(options.render.read_text()), options.smoke)
            return 0
        sizes = tuple(int(n) for n in options.sizes.split(",")) if options.sizes else None
        return _report_checks(run_growth(options.smoke, sizes, options.reports_only))
    if options.render is not None:
        out = options.out or DOC
        out.write_text(render(json.loads(options.render.read_text())))
        print(f"[bench] wrote {out}")
        return 0
    try:
        wrk_path()
    except WrkMissing as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = options.out or (RESULTS / "smoke.md" if profile.smoke else DOC)
    raw = options.json or RESULTS / f"{profile.name}.json"
    command = "python -m bench" + (" --smoke" if profile.smoke else "")
    signal.signal(signal.SIGALRM, _timeout)
    signal.signal(signal.SIGTERM, _terminated)  # so the stage is still torn down
    signal.alarm(BUDGET_S[profile.name])
    started = time.monotonic()
    stage = Stage(log_dir=Path(tempfile.mkdtemp(prefix="x402r-bench-logs-")))
    try:
        _step(f"{profile.name} run; logs in {stage.log_dir}")
        if not profile.smoke:
            wait_for_quiet(180)
        env = machine.describe()
        stage.start()
        results = run_all(stage, profile, only)
        if profile.smoke:
            _step("growth (smoke)")
            results["growth"] = {"checks": run_growth(smoke=True)}
    except Broken as exc:
        print(f"bench: BROKEN: {exc} (logs: {stage.log_dir})", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        stage.stop()
    report: dict[str, Any] = {"profile": profile.name, "command": command, "env": env}
    report["results"] = results
    env["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    raw.write_text(json.dumps(report, indent=2, default=str))
    if not options.no_doc:
        out.write_text(render(report))
    _report_checks([c for part in results.values() for c in part.get("checks", [])])
    print(
        f"[bench] done in {report['elapsed_s']} s; wrote {raw}"
        + ("" if options.no_doc else f" and {out}")
    )
    return 0
