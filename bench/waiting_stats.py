"""What the waiting run's raw answers and upstream logs amount to, and its checks."""

from __future__ import annotations

import itertools
from typing import Any

from bench.measure import check
from bench.paid import pct

RSS_PER_CONNECTION_KIB = 10
FAN_OUT_P99_MS = 200


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    return {"p50": pct(values, 0.5), "p99": pct(values, 0.99), "max": max(values)}


def _polls(poll_times: dict[str, list[float]], interval_s: float) -> dict[str, Any]:
    """Upstream status requests per job: how many, and the shortest gap between two."""
    gaps = [b - a for times in poll_times.values() for a, b in itertools.pairwise(times)]
    return {
        "requests": sum(len(t) for t in poll_times.values()),
        "jobs": len(poll_times),
        "min_gap_s": min(gaps) if gaps else None,
        "gaps_under_interval": sum(1 for g in gaps if g < interval_s * 0.95),
        "median_gap_s": pct(gaps, 0.5) if gaps else None,
    }


def summarise(
    answers: list[dict[str, Any]],
    *,
    upstream_of: dict[str, str],
    learned: dict[str, float],
    completed: dict[str, float],
    poll_times: dict[str, list[float]],
    interval_s: float,
    held: dict[str, Any],
) -> dict[str, Any]:
    """Errors, fan-out latency (from when the server learned), end-to-end latency."""
    good = [a for a in answers if a.get("status") == 200 and a.get("state") == "completed"]
    errors = [a for a in answers if a not in good]
    fan_out = [(a["at"] - learned[upstream_of[a["path"]]]) * 1000 for a in good]
    end_to_end = [(a["at"] - completed[upstream_of[a["path"]]]) * 1000 for a in good]
    return {
        "answers": len(answers),
        "asked_again": sum(a.get("polls", 1) - 1 for a in answers),
        "errors": len(errors),
        "error_samples": errors[:5],
        "fan_out_ms": _spread(fan_out),
        "end_to_end_ms": _spread(end_to_end),
        "polls": _polls(poll_times, interval_s) if poll_times else None,
        "interval_s": interval_s,
        **held,
    }


def checks(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The waiting targets, each against this run's baseline where one applies."""
    gw, base = result["gateway"], result["baseline"]
    n = result["size"]["connections"]
    per = gw["rss_per_connection_kib"]
    fan = gw["fan_out_ms"]["p99"]
    polls = gw["polls"]
    return [
        check(
            f"waiting: errors over {n:,} long polls",
            "0",
            f"{gw['errors']} (baseline {base['errors']})",
            gw["errors"] == 0,
        ),
        check(
            "waiting: RSS growth per waiting connection",
            f"< {RSS_PER_CONNECTION_KIB} KiB",
            f"{per:.1f} KiB (bare ASGI app: {base['rss_per_connection_kib']:.1f} KiB)",
            per < RSS_PER_CONNECTION_KIB,
        ),
        check(
            "waiting: p99 from the upstream's completed answer to the waiting clients' answer",
            f"< {FAN_OUT_P99_MS} ms",
            f"{fan:.0f} ms (bare ASGI app: {base['fan_out_ms']['p99']:.0f} ms)",
            fan < FAN_OUT_P99_MS,
        ),
        check(
            "waiting: upstream status requests per job per interval",
            "<= 1",
            f"shortest gap {polls['min_gap_s'] or 0:.2f} s for a {gw['interval_s']:g} s interval "
            f"({polls['requests']:,} requests, {polls['jobs']:,} jobs)",
            polls["gaps_under_interval"] == 0,
        ),
    ]
