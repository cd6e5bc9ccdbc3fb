"""docs/performance-waiting.md from the subsets' stored figures (docs/performance-waiting/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.soak_report import section as soak_section

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "performance-waiting"
DOC = ROOT / "docs" / "performance-waiting.md"
HEADER = [
    "server",
    "answers",
    "errors",
    "connect s",
    "RSS MiB before → holding",
    "KiB per connection",
    'ms p50 / p99 / max from the upstream\'s first "completed" answer',
    "from the upstream job's completion",
]
NOTES = Path(__file__).resolve().parent / "notes_waiting.md"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _checks(part: dict[str, Any]) -> str:
    rows = [
        [c["name"], c["target"], c["value"], "met" if c["ok"] else "**missed**"]
        for c in part.get("checks", [])
    ]
    return _table(["target", "goal", "this run", ""], rows)


def _ms(spread: dict[str, float]) -> str:
    return f"{spread['p50']:.0f} / {spread['p99']:.0f} / {spread['max']:.0f}"


def waiting_section(r: dict[str, Any]) -> str:
    """Section 1: the waiting clients."""
    gw, base = r["gateway"], r["baseline"]
    size = r["size"]
    rows = []
    for label, key in (("gateway", gw), ("bare ASGI app", base)):
        rows.append(
            [
                label,
                f"{key['answers']:,}",
                str(key["errors"]),
                f"{key['connect_s']:.1f}",
                f"{key['before']['rss_kib'] / 1024:.0f} → {key['after']['rss_kib'] / 1024:.0f}",
                f"{key['rss_per_connection_kib']:.1f}",
                _ms(key["fan_out_ms"]),
                _ms(key["end_to_end_ms"]) if label == "gateway" else "",
            ]
        )
    ratio_mem = gw["rss_per_connection_kib"] / max(base["rss_per_connection_kib"], 0.01)
    ratio_fan = gw["fan_out_ms"]["p99"] / max(base["fan_out_ms"]["p99"], 0.01)
    polls = gw["polls"]
    return f"""## 1. Waiting clients (`python -m bench waiting`, {r["date"]}, {r["elapsed_s"]:g} s)

{size["connections"]:,} concurrent `GET /v1/jobs/{{id}}?wait=30` on one gateway process,
{size["jobs"]:,} jobs in progress ({size["connections"] // size["jobs"]} waiters each), from
{size["client_processes"]} client processes; nothing pinned (two cores shared with other
work). Once the gateway holds them all, the upstream jobs complete one after the other over
{size["spread_s"]:g} s. Poll interval {gw["interval_s"]:g} s (the default).

{_checks(r)}

{_table(HEADER, rows)}

Long polls that ended (after 30 s) with the job still in progress and were asked again on
the same connection, as a client does: {gw.get("asked_again", 0):,}.
Gateway / bare app: **{ratio_mem:.2f}x** the memory per waiting connection, **{ratio_fan:.2f}x**
the p99 fan-out latency. The last column adds the detection delay: the time until the
gateway next asked the upstream about the job. Upstream status requests during the
completions: {polls["requests"]:,} for {polls["jobs"]:,} jobs, median gap between two polls
of one job {polls["median_gap_s"] or 0:.2f} s, shortest {polls["min_gap_s"] or 0:.2f} s:
never more than one per interval, but with {polls["jobs"]:,} jobs in progress the process
does not manage one per interval either (it polls as fast as it can, so detection takes
about the median gap rather than the interval).
"""


def cpu_section(r: dict[str, Any]) -> str:
    """Section 3: the paid path's own CPU, A/B."""
    rows = []
    for name, blocks in r["blocks"].items():
        label = "this branch" if name == "current" else f"before (`{r['base']}`)"
        cpu = " / ".join(f"{b['cpu_ms']:.1f}" for b in blocks)
        own = " / ".join(f"{b['gateway_p50_ms']:.1f}" for b in blocks)
        rows.append([label, cpu, own])
    blocks = r["blocks"]
    ratio = ""
    if "base" in blocks:
        mine = sum(b["cpu_ms"] for b in blocks["current"]) / len(blocks["current"])
        base = sum(b["cpu_ms"] for b in blocks["base"]) / len(blocks["base"])
        ratio = f"\n\nThis branch / before: **{mine / base:.2f}x** the CPU per paid call."
    header = ["gateway", "CPU ms per paid call, per block", "gateway time p50 ms, per block"]
    return f"""## 3. Paid path: the gateway's own CPU (`python -m bench.cpu_profile`, {r["date"]})

{r["calls_per_block"]} sequential paid calls per block, blocks alternating between the two
gateways (same world, same database), after 20 warm-up calls each. CPU = the gateway
process's user + system time from /proc over each call (its background worker included;
/proc counts 10 ms ticks, so a block of 20 calls resolves 0.5 ms).

{_table(header, rows)}{ratio}
"""


def write_report() -> Path:
    """Render the document from every stored part; its path."""
    parts = []
    waiting = DATA / "waiting.json"
    if waiting.exists():
        parts.append(waiting_section(json.loads(waiting.read_text())))
    soak = DATA / "soak.json"
    if soak.exists():
        parts.append(soak_section(json.loads(soak.read_text()), "performance-waiting/soak.svg"))
    cpu = DATA / "cpu.json"
    if cpu.exists():
        parts.append(cpu_section(json.loads(cpu.read_text())))
    notes = NOTES.read_text() if NOTES.exists() else ""
    head = (
        "# Performance: waiting clients, soak, paid-path CPU\n\n"
        "Generated by `python -m bench waiting` and `python -m bench soak --minutes 10` "
        "(each rewrites its own section from docs/performance-waiting/*.json). "
        "The other benchmarks are in [performance.md](performance.md).\n"
    )
    DOC.write_text("\n".join([head, *parts, notes]))
    return DOC
