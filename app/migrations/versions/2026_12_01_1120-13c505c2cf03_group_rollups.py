"""group rollups: payer_running, payer_totals and key_days kept by triggers on ledger and
key_ledger; built without blocking writes on Postgres

Revision ID: 13c505c2cf03
Revises: 242dfc8df8a8
Create Date: 2026-12-01 11:20:00

The reports by payer and by key joined the whole ledger to its jobs on every call. The
ledger's trigger now looks up the row's job (one primary-key read) and adds the row to its
payer's all-time row and running sums and, for a key-paid job, to its key's day; the key
ledger's trigger adds debits and credits to the key's day. A payer's running sums (row
(payer, day): everything up to the end of that day) answer any window with one row per
payer at each end, where sums per day would need every day of the window.

On Postgres the triggers are created first, in a short transaction that also notes the
largest ids of both ledgers (later rows are counted by the triggers). The backfill then
runs in autocommit: the history summed per day into work tables without holding a lock,
then added in: key_days in one statement, the payers' running sums a batch of payers at a
time, each batch in a transaction that first locks those payers' all-time rows, as the
trigger does.
A job's payer and key never change, so no snapshot of the jobs is needed.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "13c505c2cf03"
down_revision: str | None = "242dfc8df8a8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PAYER_BATCH = 10  # payers merged per transaction: writers of those payers wait for it
WORK = "payer_history_backfill"  # the payers' history per day, while the backfill runs
WORK_KEYS = "key_days_backfill"  # the keys' history per day, while the backfill runs
_KINDS = (("charges", "charge"), ("upstream_spend", "upstream"), ("refunds", "refund"))
_COLUMNS = ", ".join(c for c, _ in _KINDS)


def _each(template: str) -> str:
    """`template` once per kind column ({c}), joined by commas."""
    return ", ".join(template.format(c=c) for c, _ in _KINDS)


def _amounts(row: str) -> list[str]:
    """Ledger row `row`'s amount in its kind's column, 0 in the others."""
    return [f"CASE WHEN {row}.kind = '{k}' THEN {row}.amount ELSE 0 END" for _, k in _KINDS]


_NEW = dict(zip((c for c, _ in _KINDS), _amounts("NEW"), strict=True))
_NEW_VALUES = ", ".join(_NEW.values())
_ADD_NEW = ", ".join(f"{c} = {{t}}.{c} + {v}" for c, v in _NEW.items())


def _payer_steps(day: str, payer: str) -> str:
    """The trigger's statements for the row's payer, in this order: the all-time row first
    (its lock makes the payer's writers take turns, so each sees the running rows the one
    before it wrote), the running rows of later days (only for a row recorded with an earlier
    time than rows already counted), then the day's running row: the day before's plus the
    row, or the day's plus the row."""
    return f"""
    INSERT INTO payer_totals (payer, {_COLUMNS}) VALUES ({payer}, {_NEW_VALUES})
    ON CONFLICT (payer) DO UPDATE SET {_ADD_NEW.format(t="payer_totals")};
    UPDATE payer_running SET {_ADD_NEW.format(t="payer_running")}
    WHERE payer = {payer} AND day > {day};
    INSERT INTO payer_running (payer, day, {_COLUMNS})
    SELECT {payer}, {day}, {", ".join(f"coalesce(max({c}), 0) + {v}" for c, v in _NEW.items())}
    FROM (SELECT {_COLUMNS} FROM payer_running
          WHERE payer = {payer} AND day < {day} ORDER BY day DESC LIMIT 1) AS day_before
    WHERE true
    ON CONFLICT (payer, day) DO UPDATE SET {_ADD_NEW.format(t="payer_running")};"""


_KEY_DAYS_ADD = """
    INSERT INTO key_days (day, key_id, payer, kind, amount) VALUES ({values})
    ON CONFLICT (day, key_id, payer, kind) DO UPDATE SET amount = key_days.amount + {amount};"""
