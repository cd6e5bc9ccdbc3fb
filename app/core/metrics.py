"""Prometheus metrics: money moved (from the ledger choke point) and payment rejections."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

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


def render() -> bytes:
    """The exposition text of our registry."""
    return generate_latest(REGISTRY)
