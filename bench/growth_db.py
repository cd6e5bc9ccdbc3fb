"""Throwaway Postgres databases for the growth runs, one per size, all alive side by side."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from app.core.migrate import run_alembic
from bench.stage import PG_HOST, PG_USER, admin

BEFORE = "c3f8a1d2e6b4"  # the revision before the rollups and the partial indexes


@dataclass
class SizedDatabase:
    """A database that will hold `size` jobs."""

    size: int
    name: str = field(default_factory=lambda: f"x402r_growth_{secrets.token_hex(4)}")

    @property
    def url(self) -> str:
        """SQLAlchemy URL."""
        return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:5432/{self.name}"

    @property
    def dsn(self) -> str:
        """asyncpg DSN."""
        return f"postgresql://{PG_USER}@{PG_HOST}:5432/{self.name}"

    def create(self, revision: str = BEFORE) -> None:
        """Create it and migrate it to `revision`."""
        asyncio.run(admin(f'CREATE DATABASE "{self.name}"'))
        run_alembic(self.url, "upgrade", revision)

    def drop(self) -> None:
        """Drop it, whoever is still connected."""
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
