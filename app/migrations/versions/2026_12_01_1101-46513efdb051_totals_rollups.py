"""totals rollups: ledger_days and job_state_days kept by triggers, the due-jobs and
error-code partial indexes; built without blocking writes on Postgres

Revision ID: 46513efdb051
Revises: c3f8a1d2e6b4
Create Date: 2026-12-01 11:01:00

On Postgres the triggers are created first, in a short transaction that also fixes where
the backfill stops: ledger rows up to the largest id then visible (later ones are counted by
the trigger), and the jobs as of a snapshot exported under the trigger's lock (later state
changes are counted by the trigger). The backfill then runs in autocommit, the ledger in
batches of ids; the indexes are built CONCURRENTLY. Writers wait only for the triggers'
creation.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "46513efdb051"
down_revision: str | None = "c3f8a1d2e6b4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 200_000  # ledger ids per backfill statement
FINAL = "('completed', 'failed', 'payment_failed', 'refunded', 'needs_attention')"
UNFINISHED = "state IN ('verified', 'paid', 'upstream_signed', 'submitted', 'refunding')"
INDEXES = (
    ("ix_jobs_due", ["next_check_at", "state"], UNFINISHED),
    ("ix_jobs_error_code", ["error_code"], "error_code IS NOT NULL"),
)

_PG_LEDGER_DAY = "(NEW.created_at AT TIME ZONE 'UTC')::date"
# Rows per day and kind: concurrent writers of the same day mostly lock different rows.
_PG_SLOT = "(hashtext({}) & 7)"
_PG_FUNCTIONS = (
    f"""CREATE FUNCTION ledger_days_add() RETURNS trigger AS $$
BEGIN
    INSERT INTO ledger_days (day, kind, slot, amount, entries)
    VALUES ({_PG_LEDGER_DAY}, NEW.kind, {_PG_SLOT.format("NEW.job_id")}, NEW.amount, 1)
    ON CONFLICT (day, kind, slot) DO UPDATE
        SET amount = ledger_days.amount + EXCLUDED.amount, entries = ledger_days.entries + 1;
    RETURN NULL;
END
$$ LANGUAGE plpgsql""",
    f"""CREATE FUNCTION job_state_days_count() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.state = NEW.state THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' AND OLD.state IN {FINAL} THEN
        -- An upsert, not an UPDATE: whatever slot it lands in, the sum over slots is right.
        INSERT INTO job_state_days (day, state, slot, jobs)
        VALUES ((OLD.created_at AT TIME ZONE 'UTC')::date, OLD.state,
                {_PG_SLOT.format("OLD.id")}, -1)
        ON CONFLICT (day, state, slot) DO UPDATE SET jobs = job_state_days.jobs - 1;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.state IN {FINAL} THEN
        INSERT INTO job_state_days (day, state, slot, jobs)
        VALUES ((NEW.created_at AT TIME ZONE 'UTC')::date, NEW.state,
                {_PG_SLOT.format("NEW.id")}, 1)
        ON CONFLICT (day, state, slot) DO UPDATE SET jobs = job_state_days.jobs + 1;
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql""",
    "CREATE TRIGGER ledger_days_add AFTER INSERT ON ledger "
    "FOR EACH ROW EXECUTE FUNCTION ledger_days_add()",
    "CREATE TRIGGER job_state_days_count AFTER INSERT OR DELETE OR UPDATE OF state ON jobs "
    "FOR EACH ROW EXECUTE FUNCTION job_state_days_count()",
)

_SQLITE_TRIGGERS = (
    """CREATE TRIGGER ledger_days_add AFTER INSERT ON ledger BEGIN
    INSERT INTO ledger_days (day, kind, slot, amount, entries)
    VALUES (date(NEW.created_at), NEW.kind, 0, NEW.amount, 1)
    ON CONFLICT (day, kind, slot) DO UPDATE
        SET amount = amount + excluded.amount, entries = entries + 1;
    END""",
    f"""CREATE TRIGGER job_state_days_leave AFTER UPDATE OF state ON jobs
    WHEN OLD.state <> NEW.state AND OLD.state IN {FINAL} BEGIN
    INSERT INTO job_state_days (day, state, slot, jobs)
    VALUES (date(OLD.created_at), OLD.state, 0, -1)
    ON CONFLICT (day, state, slot) DO UPDATE SET jobs = jobs - 1;
    END""",
    f"""CREATE TRIGGER job_state_days_delete AFTER DELETE ON jobs
    WHEN OLD.state IN {FINAL} BEGIN
    INSERT INTO job_state_days (day, state, slot, jobs)
    VALUES (date(OLD.created_at), OLD.state, 0, -1)
    ON CONFLICT (day, state, slot) DO UPDATE SET jobs = jobs - 1;
    END""",
    *(
        f"""CREATE TRIGGER job_state_days_{name} AFTER {event} ON jobs
    WHEN {when} NEW.state IN {FINAL} BEGIN
    INSERT INTO job_state_days (day, state, slot, jobs)
    VALUES (date(NEW.created_at), NEW.state, 0, 1)
    ON CONFLICT (day, state, slot) DO UPDATE SET jobs = jobs + 1;
    END"""
        for name, event, when in (
            ("insert", "INSERT", ""),
            ("enter", "UPDATE OF state", "OLD.state <> NEW.state AND"),
        )
    ),
)
_SQLITE_TRIGGER_NAMES = (
    "ledger_days_add",
    "job_state_days_leave",
    "job_state_days_delete",
    "job_state_days_insert",
    "job_state_days_enter",
)

_ADD_LEDGER_DAYS = """
INSERT INTO ledger_days (day, kind, slot, amount, entries)
SELECT {day}, kind, {slot}, sum(amount), count(*) FROM ledger {where} GROUP BY 1, 2, 3
ON CONFLICT (day, kind, slot) DO UPDATE
    SET amount = ledger_days.amount + EXCLUDED.amount,
        entries = ledger_days.entries + EXCLUDED.entries
