"""What the numbers were measured on: versions, CPU, date."""

from __future__ import annotations

import asyncio
import os
import platform
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from bench.stage import PG_HOST, PG_USER
from bench.wrk import wrk_version

PACKAGES = ("x402", "fastapi", "starlette", "uvicorn", "sqlalchemy", "asyncpg", "pydantic")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """`model name` from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


async def _postgres() -> str:
    conn = await asyncpg.connect(host=PG_HOST, user=PG_USER, database="postgres")
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def describe() -> dict[str, str]:
    """Everything the report states about the environment."""
    info = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        **{name: _version(name) for name in PACKAGES},
        "wrk": wrk_version(),
        "postgres": asyncio.run(_postgres()),
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    return info
