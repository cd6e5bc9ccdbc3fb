"""The gateway app in-process (ASGI, real lifespan, SQLite in a temp dir), and what it serves."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from app.api.edits import EDIT_PATH, UPSTREAM_PATH
from app.context import Gateway
from app.main import create_app
from tests.settings_factory import make_settings

PATHS = [EDIT_PATH, UPSTREAM_PATH]
BROWSER = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0 Safari/537.36",
}
_X402_CONFIG = re.compile(r"window\.x402 = (\{.*?\});\s*</script>", re.S)


async def start_app(tmp: Path, **overrides: Any) -> AsyncIterator[FastAPI]:
    """The app on a SQLite file in `tmp`, no workers; it must write no job row."""
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'gateway.db'}",
        workers_enabled=False,
        facilitator_timeout_s=2,
        upstream_timeout_s=2,
        **overrides,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application
        assert await job_count(application) == 0


async def job_count(app: FastAPI) -> int:
    """Rows in the jobs table: a job row exists only once a payment verified."""
    gateway: Gateway = app.state.gateway
    async with gateway.engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM jobs")) or 0)


def client_for(app: FastAPI) -> httpx.AsyncClient:
    """An httpx client that calls `app` in-process."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://internal:8080")


def x402_config(html: str) -> dict[str, Any]:
    """The configuration the SDK's paywall page embeds for its script."""
    found = _X402_CONFIG.search(html)
    assert found, "no window.x402 config in the page"
    config: dict[str, Any] = json.loads(found.group(1))
    return config
