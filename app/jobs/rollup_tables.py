"""Rollups kept beside the ledger and the jobs so operator totals never scan either table.

Both are maintained by database triggers (migration 46513efdb051) in the transaction that
writes the ledger row or changes the job's state, whatever code path does it. Each day and
kind is spread over `SLOTS` rows (by a hash of the job id, on Postgres): the transactions
that add to today's row hold its lock until they commit, and one row per day would make
every charge of the day wait for the one before it. Readers sum the slots.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, Date, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base

SLOTS = 8  # rows per day and kind (Postgres; SQLite has one writer at a time and uses slot 0)


class LedgerDay(Base):
    """Sum and count of the ledger's rows per UTC day (of `ledger.created_at`) and kind."""

    __tablename__ = "ledger_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    entries: Mapped[int] = mapped_column(BigInteger)


class JobStateDay(Base):
    """Jobs now in each final state, per UTC day they were created.

    Unfinished jobs are not counted here (they are few, and counted from the partial index
    `ix_jobs_due`): a counter row per step of every paid call would be a hot row.
    """

    __tablename__ = "job_state_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    state: Mapped[str] = mapped_column(String(24), primary_key=True)
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    jobs: Mapped[int] = mapped_column(BigInteger)
