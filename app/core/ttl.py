"""A value fetched at most once per TTL (a failure remembered for a shorter while)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class TtlValue(Generic[T]):
    """The last fetched value or failure, and until when it holds; concurrent callers share
    one fetch. Probes and scrapes read through it, so outside calls stay rare."""

    def __init__(self, ttl_s: float, failure_ttl_s: float = 2.0) -> None:
        self.ttl_s = ttl_s
        self.failure_ttl_s = min(failure_ttl_s, ttl_s)
        self._held: tuple[float, T | BaseException] | None = None
        self._lock = asyncio.Lock()

    def peek(self) -> T | None:
        """The held value if fresh and not a failure (no fetch)."""
        held = self._held
        if held is None or time.monotonic() >= held[0] or isinstance(held[1], BaseException):
            return None
        return held[1]

    async def get(self, fetch: Callable[[], Awaitable[T]]) -> T:
        """The held value, or a new one from `fetch` (its exception re-raised while held)."""
        async with self._lock:
            held = self._held
            now = time.monotonic()
            if held is not None and now < held[0]:
                if isinstance(held[1], BaseException):
                    raise held[1]
                return held[1]
            try:
                value = await fetch()
            except Exception as exc:
                self._held = (now + self.failure_ttl_s, exc)
                raise
            self._held = (now + self.ttl_s, value)
            return value
