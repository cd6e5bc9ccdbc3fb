"""The daily upstream spend cap, counted per UTC hour (`spend_hours`).

The window is the current hour and the 24 before it, each counted in full: the cap is
reached up to an hour early, never late. Reserving takes the current hour's row lock first,
so concurrent reservations (on any replica) see each other and the cap cannot be overrun.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    FromClause,
    Insert,
    Select,
    Table,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from app.core.db import Executor, dialect_name
from app.jobs.models import SpendHour

WINDOW_HOURS = 24
_TABLE = cast(Table, SpendHour.__table__)
_HOUR = _TABLE.c.hour
_AMOUNT = _TABLE.c.amount


def _spent_since(hours: FromClause) -> Select[Any]:
    """The amounts of `hours` (the table or an alias of it) from `:start` on, summed."""
    return select(func.coalesce(func.sum(hours.c.amount), 0)).where(
        hours.c.hour >= bindparam("start")
    )


# Built once, executed with bound values.
_SPENT_SINCE = _spent_since(_TABLE)
# The same as a scalar subquery, read with the payment lookup on every paid request.
SPENT_SINCE = _SPENT_SINCE.scalar_subquery()
_GIVE_BACK = (
    update(_TABLE)
    .where(_HOUR == bindparam("this_hour"))
    .values(amount=_AMOUNT - bindparam("give_back", type_=BigInteger()))
)


def _add_statement(dialect: str) -> Insert:
    """Add to this hour's row and return the window's new total, in one round trip.

    The other hours are summed by a subquery in RETURNING: it reads the statement's
    snapshot, which no concurrent reservation changes (they all add to the current hour,
    whose row lock this statement holds once it returns; a waiter sees the row as committed).
    """
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(_TABLE)
    other = _TABLE.alias("other_hour")
    others = _spent_since(other).where(other.c.hour != bindparam("this_hour")).scalar_subquery()
    return stmt.on_conflict_do_update(
        index_elements=[_HOUR], set_={"amount": _AMOUNT + stmt.excluded.amount}
    ).returning(_AMOUNT + others)


_ADD = {name: _add_statement(name) for name in ("postgresql", "sqlite")}


def hour_of(moment: datetime) -> datetime:
    """The start of `moment`'s UTC hour."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def window_start(now: datetime) -> datetime:
    """The first hour of the window that ends with `now`'s hour."""
    return hour_of(now) - timedelta(hours=WINDOW_HOURS)


async def spent_in_window(session: Executor, now: datetime | None = None) -> int:
    """Upstream money committed in the window ending now."""
    start = window_start(now or datetime.now(UTC))
    return int((await session.execute(_SPENT_SINCE, {"start": start})).scalar_one() or 0)


async def reserve(
    session: Executor, amount: int, cap: int, *, hour: datetime | None = None
) -> datetime | None:
    """Count `amount` as spent in `hour` (default: now) if the window stays within `cap`: the
    hour it was counted in, or None (nothing counted). Commits with the caller's transaction;
    the hour's row stays locked until then."""
    now = datetime.now(UTC)
    hour = hour or hour_of(now)
    params = {"hour": hour, "this_hour": hour, "amount": amount, "start": window_start(now)}
    total: int = (await session.execute(_ADD[dialect_name(session)], params)).scalar_one()
    if int(total) <= cap:
        return hour
    await release(session, hour, amount)
    return None


async def release(session: Executor, hour: datetime, amount: int) -> None:
    """Take back `amount` counted in `hour` by `reserve` in this same transaction."""
    await session.execute(_GIVE_BACK, {"this_hour": hour, "give_back": amount})
