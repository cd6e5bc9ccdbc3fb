"""Rollups kept beside the ledgers and the jobs so operator totals and reports scan neither.

All are maintained by database triggers in the transaction that writes the ledger row or
changes the job's state, whatever code path does it: `ledger_days` and `job_state_days`
(migration 46513efdb051), the per-payer and per-key ones (migration 13c505c2cf03). Each
day and kind of `ledger_days` and `job_state_days` is spread over `SLOTS` rows (by a hash
of the job id, on Postgres): the transactions that add to today's row hold its lock until
they commit, and one row per day would make every charge of the day wait for the one
before it. Readers sum the slots. The per-payer and per-key rows have no slots: payers
spread them, and every debit of a key already locks the key's own row in `api_keys`.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, Date, Index, SmallInteger, String
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


class PayerRunning(Base):
    """A payer's on-chain ledger sums from the first row up to the end of a UTC day (of
    `ledger.created_at`), one row per payer and day the payer has a row on.

    Running sums, not sums per day: a window's sums per payer are the row at its end less
    the row at its start (the last row before each), two rows per payer however long the
    window; sums per day would need a row per payer and day of the window. A column per
    kind, and only the ledger's trigger writes it; payers spread the rows.
    """

    __tablename__ = "payer_running"
    # The report by payer reads the days just before a window's ends as one range, from the
    # index alone (migration 5d2e8b1c7a94).
    __table_args__ = (
        Index(
            "ix_payer_running_day",
            "day",
            postgresql_include=["payer", "charges", "upstream_spend", "refunds"],
        ),
    )

    payer: Mapped[str] = mapped_column(String(42), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    charges: Mapped[int] = mapped_column(BigInteger)
    upstream_spend: Mapped[int] = mapped_column(BigInteger)
    refunds: Mapped[int] = mapped_column(BigInteger)


class PayerTotal(Base):
    """The on-chain ledger's sums per job payer over all time: the all-time report reads these
    rows alone. The trigger writes a payer's row before its running rows: its lock makes
    the payer's writers take turns."""

    __tablename__ = "payer_totals"

    payer: Mapped[str] = mapped_column(String(42), primary_key=True)
    charges: Mapped[int] = mapped_column(BigInteger)
    upstream_spend: Mapped[int] = mapped_column(BigInteger)
    refunds: Mapped[int] = mapped_column(BigInteger)


class KeyDay(Base):
    """Money of key-paid jobs per UTC day, key, job payer and kind: the on-chain ledger's rows
    of the key's jobs (kinds charge, upstream, refund) and the key ledger's debits and
    credits (top-ups are not counted; a row without a job has payer '').

    A kind per row, not a column per kind: a debit locks its row after the key's row in
    `api_keys`, a credit before it, so a debit and a credit must never share a row.
    """

    __tablename__ = "key_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payer: Mapped[str] = mapped_column(String(42), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)