_PG_DAY = "(NEW.created_at AT TIME ZONE 'UTC')::date"
_PG_KEY_ONCHAIN = _KEY_DAYS_ADD.format(
    values=f"{_PG_DAY}, owner.api_key_id, owner.payer, NEW.kind, NEW.amount", amount="NEW.amount"
)
_PG_KEYED = _KEY_DAYS_ADD.format(
    values=f"{_PG_DAY}, NEW.key_id, coalesce((SELECT payer FROM jobs WHERE id = NEW.job_id), ''),"
    " NEW.kind, NEW.amount",
    amount="NEW.amount",
)
_PG_FUNCTIONS = (
    f"""CREATE FUNCTION ledger_groups_add() RETURNS trigger AS $$
DECLARE
    owner RECORD;
BEGIN
    SELECT payer, api_key_id INTO owner FROM jobs WHERE id = NEW.job_id;
    {_payer_steps(_PG_DAY, "owner.payer")}
    IF owner.api_key_id IS NOT NULL THEN {_PG_KEY_ONCHAIN}
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql""",
    f"""CREATE FUNCTION key_ledger_groups_add() RETURNS trigger AS $$
BEGIN {_PG_KEYED}
    RETURN NULL;
END
$$ LANGUAGE plpgsql""",
    "CREATE TRIGGER ledger_groups_add AFTER INSERT ON ledger "
    "FOR EACH ROW EXECUTE FUNCTION ledger_groups_add()",
    "CREATE TRIGGER key_ledger_groups_add AFTER INSERT ON key_ledger "
    "FOR EACH ROW WHEN (NEW.kind IN ('debit', 'credit')) "
    "EXECUTE FUNCTION key_ledger_groups_add()",
)

_SQLITE_PAYER = "(SELECT payer FROM jobs WHERE id = NEW.job_id)"
_SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER ledger_groups_add AFTER INSERT ON ledger BEGIN
    {_payer_steps("date(NEW.created_at)", _SQLITE_PAYER)}
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

# Backfill; {day} is the dialect's UTC day of `l.created_at`, {where} the rows to count.
_NAMED_SUMS = ", ".join(f"sum({a}) AS {c}" for (c, _), a in zip(_KINDS, _amounts("l"), strict=True))
_HISTORY = f"""SELECT j.payer, {{day}} AS day, {_NAMED_SUMS}
FROM ledger l JOIN jobs j ON j.id = l.job_id WHERE {{where}} GROUP BY 1, 2"""
_RUNNING = f"""SELECT payer, day, {_each("sum({c}) OVER w")} FROM {{history}}
WINDOW w AS (PARTITION BY payer ORDER BY day)"""
_TOTALS = f"""INSERT INTO payer_totals (payer, {_COLUMNS})
SELECT payer, {_each("sum({c})")} FROM {{history}} WHERE {{where}} GROUP BY payer
ON CONFLICT (payer) DO UPDATE SET {_each("{c} = payer_totals.{c} + excluded.{c}")}"""
# One batch of payers into running rows the triggers may have written already: a day of
# either adds the history up to that day (`so_far`) to the trigger's running sum as of
# that day (its row, or the one before it). The UPDATE does not see the CTE's new rows;
# it names the batch's payers so that it reads their rows by index, not every row.
_MERGE = f"""WITH days AS (
    SELECT payer, day, {_each("sum({c}) AS {c}")} FROM (
        SELECT payer, day, {_COLUMNS} FROM {WORK} WHERE payer = ANY(:payers)
        UNION ALL
        SELECT payer, day, {_each("0")} FROM payer_running WHERE payer = ANY(:payers)
    ) AS both_ GROUP BY payer, day
), so_far AS (
    SELECT payer, day, {_each("sum({c}) OVER w AS {c}")} FROM days
    WINDOW w AS (PARTITION BY payer ORDER BY day)
), added AS (
    INSERT INTO payer_running (payer, day, {_COLUMNS})
    SELECT s.payer, s.day, {_each("s.{c} + coalesce(b.{c}, 0)")} FROM so_far s
    LEFT JOIN LATERAL (SELECT {_COLUMNS} FROM payer_running r
                       WHERE r.payer = s.payer AND r.day < s.day
                       ORDER BY r.day DESC LIMIT 1) b ON true
    WHERE NOT EXISTS (SELECT 1 FROM payer_running r WHERE r.payer = s.payer AND r.day = s.day)
)
UPDATE payer_running r SET {_each("{c} = r.{c} + s.{c}")}
FROM so_far s WHERE r.payer = ANY(:payers) AND r.payer = s.payer AND r.day = s.day"""
_KEY_ONCHAIN = """SELECT {day} AS day, j.api_key_id AS key_id, j.payer, l.kind,
       sum(l.amount) AS amount
FROM ledger l JOIN jobs j ON j.id = l.job_id
WHERE {where} AND j.api_key_id IS NOT NULL GROUP BY 1, 2, 3, 4"""
_KEY_KEYED = """SELECT {day} AS day, l.key_id, coalesce(j.payer, '') AS payer, l.kind,
       sum(l.amount) AS amount
FROM key_ledger l LEFT JOIN jobs j ON j.id = l.job_id
WHERE {where} AND l.kind IN ('debit', 'credit') GROUP BY 1, 2, 3, 4"""
_KEY_DAYS_ADD_ALL = """INSERT INTO key_days (day, key_id, payer, kind, amount)
SELECT day, key_id, payer, kind, sum(amount) FROM ({rows}) AS rows_ WHERE true GROUP BY 1, 2, 3, 4
ON CONFLICT (day, key_id, payer, kind) DO UPDATE SET amount = key_days.amount + excluded.amount"""


