"""Both x402 versions pay, get their receipt in their own header, and are refunded."""

from __future__ import annotations

import pytest
from x402.http import (
    PAYMENT_RESPONSE_HEADER,
    X_PAYMENT_RESPONSE_HEADER,
    decode_payment_response_header,
)

from app.core.modes import RefundPolicy
from app.jobs.models import JobState
from tests.fast.checks import kinds, money_is_consistent
from tests.fast.pool import Opener
from tests.fast.upstream import Status

RECEIPT_HEADER = {True: X_PAYMENT_RESPONSE_HEADER, False: PAYMENT_RESPONSE_HEADER}


@pytest.mark.parametrize("v1", [True, False], ids=["v1", "v2"])
async def test_the_receipt_names_the_recorded_charge(gateways: Opener, v1: bool) -> None:
    async with gateways() as h:
        spent = await h.spent()
        answer = await h.pay(v1=v1)
        assert answer.status_code == 200, answer.text
        receipt = decode_payment_response_header(answer.headers[RECEIPT_HEADER[v1]])
        job = await h.work((await h.the_job()).id)
        (charge, _) = await h.ledger_rows(job.id)
        assert (receipt.success, receipt.transaction) == (True, charge.tx_hash)
        assert job.x402_version == (1 if v1 else 2)
        await money_is_consistent(h, job, spent)


@pytest.mark.parametrize("v1", [True, False], ids=["v1", "v2"])
async def test_a_failed_job_is_refunded_whatever_the_version(gateways: Opener, v1: bool) -> None:
    async with gateways(refund_policy=RefundPolicy.FULL) as h:
        h.world.upstream.script(status=[Status.FAILED])
        spent = await h.spent()
        assert (await h.pay(v1=v1)).status_code == 200
        job = await h.work((await h.the_job()).id)
        assert job.state == JobState.REFUNDED
        assert kinds(await h.ledger_rows(job.id)) == ["charge", "upstream", "refund"]
        await money_is_consistent(h, job, spent)