"""
_FINAL_JOBS_PG = f"""
SELECT (created_at AT TIME ZONE 'UTC')::date, state, {_PG_SLOT.format("id")}, count(*)
FROM jobs WHERE state IN {FINAL} GROUP BY 1, 2, 3
"""
_ADD_JOB_STATE_DAY = """
INSERT INTO job_state_days (day, state, slot, jobs) VALUES (:day, :state, :slot, :jobs)
ON CONFLICT (day, state, slot) DO UPDATE SET jobs = job_state_days.jobs + EXCLUDED.jobs
"""


def _create_tables() -> None:
    op.create_table(
        "ledger_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("entries", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "kind", "slot", name=op.f("pk_ledger_days")),
    )
    op.create_table(
        "job_state_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("jobs", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "state", "slot", name=op.f("pk_job_state_days")),
    )


def _upgrade_sqlite() -> None:
    for trigger in _SQLITE_TRIGGERS:
        op.execute(trigger)
    op.execute(_ADD_LEDGER_DAYS.format(day="date(created_at)", slot="0", where="WHERE true"))
    op.execute(
        "INSERT INTO job_state_days (day, state, slot, jobs) SELECT date(created_at), state, 0, "
        f"count(*) FROM jobs WHERE state IN {FINAL} GROUP BY 1, 2"
    )
    for name, columns, where in INDEXES:
        op.create_index(name, "jobs", columns, sqlite_where=sa.text(where))


def _upgrade_postgres() -> None:
    bind = op.get_bind()
    # Both tables at once, jobs first as every writer does (a transition, then its ledger
    # row): taken one by one with the triggers, they deadlock with a writer holding jobs.
    # Writers queue behind this lock until the commit below; never longer than 10 s.
    op.execute("SET LOCAL lock_timeout = '10s'")
    op.execute("LOCK TABLE jobs, ledger IN SHARE ROW EXCLUSIVE MODE")
    for statement in _PG_FUNCTIONS:
        op.execute(statement)
    # The triggers' lock is held until this transaction commits: nothing is written to
    # either table meanwhile, so the boundary and the snapshot split the work exactly.
    boundary = bind.execute(sa.text("SELECT coalesce(max(id), 0) FROM ledger")).scalar_one()
    snapshot = bind.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
    with bind.engine.connect() as reader:
        reader = reader.execution_options(isolation_level="REPEATABLE READ")
        reader.execute(sa.text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
        with op.get_context().autocommit_block():  # commits: writers go on, now counted
            final_jobs = reader.execute(sa.text(_FINAL_JOBS_PG)).all()
            reader.rollback()
            if final_jobs:
                bind.execute(
                    sa.text(_ADD_JOB_STATE_DAY),
                    [{"day": d, "state": s, "slot": k, "jobs": n} for d, s, k, n in final_jobs],
                )
            day, slot = "(created_at AT TIME ZONE 'UTC')::date", _PG_SLOT.format("job_id")
            for low in range(0, int(boundary), BATCH):
                where = f"WHERE id > {low} AND id <= {min(low + BATCH, int(boundary))}"
                bind.execute(sa.text(_ADD_LEDGER_DAYS.format(day=day, slot=slot, where=where)))
            for name, columns, where in INDEXES:
                op.create_index(
                    name,
                    "jobs",
                    columns,
                    postgresql_where=sa.text(where),
                    postgresql_concurrently=True,
                )


def upgrade() -> None:
    _create_tables()
    if op.get_bind().dialect.name == "postgresql":
        _upgrade_postgres()
    else:
        _upgrade_sqlite()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            for name, _, _ in INDEXES:
                op.drop_index(name, "jobs", postgresql_concurrently=True)
        op.execute("DROP TRIGGER job_state_days_count ON jobs")
        op.execute("DROP TRIGGER ledger_days_add ON ledger")
        op.execute("DROP FUNCTION job_state_days_count()")
        op.execute("DROP FUNCTION ledger_days_add()")
    else:
        for name, _, _ in INDEXES:
            op.drop_index(name, "jobs")
        for trigger in _SQLITE_TRIGGER_NAMES:
            op.execute(f"DROP TRIGGER {trigger}")
    op.drop_table("job_state_days")
    op.drop_table("ledger_days")
