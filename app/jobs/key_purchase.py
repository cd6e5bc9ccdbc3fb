"""A request paid with an API key: budget debited with the job, then the same purchase path.

The job is an ordinary row whose payment step is the debit (see `admission.record_key_paid`):
the upstream purchase, the worker's recovery and the refund policy are those of x402 jobs;
it is never settled (there is no x402 payment), and a refund credits the key.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from app.context import Gateway
from app.core.crashpoints import crash_point
from app.jobs import admission, spend
from app.jobs.models import Job, JobState
from app.jobs.policy import after, request_lease_s
from app.jobs.purchase import drive, existing, fingerprint, new_job_id, spend_gate
from app.jobs.repository import JobRepository
from app.keys.auth import KeyCaller
from app.keys.models import ChargeAt

KEY_PAID_VERSION = 0  # x402_version of a job no x402 payment bought


async def _by_key(gw: Gateway, scoped_key: str) -> Job | None:
    async with gw.autocommit.connect() as session:
        return await JobRepository(session).by_idempotency_key(scoped_key)


def key_paid_job(
    gw: Gateway,
    key: KeyCaller,
    route: str,
    body: dict[str, object],
    amount: int,
    fp: str,
    scoped_key: str | None,
) -> Job:
    """A new key-paid job row. The x402 payment columns are NOT NULL: they hold the debit
    (amount, our network, asset and payee), the key as payer, the job id as the payment's
    unique nonce, and no payload (docs/money-safety.md, "Key-paid jobs")."""
    s = gw.settings
    job_id = new_job_id()
    return Job(
        id=job_id,
        state=JobState.VERIFIED.value,
        route=route,
        request_body=body,
        fingerprint=fp,
        idempotency_key=scoped_key,
        x402_version=KEY_PAID_VERSION,
        payer=key.id,
        pay_network=s.network,
        pay_asset=s.asset,
        pay_amount=amount,
        pay_to=s.pay_to,
        pay_nonce=job_id,
        pay_valid_before=0,
        payment_payload={},
        payment_requirements={},
        api_key_id=key.id,
        settle_attempts=0,
        upstream_attempts=0,
        next_check_at=after(request_lease_s(s)),
    )  # fmt: skip


async def purchase_with_key(
    gw: Gateway,
    *,
    key: KeyCaller,
    route: str,
    body: dict[str, object],
    sale_price: int,
    idempotency_key: str | None,
) -> Job:
    """Turn a key-paid request into a job: once per (key, idempotency key) when one is given.

    Raises BudgetExhausted / InvalidApiKey / the spend gate's 503 with nothing debited.
    """
    # Keys are scoped to the API key: another key's idempotency key never finds this job.
    scoped_key = f"{key.id}:{idempotency_key}" if idempotency_key else None
    if scoped_key and (known := await _by_key(gw, scoped_key)) is not None:
        return await existing(gw, known, fingerprint("POST", route, body, known.pay_amount))
    async with gw.autocommit.connect() as conn:
        spent = await spend.spent_in_window(conn)
    at_cost = key.charge_at == ChargeAt.COST.value
    paid = gw.settings.max_upstream_price_atomic if at_cost else sale_price
    quote = await spend_gate(gw, body, spent, paid)
    amount = quote if at_cost else sale_price
    fp = fingerprint("POST", route, body, amount)
    job = key_paid_job(gw, key, route, body, amount, fp, scoped_key)
    try:
        job = await admission.record_key_paid(gw, job, quote)
    except IntegrityError:
        # A concurrent request with this key's idempotency key recorded its job first.
        winner = await _by_key(gw, scoped_key) if scoped_key else None
        if winner is None:
            raise
        return await existing(gw, winner, fp)
    crash_point("after_key_debit")
    return await drive(gw, job)
