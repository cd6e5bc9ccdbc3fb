"""The daily upstream spend cap, counted per UTC hour (`spend_hours`).

The window is the current hour and the 24 before it, each counted in full: the cap is
reached up to an hour early, never late. Reserving takes the current hour's row lock first,
so concurrent reservations (on any replica) see each other and the cap cannot be overrun.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.models import SpendHour

WINDOW_HOURS = 24


def hour_of(moment: datetime) -> datetime:
    """The start of `moment`'s UTC hour."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _window_start(now: datetime) -> datetime:
    return hour_of(now) - timedelta(hours=WINDOW_HOURS)


async def spent_in_window(session: AsyncSession, now: datetime | None = None) -> int:
    """Upstream money committed in the window ending now."""
    start = _window_start(now or datetime.now(UTC))
    stmt = select(func.coalesce(func.sum(SpendHour.amount), 0)).where(SpendHour.hour >= start)
    return int((await session.execute(stmt)).scalar_one() or 0)


async def reserve(session: AsyncSession, amount: int, cap: int) -> bool:
    """Count `amount` as spent now if the window stays within `cap`; False (nothing counted)
    otherwise. Commits with the caller's transaction; the hour row stays locked until then."""
    now = datetime.now(UTC)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    upsert = insert(SpendHour).values(hour=hour_of(now), amount=amount)
    await session.execute(
        upsert.on_conflict_do_update(
            index_elements=[SpendHour.hour], set_={"amount": SpendHour.amount + amount}
        )
    )
    if await spent_in_window(session, now) <= cap:
        return True
    await session.execute(
        update(SpendHour)
        .where(SpendHour.hour == hour_of(now))
        .values(amount=SpendHour.amount - amount)
        .execution_options(synchronize_session=False)
    )
    return False
