"""Database URLs as operators write them, turned into the async drivers the service ships."""

from __future__ import annotations

_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def async_database_url(url: str) -> str:
    """The URL with the async driver we ship (`postgresql://` → asyncpg, `sqlite://` →
    aiosqlite); ValueError for any other scheme or driver."""
    scheme, sep, rest = url.partition("://")
    driver = _ASYNC_DRIVERS.get(scheme.lower())
    if not sep or driver is None:
        raise ValueError(
            "must start with postgresql:// (or postgresql+asyncpg://) or sqlite:/// "
            "(or sqlite+aiosqlite:///)"
        )
    return f"{driver}://{rest}"
