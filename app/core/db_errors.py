"""Which exceptions mean "the database cannot be reached right now" (a restart, an outage).

asyncpg raises its own errors (and a bare `OSError` when the server refuses connections)
from code SQLAlchemy does not wrap: the pool's connect, and the plain asyncpg pool of the
status reads. All of them, wrapped or not, are one condition to the client: retry later.
"""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# asyncpg: the connection was refused, lost, or the server is shutting down / starting up.
_ASYNCPG = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # includes "connection is closed", "pool is closing"
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.TooManyConnectionsError,
)
_SQLALCHEMY = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)

# What a handler may be registered for (the classifier decides within them).
UNREACHABLE_TYPES: tuple[type[Exception], ...] = (OSError, *_ASYNCPG, *_SQLALCHEMY)


def database_unreachable(exc: BaseException) -> bool:
    """True when `exc` (or what it wraps) says the database connection failed or was lost."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, _ASYNCPG + _SQLALCHEMY):
            return True
        # ConnectionRefusedError, ConnectionResetError, TimeoutError of a connect, EPIPE...
        if isinstance(current, ConnectionError | TimeoutError):
            return True
        if isinstance(current, OSError) and current.errno is not None and not current.filename:
            return True  # a socket error (file errors name their file)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False
