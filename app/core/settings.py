"""Typed configuration from `X402R_*` environment variables and `.env`, validated at start-up."""

from __future__ import annotations

from decimal import Decimal
from functools import cached_property
from typing import Literal, Self

from eth_account import Account
from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from web3 import Web3
from x402.mechanisms.evm.v1.constants import V1_NETWORK_CHAIN_IDS

from app.core.database_url import async_database_url
from app.core.modes import LogFormat, RefundPolicy, SettlementOrder
from app.core.origins import Origin, origin_of, parse_origin
from app.core.pay_options import PayOption, all_options, check_reachable
from app.core.ratelimit import Rate

DOPAMINT_EDIT_URL = "https://x402-dev.dopamint.ai/api/ai/generations/images/nano-banana-edit"
BASE_USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
MIN_ADMIN_TOKEN_CHARS = 32  # a guessable operator token exposes the ledger and metrics


def _checksum(value: str, name: str) -> str:
    if not Web3.is_address(value):
        raise ValueError(f"{name} is not an EVM address: {value!r}")
    return str(Web3.to_checksum_address(value))


class Settings(BaseSettings):
    """Every knob of the service; secrets are SecretStr and have no default."""

    # An empty variable means "not set" (as `X402R_RPC_URL=` in an env file or compose).
    # No env file by default: the CLI passes the operator's `.env` explicitly (`--env-file`),
    # so the sandbox, the tests and the library never pick one up from the working directory.
    model_config = SettingsConfigDict(
        env_prefix="X402R_", env_file=None, extra="ignore", frozen=True, env_ignore_empty=True
    )

    # Where we run and how we are reached. No default database: production must name one
    # (a SQLite file is fine when asked for by URL).
    database_url: str = Field(
        description="postgresql://… (asyncpg) or sqlite:///path (aiosqlite)",
    )
    public_base_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8402")
    log_level: str = Field("INFO", pattern="(?i)^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    log_format: LogFormat = Field(LogFormat.TEXT, description="text (key=value) or json lines")
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for /v1/admin/* and /metrics (unset: disabled)"
    )
    auto_migrate: bool = Field(True, description="Run `alembic upgrade head` at start-up")
    db_pool_size: int = Field(10, ge=1, le=200, description="Postgres connections kept open")
    db_max_overflow: int = Field(10, ge=0, le=200, description="Extra connections under load")

    # What we sell and for how much.
    network: str = Field("base", description="x402 v1 network name; v2 uses its CAIP-2 id")
    asset: str = BASE_USDC
    pay_to: str = Field(description="Operator address that receives client payments")
    markup_percent: Decimal = Decimal("20")
    markup_fixed_atomic: int = Field(0, ge=0)
    max_timeout_seconds: int = Field(300, ge=30, le=3600)

    # Facilitator: remote HTTP, or embedded (gas key + RPC).
    facilitator_url: AnyHttpUrl | None = None
    facilitator_auth_header: SecretStr | None = None
    facilitator_private_key: SecretStr | None = None
    rpc_url: AnyHttpUrl | None = None
    allow_no_rpc: bool = Field(
        False,
        description="Run without X402R_RPC_URL (sandbox and tests only): a settlement whose "
        "answer is lost can then never be resolved",
    )
    facilitator_timeout_s: float = Field(20.0, gt=0)
    rpc_log_range_blocks: int = Field(
        2_000, ge=1, le=100_000, description="Most blocks per eth_getLogs the RPC accepts"
    )

    # The upstream and the wallet that pays it.
    upstream_url: AnyHttpUrl = AnyHttpUrl(DOPAMINT_EDIT_URL)
    upstream_price_atomic: int = Field(52700, gt=0, description="Expected upstream price")
    hot_wallet_private_key: SecretStr
    upstream_timeout_s: float = Field(60.0, gt=0)
    max_upstream_price_atomic: int = Field(100_000, gt=0)
    daily_upstream_cap_atomic: int = Field(50_000_000, gt=0)
    upstream_requirements_ttl_s: float = Field(300.0, ge=0)
    # Our upstream authorization can be executed until it expires: a refund that depends on
    # the upstream not having charged us waits up to this long (+ a few seconds).
    upstream_auth_validity_s: int = Field(
        300, ge=30, le=3600, description="Longest validity of our signed upstream payment"
    )
    # What we accept to pay the upstream in: one exact option on this network and asset
    # (and to this payee, when pinned), whatever else its 402 lists.
    upstream_network: str = Field("base", description="x402 v1 network name or CAIP-2 id")
    upstream_asset: str = BASE_USDC
    upstream_pay_to: str | None = Field(None, description="Pin the upstream's payee (unset: any)")
    # Where an upstream job's status may be read from, and how much of it.
    upstream_status_origins: str = Field(
        "", description="Comma-separated extra origins a statusUrl may use"
    )
    upstream_allow_private_addresses: bool = Field(
        False, description="Let status URLs resolve to loopback/private/link-local addresses"
    )
    upstream_status_max_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)
    max_job_age_s: float = Field(3600.0, gt=0, description="A job still processing then fails")

    # Money-safety policy.
    payment_identifier_required: bool = Field(
        False, description="Require the x402 payment-identifier extension (or Idempotency-Key)"
    )
    # Default: refund what the upstream did not charge us; `full` lets a payer whose requests
    # the upstream accepts and then fails make the operator pay (see refunds_per_payer_per_day).
    refund_policy: RefundPolicy = RefundPolicy.IF_UPSTREAM_NOT_CHARGED
    refunds_per_payer_per_day: int = Field(
        3, ge=0, description="refund_policy=full: refunds of upstream-charged jobs per payer/24 h"
    )
    settlement_order: SettlementOrder = SettlementOrder.SETTLE_FIRST
    settle_after_max_unsettled_per_payer: int = Field(
        1, ge=1, le=100, description="settle_after: a payer's jobs awaiting settlement at once"
    )

    # Abuse limits: signed payments that reach the facilitator's verify, per fixed window.
    verify_rate_per_payer: str = Field(
        "60/minute", description="New payments verified per payer ('N/minute', int, or 'off')"
    )
    verify_rate_per_client: str = Field(
        "300/minute", description="New payments verified per client address (or 'off')"
    )
    trusted_proxy_hops: int = Field(
        0, ge=0, le=10, description="Proxies in front of us whose X-Forwarded-For is trusted"
    )
    redis_url: SecretStr | None = Field(
        None, description="redis://… for the rate-limit counters (unset: the database)"
    )
    readyz_facilitator_ttl_s: float = Field(
        30.0, ge=0, description="How long /readyz reuses the facilitator's /supported answer"
    )

    # Operator tools: readiness floors and how long operator reads are reused.
    hot_wallet_floor_atomic: int = Field(
        0, ge=0, description="/readyz fails while the hot wallet holds less than this"
    )
    operator_cache_ttl_s: float = Field(
        15.0, ge=0, description="Reuse of the hot-wallet balance and upstream 402 reads"
    )

    # Status polling.
    poll_interval_s: float = Field(2.0, gt=0)
    max_wait_s: float = Field(30.0, ge=0, le=120)
    workers_enabled: bool = True
    worker_interval_s: float = Field(1.0, gt=0)
    result_cache_mib: int = Field(
        8, ge=0, le=65536, description="Memory for finished jobs' responses, per process (0: off)"
    )

    # Payer-bound job reads: `capability` (the job id is enough) or `payer` (app/api/read_proof.py).
    job_reads: Literal["capability", "payer"] = "capability"
    siwx_max_age_s: int = Field(300, ge=30, le=3600, description="How long a read proof holds")

    # Several networks and assets in `accepts` (JSON; app/core/pay_options.py), checked at start.
    extra_offers: str = Field("[]", description="JSON list of {network, asset, pay_to, …}")

    @cached_property
    def pay_options(self) -> tuple[PayOption, ...]:
        """Every accepted way to pay, the primary one first."""
        return all_options(self.network, self.asset, self.pay_to, self.extra_offers)

    @model_validator(mode="after")
    def _extra_offers(self) -> Self:
        check_reachable(self.pay_options, bool(self.rpc_url), bool(self.facilitator_private_key))
        return self

    @field_validator("admin_token")
    @classmethod
    def _admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(
                f"must be at least {MIN_ADMIN_TOKEN_CHARS} characters (e.g. `openssl rand -hex 32`)"
            )
        return value

    @field_validator("verify_rate_per_payer", "verify_rate_per_client", mode="before")
    @classmethod
    def _rate(cls, value: object) -> str:
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ValueError("must be a rate such as '30/minute', an int (per minute) or 'off'")
        Rate.parse(value)  # raises ValueError naming what is wrong
        return str(value)

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("redis://", "rediss://")):
            raise ValueError("must start with redis:// or rediss://")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return async_database_url(value)

    @field_validator("pay_to", "asset", "upstream_asset", "upstream_pay_to")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return None if value is None else _checksum(value, "address")

    @field_validator("upstream_network")
    @classmethod
    def _network(cls, value: str) -> str:
        if not value.startswith("eip155:") and value not in V1_NETWORK_CHAIN_IDS:
            raise ValueError(f"unknown x402 network {value!r}")
        return value

    @field_validator("upstream_status_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            parse_origin(item)
        return value

    @field_validator("markup_percent")
    @classmethod
    def _markup(cls, value: Decimal) -> Decimal:
        if value < 0 or value > 1000:
            raise ValueError("must be between 0 and 1000")
        if value != value.quantize(Decimal("0.01")):
            raise ValueError("at most two decimal places (it is applied in basis points)")
        return value

    @field_validator("hot_wallet_private_key", "facilitator_private_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            Account.from_key(value.get_secret_value())
        except Exception as exc:  # the key itself must never reach the message
            raise ValueError("is not a valid hex private key") from exc
        return value

    @model_validator(mode="after")
    def _facilitator_mode(self) -> Self:
        embedded = self.facilitator_private_key is not None
        if self.facilitator_url is None and not embedded:
            raise ValueError(
                "set X402R_FACILITATOR_URL (remote facilitator) or "
                "X402R_FACILITATOR_PRIVATE_KEY + X402R_RPC_URL (embedded facilitator)"
            )
        if self.facilitator_url is not None and embedded:
            raise ValueError(
                "X402R_FACILITATOR_URL and X402R_FACILITATOR_PRIVATE_KEY are both set: keep "
                "one (a remote facilitator, or the embedded one with its gas key)"
            )
        if embedded and self.rpc_url is None:
            raise ValueError("X402R_RPC_URL is required with X402R_FACILITATOR_PRIVATE_KEY")
        if self.rpc_url is None and not self.allow_no_rpc:
            # Without a chain to ask, a payment settled but unanswered stays unknown for good.
            raise ValueError(
                "X402R_RPC_URL is required: it tells whether a payment whose settlement "
                "answer was lost went through (set X402R_ALLOW_NO_RPC=true only in a sandbox)"
            )
        if self.upstream_price_atomic > self.max_upstream_price_atomic:
            raise ValueError("X402R_UPSTREAM_PRICE_ATOMIC exceeds X402R_MAX_UPSTREAM_PRICE_ATOMIC")
        return self

    @cached_property
    def status_origins(self) -> frozenset[Origin]:
        """Origins a status URL may use: the upstream's own, plus the configured ones."""
        extra = filter(None, (part.strip() for part in self.upstream_status_origins.split(",")))
        return frozenset([origin_of(str(self.upstream_url)), *map(parse_origin, extra)])

    @cached_property
    def verify_rates(self) -> tuple[Rate | None, Rate | None]:
        """(per payer, per client) rates for new payments; None: not limited."""
        return Rate.parse(self.verify_rate_per_payer), Rate.parse(self.verify_rate_per_client)

    @property
    def markup_bps(self) -> int:
        """Percent markup in integer basis points (validated to two decimals)."""
        return int(self.markup_percent * 100)

    @property
    def result_cache_bytes(self) -> int:
        """The finished-job cache's budget (`result_cache_mib`) in bytes."""
        return self.result_cache_mib * 2**20

    @property
    def payer_bound_reads(self) -> bool:
        """Job reads need the payer's sign-in-with-x proof (not only the job id)."""
        return self.job_reads == "payer"

    @property
    def base_url(self) -> str:
        """Public base URL without a trailing slash."""
        return str(self.public_base_url).rstrip("/")

    @cached_property
    def hot_wallet_address(self) -> str:
        """Address of the wallet that pays the upstream and signs refunds (derived once:
        deriving it costs more than a database write)."""
        return str(Account.from_key(self.hot_wallet_private_key.get_secret_value()).address)
