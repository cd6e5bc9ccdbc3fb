"""Upstream failures, split by what they mean for money.

UpstreamError
 ├── UpstreamUnavailable    transient or unknown: timeout, 5xx, malformed answer — may retry
 │    └── UpstreamMalformed an answer we will not read (bad JSON, too large, a redirect):
 │                          retried, but only so many times in a row
 ├── UpstreamRejected       permanent: the upstream refused the request itself, lost the job,
 │                          or pointed us somewhere we do not go
 ├── UpstreamPaymentRefused the upstream answered 402 to our signed payment
 ├── UpstreamPriceTooHigh   the upstream asks more than our per-call ceiling
 └── UpstreamPriceAbovePaid the upstream asks more than the client paid us for this job
"""

from __future__ import annotations


class UpstreamError(Exception):
    """Base of upstream failures; `code` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UpstreamUnavailable(UpstreamError):
    """Transient, or the outcome is unknown (the request may have been processed)."""


class UpstreamMalformed(UpstreamUnavailable):
    """An answer we refuse to read; a few in a row end the job."""

    def __init__(self, message: str) -> None:
        super().__init__("upstream_status_unreadable", message)


class UpstreamRejected(UpstreamError):
    """The upstream refused the request; retrying the same request will not help."""


class UpstreamPaymentRefused(UpstreamError):
    """The upstream refused our payment (price changed, or it keeps asking)."""

    def __init__(self, reason: str) -> None:
        super().__init__("upstream_payment_refused", f"upstream refused payment: {reason}")


class UpstreamPriceTooHigh(UpstreamError):
    """The upstream's price is above what we may pay per call."""

    def __init__(self, asked: int, ceiling: int) -> None:
        super().__init__(
            "upstream_price_above_ceiling",
            f"upstream asks {asked} atomic units, above the ceiling of {ceiling}",
        )
        self.asked = asked
        self.ceiling = ceiling


class UpstreamPriceAbovePaid(UpstreamError):
    """Buying at this price would sell the job at a loss."""

    def __init__(self, asked: int, paid: int) -> None:
        super().__init__(
            "upstream_price_above_paid",
            f"upstream asks {asked} atomic units, more than the {paid} the client paid",
        )
