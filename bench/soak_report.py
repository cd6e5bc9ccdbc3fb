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


def second_half(r: dict[str, Any]) -> dict[str, float]:
    """RSS at start, middle and end; RSS growth per job made over the second half; when the
    finished-job cache first held 95% of its budget (minutes, -1: never)."""
    samples = r["samples"]
    mid, end = _half(samples, "rss_mib")
    jobs_mid, jobs_end = _half(samples, "jobs")
    budget = r.get("cache_mib", 0)
    full = [s for s in samples if budget and s.get("cache_mib", 0) >= 0.95 * budget]
    since_full = (
        (end - full[0]["rss_mib"]) * 1024 / max(samples[-1]["jobs"] - full[0]["jobs"], 1)
        if full
        else float("nan")
    )
    return {
        "start": samples[0]["rss_mib"],
        "mid": mid,
        "end": end,
        "kib_per_job": (end - mid) * 1024 / max(jobs_end - jobs_mid, 1),
        "cache_full_min": full[0]["t_s"] / 60 if full else -1,
        "cache_full_rss": full[0]["rss_mib"] if full else float("nan"),
        "kib_per_job_since_full": since_full,
    }


def checks(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Zero errors, every job completed, ledger = chain, memory and connections bounded."""
    samples = r["samples"]
    half = second_half(r)
    mid, end = half["mid"], half["end"]
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
            f"{mid:.1f} → {end:.1f} MiB ({end / mid:.3f}x; "
            f"{half['kib_per_job']:+.2f} KiB per job made)",
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
    fig, axes = plt.subplots(5, 1, figsize=(8, 11), sharex=True)
    panels = (
        ("rss_mib", "gateway RSS (MiB)"),
        ("cache_mib", "finished-job cache (MiB)"),
        ("load1", "load average (1 min)"),
        ("db_connections", "database connections"),
        ("jobs", "paid jobs made"),
    )
    for ax, (key, label) in zip(axes, panels, strict=True):
        values = [s.get(key, 0.0) for s in samples]
        ax.plot(t, values, linewidth=1.2, label="all" if key == "db_connections" else "used")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        top = max(values)
        if key == "db_connections":
            ax.plot(t, [s["db_active"] for s in samples], linewidth=0.8, label="active")
            ax.legend(loc="upper left")
        if key == "cache_mib":
            ax.axhline(r["cache_mib"], color="grey", linestyle="--", linewidth=0.8, label="budget")
            ax.legend(loc="lower right")
            top = max(top, r["cache_mib"])
        if key == "rss_mib":  # a few MiB matter here: the axis does not start at zero
            ax.set_ylim(min(values) - 2, top + 2)
        else:
            ax.set_ylim(0, top * 1.15 + 1)
    axes[-1].set_xlabel("minutes")
    fig.suptitle(
        f"Soak: {r['minutes']:g} min of mixed traffic, X402R_RESULT_CACHE_MIB={r['cache_mib']}"
    )
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
    samples = r["samples"]
    cpu = samples[-1]["cpu_s"] - samples[0]["cpu_s"]
    ledger = r["ledger"]
    half = second_half(r)
    loads = sorted(s["load1"] for s in samples)
    full_at = (
        f"first held 95% of it at {half['cache_full_min']:.1f} min"
        if half["cache_full_min"] >= 0
        else "never reached 95% of it"
    )
    command = f"python -m bench soak --minutes {r['minutes']:g} --cache-mib {r['cache_mib']}"
    return f"""## 2. Soak (`{command}`, {r["date"]})

Mixed traffic on one gateway process (sandbox world on Postgres, upstream jobs taking 3 s):
{r["unpaid_per_s"]} unpaid requests/s, {r["status_per_s"]} status polls/s of the jobs made so
far, and paid calls (official SDK client) at {r["paid_per_s"]:.2f}/s, half the sustainable
rate probed first ({r["sustainable_paid_per_s"]:.2f}/s with 6 concurrent callers). Each paid
job is followed with `?wait=20` long polls until it completes. Samples every few seconds.
The gateway's cache of finished jobs' responses has a budget of {r["cache_mib"]} MiB
(`X402R_RESULT_CACHE_MIB`); the soak reads what it holds from `/metrics`.

| target | goal | this run | |
|---|---|---|---|
{rows}

Requests: {counts}. Gateway CPU over the soak: {cpu:.0f} s
({cpu / max(r["elapsed_s"], 1):.2f} of a core). Ledger of the soak's jobs: charges
{ledger.get("charge", 0):,}, upstream spend {ledger.get("upstream", 0):,}, refunds
{ledger.get("refund", 0):,} (atomic USDC); received on chain over the soak: operator
{r["chain_received"]["operator"]:,}, upstream payee {r["chain_received"]["upstream payee"]:,}.

Gateway RSS: {half["start"]:.1f} MiB at the first sample, {half["mid"]:.1f} MiB at the middle,
{half["end"]:.1f} MiB at the end: {half["kib_per_job"]:+.2f} KiB per job made over the second
half. The finished-job cache {full_at} (RSS then {half["cache_full_rss"]:.1f} MiB; since
then {half["kib_per_job_since_full"]:+.2f} KiB per job made); at the end it held
{samples[-1]["cache_mib"]:.2f} MiB in {samples[-1]["cache_entries"]:,.0f} entries. Machine
load average (1 min, 2 cores, shared with other work) over the soak: median
{loads[len(loads) // 2]:.1f}, max {loads[-1]:.1f}.

![RSS, database connections and jobs over the soak]({chart_name})
"""
