"""`python -m bench growth`: the same questions at 10k, 100k and 1M finished jobs.

Every size gets a database of its own, seeded with COPY at the revision before the rollups;
all of them stay open, and each measurement goes round the sizes in interleaved rounds.
Then the rollups' migration runs on each while a writer writes, and everything is measured
again on the migrated databases.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from bench.bulk_seed import seed
from bench.growth_db import SizedDatabase
from bench.growth_measure import Probe, percentile
from bench.growth_migration import migrate_under_writes
from bench.growth_money import LABELS, MERGED, REPORTS, reports_agree, time_report
from bench.measure import expect


@dataclass(frozen=True)
class GrowthProfile:
    """Sizes and repetitions of one growth run."""

    name: str
    sizes: tuple[int, ...]
    rounds: int  # interleaved rounds over the sizes
    reads: int  # status reads per size and round
    claims: int  # worker claims per size and round
    fast_summaries: int  # summaries from the rollups per size and round
    direct_summaries: int  # summaries from full aggregates per size and round
    report_rounds: int  # the first rounds also time the operator's reports
    fast_reports: int  # each report as the endpoint computes it, per size and round
    direct_reports: int  # each report as it was before the rollups, per size and round
    previous_reports: int  # each report before the per-payer and per-key rollups, the same
    merged_reports: int = 1  # by payer as before the one statement, the same


# Many short rounds: whatever else runs on the machine falls on every size alike.
FULL = GrowthProfile("full", (10_000, 100_000, 1_000_000), 20, 100, 5, 3, 1, 10, 2, 1, 1)
SMOKE = GrowthProfile("smoke", (500, 2_000), 2, 50, 3, 3, 1, 2, 2, 1, 1)


def reports_only(profile: GrowthProfile) -> GrowthProfile:
    """`profile` measuring nothing but the operator's reports (still seeded and migrated)."""
    return replace(
        profile,
        name=f"{profile.name}-reports",
        rounds=profile.report_rounds,
        reads=0,
        claims=0,
        fast_summaries=0,
        direct_summaries=0,
    )


def _step(name: str) -> None:
    print(f"[bench] {time.strftime('%H:%M:%S')} growth: {name}", flush=True)


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values, default=0.0),
    }


async def _reports(
    probes: list[Probe], got: list[dict[str, list[float]]], p: GrowthProfile
) -> None:
    """One round of the operator's reports, each name in turn over the sizes."""
    for name in REPORTS:
        for probe, samples in zip(probes, got, strict=True):
            for how, count, label in (
                ("endpoint", p.fast_reports, ""),
                ("merged", p.merged_reports if name in MERGED else 0, "merged_"),
                ("previous", p.previous_reports, "previous_"),
                ("direct", p.direct_reports, "direct_"),
            ):
                for _ in range(count):
                    took = await time_report(probe.sessions, name, probe.now, how)
                    samples.setdefault(f"report_{label}{name}", []).append(took)


async def _measure(dbs: list[SizedDatabase], profile: GrowthProfile, migrated: bool) -> list[Any]:
    """Every measurement of one phase, interleaved over the sizes; one dict per size."""
    probes = [await Probe(db).open() for db in dbs]
    samples: list[dict[str, list[float]]] = [{} for _ in probes]
    try:
        for round_ in range(profile.rounds):
            # One read, one claim per size in turn: a disturbance falls on all sizes alike.
            for i in range(profile.reads):
                for probe, got in zip(probes, samples, strict=True):
                    got.setdefault("status", []).append(await probe.status_read(i))
            for _ in range(profile.claims):
                for probe, got in zip(probes, samples, strict=True):
                    got.setdefault("claim", []).append(await probe.claim())
            for probe, got in zip(probes, samples, strict=True):
                direct = await probe.summaries(profile.direct_summaries, fast=False)
                got.setdefault("summary_direct", []).extend(direct)
                if migrated:
                    fast = await probe.summaries(profile.fast_summaries, fast=True)
                    got.setdefault("summary_fast", []).extend(fast)
            if migrated and round_ < profile.report_rounds:
                await _reports(probes, samples, profile)
        phase = []
        for probe, got in zip(probes, samples, strict=True):
            result: dict[str, Any] = {k: _summary(v) for k, v in got.items() if v}
            result["claim_plan"] = await probe.explain_claim()
            if migrated:
                result["summaries_agree"] = await probe.summaries_agree()
                expect(result["summaries_agree"], f"fast summary differs at {probe.db.size}")
                result["reports_agree"] = await reports_agree(probe.sessions, probe.now)
                expect(result["reports_agree"], f"a report differs at {probe.db.size}")
            phase.append(result)
        return phase
    finally:
        for probe in probes:
            await probe.close()


