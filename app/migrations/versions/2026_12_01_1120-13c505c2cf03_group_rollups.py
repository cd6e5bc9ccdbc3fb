"""group rollups: payer_days, payer_totals and key_days kept by triggers on ledger and
key_ledger; built without blocking writes on Postgres

Revision ID: 13c505c2cf03
Revises: 242dfc8df8a8
Create Date: 2026-12-01 11:20:00

The reports by payer and by key joined the whole ledger to its jobs on every call. The
ledger's trigger now looks up the row's job (one primary-key read) and adds the row to its
payer's day and all-time rows and, for a key-paid job, to its key's day; the key ledger's
trigger adds debits and credits to the key's day. On Postgres the triggers are created
first, in a short transaction that also notes the largest ids of both ledgers (later rows
are counted by the triggers); the backfill then runs in autocommit, in batches of ids, so
no lock outlives a batch. A job's payer and key never change, so no snapshot of the jobs
is needed.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "13c505c2cf03"
down_revision: str | None = "242dfc8df8a8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 100_000  # ids per backfill statement
_PG_DAY = "(NEW.created_at AT TIME ZONE 'UTC')::date"
_KIND_COLUMNS = (("charges", "charge"), ("upstream_spend", "upstream"), ("refunds", "refund"))
_ADD_COLUMNS = ", ".join(f"{c} = {{t}}.{c} + excluded.{c}" for c, _ in _KIND_COLUMNS)


def _kind_values(row: str) -> list[str]:
    """The per-kind columns' values for ledger row `row`: its amount in its kind's column."""
    return [f"CASE WHEN {row}.kind = '{k}' THEN {row}.amount ELSE 0 END" for _, k in _KIND_COLUMNS]


def _by_kind(row: str) -> str:
    return ", ".join(_kind_values(row))


_SUMS = ", ".join(f"sum({value})" for value in _kind_values("l"))


_PG_FUNCTIONS = (
    f"""CREATE FUNCTION ledger_groups_add() RETURNS trigger AS $$
DECLARE
    owner RECORD;
BEGIN
    SELECT payer, api_key_id INTO owner FROM jobs WHERE id = NEW.job_id;
    INSERT INTO payer_days (day, payer, charges, upstream_spend, refunds)
    VALUES ({_PG_DAY}, owner.payer, {_by_kind("NEW")})
    ON CONFLICT (day, payer) DO UPDATE SET {_ADD_COLUMNS.format(t="payer_days")};
    INSERT INTO payer_totals (payer, charges, upstream_spend, refunds)
    VALUES (owner.payer, {_by_kind("NEW")})
    ON CONFLICT (payer) DO UPDATE SET {_ADD_COLUMNS.format(t="payer_totals")};
    IF owner.api_key_id IS NOT NULL THEN
        INSERT INTO key_days (day, key_id, payer, kind, amount)
        VALUES ({_PG_DAY}, owner.api_key_id, owner.payer, NEW.kind, NEW.amount)
        ON CONFLICT (day, key_id, payer, kind) DO UPDATE
            SET amount = key_days.amount + excluded.amount;
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql""",
    f"""CREATE FUNCTION key_ledger_groups_add() RETURNS trigger AS $$
BEGIN
    INSERT INTO key_days (day, key_id, payer, kind, amount)
    VALUES ({_PG_DAY}, NEW.key_id,
            coalesce((SELECT payer FROM jobs WHERE id = NEW.job_id), ''), NEW.kind, NEW.amount)
    ON CONFLICT (day, key_id, payer, kind) DO UPDATE
        SET amount = key_days.amount + excluded.amount;
    RETURN NULL;
END
$$ LANGUAGE plpgsql""",
    "CREATE TRIGGER ledger_groups_add AFTER INSERT ON ledger "
    "FOR EACH ROW EXECUTE FUNCTION ledger_groups_add()",
    "CREATE TRIGGER key_ledger_groups_add AFTER INSERT ON key_ledger "
    "FOR EACH ROW WHEN (NEW.kind IN ('debit', 'credit')) "
    "EXECUTE FUNCTION key_ledger_groups_add()",
)

_SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER ledger_groups_add AFTER INSERT ON ledger BEGIN
    INSERT INTO payer_days (day, payer, charges, upstream_spend, refunds)
    SELECT date(NEW.created_at), payer, {_by_kind("NEW")} FROM jobs WHERE id = NEW.job_id
    ON CONFLICT (day, payer) DO UPDATE SET {_ADD_COLUMNS.format(t="payer_days")};
    INSERT INTO payer_totals (payer, charges, upstream_spend, refunds)
    SELECT payer, {_by_kind("NEW")} FROM jobs WHERE id = NEW.job_id
    ON CONFLICT (payer) DO UPDATE SET {_ADD_COLUMNS.format(t="payer_totals")};
    INSERT INTO key_days (day, key_id, payer, kind, amount)
    SELECT date(NEW.created_at), api_key_id, payer, NEW.kind, NEW.amount FROM jobs
    WHERE id = NEW.job_id AND api_key_id IS NOT NULL
    ON CONFLICT (day, key_id, payer, kind) DO UPDATE SET amount = amount + excluded.amount;
    END""",
    """CREATE TRIGGER key_ledger_groups_add AFTER INSERT ON key_ledger
    WHEN NEW.kind IN ('debit', 'credit') BEGIN
    INSERT INTO key_days (day, key_id, payer, kind, amount)
    VALUES (date(NEW.created_at), NEW.key_id,
            coalesce((SELECT payer FROM jobs WHERE id = NEW.job_id), ''), NEW.kind, NEW.amount)
    ON CONFLICT (day, key_id, payer, kind) DO UPDATE SET amount = amount + excluded.amount;
    END""",
)
_TRIGGERS = (("ledger_groups_add", "ledger"), ("key_ledger_groups_add", "key_ledger"))

