"""Prometheus metrics: money moved (from the ledger choke point), requests, payments and their
latency, counted in process; and gauges (jobs by state, hot wallet, spend, key budgets, the
finished-job cache) set from the database, the chain and the process when `/metrics` is
scraped, never on a request's path."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

TRANSFERS = Counter(
    "x402r_transfers",
    "Confirmed on-chain transfers recorded in the ledger, by kind (charge, upstream, refund)",
    ["kind"],
    registry=REGISTRY,
)
TRANSFERRED_ATOMIC = Counter(
    "x402r_transferred_atomic",
    "Atomic token units moved, by ledger kind (charge, upstream, refund)",
    ["kind"],
    registry=REGISTRY,
)
PAYMENTS_REJECTED = Counter(
    "x402r_payments_rejected",
    "Payments answered with a 402, by x402 reason",
    ["reason"],
    registry=REGISTRY,
)
# Answers by route and status: counted in app.api.request_metrics, exported at scrape.
PAYMENTS = Counter(
    "x402r_payments",
    "Facilitator verdicts: step (verify, settle, refund), outcome (verified, settled, "
    "refused, unknown) and reason",
    ["step", "outcome", "reason"],
    registry=REGISTRY,
)
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)
SETTLE_SECONDS = Histogram(
    "x402r_settle_seconds",
    "Time the facilitator took to settle (client payments and refunds)",
    ["step"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_SECONDS = Histogram(
    "x402r_upstream_submit_seconds",
    "Time the upstream took to answer a paid submit",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
JOBS_BY_STATE = Gauge("x402r_jobs", "Jobs by state (read at scrape)", ["state"], registry=REGISTRY)
HOT_WALLET_BALANCE = Gauge(
    "x402r_hot_wallet_balance_atomic",
    "The hot wallet's token balance (read at scrape, cached; absent without an RPC)",
    ["address"],
    registry=REGISTRY,
)
SPEND_WINDOW = Gauge(
    "x402r_upstream_spend_window_atomic",
    "Upstream money committed in the daily cap's window (read at scrape)",
    registry=REGISTRY,
)
SPEND_CAP = Gauge(
    "x402r_upstream_spend_cap_atomic", "The configured daily upstream cap", registry=REGISTRY
)
KEY_BUDGET_REMAINING = Gauge(
    "x402r_key_budget_remaining_atomic",
    "An API key's total budget minus its spend (keys with a budget, not revoked)",
    ["key"],
    registry=REGISTRY,
)

RESULT_CACHE_BYTES = Gauge(
    "x402r_result_cache_bytes",
    "Memory held by the cache of finished jobs' responses in this process (read at scrape)",
    registry=REGISTRY,
)
RESULT_CACHE_ENTRIES = Gauge(
    "x402r_result_cache_entries",
    "Finished jobs' responses in this process's cache (read at scrape)",
    registry=REGISTRY,
)
RESULT_CACHE_BUDGET = Gauge(
    "x402r_result_cache_budget_bytes",
    "The configured bound on x402r_result_cache_bytes (X402R_RESULT_CACHE_MIB)",
    registry=REGISTRY,
)


_SANE_REASON = re.compile(r"^[a-z0-9_]{1,64}$")
MAX_REASONS = 64  # a hostile facilitator's made-up reasons must not grow the registry
_reasons: set[str] = set()


def reason_label(reason: str) -> str:
    """`reason` as a label value: known-shaped and among the first MAX_REASONS, or `other`."""
    if reason in _reasons:
        return reason
    if not _SANE_REASON.match(reason) or len(_reasons) >= MAX_REASONS:
        return "other" if reason else ""
    _reasons.add(reason)
    return reason


def count_payment(step: str, outcome: str, reason: str) -> None:
    """One facilitator verdict (verify, settle or refund) and its reason."""
    PAYMENTS.labels(step, outcome, reason_label(reason)).inc()


def render() -> bytes:
    """The exposition text of our registry."""
    return generate_latest(REGISTRY)
