"""`python -m bench growth`: run the growth benchmarks and write their part of the docs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import growth
from bench.growth_report import charts, plans, section, splice
from bench.growth_report_money import report_table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"
DOC = DOCS / "performance.md"


def run_growth(
    smoke: bool, sizes: tuple[int, ...] | None = None, reports_only: bool = False
) -> list[dict[str, Any]]:
    """Run it; the full run rewrites section 7 of docs/performance.md, its charts and plans,
    the smoke run writes the same under bench/results/growth-smoke/. Returns the checks.

    Other `sizes`, or only the reports (`reports_only`), write the JSON and print the
    report's table; the documents are left as they are."""
    profile = growth.SMOKE if smoke else growth.FULL
    if sizes:
        profile = replace(profile, name=f"{profile.name}-sizes", sizes=sizes)
    if reports_only:
        profile = growth.reports_only(profile)
    results = growth.run(profile)
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw = RESULTS / f"growth-{profile.name}.json"
    raw.write_text(json.dumps(results, indent=2, default=str))
    if sizes or reports_only:
        print(report_table(results))
    else:
        render(results, smoke)
    print(f"[bench] growth: wrote {raw}")
    return list(results["checks"])


def render(results: dict[str, Any], smoke: bool) -> None:
    """Write the charts, the plans and the markdown section from `results`."""
    out_dir = RESULTS / "growth-smoke" if smoke else DOCS
    command = "python -m bench growth" + (" --smoke" if smoke else "")
    files = charts(results, out_dir)
    (out_dir / "growth-claim-plans.md").write_text(plans(results))
    text = section(results, files, ".", command)
    if smoke:
        (out_dir / "growth.md").write_text(text)
    else:
        DOC.write_text(splice(DOC.read_text(), text))
    print(f"[bench] growth: wrote {out_dir / files['status']} and the rest beside it")
