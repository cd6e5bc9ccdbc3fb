"""Tables: one row per paid job, and an append-only ledger of every transfer."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.jobs import rollup_tables  # noqa: F401  (registers the totals' rollups)
from app.keys import models as key_models  # noqa: F401  (jobs.api_key_id refers to api_keys)


class JobState(StrEnum):
    """Persisted steps of a paid job; each transition is committed before the next step."""

    VERIFIED = "verified"  # client payment verified, not yet settled
    PAID = "paid"  # client payment settled on chain
    UPSTREAM_SIGNED = "upstream_signed"  # our upstream payment signed and stored, maybe sent
    SUBMITTED = "submitted"  # upstream accepted the job
    COMPLETED = "completed"
    FAILED = "failed"  # upstream job failed (refund outcome on the row)
    PAYMENT_FAILED = "payment_failed"  # client payment refused at settlement: nothing charged
    REFUNDING = "refunding"
    REFUNDED = "refunded"
    NEEDS_ATTENTION = "needs_attention"


# Steps after which the client's HTTP request has its answer.
ANSWERED_STATES = frozenset(
    {
        JobState.SUBMITTED,
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.PAYMENT_FAILED,
        JobState.REFUNDING,
        JobState.REFUNDED,
        JobState.NEEDS_ATTENTION,
    }
)
FINAL_STATES = frozenset(
    {
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.PAYMENT_FAILED,
        JobState.REFUNDED,
        JobState.NEEDS_ATTENTION,
    }
)
# Jobs someone still has to move forward: what the worker claims (a partial index holds them).
UNFINISHED_STATES = tuple(s for s in JobState if s not in FINAL_STATES)
UNFINISHED_SQL = "state IN (" + ", ".join(f"'{s.value}'" for s in UNFINISHED_STATES) + ")"


class LedgerKind(StrEnum):
    """Kinds of transfer the gateway takes part in."""

    CHARGE = "charge"  # client -> operator
    UPSTREAM = "upstream"  # hot wallet -> upstream
    REFUND = "refund"  # hot wallet -> client


class Job(Base):
    """A paid request and everything we know about its money and its upstream job."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("pay_network", "payer", "pay_nonce", name="uq_jobs_payment_identity"),
        Index("ix_jobs_state_next_check_at", "state", "next_check_at"),
        # Windowed counts by state and job lists by creation time (state: index-only counts).
        Index("ix_jobs_created_at", "created_at", "state"),
        # The worker's due rows and the unfinished jobs' counts, flat with the finished ones.
        Index(
            "ix_jobs_due",
            "next_check_at",
            "state",
            postgresql_where=text(UNFINISHED_SQL),
            sqlite_where=text(UNFINISHED_SQL),
        ),
        Index(
            "ix_jobs_error_code",
            "error_code",
            postgresql_where=text("error_code IS NOT NULL"),
            sqlite_where=text("error_code IS NOT NULL"),
        ),
        Index(
            "ix_jobs_payer_unsettled",
            "payer",
            postgresql_where=text("settle_tx IS NULL"),
            sqlite_where=text("settle_tx IS NULL"),
        ),
        Index(
            "ix_jobs_payer_refunds",
            "payer",
            "created_at",
            postgresql_where=text("refund_amount IS NOT NULL"),
            sqlite_where=text("refund_amount IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    state: Mapped[str] = mapped_column(String(24), index=True)
    route: Mapped[str] = mapped_column(String(200))
    request_body: Mapped[dict[str, Any]] = mapped_column(JSON)
    fingerprint: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)

    # What the client paid us.
    x402_version: Mapped[int] = mapped_column(Integer)
    payer: Mapped[str] = mapped_column(String(42))
    pay_network: Mapped[str] = mapped_column(String(40))
    pay_asset: Mapped[str] = mapped_column(String(42))
    pay_amount: Mapped[int] = mapped_column(BigInteger)
    pay_to: Mapped[str] = mapped_column(String(42))
    pay_nonce: Mapped[str] = mapped_column(String(66))
    pay_valid_before: Mapped[int] = mapped_column(BigInteger)
    payment_payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    payment_requirements: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Paid with an API key's budget instead of an x402 payment (None: paid over x402).
    api_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"), index=True)
    settle_tx: Mapped[str | None] = mapped_column(String(80))
    settle_attempts: Mapped[int] = mapped_column(Integer, default=0)

    # What we paid the upstream; the signed header is stored before it is sent.
    upstream_payment_header: Mapped[str | None] = mapped_column(Text)
    upstream_nonce: Mapped[str | None] = mapped_column(String(66))
    upstream_amount: Mapped[int | None] = mapped_column(BigInteger)
    upstream_pay_to: Mapped[str | None] = mapped_column(String(42))
    upstream_valid_before: Mapped[int | None] = mapped_column(BigInteger)
    upstream_tx: Mapped[str | None] = mapped_column(String(80))
    upstream_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Upstream spend counted against the daily cap for this job, and the hour it is counted
    # in: reserved when the job is recorded, before the client is charged.
    spend_hour: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    spend_reserved: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    upstream_job_id: Mapped[str | None] = mapped_column(String(200))
    upstream_request_id: Mapped[str | None] = mapped_column(String(200))
    upstream_status_url: Mapped[str | None] = mapped_column(Text)
    # Unreadable status answers in a row (malformed, too large, redirect); a good one resets it.
    bad_status_reads: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    # Outcome.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(80))
    error_message: Mapped[str | None] = mapped_column(Text)
    refund_amount: Mapped[int | None] = mapped_column(BigInteger)
    refund_nonce: Mapped[str | None] = mapped_column(String(66))
    refund_payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    refund_tx: Mapped[str | None] = mapped_column(String(80))
    refund_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    # Background work scheduling.
    next_check_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_polled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    @property
    def paid_with_key(self) -> bool:
        """Bought with an API key's budget: no x402 payment, nothing to settle, ever."""
        return self.api_key_id is not None

    @property
    def refund_awaits_upstream_charge(self) -> bool:
        """A refund the policy started (it carries the failure's code; the operator's refunds
        clear it), not signed yet, while our signed upstream authorization was never seen
        used: whether it goes on depends on that authorization (app.jobs.refund_gate)."""
        return (
            self.error_code is not None
            and self.refund_payload is None
            and self.upstream_nonce is not None
            and self.upstream_tx is None
        )

    @property
    def client_charged(self) -> bool:
        """The buyer has paid: the x402 payment settled, or the key's budget was debited."""
        return self.settle_tx is not None or self.api_key_id is not None


class LedgerEntry(Base):
    """One on-chain transfer; rows are only ever inserted."""

    __tablename__ = "ledger"
    # Rows are also protected by database triggers against UPDATE and DELETE (migration).
    __table_args__ = (
        UniqueConstraint("job_id", "kind", name="uq_ledger_job_id_kind"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("kind IN ('charge', 'upstream', 'refund')", name="kind_known"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    asset: Mapped[str] = mapped_column(String(42))
    network: Mapped[str] = mapped_column(String(40))
    from_address: Mapped[str] = mapped_column(String(42))
    to_address: Mapped[str] = mapped_column(String(42))
    tx_hash: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


class OperatorAction(Base):
    """An operator's action on a job (retry, refund), with who took it and why."""

    __tablename__ = "operator_actions"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SpendHour(Base):
    """Upstream money committed (signed) per UTC hour: what the daily spend cap sums.

    24 small rows instead of every job of the day; the current hour's row is also the lock
    that makes "check the cap, then commit the spend" atomic across requests and replicas.
    """

    __tablename__ = "spend_hours"
    __table_args__ = (CheckConstraint("amount >= 0", name="amount_not_negative"),)

    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)
