"""Settings validation, CLI error reporting, pricing, and the operator endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from app.cli import load_settings
from app.main import create_app
from app.payments.pricing import format_usdc, sale_price
from sandbox.world import HOT_WALLET, OPERATOR, address, key_hex
from tests.helpers import ADMIN_TOKEN
from tests.settings_factory import file_settings


@pytest.mark.parametrize(
    ("upstream", "bps", "fixed", "expected"),
    [(52700, 2000, 0, 63240), (52701, 2000, 0, 63242), (1, 1, 0, 2), (52700, 0, 5, 52705)],
)
def test_sale_price_is_integer_and_rounds_up(
    upstream: int, bps: int, fixed: int, expected: int
) -> None:
    assert sale_price(upstream, bps, fixed) == expected


def test_format_usdc() -> None:
    assert format_usdc(63240) == "0.063240"
    assert format_usdc(-1_500_000) == "-1.500000"


def test_settings_refuse_ambiguous_facilitator(tmp_path: Path) -> None:
    with pytest.raises(
        ValidationError,
        match="FACILITATOR_URL and X402R_FACILITATOR_PRIVATE_KEY are both",
    ):
        file_settings(
            tmp_path,
            allow_no_rpc=True,
            facilitator_private_key=key_hex(HOT_WALLET),
            rpc_url="http://127.0.0.1:8545",
        )
    with pytest.raises(ValidationError, match="X402R_RPC_URL is required"):
        file_settings(
            tmp_path,
            allow_no_rpc=True,
            facilitator_url=None,
            facilitator_private_key=key_hex(HOT_WALLET),
        )


def test_settings_refuse_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="two decimal places"):
        file_settings(tmp_path, allow_no_rpc=True, markup_percent="12.345")
    with pytest.raises(ValidationError, match="not an EVM address"):
        file_settings(tmp_path, allow_no_rpc=True, pay_to="0x1234")
    with pytest.raises(ValidationError, match="exceeds"):
        file_settings(tmp_path, allow_no_rpc=True, upstream_price_atomic=200_000)


def test_bad_key_is_reported_without_its_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("X402R_PAY_TO", address(OPERATOR))
    monkeypatch.setenv("X402R_FACILITATOR_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("X402R_HOT_WALLET_PRIVATE_KEY", "0xnot-a-key-but-secret-looking")
    with pytest.raises(SystemExit) as exit_info:
        load_settings()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "X402R_HOT_WALLET_PRIVATE_KEY" in err
    assert "not a valid hex private key" in err
    assert "secret-looking" not in err


def test_missing_required_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("X402R_PAY_TO", "X402R_HOT_WALLET_PRIVATE_KEY", "X402R_FACILITATOR_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit):
        load_settings()
    err = capsys.readouterr().err
    assert "X402R_PAY_TO" in err
    assert "X402R_HOT_WALLET_PRIVATE_KEY" in err


@pytest.fixture
async def admin_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(file_settings(tmp_path, allow_no_rpc=True, admin_token=ADMIN_TOKEN))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client


async def test_admin_summary_requires_the_token(admin_client: httpx.AsyncClient) -> None:
    assert (await admin_client.get("/v1/admin/summary")).status_code == 401
    wrong = await admin_client.get("/v1/admin/summary", headers={"Authorization": "Bearer x"})
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "unauthorized"
    ok = await admin_client.get(
        "/v1/admin/summary", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert ok.status_code == 200
    assert ok.json()["ledger"] == {
        "charges": "0",
        "refunds": "0",
        "upstream_spend": "0",
        "margin": "0",
    }
    metrics = await admin_client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert "x402r_transferred_atomic" in metrics.text


async def test_admin_endpoints_do_not_exist_without_a_token(tmp_path: Path) -> None:
    app = create_app(file_settings(tmp_path, allow_no_rpc=True))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            assert (await client.get("/v1/admin/summary")).status_code == 404
            assert (await client.get("/metrics")).status_code == 404
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"] == "ok"
            assert ready.json()["checks"]["facilitator"].startswith("error")
