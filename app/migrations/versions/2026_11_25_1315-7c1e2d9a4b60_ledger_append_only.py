"""ledger append-only: positive amounts, known kinds, no UPDATE or DELETE

Revision ID: 7c1e2d9a4b60
Revises: 39a04931b3e1
Create Date: 2026-11-25 13:15:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "7c1e2d9a4b60"
down_revision: str | None = "39a04931b3e1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PG_FUNCTION = """
CREATE FUNCTION ledger_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'ledger is append-only';
END
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.create_check_constraint("amount_positive", "amount > 0")
        batch.create_check_constraint("kind_known", "kind IN ('charge', 'upstream', 'refund')")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger "
            "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER ledger_no_{action.lower()} BEFORE {action} ON ledger "
                "BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER ledger_append_only ON ledger")
        op.execute("DROP FUNCTION ledger_append_only()")
    else:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER ledger_no_{action}")
    with op.batch_alter_table("ledger") as batch:
        batch.drop_constraint(op.f("ck_ledger_kind_known"), type_="check")
        batch.drop_constraint(op.f("ck_ledger_amount_positive"), type_="check")
