"""spend_hours: upstream spend per UTC hour for the daily cap (was a sum over jobs)

Revision ID: 5b8f3c2e91d7
Revises: 7c1e2d9a4b60
Create Date: 2026-11-25 16:00:00
"""

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "5b8f3c2e91d7"
down_revision: str | None = "7c1e2d9a4b60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_jobs = sa.table(
    "jobs",
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("upstream_amount", sa.BigInteger()),
)


def upgrade() -> None:
    spend_hours = op.create_table(
        "spend_hours",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_spend_hours_amount_not_negative")),
        sa.PrimaryKeyConstraint("hour", name=op.f("pk_spend_hours")),
    )
    # Carry over what the cap counted until now: the last day's signed upstream amounts.
    since = datetime.now(UTC) - timedelta(hours=26)
    rows = op.get_bind().execute(
        sa.select(_jobs.c.created_at, _jobs.c.upstream_amount).where(
            _jobs.c.upstream_amount.is_not(None), _jobs.c.created_at >= since
        )
    )
    per_hour: Counter[datetime] = Counter()
    for created_at, amount in rows:
        moment = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
        per_hour[moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)] += amount
    op.bulk_insert(spend_hours, [{"hour": h, "amount": a} for h, a in per_hour.items()])


def downgrade() -> None:
    op.drop_table("spend_hours")
