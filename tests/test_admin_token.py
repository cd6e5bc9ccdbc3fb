"""The operator token: any header is a 401 unless it matches, and short tokens never start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from app.cli import load_settings
from app.core.settings import MIN_ADMIN_TOKEN_CHARS
from app.main import create_app
from sandbox.world import HOT_WALLET, OPERATOR, address, key_hex
from tests.helpers import ADMIN_TOKEN
from tests.settings_factory import file_settings


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(file_settings(tmp_path, allow_no_rpc=True, admin_token=ADMIN_TOKEN))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            yield http


@pytest.mark.parametrize(
    "value",
    [
        "Bearer tökén".encode(),  # UTF-8 bytes, read as latin-1 text by the server
        b"Bearer \xff\xfe",
        ("Bearer " + ADMIN_TOKEN[:-1] + "\xe9").encode("latin-1"),
        f"Bearer {ADMIN_TOKEN}\u00a0".encode(),
    ],
    ids=["utf8", "high-bytes", "same-length-non-ascii", "trailing-nbsp"],
)
async def test_non_ascii_authorization_is_a_401(client: httpx.AsyncClient, value: bytes) -> None:
    for path in ("/v1/admin/summary", "/metrics"):
        response = await client.get(path, headers={"Authorization": value})
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_the_right_token_still_works(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/v1/admin/summary", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status_code == 200
    assert response.json()["ledger"]["charges"] == "0"


@pytest.mark.parametrize("token", ["", "s3cret-token", "x" * (MIN_ADMIN_TOKEN_CHARS - 1)])
def test_short_admin_tokens_are_refused_at_start_up(tmp_path: Path, token: str) -> None:
    with pytest.raises(ValidationError, match=f"at least {MIN_ADMIN_TOKEN_CHARS} characters"):
        file_settings(tmp_path, allow_no_rpc=True, admin_token=token)


def test_a_token_of_the_minimum_length_is_accepted(tmp_path: Path) -> None:
    token = "x" * MIN_ADMIN_TOKEN_CHARS
    settings = file_settings(tmp_path, allow_no_rpc=True, admin_token=token)
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == token


def test_start_up_names_the_variable_never_the_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the working copy
    monkeypatch.setenv("X402R_PAY_TO", address(OPERATOR))
    monkeypatch.setenv("X402R_HOT_WALLET_PRIVATE_KEY", key_hex(HOT_WALLET))
    monkeypatch.setenv("X402R_FACILITATOR_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("X402R_ADMIN_TOKEN", "short-secret-value")
    with pytest.raises(SystemExit) as exit_info:
        load_settings()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"X402R_ADMIN_TOKEN: Value error, must be at least {MIN_ADMIN_TOKEN_CHARS}" in err
    assert "short-secret-value" not in err
