"""The soak's checks, its chart (SVG, matplotlib) and its section of the document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.measure import check

# The gateway's own connections at most: engine pool + overflow, and the status reads' pool.
DB_CONNECTION_LIMIT = 10 + 10 + 8


def _half(samples: list[dict[str, float]], key: str) -> tuple[float, float]:
    """`key` at the middle and at the end of the run (the first half is warm-up)."""
    middle = samples[len(samples) // 2]
    return middle[key], samples[-1][key]


def checks(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Zero errors, every job completed, ledger = chain, memory and connections bounded."""
    samples = r["samples"]
    mid, end = _half(samples, "rss_mib")
    peak = max(s["db_connections"] for s in samples)
    completed = r["job_states"].get("completed", 0)
    return [
        check(
            "soak: errors",
            "0",
            f"{r['errors']} over {sum(r['counts'].values()):,} requests",
            r["errors"] == 0,
        ),
        check(
            "soak: jobs completed",
            "all",
            f"{completed} of {r['jobs']}",
            completed == r["jobs"] and r["jobs"] > 0,
        ),
        check(
            "soak: ledger = chain",
            "equal",
            str(r["ledger_matches_chain"]),
            bool(r["ledger_matches_chain"]),
        ),
        check(
            "soak: RSS, second half of the run",
            "flat (< +5 MiB)",
            f"{mid:.0f} → {end:.0f} MiB ({end / mid:.3f}x)",
            end - mid < 5,
        ),
        check(
            "soak: database connections (pg_stat_activity)",
            f"<= {DB_CONNECTION_LIMIT}",
            f"peak {peak:.0f}",
            peak <= DB_CONNECTION_LIMIT,
        ),
    ]


def chart(r: dict[str, Any], out: Path) -> Path:
    """RSS, database connections and jobs over time, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = r["samples"]
    t = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    panels = (
        ("rss_mib", "gateway RSS (MiB)"),
        ("db_connections", "database connections"),
        ("jobs", "paid jobs made"),
    )
    for ax, (key, label) in zip(axes, panels, strict=True):
        values = [s[key] for s in samples]
        ax.plot(t, values, linewidth=1.2, label="all")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if key == "db_connections":
            ax.plot(t, [s["db_active"] for s in samples], linewidth=0.8, label="active")
            ax.legend(loc="upper left")
        ax.set_ylim(0, max(values) * 1.15 + 1)
    axes[-1].set_xlabel("minutes")
    fig.suptitle(f"Soak: {r['minutes']:g} min of mixed traffic")
    fig.tight_layout()
    fig.savefig(out, format="svg")
    plt.close(fig)
    return out


def section(r: dict[str, Any], chart_name: str) -> str:
    """Section 2 of docs/performance-waiting.md."""
    counts = ", ".join(f"{k} {v:,}" for k, v in sorted(r["counts"].items()))
    rows = "\n".join(
        f"| {c['name']} | {c['target']} | {c['value']} | {'met' if c['ok'] else '**missed**'} |"
        for c in r["checks"]
    )
    cpu = r["samples"][-1]["cpu_s"] - r["samples"][0]["cpu_s"]
    ledger = r["ledger"]
    return f"""## 2. Soak (`python -m bench soak --minutes {r["minutes"]:g}`, {r["date"]})

Mixed traffic on one gateway process (sandbox world on Postgres, upstream jobs taking 3 s):
{r["unpaid_per_s"]} unpaid requests/s, {r["status_per_s"]} status polls/s of the jobs made so
far, and paid calls (official SDK client) at {r["paid_per_s"]:.2f}/s, half the sustainable
rate probed first ({r["sustainable_paid_per_s"]:.2f}/s with 6 concurrent callers). Each paid
job is followed with `?wait=20` long polls until it completes. Samples every few seconds.

| target | goal | this run | |
|---|---|---|---|
{rows}

Requests: {counts}. Gateway CPU over the soak: {cpu:.0f} s
({cpu / max(r["elapsed_s"], 1):.2f} of a core). Ledger of the soak's jobs: charges
{ledger.get("charge", 0):,}, upstream spend {ledger.get("upstream", 0):,}, refunds
{ledger.get("refund", 0):,} (atomic USDC); received on chain over the soak: operator
{r["chain_received"]["operator"]:,}, upstream payee {r["chain_received"]["upstream payee"]:,}.

![RSS, database connections and jobs over the soak]({chart_name})
"""
