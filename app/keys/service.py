"""Managing API keys: create (the secret shown once), list with spend, show, revoke, top up.

Shared by the CLI (`x402-reseller keys …`) and the admin API (`/v1/admin/keys`). Functions
run in the caller's transaction and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, bindparam, case, func, select, update
from sqlalchemy.exc import IntegrityError

from app.core.db import Executor
from app.core.errors import Conflict, InvalidRequest, NotFound
from app.jobs.repository import utcnow
from app.jobs.views import rfc3339
from app.keys import budget
from app.keys.budget import DAYS, KEYS, LEDGER, utc_day
from app.keys.models import ChargeAt
from app.keys.tokens import new_key_id, new_secret, secret_hash, shown_prefix

MAX_PAGE = 200
_DEBITS = func.coalesce(func.sum(case((LEDGER.c.kind == "debit", LEDGER.c.amount), else_=0)), 0)
_CREDITS = func.coalesce(func.sum(case((LEDGER.c.kind == "credit", LEDGER.c.amount), else_=0)), 0)
_TOPUPS = func.coalesce(func.sum(case((LEDGER.c.kind == "topup", LEDGER.c.amount), else_=0)), 0)
_JOBS = func.count(case((LEDGER.c.kind == "debit", 1)))
# One row per key: its columns, what it spent today, and its ledger's sums.
_WITH_SPEND = (
    select(
        KEYS,
        func.coalesce(DAYS.c.amount, 0).label("spent_today"),
        select(_DEBITS).where(LEDGER.c.key_id == KEYS.c.id).scalar_subquery().label("debits"),
        select(_CREDITS).where(LEDGER.c.key_id == KEYS.c.id).scalar_subquery().label("credits"),
        select(_TOPUPS).where(LEDGER.c.key_id == KEYS.c.id).scalar_subquery().label("topups"),
        select(_JOBS).where(LEDGER.c.key_id == KEYS.c.id).scalar_subquery().label("jobs"),
    )
    .select_from(
        KEYS.outerjoin(DAYS, and_(DAYS.c.key_id == KEYS.c.id, DAYS.c.day == bindparam("today")))
    )
    .order_by(KEYS.c.id)
)


@dataclass(frozen=True)
class NewKey:
    """Limits of a key to create (atomic USDC; None: no such limit)."""

    name: str
    budget_atomic: int | None = None
    daily_budget_atomic: int | None = None
    rate_per_minute: int | None = None
    expires_at: datetime | None = None
    charge_at: str = ChargeAt.SALE.value
    own_jobs_only: bool = False

    def check(self) -> None:
        """InvalidRequest naming what is wrong."""
        if not self.name.strip() or len(self.name) > 100:
            raise InvalidRequest("name: 1-100 characters", code="invalid_api_key_settings")
        for field, value in (
            ("budget", self.budget_atomic),
            ("daily budget", self.daily_budget_atomic),
            ("rate per minute", self.rate_per_minute),
        ):
            if value is not None and value <= 0:
                raise InvalidRequest(f"{field}: must be > 0", code="invalid_api_key_settings")
        if self.charge_at not in {c.value for c in ChargeAt}:
            raise InvalidRequest("charge_at: sale or cost", code="invalid_api_key_settings")


def key_view(row: Row[Any]) -> dict[str, Any]:
    """A key as lists and pages show it: limits and spend, never its secret or hash."""
    now = utcnow()
    expired = row.expires_at is not None and budget.utc_moment(row.expires_at) <= now
    left = None if row.budget_atomic is None else row.budget_atomic - row.spent_atomic
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "status": "revoked" if row.revoked_at else "expired" if expired else "active",
        "chargeAt": row.charge_at,
        "ownJobsOnly": bool(row.own_jobs_only),
        "budget": None if row.budget_atomic is None else str(row.budget_atomic),
        "dailyBudget": None if row.daily_budget_atomic is None else str(row.daily_budget_atomic),
        "ratePerMinute": row.rate_per_minute,
        "spent": str(row.spent_atomic),
        "spentToday": str(row.spent_today),
        "remaining": None if left is None else str(left),
        "jobs": int(row.jobs),
        "credited": str(row.credits),
        "toppedUp": str(row.topups),
        # The ledger's own account of the spend: debits - credits must equal `spent`.
        "ledgerAgrees": int(row.debits) - int(row.credits) == row.spent_atomic,
        "expiresAt": rfc3339(row.expires_at),
        "revokedAt": rfc3339(row.revoked_at),
        "createdAt": rfc3339(row.created_at),
    }


async def create_key(session: Executor, new: NewKey) -> tuple[dict[str, Any], str]:
    """Create a key: (its view, its secret). The secret is not stored and cannot be shown
    again; only its SHA-256 is kept."""
    new.check()
    secret = new_secret()
    key_id = new_key_id()
    values = {
        "id": key_id,
        "name": new.name.strip(),
        "prefix": shown_prefix(secret),
        "secret_hash": secret_hash(secret),
        "budget_atomic": new.budget_atomic,
        "daily_budget_atomic": new.daily_budget_atomic,
        "rate_per_minute": new.rate_per_minute,
        "charge_at": new.charge_at,
        "own_jobs_only": new.own_jobs_only,
        # Stored in UTC: SQLite keeps no offset, and the debit compares it with UTC now.
        "expires_at": None if new.expires_at is None else budget.utc_moment(new.expires_at),
        "created_at": utcnow(),
    }
    try:  # the transaction is done for on a conflict: the error leaves it, rolling back
        await session.execute(KEYS.insert().values(values))
    except IntegrityError:
        raise Conflict(
            f"an API key named {new.name.strip()!r} exists", code="api_key_name_taken"
        ) from None
    return await show_key(session, key_id), secret


async def list_keys(
    session: Executor, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of keys in id order after `cursor`, and the cursor of the next page (or None)."""
    limit = max(1, min(limit, MAX_PAGE))
    stmt = _WITH_SPEND.limit(limit + 1)
    if cursor:
        stmt = stmt.where(KEYS.c.id > cursor)
    rows = (await session.execute(stmt, {"today": utc_day(utcnow())})).all()
    page = [key_view(row) for row in rows[:limit]]
    return page, (page[-1]["id"] if len(rows) > limit else None)


async def show_key(session: Executor, key_id: str) -> dict[str, Any]:
    """One key with its spend; NotFound (`api_key_not_found`)."""
    stmt = _WITH_SPEND.where(KEYS.c.id == key_id)
    row = (await session.execute(stmt, {"today": utc_day(utcnow())})).one_or_none()
    if row is None:
        raise NotFound("no such API key", code="api_key_not_found")
    return key_view(row)


async def revoke_key(session: Executor, key_id: str) -> dict[str, Any]:
    """Revoke a key (at once, on every replica: each request looks the key up); idempotent."""
    await show_key(session, key_id)
    await session.execute(
        update(KEYS)
        .where(KEYS.c.id == key_id, KEYS.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return await show_key(session, key_id)


async def topup_key(
    session: Executor, key_id: str, amount: int, reason: str | None = None
) -> dict[str, Any]:
    """Raise a key's total budget by `amount` (a key_ledger topup row records it)."""
    view = await show_key(session, key_id)
    if amount <= 0:
        raise InvalidRequest("amount: must be > 0", code="invalid_api_key_settings")
    if view["budget"] is None:
        raise Conflict("this key has no total budget to top up", code="api_key_unlimited")
    await budget.topup(session, key_id, amount, reason)
    return await show_key(session, key_id)
