"""API key secrets: made once, shown once, stored only as their SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

SECRET_PREFIX = "x402r_"
SECRET_BYTES = 32
PREFIX_SHOWN = len(SECRET_PREFIX) + 6  # what lists show: enough to tell keys apart, not to use
# What a secret looks like, for scrubbing it out of any log line (app.core.logs).
SECRET_PATTERN = re.compile(re.escape(SECRET_PREFIX) + r"[A-Za-z0-9_-]{20,}")
KEY_ID_BYTES = 12


def new_secret() -> str:
    """A fresh bearer secret: `x402r_` + 32 random bytes, URL-safe."""
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def new_key_id() -> str:
    """A key's public id (safe to log and to show)."""
    return "key_" + secrets.token_urlsafe(KEY_ID_BYTES)


def secret_hash(secret: str) -> str:
    """The stored form of a secret: SHA-256, hex."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def shown_prefix(secret: str) -> str:
    """The part of a secret lists may show."""
    return secret[:PREFIX_SHOWN]


def bearer_secret(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def same_hash(presented: str | None, stored: str) -> bool:
    """Whether `presented` (a bearer secret) hashes to `stored`, in constant time."""
    if presented is None:
        return False
    return hmac.compare_digest(secret_hash(presented).encode(), stored.encode())