def _create_tables() -> None:
    def kinds() -> list[sa.Column[int]]:
        return [sa.Column(c, sa.BigInteger(), nullable=False) for c, _ in _KINDS]

    op.create_table(
        "payer_running",
        sa.Column("payer", sa.String(42), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *kinds(),
        sa.PrimaryKeyConstraint("payer", "day", name=op.f("pk_payer_running")),
    )
    op.create_table(
        "payer_totals",
        sa.Column("payer", sa.String(42), nullable=False),
        *kinds(),
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
    # One writer at a time, and this migration is it: the history goes in whole.
    day = "date(l.created_at)"
    history = f"WITH history AS ({_HISTORY.format(day=day, where='true')}) "
    running = _RUNNING.format(history="history")
    op.execute(f"{history}INSERT INTO payer_running (payer, day, {_COLUMNS}) {running}")
    op.execute(history + _TOTALS.format(history="history", where="true"))
    keyed = " UNION ALL ".join(q.format(day=day, where="true") for q in (_KEY_ONCHAIN, _KEY_KEYED))
    op.execute(_KEY_DAYS_ADD_ALL.format(rows=keyed))
    for trigger in _SQLITE_TRIGGERS:
        op.execute(trigger)


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
        # Summed into work tables first, with no lock held; a batch then holds its rows' locks
        # (which writers of those rows wait for) only to add the sums in.
        keyed = " UNION ALL ".join(
            q.format(day=day, where=f"l.id <= {ends[table]}")
            for q, table in ((_KEY_ONCHAIN, "ledger"), (_KEY_KEYED, "key_ledger"))
        )
        bind.execute(sa.text(f"CREATE UNLOGGED TABLE {WORK_KEYS} AS {keyed}"))
        bind.execute(sa.text(_KEY_DAYS_ADD_ALL.format(rows=f"SELECT * FROM {WORK_KEYS}")))
        bind.execute(sa.text(f"DROP TABLE {WORK_KEYS}"))
        history = _HISTORY.format(day=day, where=f"l.id <= {ends['ledger']}")
        bind.execute(sa.text(f"CREATE UNLOGGED TABLE {WORK} AS {history}"))
        bind.execute(sa.text(f"CREATE INDEX ON {WORK} (payer)"))
        bind.execute(sa.text(f"ANALYZE {WORK}"))  # plans by the batch's payers, not guesses
        payers = bind.execute(sa.text(f"SELECT DISTINCT payer FROM {WORK} ORDER BY 1")).scalars()
        payers = list(payers)
        for low in range(0, len(payers), PAYER_BATCH):
            batch = {"payers": payers[low : low + PAYER_BATCH]}
            with bind.engine.begin() as merge:  # the all-time rows' locks, then the merge
                totals = _TOTALS.format(history=WORK, where="payer = ANY(:payers)")
                merge.execute(sa.text(totals), batch)
                merge.execute(sa.text(_MERGE), batch)
        bind.execute(sa.text(f"DROP TABLE {WORK}"))
        # Statistics now, not when autovacuum comes: the reports' plans depend on them.
        bind.execute(sa.text("ANALYZE payer_running, payer_totals, key_days"))


def upgrade() -> None:
    _create_tables()
    if _postgres():
        _upgrade_postgres()
    else:
        _upgrade_sqlite()


def downgrade() -> None:
    for name, table in _TRIGGERS:
        op.execute(f"DROP TRIGGER {name}" + (f" ON {table}" if _postgres() else ""))
    if _postgres():
        for name, _ in _TRIGGERS:
            op.execute(f"DROP FUNCTION {name}()")
    for table in ("key_days", "payer_totals", "payer_running"):
        op.drop_table(table)


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"
