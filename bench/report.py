"""Render the results as docs/performance.md (numbers from this run, notes from notes.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.growth_report import kept_section

HERE = Path(__file__).resolve().parent
NOTES = HERE / "notes.md"
BEFORE = HERE / "before.json"
DOC = HERE.parent / "docs" / "performance.md"  # its growth section is kept as it is


def _f(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _wrk_rows(rows: list[dict[str, Any]]) -> str:
    body = [
        [
            r["name"],
            _f(r["rps"], 0),
            _f(r["p50_ms"], 2),
            _f(r["p99_ms"], 2),
            f"{r['vs']:.2f}x" if "vs" in r else "",
            f"{r.get('errors', 0):,}",
        ]
        for r in rows
    ]
    return _table(["server", "req/s", "p50 ms", "p99 ms", "vs baseline", "errors"], body)


def _vs_frozen(ratios: dict[str, float]) -> str:
    frozen = ratios.get("gateway/sdk_frozen")
    return "" if frozen is None else f"; gateway / SDK + `gc.freeze()`: **{frozen:.1f}x**"


def _environment(report: dict[str, Any]) -> str:
    env = report["env"]
    rows = [[k, f"`{v}`" if k != "date" else v] for k, v in env.items()]
    return _table(["", ""], rows)


def _checks(results: dict[str, Any]) -> str:
    rows = [
        [c["name"], c["target"], c["value"], "met" if c["ok"] else "**missed**"]
        for part in results.values()
        for c in part.get("checks", [])
    ]
    return _table(["target", "goal", "this run", ""], rows)


def _paid(p: dict[str, Any]) -> str:
    names = {
        "total": "whole paid request (client view)",
        "facilitator": "facilitator: verify + settle (incl. chain)",
        "upstream": "upstream: paid submission (incl. its facilitator)",
        "gateway": "**gateway itself** (total - hops)",
    }
    rows = [[names[k], _f(v["p50"]), _f(v["p99"])] for k, v in p["stats"].items()]
    trips = p["upstream_round_trips"]
    warm = p.get("warmup_gateway_p50")
    warmup = (
        f" after {p['warmup_calls']} unrecorded warm-up calls (their gateway time p50: "
        f"{warm:.1f} ms; a fresh process is slower for its first few dozen calls)"
        if warm is not None
        else ""
    )
    return (
        _table(["time per paid call", "p50 ms", "p99 ms"], rows)
        + f"\n\n{p['calls']} sequential paid calls (x402 v2){warmup}. Upstream round trips: "
        f"{trips['first_call']:g} on the first call after start-up (requirements fetched, "
        f"then the paid submission), {trips['per_call_after']:g} per call after that "
        f"(max {trips['max_after']:g}); facilitator round trips per call: "
        f"{p['facilitator_round_trips']:g}." + _cpu(p)
    )


def _cpu(p: dict[str, Any]) -> str:
    if "cpu_ms_per_call" not in p:
        return ""
    return (
        f" Gateway CPU per paid call (user + system from `/proc`, over the recorded calls and "
        f"20 ms after each answer): {p['cpu_ms_per_call']:.1f} ms."
    )


def _amplify(a: dict[str, Any]) -> str:
    rows = [
        ["clients x rate", f"{a['clients']} x 10/s for {a['duration_s']:g} s"],
        ["client polls answered", f"{a['client_polls']:,} ({_f(a['client_polls_per_s'], 0)}/s)"],
        ["client latency p50 / p99", f"{_f(a['p50_ms'], 2)} / {_f(a['p99_ms'], 2)} ms"],
        ["error answers", f"{a.get('errors', 0):,}"],
        ["upstream status requests", str(a["upstream_requests"])],
        ["poll interval", f"{a['poll_interval_s']:g} s"],
        ["upstream requests per poll interval", f"{a['upstream_per_interval']:.2f}"],
        ["upstream requests per client poll", f"{a['amplification']:.5f}"],
    ]
    return _table(["", ""], rows)


def _memory(m: dict[str, Any]) -> str:
    rows = [
        [f"{p['jobs']:,}", _f(p["rss_mib"]), _f(p["reads_per_s"], 0) if "reads_per_s" in p else ""]
        for p in m["points"]
    ]
    return (
        _table(["completed jobs read once", "RSS MiB", "first reads/s"], rows)
        + f"\n\nImmutable-response cache budget: {m['budget_mib']:g} MiB (LRU by bytes)."
    )


def _scaleout(s: dict[str, Any]) -> str:
    rows = []
    for path in ("402", "status"):
        one, two = s[f"{path}_x1"], s[f"{path}_x2"]
        label = "unpaid 402" if path == "402" else "status, job in progress"
        for n, r in ((1, one), (2, two)):
            rows.append([label, str(n), _f(r["rps"], 0), _f(r["p50_ms"], 2), _f(r["p99_ms"], 2)])
        rows.append([label, "2 vs 1", f"{two['rps'] / one['rps']:.2f}x", "", ""])
    return _table(["path", "processes", "req/s", "p50 ms (worst)", "p99 ms (worst)"], rows)


def _before_after(results: dict[str, Any]) -> str:
    if not BEFORE.exists():
        return "_No `bench/before.json`: nothing to compare with._"
    old = json.loads(BEFORE.read_text())
    before = old["results"]
    rows: list[list[str]] = []
    for label, part, key in (
        ("unpaid 402", "unpaid", "gateway"),
        ("status, job in progress", "status", "gw_processing"),
        ("status, completed job", "status", "gw_completed"),
        ("status, distinct jobs in progress (misses)", "status", "gw_cold"),
    ):
        b = next(r for r in before[part]["rows"] if r["key"] == key)
        a = next(r for r in results[part]["rows"] if r["key"] == key)
        rows.append(
            [
                f"{label}: req/s",
                _f(b["rps"], 0),
                _f(a["rps"], 0),
                f"{a['rps'] / b['rps']:.1f}x",
            ]
        )
        rows.append([f"{label}: p99 ms", _f(b["p99_ms"], 2), _f(a["p99_ms"], 2), ""])
    amp_b, amp_a = before["amplify"], results["amplify"]
    rows.append(
        [
            "upstream status requests per poll interval",
            f"{amp_b['upstream_per_interval']:.2f}",
            f"{amp_a['upstream_per_interval']:.2f}",
            "",
        ]
    )
    for key, label in (("gateway", "paid: gateway time"), ("total", "paid: whole request")):
        b, a = before["paid"]["stats"][key], results["paid"]["stats"][key]
        rows.append(
            [
                f"{label} p50 / p99 ms",
                f"{_f(b['p50'])} / {_f(b['p99'])}",
                f"{_f(a['p50'])} / {_f(a['p99'])}",
                "",
            ]
        )
    mem_b, mem_a = before["memory"]["points"], results["memory"]["points"]
    rows.append(
        [
            f"RSS MiB at 0 / {mem_a[1]['jobs']:,} / {mem_a[2]['jobs']:,} completed jobs",
            " / ".join(_f(p["rss_mib"], 0) for p in mem_b),
            " / ".join(_f(p["rss_mib"], 0) for p in mem_a),
            "",
        ]
    )
    note = (
        f"Before: the same benchmark on {old['env']['date']} against the code as it was "
        "before this work (status route reading through the ORM and claiming a poll on every "
        "request, no fast paths, eth-keys' pure-Python signing), with the fix for the "
        "settle/worker race applied so that the paid calls complete."
    )
    return note + "\n\n" + _table(["", "before", "after", "gain"], rows)


def render(report: dict[str, Any]) -> str:
    """The whole markdown document."""
    r = report["results"]
    u = r["unpaid"]["ratios"]
    s = r["status"]["ratios"]
    notes = NOTES.read_text() if NOTES.exists() else ""
    return f"""# Performance

