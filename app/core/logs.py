"""Logging set-up: nothing secret or replayable is written, whatever the level.

Two layers. Libraries that log what passes through them (SQL parameters holding signed
authorizations, request lines holding the RPC URL's provider key, typed data being signed)
are held at WARNING. And every record is scrubbed of the configured secrets (keys, tokens,
the secret parts of URLs) before it is written, for what a library or an exception message
may still carry.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from app.core.settings import Settings

# Loggers that print request lines, SQL parameters or signing payloads at DEBUG or INFO.
QUIET = (
    "aiosqlite",  # every statement with its parameters: signed payments, refunds
    "asyncpg",
    "sqlalchemy",
    "httpx",  # request lines: upstream and RPC URLs
    "httpcore",
    "urllib3",  # the embedded facilitator's RPC requests, path included
    "requests",
    "web3",  # RPC requests and responses
    "x402",  # typed data being signed or verified
    "alembic.runtime.plugins",
)
MIN_SECRET_LEN = 8  # shorter strings are not secrets worth scrubbing (and would match often)
KEY_LIKE_LEN = 16
REDACTED = "[redacted]"


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


class Scrub(logging.Filter):
    """Replaces known secrets in a record's message and traceback before it is written."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = secrets

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self._clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self._clean(record.stack_info)
        return True


def configure_logging(settings: Settings) -> None:
    """Root logging at the configured level, the noisy libraries quiet, secrets scrubbed."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    scrub = Scrub(settings_secrets(settings))
    for handler in logging.getLogger().handlers:
        handler.addFilter(scrub)
