"""A chain that cannot be read never fails a check silently: the job, the read, the error.

The reader is the gateway's real ChainReader, pointed at a port where nothing listens (the
RPC node is down): every read fails with the real client's connection error, and each check
answers "unknown" as before, with one warning line an operator can act on.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from x402.schemas import SettleResponse

from app.jobs import onchain, refunding
from app.jobs.models import Job, JobState
from app.payments.chain import ChainReader
from app.payments.facilitator import SettleOutcome, SettleResult
from tests.settings_factory import make_settings

DEAD_RPC = "http://127.0.0.1:1"
TOKEN = "0x" + "11" * 20
TX = "0x" + "5e" * 32


@pytest.fixture
async def gw() -> Any:
    settings = make_settings(facilitator_url="http://127.0.0.1:9", rpc_url=DEAD_RPC)
    chain = ChainReader(DEAD_RPC, TOKEN, timeout_s=1.0)
    yield SimpleNamespace(settings=settings, chain=chain)
    await chain.close()


def _job() -> Job:
    expired = int(time.time()) - 10
    authorization = {"validAfter": "0", "validBefore": str(expired), "nonce": "0x" + "01" * 32}
    return Job(
        id="job_" + secrets.token_hex(8),
        state=JobState.REFUNDING.value,
        payer="0x" + "22" * 20,
        pay_network="eip155:8453",
        pay_amount=1000,
        pay_to="0x" + "33" * 20,
        pay_nonce="0x" + secrets.token_hex(32),
        pay_valid_before=2**40,
        payment_payload={"payload": {"authorization": {"validAfter": "0"}}},
        refund_amount=1000,
        refund_nonce="0x" + "01" * 32,
        refund_payload={"payload": {"authorization": authorization}},
        created_at=datetime.now(UTC),
    )


def _warned(caplog: pytest.LogCaptureFixture, job: Job, what: str) -> None:
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    mine = [line for line in lines if job.id in line and what in line]
    assert mine, f"no warning naming {job.id} and {what!r} in {lines}"
    # The error's type and its message (the client's own words) are in the line.
    assert any("Error" in line and ": " in line.split(what, 1)[1] for line in mine), mine


async def test_an_unreadable_settlement_check_is_logged(
    gw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    job = _job()
    unknown = SettleResult(SettleOutcome.UNKNOWN, None, "timeout", "no answer")
    with caplog.at_level(logging.WARNING):
        assert await onchain.reconcile_settlement(gw, job, unknown) is unknown
    _warned(caplog, job, "the client's payment")


async def test_an_unconfirmable_settlement_is_logged(
    gw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    job = _job()
    response = SettleResponse(success=True, transaction=TX, network=job.pay_network)
    claimed = SettleResult(SettleOutcome.SETTLED, response, "", "")
    with caplog.at_level(logging.WARNING):
        result = await onchain.confirm_settlement(gw, job, claimed)
    assert result.outcome is SettleOutcome.UNKNOWN
    _warned(caplog, job, f"the settlement transaction {TX}")


async def test_an_unreadable_refund_check_is_logged(
    gw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    job = _job()
    with caplog.at_level(logging.WARNING):
        assert await refunding._refund_expired_unused(gw, job) is False
    _warned(caplog, job, "the refund authorization")
    caplog.clear()
    response = SettleResponse(success=True, transaction=TX, network=job.pay_network)
    settled = SettleResult(SettleOutcome.SETTLED, response, "", "")
    with caplog.at_level(logging.WARNING):
        assert await refunding._refund_tx(gw, job, settled) == (None, None)
    _warned(caplog, job, "the refund")
