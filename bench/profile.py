"""How long and how hard each scenario runs: the full run and the seconds-long smoke run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """Sizes of one benchmark run."""

    name: str
    duration_s: int  # each wrk measurement
    warmup_s: int  # each target is warmed up this long first, unrecorded
    connections: int  # wrk connections for throughput runs
    poll_clients: int  # clients polling one job (upstream amplification)
    poll_duration_s: int
    paid_warmup_calls: int  # paid calls made first, unrecorded (a fresh process is slower)
    paid_calls: int
    memory_jobs: int  # completed jobs read once each, then as many again
    cold_jobs: int  # distinct jobs in progress for the cache-miss status run
    rounds: int  # interleaved rounds of the side-by-side runs; the best run of each counts

    @property
    def smoke(self) -> bool:
        """True for the CI run that only proves the benchmarks still work."""
        return self.name == "smoke"


FULL = Profile(
    name="full",
    duration_s=10,
    warmup_s=2,
    connections=32,
    poll_clients=200,
    poll_duration_s=10,
    paid_warmup_calls=30,
    paid_calls=60,
    memory_jobs=10_000,
    cold_jobs=2_000,
    rounds=3,
)
SMOKE = Profile(
    name="smoke",
    duration_s=2,
    warmup_s=1,
    connections=32,
    poll_clients=50,
    poll_duration_s=2,
    paid_warmup_calls=1,
    paid_calls=3,
    memory_jobs=300,
    cold_jobs=100,
    rounds=1,
)
