"""The rollups of a bulk-seeded database built as the migrations build them: the seed's COPY
skips their triggers (`session_replication_role = replica`)."""

from __future__ import annotations

from typing import Any

from app.jobs.models import FINAL_STATES

_ROLLUPS = (
    "TRUNCATE ledger_days, job_state_days",
    "INSERT INTO ledger_days SELECT (created_at AT TIME ZONE 'UTC')::date, kind, "
    "hashtext(job_id) & 7, sum(amount), count(*) FROM ledger GROUP BY 1, 2, 3",
    "INSERT INTO job_state_days SELECT (created_at AT TIME ZONE 'UTC')::date, state, "
    "hashtext(id) & 7, count(*) FROM jobs WHERE state IN ("
    + ", ".join(f"'{s.value}'" for s in FINAL_STATES)
    + ") GROUP BY 1, 2, 3",
)


_KINDS = ", ".join(
    f"sum(CASE WHEN l.kind = '{kind}' THEN l.amount ELSE 0 END) AS {name}"
    for kind, name in (("charge", "c"), ("upstream", "u"), ("refund", "r"))
)
_DAY = "(l.created_at AT TIME ZONE 'UTC')::date"
_GROUP_ROLLUPS = (
    "TRUNCATE payer_running, payer_totals, key_days",
    f"CREATE TEMP TABLE payer_history AS SELECT j.payer, {_DAY} AS day, {_KINDS} "
    "FROM ledger l JOIN jobs j ON j.id = l.job_id GROUP BY 1, 2",
    "INSERT INTO payer_running SELECT payer, day, sum(c) OVER w, sum(u) OVER w, sum(r) OVER w "
    "FROM payer_history WINDOW w AS (PARTITION BY payer ORDER BY day)",
    "INSERT INTO payer_totals SELECT payer, sum(c), sum(u), sum(r) FROM payer_history GROUP BY 1",
    "DROP TABLE payer_history",
    f"INSERT INTO key_days SELECT {_DAY}, j.api_key_id, j.payer, l.kind, sum(l.amount) "
    "FROM ledger l JOIN jobs j ON j.id = l.job_id WHERE j.api_key_id IS NOT NULL "
    "GROUP BY 1, 2, 3, 4",
    f"INSERT INTO key_days SELECT {_DAY}, l.key_id, coalesce(j.payer, ''), l.kind, "
    "sum(l.amount) FROM key_ledger l LEFT JOIN jobs j ON j.id = l.job_id "
    "WHERE l.kind IN ('debit', 'credit') GROUP BY 1, 2, 3, 4",
)


async def rebuild_rollups(conn: Any) -> None:
    """On a database that has the rollups already, build them as the migrations would have
    (the copy skipped their triggers). The growth run seeds before they exist."""
    for table, statements in (("ledger_days", _ROLLUPS), ("payer_running", _GROUP_ROLLUPS)):
        if await conn.fetchval(f"SELECT to_regclass('{table}')") is not None:
            for statement in statements:
                await conn.execute(statement)
