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
BROKEN_CONNECTION = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    # A connection the server dropped mid-operation can be left in a protocol state no
    # statement gets past ("cannot switch to state 12; another operation is in progress").
    asyncpg.InternalClientError,
)
_ASYNCPG = (
    *BROKEN_CONNECTION,
    asyncpg.InterfaceError,  # includes "connection is closed", "pool is closing"
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


def connection_broken(exc: BaseException) -> bool:
    """True when the connection `exc` was raised on cannot be used again (to be discarded)."""
    current: BaseException | None = exc
    for _ in range(4):
        if current is None:
            return False
        if isinstance(current, BROKEN_CONNECTION):
            return True
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False
