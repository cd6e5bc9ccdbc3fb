"""jobs and ledger

Revision ID: 39a04931b3e1
Revises:
Create Date: 2026-11-25 12:52:40.210055
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "39a04931b3e1"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("request_body", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("x402_version", sa.Integer(), nullable=False),
        sa.Column("payer", sa.String(length=42), nullable=False),
        sa.Column("pay_network", sa.String(length=40), nullable=False),
        sa.Column("pay_asset", sa.String(length=42), nullable=False),
        sa.Column("pay_amount", sa.BigInteger(), nullable=False),
        sa.Column("pay_to", sa.String(length=42), nullable=False),
        sa.Column("pay_nonce", sa.String(length=66), nullable=False),
        sa.Column("pay_valid_before", sa.BigInteger(), nullable=False),
        sa.Column("payment_payload", sa.JSON(), nullable=False),
        sa.Column("payment_requirements", sa.JSON(), nullable=False),
        sa.Column("settle_tx", sa.String(length=80), nullable=True),
        sa.Column("settle_attempts", sa.Integer(), nullable=False),
        sa.Column("upstream_payment_header", sa.Text(), nullable=True),
        sa.Column("upstream_nonce", sa.String(length=66), nullable=True),
        sa.Column("upstream_amount", sa.BigInteger(), nullable=True),
        sa.Column("upstream_pay_to", sa.String(length=42), nullable=True),
        sa.Column("upstream_valid_before", sa.BigInteger(), nullable=True),
        sa.Column("upstream_tx", sa.String(length=80), nullable=True),
        sa.Column("upstream_attempts", sa.Integer(), nullable=False),
        sa.Column("upstream_job_id", sa.String(length=200), nullable=True),
        sa.Column("upstream_request_id", sa.String(length=200), nullable=True),
        sa.Column("upstream_status_url", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error_code", sa.String(length=80), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("refund_amount", sa.BigInteger(), nullable=True),
        sa.Column("refund_nonce", sa.String(length=66), nullable=True),
        sa.Column("refund_payload", sa.JSON(), nullable=True),
        sa.Column("refund_tx", sa.String(length=80), nullable=True),
        sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_jobs_idempotency_key")),
        sa.UniqueConstraint("pay_network", "payer", "pay_nonce", name="uq_jobs_payment_identity"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_state"), ["state"], unique=False)
        batch_op.create_index(
            "ix_jobs_state_next_check_at", ["state", "next_check_at"], unique=False
        )

    op.create_table(
        "ledger",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("asset", sa.String(length=42), nullable=False),
        sa.Column("network", sa.String(length=40), nullable=False),
        sa.Column("from_address", sa.String(length=42), nullable=False),
        sa.Column("to_address", sa.String(length=42), nullable=False),
        sa.Column("tx_hash", sa.String(length=80), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_ledger_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger")),
        sa.UniqueConstraint("job_id", "kind", name="uq_ledger_job_id_kind"),
    )
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_ledger_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_job_id"))
        batch_op.drop_index(batch_op.f("ix_ledger_created_at"))

    op.drop_table("ledger")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_state_next_check_at")
        batch_op.drop_index(batch_op.f("ix_jobs_state"))

    op.drop_table("jobs")
