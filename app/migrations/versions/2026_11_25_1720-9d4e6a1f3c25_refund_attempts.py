"""jobs.refund_attempts: count refund attempts, so an unknown refund can be parked

Revision ID: 9d4e6a1f3c25
Revises: 5b8f3c2e91d7
Create Date: 2026-11-25 17:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9d4e6a1f3c25"
down_revision: str | None = "5b8f3c2e91d7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("refund_attempts", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("refund_attempts")
