"""What an operator touches first: the CLI, its configuration, the 402's schema and caching.

The installed wheel itself is exercised end to end by `make installed-check`
(scripts/check_installed.py); these tests pin each first-contact defect one by one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from app.api.edits import EDIT_PATH
from app.cli import load_settings
from app.core.migrate import run_alembic
from app.core.settings import Settings
from app.main import create_app
from app.upstream.listing import INPUT_SCHEMA
from app.upstream.schemas import EditRequest
from sandbox.pay import EDIT_BODY
from sandbox.processes import ServiceProcess
from sandbox.world import PAYER, World, key_hex
from tests.settings_factory import make_settings

ROOT = Path(__file__).resolve().parent.parent


def cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`x402-reseller …` with only `env` as configuration."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("X402R_")}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def base_env() -> dict[str, str]:
    settings = make_settings()
    return {
        "X402R_PAY_TO": settings.pay_to,
        "X402R_HOT_WALLET_PRIVATE_KEY": settings.hot_wallet_private_key.get_secret_value(),
        "X402R_FACILITATOR_URL": "http://127.0.0.1:9",
        "X402R_ALLOW_NO_RPC": "true",
    }


def test_version_is_the_package_version(tmp_path: Path) -> None:
    done = cli(["--version"], {}, tmp_path)
    assert done.returncode == 0
    assert done.stdout.startswith("x402-reseller ")


def test_serve_outside_the_sandbox_requires_a_database_url(tmp_path: Path) -> None:
    done = cli(["serve"], base_env(), tmp_path)
    assert done.returncode == 2
    assert "X402R_DATABASE_URL: is required" in done.stderr
    assert not (tmp_path / ".sandbox").exists()  # no silent SQLite fallback


def test_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    env = base_env() | {"X402R_DATABASE_URL": "postgresql://postgres:pw@127.0.0.1:9/none"}
    for command in (["serve"], ["migrate"]):
        done = cli(command, env, tmp_path)
        assert done.returncode == 3, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, done.stderr
        assert "X402R_DATABASE_URL" in lines[0]
        assert "pw" not in lines[0]  # never the password


def test_check_reports_each_unreachable_dependency(tmp_path: Path) -> None:
    env = base_env() | {
        "X402R_DATABASE_URL": f"sqlite:///{tmp_path / 'never-migrated.db'}",
        "X402R_UPSTREAM_URL": "http://127.0.0.1:9/api/ai/generations/images/nano-banana-edit",
    }
    done = cli(["check"], env, tmp_path)
    assert done.returncode == 1
    failed = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("FAIL")}
    assert failed == {"database", "facilitator", "rpc", "upstream"}, done.stdout
    assert "never migrated: run `x402-reseller migrate`" in done.stdout  # what to do next


def test_plain_database_urls_get_the_shipped_async_drivers() -> None:
    pg = make_settings(database_url="postgresql://u@db:5432/reseller")
    assert pg.database_url == "postgresql+asyncpg://u@db:5432/reseller"
    assert make_settings(database_url="postgres://u@db/r").database_url.startswith(
        "postgresql+asyncpg://"
    )
    assert make_settings(database_url="sqlite:///x.db").database_url == "sqlite+aiosqlite:///x.db"
    with pytest.raises(ValidationError, match="must start with postgresql://"):
        make_settings(database_url="mysql://u:secret@db/r")


def test_migrations_ship_inside_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing next to the working directory
    run_alembic(f"sqlite:///{tmp_path / 'm.db'}")
    run_alembic(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}", "check")


def test_env_file_is_read_only_when_the_cli_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in base_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("X402R_DATABASE_URL", "sqlite:///x.db")
    (tmp_path / ".env").write_text("X402R_MARKUP_PERCENT=33\nX402R_FACILITATOR_PRIVATE_KEY=0x1\n")
    monkeypatch.chdir(tmp_path)
    assert Settings().markup_percent == 20  # library, sandbox and tests: no .env
    with pytest.raises(SystemExit):  # the operator's CLI reads it (and its bad key)
        load_settings(".env")
    assert load_settings("").markup_percent == 20


def test_the_local_world_does_not_inherit_operator_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("X402R_FACILITATOR_URL", "https://operator.example")
    service = ServiceProcess("x", [], ready_url="http://127.0.0.1:9", log_dir=tmp_path)
    assert "X402R_FACILITATOR_URL" not in service.env


def test_sandbox_pay_v1_pays_with_x_payment(world: World) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sandbox.pay",
            "--v1",
            "--key",
            key_hex(PAYER),
            "--gateway",
            world.gateway_url(),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"status": "completed"' in done.stdout
    # The job document names the network as the v1 receipt does (`base`), never in CAIP-2.
    assert '"network": "base"' in done.stdout, done.stdout
    assert "eip155:" not in done.stdout, done.stdout


def _valid(**fields: Any) -> bool:
    try:
        EditRequest.model_validate({**EDIT_BODY, **fields})
    except ValidationError:
        return False
    return True


SAMPLES = {"string": "x", "integer": 1, "boolean": True, "string[]": ["https://example.com/a.png"]}


@pytest.mark.parametrize("name", sorted(INPUT_SCHEMA["bodyFields"]))
def test_advertised_body_fields_are_exactly_what_the_validator_accepts(name: str) -> None:
    field = INPUT_SCHEMA["bodyFields"][name]
    properties = EditRequest.model_json_schema()["properties"]
    assert set(INPUT_SCHEMA["bodyFields"]) == set(properties)
    values = field.get("enum", [SAMPLES[field["type"]]])
    for value in values:
        assert _valid(**{name: value}), (name, value)
        assert type(value).__name__ == {"string": "str", "integer": "int", "boolean": "bool"}.get(
            field["type"], type(value).__name__
        )
    if field["type"] == "integer":
        assert not _valid(**{name: str(values[0])})  # "1" is not what the schema says


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'g.db'}", workers_enabled=False)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


async def test_the_402_is_never_cached(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        for _ in range(2):  # the second one is replayed by the fast path
            unpaid = await client.post(EDIT_PATH, json=EDIT_BODY)
            assert unpaid.status_code == 402
            assert unpaid.headers["cache-control"] == "no-store"
