"""Shared measuring steps: warm up then record with wrk, ratios, and pass/miss checks."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from bench.profile import Profile
from bench.stage import CLIENT_CORE
from bench.wrk import WrkResult, run_wrk


class Broken(AssertionError):
    """Something answered wrongly: the benchmark itself is broken, whatever the numbers."""


def expect(condition: bool, message: str) -> None:
    """Fail the run (also the smoke run) when a functional expectation does not hold."""
    if not condition:
        raise Broken(message)


def measure_all(
    profile: Profile, targets: dict[str, tuple[str, Path | None]]
) -> dict[str, WrkResult]:
    """Interleave the targets for `profile.rounds` rounds; keep each one's best run.

    Other work on the machine comes and goes; interleaving exposes every target to it alike
    and the best of a few runs is the one least disturbed.
    """
    best: dict[str, WrkResult] = {}
    for round_ in range(profile.rounds):
        for name, (url, script) in targets.items():
            if round_ == 0:
                run_wrk(
                    url,
                    duration_s=profile.warmup_s,
                    connections=profile.connections,
                    script=script,
                    core=CLIENT_CORE,
                )
            result = run_wrk(
                url,
                duration_s=profile.duration_s,
                connections=profile.connections,
                script=script,
                core=CLIENT_CORE,
            )
            expect(result.requests > 0, f"wrk sent no request to {url}")
            if name not in best or result.rps > best[name].rps:
                best[name] = result
    return best


def row(name: str, result: WrkResult, **extra: Any) -> dict[str, Any]:
    """A result row for the report."""
    return {"name": name, **result.as_dict(), **extra}


def ratio(a: float, b: float) -> float:
    """a / b, 0 when b is 0."""
    return a / b if b else 0.0


def check(name: str, target: str, value: str, ok: bool) -> dict[str, Any]:
    """A target and whether this run met it (reported, never fatal)."""
    return {"name": name, "target": target, "value": value, "ok": ok}


def write_spec(name: str, spec: dict[str, Any]) -> Path:
    """A JSON file with a baseline server's inputs."""
    path = Path(tempfile.mkdtemp(prefix="x402r-bench-")) / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path
