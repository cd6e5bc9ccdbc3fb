"""team gateway: api_keys, api_key_days, key_ledger (append-only), operator_actions,
jobs.api_key_id

Revision ID: c3f8a1d2e6b4
Revises: b7e2c4a9d1f0
Create Date: 2026-12-01 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c3f8a1d2e6b4"
down_revision: str | None = "b7e2c4a9d1f0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PG_FUNCTION = """
CREATE FUNCTION key_ledger_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'key_ledger is append-only';
END
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(20), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("budget_atomic", sa.BigInteger(), nullable=True),
        sa.Column("spent_atomic", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("daily_budget_atomic", sa.BigInteger(), nullable=True),
        sa.Column("rate_per_minute", sa.Integer(), nullable=True),
        sa.Column("charge_at", sa.String(8), server_default="sale", nullable=False),
        sa.Column("own_jobs_only", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("spent_atomic >= 0", name=op.f("ck_api_keys_spent_not_negative")),
        sa.CheckConstraint(
            "budget_atomic IS NULL OR spent_atomic <= budget_atomic",
            name=op.f("ck_api_keys_within_budget"),
        ),
        sa.CheckConstraint(
            "charge_at IN ('sale', 'cost')", name=op.f("ck_api_keys_charge_at_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_api_keys_secret_hash")),
    )
    op.create_table(
        "api_key_days",
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_api_key_days_amount_not_negative")),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_api_key_days_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("key_id", "day", name=op.f("pk_api_key_days")),
    )
    op.create_table(
        "key_ledger",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_key_ledger_amount_positive")),
        sa.CheckConstraint(
            "kind IN ('debit', 'credit', 'topup')", name=op.f("ck_key_ledger_kind_known")
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_key_ledger_job_id_jobs")),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_key_ledger_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_key_ledger")),
    )
    op.create_index(op.f("ix_key_ledger_key_id"), "key_ledger", ["key_id"])
    op.create_index(op.f("ix_key_ledger_created_at"), "key_ledger", ["created_at"])
    op.create_index(
        "uq_key_ledger_job_id_kind",
        "key_ledger",
        ["job_id", "kind"],
        unique=True,
        postgresql_where=sa.text("job_id IS NOT NULL"),
        sqlite_where=sa.text("job_id IS NOT NULL"),
    )
    op.create_table(
        "operator_actions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_operator_actions_job_id_jobs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_actions")),
    )
    op.create_index(op.f("ix_operator_actions_job_id"), "operator_actions", ["job_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("api_key_id", sa.String(40), nullable=True))
        batch.create_foreign_key(
            op.f("fk_jobs_api_key_id_api_keys"), "api_keys", ["api_key_id"], ["id"]
        )
        batch.create_index(op.f("ix_jobs_api_key_id"), ["api_key_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER key_ledger_append_only BEFORE UPDATE OR DELETE ON key_ledger "
            "FOR EACH ROW EXECUTE FUNCTION key_ledger_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER key_ledger_no_{action.lower()} BEFORE {action} ON key_ledger "
                "BEGIN SELECT RAISE(ABORT, 'key_ledger is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER key_ledger_append_only ON key_ledger")
        op.execute("DROP FUNCTION key_ledger_append_only()")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(op.f("ix_jobs_api_key_id"))
        batch.drop_constraint(op.f("fk_jobs_api_key_id_api_keys"), type_="foreignkey")
        batch.drop_column("api_key_id")
    op.drop_index(op.f("ix_operator_actions_job_id"), table_name="operator_actions")
    op.drop_table("operator_actions")
    op.drop_index("uq_key_ledger_job_id_kind", table_name="key_ledger")
    op.drop_index(op.f("ix_key_ledger_created_at"), table_name="key_ledger")
    op.drop_index(op.f("ix_key_ledger_key_id"), table_name="key_ledger")
    op.drop_table("key_ledger")
    op.drop_table("api_key_days")
    op.drop_table("api_keys")
