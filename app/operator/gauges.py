"""The scrape-time gauges: jobs by state, hot-wallet balance, spend against the cap, key
budgets left. Read when `/metrics` is scraped (a few GROUP BY rows), never per request."""

from __future__ import annotations

import logging

from sqlalchemy import func, select

from app.context import Gateway
from app.core.metrics import (
    HOT_WALLET_BALANCE,
    JOBS_BY_STATE,
    KEY_BUDGET_REMAINING,
    SPEND_CAP,
    SPEND_WINDOW,
)
from app.jobs import spend
from app.jobs.models import Job, JobState
from app.keys.models import ApiKey
from app.operator.wallet import hot_wallet_balance

log = logging.getLogger(__name__)


async def refresh_gauges(gw: Gateway) -> None:
    """Set every scrape-time gauge from the database and (cached) the chain."""
    async with gw.autocommit.connect() as conn:
        counts = dict(
            (await conn.execute(select(Job.state, func.count()).group_by(Job.state))).tuples().all()
        )
        for state in JobState:
            JOBS_BY_STATE.labels(state.value).set(int(counts.get(state.value, 0)))
        SPEND_WINDOW.set(await spend.spent_in_window(conn))
        keys = await conn.execute(
            select(ApiKey.name, ApiKey.budget_atomic - ApiKey.spent_atomic).where(
                ApiKey.budget_atomic.is_not(None), ApiKey.revoked_at.is_(None)
            )
        )
        KEY_BUDGET_REMAINING.clear()
        for name, left in keys.tuples().all():
            KEY_BUDGET_REMAINING.labels(name).set(int(left or 0))
    SPEND_CAP.set(gw.settings.daily_upstream_cap_atomic)
    try:
        balance = await hot_wallet_balance(gw)
    except Exception as exc:  # the scrape still answers; the balance is simply not updated
        log.warning("hot wallet balance unreadable at scrape: %s", type(exc).__name__)
        return
    if balance is not None:
        HOT_WALLET_BALANCE.labels(gw.settings.hot_wallet_address).set(balance)
