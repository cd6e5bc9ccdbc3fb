"""Logging set-up: readable lines or JSON lines (`X402R_LOG_FORMAT`), never a secret.

Every record goes through the standard library (ours, uvicorn's, SQLAlchemy's) and is
rendered by structlog, so `json` gives one JSON object per line with the same fields.
Loggers of the libraries we drive are capped: at DEBUG they would print SQL parameters (signed
authorizations), request URLs (an RPC URL may carry a provider key) and headers.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from app.core.settings import Settings

# Libraries whose DEBUG/INFO output can carry secrets or replayable payment data.
CAPPED_LOGGERS = {
    "aiosqlite": logging.INFO,  # DEBUG logs every statement with its parameters
    "sqlalchemy.engine": logging.WARNING,  # INFO logs statements, DEBUG their rows
    "sqlalchemy.pool": logging.WARNING,
    "asyncpg": logging.WARNING,
    "httpx": logging.WARNING,  # INFO logs every request URL
    "httpcore": logging.WARNING,
    "aiohttp": logging.WARNING,
    "urllib3": logging.WARNING,  # DEBUG logs the RPC URL
    "web3": logging.WARNING,  # DEBUG logs RPC requests and the provider URL
    "websockets": logging.WARNING,
    "alembic.runtime.plugins": logging.WARNING,
    "x402": logging.INFO,
}


def _renderer(json_lines: bool) -> Any:
    if json_lines:
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0, pad_level=False)


def configure_logging(settings: Settings) -> None:
    """Route every logger to stderr in the configured format and level."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _renderer(settings.log_format == "json"),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for name, level in CAPPED_LOGGERS.items():
        logging.getLogger(name).setLevel(max(level, root.level))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    """A structlog logger: `log.info("event", key=value)`."""
    return structlog.stdlib.get_logger(name)
