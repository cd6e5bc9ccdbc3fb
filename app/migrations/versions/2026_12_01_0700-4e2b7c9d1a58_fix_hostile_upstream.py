"""jobs.bad_status_reads: unreadable upstream status answers in a row end the job

Revision ID: 4e2b7c9d1a58
Revises: 9d4e6a1f3c25
Create Date: 2026-12-01 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4e2b7c9d1a58"
down_revision: str | None = "9d4e6a1f3c25"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("bad_status_reads", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("bad_status_reads")
