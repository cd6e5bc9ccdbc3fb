"""Tables of the team gateway: API keys, their daily spend, and their budget ledger.

Budget movements live in `key_ledger`, not in `ledger`: the ledger holds on-chain transfers
only, so it can always be checked against the chain row for row.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base


class ChargeAt(StrEnum):
    """What a key's job costs its budget."""

    SALE = "sale"  # the price x402 payers pay
    COST = "cost"  # what the upstream charges us


class KeyLedgerKind(StrEnum):
    """Movements of a key's budget."""

    DEBIT = "debit"  # a job bought with the key
    CREDIT = "credit"  # a failed key-paid job given back to the key
    TOPUP = "topup"  # the operator raised the key's budget


class ApiKey(Base):
    """A bearer key; only its SHA-256 is stored (the secret is shown once, at creation)."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("spent_atomic >= 0", name="spent_not_negative"),
        CheckConstraint(
            "budget_atomic IS NULL OR spent_atomic <= budget_atomic", name="within_budget"
        ),
        CheckConstraint("charge_at IN ('sale', 'cost')", name="charge_at_known"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    prefix: Mapped[str] = mapped_column(String(20))  # shown in lists; not enough to use it
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    budget_atomic: Mapped[int | None] = mapped_column(BigInteger)  # None: no total budget
    spent_atomic: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    daily_budget_atomic: Mapped[int | None] = mapped_column(BigInteger)
    rate_per_minute: Mapped[int | None] = mapped_column(Integer)
    charge_at: Mapped[str] = mapped_column(String(8), default="sale", server_default="sale")
    own_jobs_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ApiKeyDay(Base):
    """What a key spent on one UTC day: the row its per-day budget is checked against."""

    __tablename__ = "api_key_days"
    __table_args__ = (CheckConstraint("amount >= 0", name="amount_not_negative"),)

    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)


class KeyLedgerEntry(Base):
    """One movement of a key's budget; rows are only ever inserted."""

    __tablename__ = "key_ledger"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("kind IN ('debit', 'credit', 'topup')", name="kind_known"),
        # One debit and at most one credit per job.
        Index(
            "uq_key_ledger_job_id_kind",
            "job_id",
            "kind",
            unique=True,
            postgresql_where=text("job_id IS NOT NULL"),
            sqlite_where=text("job_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )
