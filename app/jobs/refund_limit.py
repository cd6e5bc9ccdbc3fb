"""The per-payer daily limit on refunds the operator pays for (policy `full`).

Under `full`, a request the upstream accepts and then fails costs the operator the upstream
price and the client nothing. Repeated, it drains the hot wallet and the daily cap: each payer
gets at most `refunds_per_payer_per_day` such refunds in 24 hours, then failures stand.
"""

from __future__ import annotations

from datetime import timedelta
from typing import cast

from sqlalchemy import Table, bindparam, func, select

from app.context import Gateway
from app.core.db import Executor
from app.core.modes import RefundPolicy
from app.jobs.admission import lock_payer
from app.jobs.models import Job
from app.jobs.repository import utcnow

CODE = "refund_limit_reached"
_JOBS = cast(Table, Job.__table__)
# Refunds decided in the window for jobs the upstream charged us for.
_COSTLY_REFUNDS = (
    select(func.count())
    .select_from(_JOBS)
    .where(
        _JOBS.c.payer == bindparam("payer"),
        _JOBS.c.id != bindparam("job_id"),  # a deferred refund, decided now, is not counted
        _JOBS.c.refund_amount.is_not(None),
        _JOBS.c.created_at >= bindparam("since"),
        _JOBS.c.upstream_tx.is_not(None),
    )
)

_WITHHELD = select(func.count()).select_from(_JOBS).where(_JOBS.c.error_code == CODE)


async def withheld_count(session: Executor) -> int:
    """Jobs failed without the refund their policy would have given (for the operator)."""
    return int((await session.execute(_WITHHELD)).scalar_one())


async def withheld(session: Executor, gw: Gateway, job: Job, upstream_charged: bool | None) -> bool:
    """True when this refund would exceed the payer's limit (the job then fails unrefunded).

    Only refunds the operator pays for count: the upstream charged us (or may have). The
    payer is locked until the caller's transaction ends, so concurrent failures of one
    payer's jobs (on any replica) are counted one after the other.
    """
    if gw.settings.refund_policy is not RefundPolicy.FULL or upstream_charged is False:
        return False
    await lock_payer(session, "refunds", job.payer)
    since = utcnow() - timedelta(days=1)
    params = {"payer": job.payer, "job_id": job.id, "since": since}
    done = (await session.execute(_COSTLY_REFUNDS, params)).scalar_one()
    return int(done) >= gw.settings.refunds_per_payer_per_day
