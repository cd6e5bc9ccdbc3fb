"""A key's budget, moved atomically: debited with the job it buys, credited back at most once.

Invariants (checked by the database where it can): `0 <= spent_atomic <= budget_atomic`;
`spent_atomic` = debits - credits in `key_ledger`; a job has at most one debit and one
credit there; a day's `api_key_days.amount` <= the key's daily budget.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Insert,
    Table,
    and_,
    bindparam,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from app.core.db import Executor, dialect_name
from app.keys.errors import BudgetExhausted, InvalidApiKey
from app.keys.models import ApiKey, ApiKeyDay, KeyLedgerEntry, KeyLedgerKind

KEYS = cast(Table, ApiKey.__table__)
DAYS = cast(Table, ApiKeyDay.__table__)
LEDGER = cast(Table, KeyLedgerEntry.__table__)
_AMOUNT = bindparam("amount", type_=BigInteger())

# The conditional debit: one statement, so concurrent requests (on any replica) queue on the
# key's row and each sees the others' committed spend; none can take the budget past its end.
_DEBIT = (
    update(KEYS)
    .where(
        KEYS.c.id == bindparam("key_id"),
        KEYS.c.revoked_at.is_(None),
        or_(KEYS.c.expires_at.is_(None), KEYS.c.expires_at > bindparam("now")),
        or_(KEYS.c.budget_atomic.is_(None), KEYS.c.spent_atomic + _AMOUNT <= KEYS.c.budget_atomic),
    )
    .values(spent_atomic=KEYS.c.spent_atomic + _AMOUNT)
    .returning(KEYS.c.daily_budget_atomic)
)
_GIVE_BACK = (
    update(KEYS)
    .where(KEYS.c.id == bindparam("key_id"))
    .values(spent_atomic=KEYS.c.spent_atomic - _AMOUNT)
)
_DAY_GIVE_BACK = (
    update(DAYS)
    .where(DAYS.c.key_id == bindparam("b_key_id"), DAYS.c.day == bindparam("b_day"))
    .values(amount=DAYS.c.amount - _AMOUNT)
)
_KEY = select(KEYS).where(KEYS.c.id == bindparam("key_id"))
_DAY_SPENT = select(DAYS.c.amount).where(
    DAYS.c.key_id == bindparam("key_id"), DAYS.c.day == bindparam("day")
)
_DEBIT_ROW = select(LEDGER.c.key_id, LEDGER.c.amount, LEDGER.c.created_at).where(
    LEDGER.c.job_id == bindparam("job_id"), LEDGER.c.kind == KeyLedgerKind.DEBIT.value
)


def _day_statement(dialect: str, limited: bool) -> Insert:
    """Add to the key's row for the day (as app.jobs.spend does for the hour); `limited`:
    only if it stays within `:daily`, else RETURNING nothing."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(DAYS).values(key_id=bindparam("key_id"), day=bindparam("day"), amount=_AMOUNT)
    total = DAYS.c.amount + stmt.excluded.amount
    within = total <= bindparam("daily", type_=BigInteger()) if limited else None
    return stmt.on_conflict_do_update(
        index_elements=[DAYS.c.key_id, DAYS.c.day], set_={"amount": total}, where=within
    ).returning(DAYS.c.amount)


_DAY_ADD = {
    (name, limited): _day_statement(name, limited)
    for name in ("postgresql", "sqlite")
    for limited in (False, True)
}


