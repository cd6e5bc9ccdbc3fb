"""How long a step may hold a job (its lease), and when an unknown outcome is tried again."""

from __future__ import annotations

from datetime import datetime, timedelta

from app.core.settings import Settings
from app.jobs.repository import utcnow

# A lease outlives the call it covers by this much, so the worker never takes over a job
# whose call is still running (the call's own timeout ends it first).
LEASE_MARGIN_S = 5

# An unknown settle outcome is retried 5 s after the first attempt, doubling, capped at
# 5 min: 12 attempts are about 40 min.
MAX_SETTLE_ATTEMPTS = 12
SETTLE_BACKOFF_FIRST_S = 5
SETTLE_BACKOFF_MAX_S = 300

# The upstream unreachable: the same payment is sent again after 2 s per attempt made.
MAX_UPSTREAM_ATTEMPTS = 3
UPSTREAM_RETRY_S_PER_ATTEMPT = 2

# Without a chain to ask, a refund whose outcome stays unknown is parked after this many
# attempts (30 s doubling, capped at 5 min: about 40 min) instead of being retried forever.
MAX_REFUND_ATTEMPTS = 12
REFUND_BACKOFF_FIRST_S = 30
REFUND_BACKOFF_MAX_S = 300


def settle_lease_s(settings: Settings) -> float:
    """One call to the facilitator."""
    return settings.facilitator_timeout_s + LEASE_MARGIN_S


def upstream_lease_s(settings: Settings) -> float:
    """One call to the upstream (a submit), or the upstream bought next after a settlement."""
    return settings.upstream_timeout_s + LEASE_MARGIN_S


def request_lease_s(settings: Settings) -> float:
    """A request that settles and then buys the upstream."""
    return settings.facilitator_timeout_s + settings.upstream_timeout_s + LEASE_MARGIN_S


def settle_backoff_s(attempts: int) -> int:
    """The pause after `attempts` settle attempts whose outcome stayed unknown."""
    doublings = min(max(attempts - 1, 0), 6)
    return int(min(SETTLE_BACKOFF_FIRST_S * 2**doublings, SETTLE_BACKOFF_MAX_S))


def upstream_retry_s(attempts: int) -> int:
    """The pause after `attempts` submits that found the upstream unreachable."""
    return UPSTREAM_RETRY_S_PER_ATTEMPT * attempts


def refund_backoff_s(attempts: int) -> int:
    """The pause after `attempts` refund attempts whose outcome stayed unknown."""
    doublings = min(attempts - 1, 4)
    return int(min(REFUND_BACKOFF_FIRST_S * 2**doublings, REFUND_BACKOFF_MAX_S))


def first_refund_check_s() -> int:
    """A refund started by a request is its own; the worker looks at it only after this."""
    return REFUND_BACKOFF_FIRST_S


def after(seconds: float) -> datetime:
    """The time `seconds` from now (a lease's end, a retry's due time)."""
    return utcnow() + timedelta(seconds=seconds)
