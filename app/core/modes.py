"""The service's modes of operation, chosen in the settings (`app.core.settings`)."""

from __future__ import annotations

from enum import StrEnum


class RefundPolicy(StrEnum):
    """What to give back when a paid job cannot be served."""

    FULL = "full"
    IF_UPSTREAM_NOT_CHARGED = "if_upstream_not_charged"
    OFF = "off"


class LogFormat(StrEnum):
    """How log lines are written."""

    TEXT = "text"
    JSON = "json"


class SettlementOrder(StrEnum):
    """When the client's payment is settled relative to buying from the upstream."""

    SETTLE_FIRST = "settle_first"
    SETTLE_AFTER = "settle_after"
