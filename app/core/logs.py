"""Logging set-up: readable lines or JSON lines (`X402R_LOG_FORMAT`), never a secret.

Every record goes through the standard library (ours, uvicorn's, SQLAlchemy's) and is
rendered by structlog, so `json` gives one JSON object per line with the same fields.
Two layers keep secrets out, whatever the level. Libraries that log what passes through them
(SQL parameters holding signed authorizations, request lines holding the RPC URL's provider
key, typed data being signed) are held at WARNING. And every rendered line is scrubbed of
the configured secrets (keys, tokens, the secret parts of URLs) and of anything shaped like an
API key or a bearer token, for what a library or an exception message may still carry.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any
from urllib.parse import urlsplit

import structlog

from app.core.settings import Settings

# Loggers that print request lines, SQL parameters or signing payloads at DEBUG or INFO.
QUIET = (
    "aiosqlite",  # every statement with its parameters: signed payments, refunds
    "asyncpg",
    "sqlalchemy",
    "httpx",  # request lines: upstream and RPC URLs
    "httpcore",
    "aiohttp",
    "urllib3",  # the embedded facilitator's RPC requests, path included
    "requests",
    "web3",  # RPC requests and responses
    "websockets",
    "x402",  # typed data being signed or verified
    "alembic.runtime.plugins",
)
MIN_SECRET_LEN = 8  # shorter strings are not secrets worth scrubbing (and would match often)
KEY_LIKE_LEN = 16
REDACTED = "[redacted]"
# Secrets no setting names: API keys (`x402r_…`, app.keys.tokens) and any bearer credential
# a library or an exception message might echo.
_DYNAMIC_SECRETS = re.compile(r"x402r_[A-Za-z0-9_-]{20,}|(?<=Bearer )[^\s\"',;]{8,}", re.I)


def url_secrets(url: str) -> list[str]:
    """The parts of a URL that may carry a provider key: userinfo, path, query values."""
    parts = urlsplit(url)
    found = [url, parts.password or "", parts.query]
    if parts.path.rstrip("/"):
        found.append(parts.path + ("?" + parts.query if parts.query else ""))
    # A key-like path segment (providers put keys in paths) is scrubbed wherever it shows up;
    # shorter ones are words ("v2", "facilitator") that would mangle unrelated lines.
    found += [segment for segment in parts.path.split("/") if len(segment) >= KEY_LIKE_LEN]
    found += [kv.partition("=")[2] for kv in parts.query.split("&")]
    return found


def settings_secrets(settings: Settings) -> list[str]:
    """Every configured value that must never be written to a log."""
    found: list[str] = []
    for secret in (
        settings.hot_wallet_private_key,
        settings.facilitator_private_key,
        settings.admin_token,
        settings.facilitator_auth_header,
    ):
        if secret is not None:
            value = secret.get_secret_value()
            # A header line "Name: Bearer token" also shows up as its value and its token.
            value_part = value.partition(":")[2].strip()
            found += [value, value.removeprefix("0x"), value_part, *value_part.split()[-1:]]
    for url in (settings.rpc_url, settings.facilitator_url):
        if url is not None:
            found += url_secrets(str(url))
    found.append(settings.database_url)
    found.append(urlsplit(settings.database_url).password or "")
    # Longest first, so a secret is replaced whole before any part of it.
    unique = {s for s in found if len(s) >= MIN_SECRET_LEN}
    return sorted(unique, key=len, reverse=True)


class ScrubbingFormatter(structlog.stdlib.ProcessorFormatter):
    """Renders a record, then replaces every known secret in the finished line."""

    def __init__(self, secrets: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self._secrets:
            if secret in line:
                line = line.replace(secret, REDACTED)
        return _DYNAMIC_SECRETS.sub(REDACTED, line)


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
    formatter = ScrubbingFormatter(
        settings_secrets(settings),
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
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    """A structlog logger: `log.info("event", key=value)`."""
    return structlog.stdlib.get_logger(name)
