"""Which parked jobs an operator may retry or refund, and why not otherwise (no database)."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.modes import SettlementOrder
from app.jobs.models import Job
from app.operator.actions import refund_refusal, retry_refusal

FIRST, AFTER = SettlementOrder.SETTLE_FIRST, SettlementOrder.SETTLE_AFTER
CHARGED = {"settle_tx": "0x" + "11" * 32}
STORED_REFUND = {"refund_amount": 63240, "refund_payload": {"payload": {}}}


def parked(code: str, **columns: Any) -> Job:
    values: dict[str, Any] = {
        "id": "job_x",
        "state": "needs_attention",
        "error_code": code,
        "settle_tx": None,
        "upstream_payment_header": None,
        "refund_amount": None,
        "refund_payload": None,
        "refund_tx": None,
        "api_key_id": None,
    }
    return Job(**(values | columns))


CASES = [
    # (job, order, retry allowed, refund allowed)
    (parked("settlement_unresolved"), FIRST, True, False),
    (parked("settlement_unresolved"), AFTER, False, False),
    (parked("settlement_unresolved", upstream_payment_header="h"), FIRST, False, False),
    (parked("refund_refused", **CHARGED, **STORED_REFUND), FIRST, True, False),
    (parked("refund_unresolved", **CHARGED, **STORED_REFUND), FIRST, True, False),
    (parked("refund_not_made", **CHARGED, **STORED_REFUND), FIRST, False, True),
    (parked("upstream_unreachable", **CHARGED), FIRST, False, True),
    (parked("upstream_payment_refused", **CHARGED), FIRST, False, True),
    (parked("client_payment_refused_after_purchase"), AFTER, False, False),
    # A key-paid job is refunded by crediting its key, once.
    (parked("upstream_unreachable", api_key_id="key_1"), FIRST, False, True),
    (parked("upstream_unreachable", api_key_id="key_1", refund_amount=63240), FIRST, False, False),
    (parked("upstream_unreachable", **CHARGED, refund_tx="0x" + "22" * 32), FIRST, False, False),
    (parked("settlement_unresolved", state="completed"), FIRST, False, False),
]


@pytest.mark.parametrize(("job", "order", "retry", "refund"), CASES)
def test_what_an_operator_may_do(
    job: Job, order: SettlementOrder, retry: bool, refund: bool
) -> None:
    retry_why, refund_why = retry_refusal(job, order), refund_refusal(job)
    assert (retry_why is None, refund_why is None) == (retry, refund), (retry_why, refund_why)
    for why in (retry_why, refund_why):
        assert why is None or len(why) > 10  # a refusal says why