Generated by `{report["command"]}` on {report["env"]["date"]} in {report["elapsed_s"]:g} s.
The numbers below are from that one run; the notes at the end explain the method and the
changes they led to.

```sh
apt-get install -y wrk                     # the load generator (Debian/Ubuntu)
python -m bench                            # full run (~8 min): rewrites this file
python -m bench --smoke                    # seconds per scenario: bench/results/smoke.md
python -m bench --only unpaid,status       # a subset, JSON only (bench/results/full.json)
python -m bench --render bench/results/full.json   # re-render this file from a run
python -m bench growth                     # 10k/100k/1M jobs (~5 min): section 7 and its charts
python -m bench waiting                    # 10,000 long polls: docs/performance-waiting.md
python -m bench soak --minutes 10          # mixed traffic: docs/performance-waiting.md, its chart
python -m bench.cpu_profile --base REV     # paid-path CPU per call, A/B against REV
```

`make bench` and `make bench-smoke` do the first two. Each run creates and drops its own
Postgres database (127.0.0.1:5432, user `postgres`), binds only 127.0.0.1 and stops by
itself (20 minutes at most for the full run, 4 for the smoke run).

## Targets

{_checks(r)}

## Environment

{_environment(report)}

## 1. Unpaid 402 (`POST /v1/images/edit`, valid body, no payment)

One uvicorn worker each (uvloop, httptools, no access log), pinned to core 0; wrk on core 1,
32 connections, 1 thread. The gateway validates the body before answering (an invalid body
is a 422 and never a 402); the raw app reads the body and answers the same bytes. The SDK app
is measured as a user would deploy it (the target's baseline) and again with the one tuning
the gateway gives itself, `gc.freeze()` after start-up.

{_wrk_rows(r["unpaid"]["rows"])}

Gateway / raw ceiling: **{u["gateway/raw"]:.2f}x**;
gateway / SDK middleware: **{u["gateway/sdk"]:.1f}x**{_vs_frozen(u)}.

## 2. Status poll (`GET /v1/jobs/{{id}}`)

Same pinning and load. The baseline is a bare FastAPI app doing `session.get(Job, id)` with
the SQLAlchemy ORM (asyncpg, pool of 20) on the same database and rendering the same view.

{_wrk_rows(r["status"]["rows"])}

Job in progress: **{s["processing"]:.1f}x** the baseline; completed: **{s["completed"]:.1f}x**;
distinct jobs in progress (every read a miss): **{s["cold"]:.1f}x**.

## 3. Upstream amplification (one job in progress, many pollers)

{_amplify(r["amplify"])}

## 4. Paid path overhead

{_paid(r["paid"])}

## 5. Memory (one fresh gateway process)

{_memory(r["memory"])}

## 6. Scale-out (1 vs 2 gateway processes, one Postgres, 2 cores)

{_scaleout(r["scaleout"])}

## Before and after

{_before_after(r)}

{kept_section(DOC)}{notes}"""
