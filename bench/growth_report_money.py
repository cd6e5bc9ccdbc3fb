"""The operator report's part of the growth section: its table and chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.growth_money import LABELS, REPORTS
from bench.svg import line_chart

CHART = "growth-report.svg"
HEADER = ["jobs", "report", "endpoint p50 ms", "endpoint p99 ms", "before p50 ms"]
HEADER += ["before / endpoint", "direct p50 ms", "direct / endpoint", "merged p50 ms"]
HEADER += ["merged / endpoint", "same answer"]
COMPARED = ("day_all", "key_all", "payer_all")  # drawn before this change too
TARGET_MS = 50.0


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def report_chart(results: dict[str, Any], out_dir: Path) -> str:
    """Write the report chart (endpoint p50 by size, each report) into `out_dir`; its name."""
    s = results["sizes"]
    series = {
        LABELS[name]: [(x["size"], x["after"]["report_" + name]["p50_ms"]) for x in s]
        for name in REPORTS
    }
    for name in COMPARED:
        series[f"{LABELS[name]}, before"] = [
            (x["size"], x["after"]["report_previous_" + name]["p50_ms"]) for x in s
        ]
    series["target (50 ms)"] = [(x["size"], TARGET_MS) for x in s]
    line_chart(
        out_dir / CHART,
        "GET /v1/admin/report body, p50 (log scale)",
        "finished jobs in the database",
        "ms",
        series,
        log_y=True,
    )
    return CHART


def _merged(after: dict[str, Any], name: str, fast_ms: float) -> list[str]:
    """The by-payer report as it was merged in Python (`merged_report`), when timed."""
    merged = after.get("report_merged_" + name)
    if merged is None:
        return ["-", "-"]
    return [_ms(merged["p50_ms"]), f"{merged['p50_ms'] / fast_ms:.1f}x"]


def report_table(results: dict[str, Any]) -> str:
    """Markdown: every report at every size, the endpoint against the report before the
    group rollups and against the direct GROUP BYs."""
    rows = []
    for name in REPORTS:
        for x in results["sizes"]:
            a = x["after"]
            fast, direct = a["report_" + name], a["report_direct_" + name]
            before = a["report_previous_" + name]
            rows.append(
                [
                    f"{x['size']:,}",
                    LABELS[name],
                    _ms(fast["p50_ms"])
                    if fast["p50_ms"] < TARGET_MS
                    else f"**{_ms(fast['p50_ms'])}**",
                    _ms(fast["p99_ms"]),
                    _ms(before["p50_ms"]),
                    f"{before['p50_ms'] / fast['p50_ms']:.1f}x",
                    _ms(direct["p50_ms"]),
                    f"{direct['p50_ms'] / fast['p50_ms']:.1f}x",
                    *_merged(a, name, fast["p50_ms"]),
                    "yes" if a["reports_agree"] else "**no**",
                ]
            )
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def report_section(results: dict[str, Any], chart_dir: str) -> str:
    """The subsection on `GET /v1/admin/report`."""
    return f"""### `/v1/admin/report`

The endpoint's body (`app.operator.reporting.report_document`, the function the handler
calls): totals, jobs by state and one row per day, key or payer, over all time or the 30
days before the run's start (`since` = now - 30 days, as the dashboard asks). Every sum
comes from the rollups the ledgers' triggers keep: the whole gateway per day from
`ledger_days`, per payer from `payer_totals` (all time) or `payer_running`, per key and the
key ledger from `key_days`; the parts of days at a window's ends from the ledgers (5 % of
the seeded jobs are key-paid; 5,000 payers). "Before" is the report before the per-payer
and per-key rollups (`bench/growth_previous.py`: by key and by payer the ledgers joined to
their jobs, the key ledger summed from its rows); "direct" the report before any rollup,
the same GROUP BYs over the whole `ledger` and `jobs` (`bench/growth_money.py`); "merged",
by payer only, the report before its rows came from one statement (a probe per payer at each
end of the window, merged and sorted in Python: `merged_report`). All are timed alongside,
and every size checks that they answer the same. Measured in the
first {results.get("report_rounds", "few")} rounds.

{report_table(results)}

![report by size]({chart_dir}/{CHART})"""
