"""jobs created_at index: the operator's windowed reports and job lists by creation time;
built CONCURRENTLY on Postgres

Revision ID: 242dfc8df8a8
Revises: 46513efdb051
Create Date: 2026-12-01 11:10:00

Jobs by state over a window counts whole days from the rollups and the parts of days at its
ends from `jobs` by `created_at`; without an index that was a scan of every job. `state`
is in the index so those counts read the index alone.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "242dfc8df8a8"
down_revision: str | None = "46513efdb051"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME, COLUMNS = "ix_jobs_created_at", ["created_at", "state"]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():  # writers go on while it is built
            op.create_index(NAME, "jobs", COLUMNS, postgresql_concurrently=True)
    else:
        op.create_index(NAME, "jobs", COLUMNS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(NAME, "jobs", postgresql_concurrently=True)
    else:
        op.drop_index(NAME, "jobs")
