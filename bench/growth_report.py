"""The growth run as a section of docs/performance.md, its charts, and the claim's plans."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.growth_report_money import report_chart, report_section
from bench.svg import line_chart

BEGIN, END = "<!-- growth:begin -->", "<!-- growth:end -->"
NOTES = Path(__file__).resolve().parent / "growth_notes.md"
SEED_HEADER = ["jobs", "ledger rows", "copy s", "indexes s", "analyze s", "total s", "rows/s"]
STATUS_HEADER = ["jobs", "p50 ms", "p99 ms", "p99 vs smallest", "p99 ms before the migration"]
CLAIM_HEADER = ["jobs", "before p50 ms", "before buffers", "before scan"]
CLAIM_HEADER += ["after p50 ms", "after buffers", "after scan"]
SUMMARY_HEADER = ["jobs", "full aggregates p50 ms (before the migration)"]
SUMMARY_HEADER += ["full aggregates p50 ms", "rollups p50 ms", "rollups p99 ms", "gain"]
SUMMARY_HEADER += ["same answer"]
MIGRATION_HEADER = ["jobs", "migration s", "writer alone", "writer during", "writes during"]


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _scan(plan: list[str]) -> str:
    """The plan's scan node, e.g. `Index Scan using ix_jobs_due`."""
    for line in plan:
        if "Scan" in line:
            return "`" + line.strip().lstrip("-> ").split("  (")[0].split(" on ")[0] + "`"
    return ""


def splice(doc: str, section: str) -> str:
    """`doc` with its growth section replaced by `section` (added before the notes if absent)."""
    block = f"{BEGIN}\n{section.strip()}\n{END}"
    if BEGIN in doc and END in doc:
        return doc[: doc.index(BEGIN)] + block + doc[doc.index(END) + len(END) :]
    marker = "## How it is measured"
    if marker in doc:
        return doc.replace(marker, block + "\n\n" + marker, 1)
    return doc.rstrip() + "\n\n" + block + "\n"


def kept_section(doc_path: Path) -> str:
    """The growth section already in the doc (the full run keeps it as it is), or ''."""
    doc = doc_path.read_text() if doc_path.exists() else ""
    if BEGIN not in doc or END not in doc:
        return ""
    return doc[doc.index(BEGIN) : doc.index(END) + len(END)] + "\n\n"