def run(profile: GrowthProfile) -> dict[str, Any]:
    """Seed, measure, migrate under writes, measure again; the raw results."""
    dbs = [SizedDatabase(size) for size in profile.sizes]
    sizes: list[dict[str, Any]] = [{"size": db.size} for db in dbs]
    started = time.monotonic()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        for db, out in zip(dbs, sizes, strict=True):
            _step(f"seeding {db.size:,} jobs")
            db.create()
            stats = asyncio.run(seed(db.dsn, db.size))
            out["seed"] = asdict(stats) | {"total_s": stats.total_s, "rows_per_s": stats.rows_per_s}
        _step("measuring before the migration")
        for out, phase in zip(sizes, asyncio.run(_measure(dbs, profile, False)), strict=True):
            out["before"] = phase
        for db, out in zip(dbs, sizes, strict=True):
            _step(f"migrating {db.size:,} jobs while a writer writes")
            out["migration"] = asyncio.run(migrate_under_writes(db))
        _step("measuring after the migration")
        for out, phase in zip(sizes, asyncio.run(_measure(dbs, profile, True)), strict=True):
            out["after"] = phase
    finally:
        for db in dbs:
            db.drop()
    about = {"date": date, "elapsed_s": round(time.monotonic() - started), "load_at_start": load}
    about["report_rounds"] = profile.report_rounds
    return {"profile": profile.name, **about, "sizes": sizes, "checks": checks(sizes)}


def _check(name: str, value: str, target: str, ok: bool) -> dict[str, Any]:
    return {"name": name, "value": value, "target": target, "ok": ok}


def _report_checks(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    b, jobs = sizes[-1]["after"], f"{sizes[-1]['size']:,} jobs"
    agree = all(x["after"]["reports_agree"] for x in sizes)
    return [
        *(
            _check(
                f"growth: report {LABELS[name]} p50 at {jobs}",
                f"{b['report_' + name]['p50_ms']:.1f} ms "
                f"(before: {b['report_previous_' + name]['p50_ms']:.0f} ms, "
                f"direct: {b['report_direct_' + name]['p50_ms']:.0f} ms)",
                "< 50 ms",
                b["report_" + name]["p50_ms"] < 50,
            )
            for name in REPORTS
        ),
        _check(
            "growth: reports from the rollups equal the direct GROUP BYs, every size",
            "yes" if agree else "no",
            "same",
            agree,
        ),
    ]


def checks(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The growth targets, smallest size against largest (only the report's when the run
    measured nothing else)."""
    small, large = sizes[0], sizes[-1]
    a, b = small["after"], large["after"]
    if "status" not in b:
        return _report_checks(sizes)
    n = f"{large['size']:,} vs {small['size']:,} jobs"
    status = b["status"]["p99_ms"] / a["status"]["p99_ms"]
    claim_pages = b["claim_plan"]["buffers"] / max(1, a["claim_plan"]["buffers"])
    claim_ms = b["claim"]["p50_ms"] / a["claim"]["p50_ms"]
    fast = b["summary_fast"]["p50_ms"]
    gain = b["summary_direct"]["p50_ms"] / fast
    stall = max(s["migration"]["writer_during"]["max_ms"] for s in sizes)
    return [
        _check(f"growth: status read p99, {n}", f"{status:.2f}x", "<= 1.2x", status <= 1.2),
        _check(f"growth: claim buffers, {n}", f"{claim_pages:.2f}x", "<= 1.2x", claim_pages <= 1.2),
        _check(f"growth: claim p50, {n}", f"{claim_ms:.2f}x", "<= 1.2x", claim_ms <= 1.2),
        _check(
            f"growth: summary p50 at {large['size']:,} jobs",
            f"{fast:.1f} ms ({gain:.0f}x the full aggregates)",
            "< 50 ms",
            fast < 50,
        ),
        *_report_checks(sizes),
        _check(
            "growth: writer's worst write during the migrations",
            f"{stall:.0f} ms",
            "< 1000 ms",
            stall < 1000,
        ),
    ]
