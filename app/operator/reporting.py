"""The report document shared by `x402-reseller report` and `GET /v1/admin/report`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import InvalidRequest
from app.jobs.views import rfc3339
from app.operator.report import (
    GROUPINGS,
    Window,
    days_total,
    jobs_by_state,
    report_by_day,
    report_by_key,
    report_by_payer,
    report_totals,
)

ROWS: dict[str, Callable[[AsyncSession, Window], Awaitable[list[dict[str, Any]]]]] = {
    "day": report_by_day,
    "key": report_by_key,
    "payer": report_by_payer,
}


async def report_document(
    session: AsyncSession, window: Window, by: str | None = None
) -> dict[str, Any]:
    """Totals, jobs by state and (with `by`) one row per day, key or payer; atomic units."""
    if by is not None and by not in GROUPINGS:
        raise InvalidRequest(f"by must be one of {', '.join(GROUPINGS)}", code="invalid_grouping")
    rows = None if by is None else await ROWS[by](session, window)
    # Every money row falls on exactly one day: the days add up to the totals, and reading
    # the key ledger once instead of twice is most of what is left of the report's time.
    if by == "day" and rows is not None:
        totals = days_total(rows)
    else:
        totals = await report_totals(session, window)
    document: dict[str, Any] = {
        "since": rfc3339(window.since),
        "until": rfc3339(window.until),
        "totals": totals.as_dict(),
        "jobsByState": await jobs_by_state(session, window),
    }
    if by is not None:
        document["by"] = by
        document["rows"] = rows
    return document