def utc_day(moment: datetime) -> date:
    """The UTC day a moment belongs to (SQLite hands back naive UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).date()


async def remaining(session: Executor, key_id: str, now: datetime) -> dict[str, Any]:
    """What the key may still spend: in total and today (strings, None: unlimited)."""
    key = (await session.execute(_KEY, {"key_id": key_id})).one()
    today = (await session.execute(_DAY_SPENT, {"key_id": key_id, "day": utc_day(now)})).scalar()
    total = None if key.budget_atomic is None else key.budget_atomic - key.spent_atomic
    daily = None if key.daily_budget_atomic is None else key.daily_budget_atomic - int(today or 0)
    return {
        "remaining": None if total is None else str(max(total, 0)),
        "remainingToday": None if daily is None else str(max(daily, 0)),
    }


async def debit(session: Executor, key_id: str, amount: int, now: datetime) -> None:
    """Take `amount` from the key's total and daily budgets, in the caller's transaction.

    Raises BudgetExhausted (or InvalidApiKey, revoked or expired meanwhile): the caller's
    transaction must then roll back, which it does when the error leaves it.
    """
    params = {"key_id": key_id, "amount": amount, "now": now}
    daily = (await session.execute(_DEBIT, params)).one_or_none()
    if daily is None:
        key = (await session.execute(_KEY, {"key_id": key_id})).one()
        if key.revoked_at is not None or (
            key.expires_at is not None and utc_moment(key.expires_at) <= now
        ):
            raise InvalidApiKey("this API key is revoked or expired")
        raise BudgetExhausted("total", await remaining(session, key_id, now))
    limit = daily.daily_budget_atomic
    day_params = {"key_id": key_id, "day": utc_day(now), "amount": amount, "daily": limit}
    day_add = _DAY_ADD[dialect_name(session), limit is not None]
    fits = (limit is None or amount <= limit) and (
        (await session.execute(day_add, day_params)).first() is not None
    )
    if not fits:
        await session.execute(_GIVE_BACK, params)  # so `remaining` reads the truth
        raise BudgetExhausted("daily", await remaining(session, key_id, now))


def utc_moment(moment: datetime) -> datetime:
    """`moment` as an aware UTC datetime (SQLite hands back naive UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def record_debit(
    session: Executor, key_id: str, job_id: str, amount: int, now: datetime
) -> None:
    """The ledger row of a debit, once the job it bought is inserted."""
    await session.execute(
        LEDGER.insert().values(
            key_id=key_id, job_id=job_id, kind=KeyLedgerKind.DEBIT.value, amount=amount,
            created_at=now,
        )
    )  # fmt: skip


_CREDIT = LEDGER.insert().from_select(
    ["key_id", "job_id", "kind", "amount", "reason"],
    select(
        LEDGER.c.key_id,
        LEDGER.c.job_id,
        literal(KeyLedgerKind.CREDIT.value),
        LEDGER.c.amount,
        bindparam("reason"),
    ).where(and_(LEDGER.c.job_id == bindparam("job_id"), LEDGER.c.kind == "debit")),
)


async def credit(session: Executor, job_id: str, reason: str) -> int:
    """Give a job's debit back to its key (ledger row, spent and the debit's day lowered);
    the amount credited, 0 when the job debited nothing. Call it only from the one write
    that moves the job to refunded: the unique (job_id, kind) index refuses a second credit.
    """
    debited = (await session.execute(_DEBIT_ROW, {"job_id": job_id})).one_or_none()
    if debited is None:
        return 0
    await session.execute(_CREDIT, {"job_id": job_id, "reason": reason[:500]})
    params = {"key_id": debited.key_id, "amount": debited.amount}
    await session.execute(_GIVE_BACK, params)
    day = utc_day(debited.created_at)
    await session.execute(
        _DAY_GIVE_BACK, {"b_key_id": debited.key_id, "amount": debited.amount, "b_day": day}
    )
    return int(debited.amount)


async def topup(session: Executor, key_id: str, amount: int, reason: str | None) -> None:
    """Raise a key's total budget by `amount`, with its ledger row."""
    await session.execute(
        update(KEYS).where(KEYS.c.id == key_id).values(budget_atomic=KEYS.c.budget_atomic + amount)
    )
    await session.execute(
        LEDGER.insert().values(
            key_id=key_id, kind=KeyLedgerKind.TOPUP.value, amount=amount, reason=reason
        )
    )
