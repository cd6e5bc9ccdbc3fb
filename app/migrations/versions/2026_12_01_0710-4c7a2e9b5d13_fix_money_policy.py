"""fix-money-policy: the job's spend-cap reservation; indexes for per-payer limits

Revision ID: 4c7a2e9b5d13
Revises: 4e2b7c9d1a58
Create Date: 2026-12-01 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4c7a2e9b5d13"
down_revision: str | None = "4e2b7c9d1a58"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("spend_hour", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("spend_reserved", sa.BigInteger(), nullable=False, server_default="0")
        )
    # Small partial indexes: the per-payer counts read only unsettled or refunded jobs.
    op.create_index(
        "ix_jobs_payer_unsettled",
        "jobs",
        ["payer"],
        postgresql_where=sa.text("settle_tx IS NULL"),
        sqlite_where=sa.text("settle_tx IS NULL"),
    )
    op.create_index(
        "ix_jobs_payer_refunds",
        "jobs",
        ["payer", "created_at"],
        postgresql_where=sa.text("refund_amount IS NOT NULL"),
        sqlite_where=sa.text("refund_amount IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_payer_refunds", table_name="jobs")
    op.drop_index("ix_jobs_payer_unsettled", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("spend_reserved")
        batch.drop_column("spend_hour")
