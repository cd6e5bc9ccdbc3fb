"""Alembic environment: async engine, URL from X402R_DATABASE_URL or the caller."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.core import ratelimit  # noqa: F401  (registers rate_limit_windows)
from app.core.database_url import async_database_url
from app.core.db import Base
from app.jobs import models  # noqa: F401  (registers the tables, the key tables too)

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("X402R_DATABASE_URL")
    if not url:
        raise SystemExit("set X402R_DATABASE_URL to the database to migrate")
    return async_database_url(str(url))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _online() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_online())
