"""Gateway settings, offers and SDK-signed payloads for in-process tests (no processes)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from x402.http import decode_payment_required_header
from x402.schemas import PaymentPayload, PaymentPayloadV1, PaymentRequiredV1

from app.api.edits import EDIT_PATH, current_offer
from app.core.settings import Settings
from app.payments.offer import Offer, OfferCache
from sandbox.pay import payer_client
from sandbox.world import HOT_WALLET, OPERATOR, PAYER, address, key_hex

PUBLIC_BASE_URL = "https://gw.example.com"

Payload = dict[str, Any]


def make_settings(**overrides: Any) -> Settings:
    """Gateway settings for in-process tests: operator payee, unreachable facilitator."""
    values: dict[str, Any] = {
        "database_url": "sqlite+aiosqlite:///:memory:",
        "public_base_url": PUBLIC_BASE_URL,
        "pay_to": address(OPERATOR),
        "hot_wallet_private_key": key_hex(HOT_WALLET),
        "facilitator_url": "http://127.0.0.1:9",
        "allow_no_rpc": True,
        "upstream_url": "http://127.0.0.1:9/api/ai/generations/images/nano-banana-edit",
        **overrides,
    }
    return Settings(_env_file=None, **values)


def make_offer(path: str = EDIT_PATH) -> Offer:
    """The offer the route builds for `path` (no upstream quote cached: listing price)."""
    gateway = SimpleNamespace(
        settings=make_settings(),
        upstream=SimpleNamespace(cached_quote=lambda: None),
        offers=OfferCache(),
    )
    return current_offer(gateway, path)  # type: ignore[arg-type]


async def sign_v2(offer: Offer, key: str = key_hex(PAYER)) -> PaymentPayload:
    """A v2 payload the SDK client signs from our PAYMENT-REQUIRED header."""
    payload = await payer_client(key).create_payment_payload(
        decode_payment_required_header(offer.unpaid_header)
    )
    assert isinstance(payload, PaymentPayload)
    return payload


async def sign_v1(offer: Offer, key: str = key_hex(PAYER)) -> PaymentPayloadV1:
    """A v1 payload the SDK client signs from our 402 body."""
    required = PaymentRequiredV1.model_validate_json(offer.unpaid.body)
    payload = await payer_client(key, v1_only=True).create_payment_payload(required)
    assert isinstance(payload, PaymentPayloadV1)
    return payload


def wire(payload: PaymentPayload | PaymentPayloadV1) -> Payload:
    """The payload as JSON, ready to tamper with."""
    return payload.model_dump(mode="json", by_alias=True, exclude_none=True)


def file_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for config checks: a SQLite file in `tmp_path`, workers off, no RPC unless given."""
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "pay_to": address(OPERATOR),
        "hot_wallet_private_key": key_hex(HOT_WALLET),
        "facilitator_url": "http://127.0.0.1:9/",
        "workers_enabled": False,
        **overrides,
    }
    return Settings(_env_file=None, **values)