def charts(results: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """Write the four charts into `out_dir`; file names by topic."""
    out_dir.mkdir(parents=True, exist_ok=True)
    s = results["sizes"]

    def points(phase: str, key: str, stat: str) -> list[tuple[float, float]]:
        return [(x["size"], x[phase][key][stat]) for x in s]

    files = {
        "status": "growth-status.svg",
        "claim": "growth-claim.svg",
        "summary": "growth-summary.svg",
        "migration": "growth-migration.svg",
    }
    line_chart(
        out_dir / files["status"],
        "Status read of a job in progress (cache miss)",
        "finished jobs in the database",
        "ms",
        {"p50": points("after", "status", "p50_ms"), "p99": points("after", "status", "p99_ms")},
    )
    line_chart(
        out_dir / files["claim"],
        "Worker's due-job claim (50 rows, FOR UPDATE SKIP LOCKED)",
        "finished jobs in the database",
        "ms (p50) / shared buffers / 10",
        {
            "p50 ms, before (no partial index)": points("before", "claim", "p50_ms"),
            "p50 ms, after (ix_jobs_due)": points("after", "claim", "p50_ms"),
            "buffers / 10, before": [
                (x["size"], x["before"]["claim_plan"]["buffers"] / 10) for x in s
            ],
            "buffers / 10, after": [
                (x["size"], x["after"]["claim_plan"]["buffers"] / 10) for x in s
            ],
        },
    )
    line_chart(
        out_dir / files["summary"],
        "/v1/admin/summary body, p50 (log scale)",
        "finished jobs in the database",
        "ms",
        {
            "full aggregates (before)": points("after", "summary_direct", "p50_ms"),
            "rollups (after)": points("after", "summary_fast", "p50_ms"),
        },
        log_y=True,
    )
    line_chart(
        out_dir / files["migration"],
        "The migration's time and the writer's worst write (log scale)",
        "finished jobs in the database",
        "ms",
        {
            "max, writer alone": [(x["size"], x["migration"]["writer_alone"]["max_ms"]) for x in s],
            "max, during the migration": [
                (x["size"], x["migration"]["writer_during"]["max_ms"]) for x in s
            ],
            "migration, whole (ms)": [(x["size"], x["migration"]["migration_s"] * 1000) for x in s],
        },
        log_y=True,
    )
    files["report"] = report_chart(results, out_dir)
    return files


def plans(results: dict[str, Any]) -> str:
    """Markdown with the claim's EXPLAIN (ANALYZE, BUFFERS) at each size, before and after."""
    parts = ["# The worker's due-job claim: plans by size", ""]
    parts.append("Generated by `python -m bench growth` (see docs/performance.md, section 7).")
    parts.append("The statement, exactly as the worker sends it (`JobRepository.claim_due`):")
    first = results["sizes"][0]["after"]["claim_plan"]["sql"]
    parts += ["", "```sql", first, "```", ""]
    for x in results["sizes"]:
        for phase, label in (("before", "before the migration"), ("after", "after (ix_jobs_due)")):
            plan = x[phase]["claim_plan"]["plan"]
            parts += [f"## {x['size']:,} jobs, {label}", "", "```", *plan, "```", ""]
    return "\n".join(parts)


def _checks(results: dict[str, Any]) -> str:
    rows = [
        [
            c["name"].removeprefix("growth: "),
            c["target"],
            c["value"],
            "met" if c["ok"] else "**missed**",
        ]
        for c in results["checks"]
    ]
    return _table(["target", "goal", "this run", ""], rows)


def section(results: dict[str, Any], files: dict[str, str], chart_dir: str, command: str) -> str:
    """The markdown of the growth section."""
    s = results["sizes"]
    base = s[0]["after"]
    seed_rows = [
        [
            _n(x["size"]),
            _n(x["seed"]["ledger_rows"]),
            f"{x['seed']['copy_s']:.1f}",
            f"{x['seed']['index_s']:.1f}",
            f"{x['seed']['analyze_s']:.1f}",
            f"{x['seed']['total_s']:.1f}",
            _n(x["seed"]["rows_per_s"]),
        ]
        for x in s
    ]
    status_rows = [
        [
            _n(x["size"]),
            _ms(x["after"]["status"]["p50_ms"]),
            _ms(x["after"]["status"]["p99_ms"]),
            f"{x['after']['status']['p99_ms'] / base['status']['p99_ms']:.2f}x",
            _ms(x["before"]["status"]["p99_ms"]),
        ]
        for x in s
    ]
    claim_rows = [
        [
            _n(x["size"]),
            _ms(x["before"]["claim"]["p50_ms"]),
            str(x["before"]["claim_plan"]["buffers"]),
            _scan(x["before"]["claim_plan"]["plan"]),
            _ms(x["after"]["claim"]["p50_ms"]),
            str(x["after"]["claim_plan"]["buffers"]),
            _scan(x["after"]["claim_plan"]["plan"]),
        ]
        for x in s
    ]
    summary_rows = [
        [
            _n(x["size"]),
            _ms(x["before"]["summary_direct"]["p50_ms"]),
            _ms(x["after"]["summary_direct"]["p50_ms"]),
            _ms(x["after"]["summary_fast"]["p50_ms"]),
            _ms(x["after"]["summary_fast"]["p99_ms"]),
            f"{x['after']['summary_direct']['p50_ms'] / x['after']['summary_fast']['p50_ms']:.0f}x",
            "yes" if x["after"]["summaries_agree"] else "**no**",
        ]
        for x in s
    ]
    mig_rows = []
    for x in s:
        m = x["migration"]
        alone, during = m["writer_alone"], m["writer_during"]
        mig_rows.append(
            [
                _n(x["size"]),
                f"{m['migration_s']:.1f}",
                f"{_ms(alone['p50_ms'])} / {_ms(alone['p99_ms'])} / {_ms(alone['max_ms'])}",
                f"{_ms(during['p50_ms'])} / {_ms(during['p99_ms'])} / {_ms(during['max_ms'])}",
                _n(during["writes"]),
            ]
        )
    img = {key: f"![{key} by size]({chart_dir}/{name})" for key, name in files.items()}
    seed_table = _table(SEED_HEADER, seed_rows)
    status_table = _table(STATUS_HEADER, status_rows)
    claim_table = _table(CLAIM_HEADER, claim_rows)
    summary_table = _table(SUMMARY_HEADER, summary_rows)
    migration_table = _table(MIGRATION_HEADER, mig_rows)
    when = f"Run on {results.get('date', '?')} in {results.get('elapsed_s', '?')} s"
    if "load_at_start" in results:
        when += f" (load average at the start: {results['load_at_start']})"
    return f"""## 7. Growth: 10k, 100k and 1M finished jobs

{when}.

`{command}` (a few minutes at 10k/100k/1M; `python -m bench --smoke` runs it at 500 and
2,000 jobs; `python -m bench growth --render bench/results/growth-full.json` rewrites this
section from a run's JSON). Each size gets its own database, seeded with COPY at the
revision before the rollups; all stay open and every measurement goes round the sizes in
interleaved rounds. Then the rollups' migration runs on each while a writer writes, and
everything is measured again. **The machine is shared (two cores, several people's work):
absolute times move by tens of percent from minute to minute; the ratios, measured side by
side in one run, are what counts.**

{_checks(results)}

### Seeding (`bench/bulk_seed.py`)

A year of jobs in creation order (93 % completed, the rest refunded, failed with the refund
withheld, refused at settlement, a few parked), a charge, upstream payment and refund ledger
row where each happened, 200 jobs in progress (half due). Two processes generate and COPY
shares side by side; secondary indexes are built after the copy; then `VACUUM (ANALYZE)`.

{seed_table}

### Status read of a job in progress (cache miss)

`StatusReads.fetch` (the gateway's read when its cache has no fresh view: one `SELECT` by
primary key on the read path's asyncpg pool), one at a time, over the 200 jobs in progress.

{status_table}

{img["status"]}

### The worker's due-job claim

`JobRepository.claim_due` in a transaction rolled back afterwards (the real statement, 50
rows locked). Buffers: shared pages touched, from `EXPLAIN (ANALYZE, BUFFERS)`, the measure
noise cannot move. Plans at every size: [growth-claim-plans.md](growth-claim-plans.md).

{claim_table}

{img["claim"]}

### `/v1/admin/summary`

The endpoint's body (`app.api.admin.summary_of`): from the rollups (`app.jobs.totals`), against
the aggregates it ran before (sum of the ledger by kind, count of jobs by state), both on
the migrated database, interleaved; every size checks both answer the same.

{summary_table}

{img["summary"]}

{report_section(results, chart_dir)}

### The migration under writes

`alembic upgrade head` (46513efdb051; 242dfc8df8a8: an index on `jobs.created_at`, built
concurrently; 13c505c2cf03: the per-payer and per-key rollups, their triggers and their
backfill; 5d2e8b1c7a94: a covering index on `payer_running` by day, built concurrently,
then the table vacuumed) in its own process while a writer commits, every 5 ms, a new job with its
charge, then that job finished with its upstream payment. Writer latency
p50 / p99 / max in ms, for 3 s alone just before, then during the migration. Afterwards the
totals and the reports from the rollups equal the full aggregates (the writer's rows
included).

{migration_table}

{img["migration"]}

{NOTES.read_text().strip()}
"""