# Backfill statements; {day} is the dialect's UTC day of `created_at`, {where} a range of ids.
_ADD_PAYER_DAYS = f"""
INSERT INTO payer_days (day, payer, charges, upstream_spend, refunds)
SELECT {{day}}, j.payer, {_SUMS}
FROM ledger l JOIN jobs j ON j.id = l.job_id WHERE {{where}} GROUP BY 1, 2
ON CONFLICT (day, payer) DO UPDATE SET {_ADD_COLUMNS.format(t="payer_days")}
"""
_ADD_PAYER_TOTALS = f"""
INSERT INTO payer_totals (payer, charges, upstream_spend, refunds)
SELECT j.payer, {_SUMS}
FROM ledger l JOIN jobs j ON j.id = l.job_id WHERE {{where}} GROUP BY 1
ON CONFLICT (payer) DO UPDATE SET {_ADD_COLUMNS.format(t="payer_totals")}
"""
_ADD_KEY_DAYS_ONCHAIN = """
INSERT INTO key_days (day, key_id, payer, kind, amount)
SELECT {day}, j.api_key_id, j.payer, l.kind, sum(l.amount)
FROM ledger l JOIN jobs j ON j.id = l.job_id
WHERE {where} AND j.api_key_id IS NOT NULL GROUP BY 1, 2, 3, 4
ON CONFLICT (day, key_id, payer, kind) DO UPDATE SET amount = key_days.amount + excluded.amount
"""
_ADD_KEY_DAYS_KEYED = """
INSERT INTO key_days (day, key_id, payer, kind, amount)
SELECT {day}, l.key_id, coalesce(j.payer, ''), l.kind, sum(l.amount)
FROM key_ledger l LEFT JOIN jobs j ON j.id = l.job_id
WHERE {where} AND l.kind IN ('debit', 'credit') GROUP BY 1, 2, 3, 4
ON CONFLICT (day, key_id, payer, kind) DO UPDATE SET amount = key_days.amount + excluded.amount
"""
_FROM_LEDGER = (_ADD_PAYER_DAYS, _ADD_PAYER_TOTALS, _ADD_KEY_DAYS_ONCHAIN)


def _create_tables() -> None:
    kinds = [sa.Column(c, sa.BigInteger(), nullable=False) for c, _ in _KIND_COLUMNS]
    op.create_table(
        "payer_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("payer", sa.String(42), nullable=False),
        *kinds,
        sa.PrimaryKeyConstraint("day", "payer", name=op.f("pk_payer_days")),
    )
    op.create_table(
        "payer_totals",
        sa.Column("payer", sa.String(42), nullable=False),
        *(sa.Column(c.name, c.type, nullable=False) for c in kinds),
        sa.PrimaryKeyConstraint("payer", name=op.f("pk_payer_totals")),
    )
    op.create_table(
        "key_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("payer", sa.String(42), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "key_id", "payer", "kind", name=op.f("pk_key_days")),
    )


def _upgrade_sqlite() -> None:
    for trigger in _SQLITE_TRIGGERS:
        op.execute(trigger)
    for statement in (*_FROM_LEDGER, _ADD_KEY_DAYS_KEYED):
        op.execute(statement.format(day="date(l.created_at)", where="true"))


def _upgrade_postgres() -> None:
    bind = op.get_bind()
    # Writers queue behind this lock until the commit below; never longer than 10 s. No
    # transaction writes both ledgers, so taking both at once cannot deadlock with one.
    op.execute("SET LOCAL lock_timeout = '10s'")
    op.execute("LOCK TABLE ledger, key_ledger IN SHARE ROW EXCLUSIVE MODE")
    for statement in _PG_FUNCTIONS:
        op.execute(statement)
    # Nothing is written to either ledger until this commits: rows up to these ids are the
    # backfill's, the rest the triggers'.
    ends = {
        table: int(bind.execute(sa.text(f"SELECT coalesce(max(id), 0) FROM {table}")).scalar_one())
        for table in ("ledger", "key_ledger")
    }
    day = "(l.created_at AT TIME ZONE 'UTC')::date"
    with op.get_context().autocommit_block():  # commits: writers go on, now counted
        for table, statements in (("ledger", _FROM_LEDGER), ("key_ledger", (_ADD_KEY_DAYS_KEYED,))):
            for low in range(0, ends[table], BATCH):
                where = f"l.id > {low} AND l.id <= {min(low + BATCH, ends[table])}"
                for statement in statements:
                    bind.execute(sa.text(statement.format(day=day, where=where)))


def upgrade() -> None:
    _create_tables()
    if op.get_bind().dialect.name == "postgresql":
        _upgrade_postgres()
    else:
        _upgrade_sqlite()


def downgrade() -> None:
    for name, table in _TRIGGERS:
        op.execute(f"DROP TRIGGER {name}" + (f" ON {table}" if _postgres() else ""))
    if _postgres():
        for name, _ in _TRIGGERS:
            op.execute(f"DROP FUNCTION {name}()")
    for table in ("key_days", "payer_totals", "payer_days"):
        op.drop_table(table)


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"
