"""/readyz names every failing check: upstream 402, RPC and hot-wallet floor included."""

from __future__ import annotations

from pathlib import Path

import httpx

from app.main import create_app
from tests.settings_factory import make_settings


async def test_each_unreachable_dependency_is_named(tmp_path: Path) -> None:
    app = create_app(
        make_settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'r.db'}",
            workers_enabled=False,
            rpc_url="http://127.0.0.1:9",
            hot_wallet_floor_atomic=1,
        )
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http,
    ):
        response = await http.get("/readyz")
        again = await http.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["facilitator", "hot_wallet", "rpc", "upstream"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["upstream"].startswith("error: no usable 402")
    assert body["checks"]["rpc"].startswith("error: ")
    assert body["checks"]["hot_wallet"] == "error: balance unreadable"
    assert again.json()["failing"] == body["failing"]


async def test_without_an_rpc_or_floor_those_checks_are_left_out(tmp_path: Path) -> None:
    app = create_app(
        make_settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'r.db'}", workers_enabled=False
        )
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http,
    ):
        body = (await http.get("/readyz")).json()
    assert set(body["checks"]) == {"database", "facilitator", "upstream"}
