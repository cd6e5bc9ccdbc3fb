"""Rendered job responses and the bounded in-process cache of the immutable ones."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from app.jobs.models import Job, JobState
from app.jobs.views import job_view
from app.keys.tokens import bearer_secret, same_hash

# States a job never leaves: their response bytes are served from memory forever after.
# `needs_attention` is final for the state machine but an operator may still resolve it.
IMMUTABLE_STATES = frozenset(
    {
        JobState.COMPLETED.value,
        JobState.FAILED.value,
        JobState.PAYMENT_FAILED.value,
        JobState.REFUNDED.value,
    }
)
IMMUTABLE_CACHE_CONTROL = "private, max-age=31536000, immutable"
LIVE_CACHE_CONTROL = "no-store"
MEDIA_TYPE = "application/json"
DEFAULT_BUDGET_BYTES = 8 * 1024 * 1024
# What one cached entry costs besides its body: key, ETag, header list, LRU slot.
ENTRY_OVERHEAD_BYTES = 600


@dataclass(frozen=True)
class Rendered:
    """One job's response, rendered once: body bytes, headers, and the job state it shows."""

    job_id: str
    state: str
    body: bytes
    etag: str | None
    headers: dict[str, str] = field(hash=False)
    raw_headers: list[tuple[bytes, bytes]] = field(hash=False)
    not_modified_headers: list[tuple[bytes, bytes]] = field(hash=False)
    payer: str | None = None  # who paid: the only reader when reads are payer-bound
    # SHA-256 of the key that alone may read this job (own_jobs_only), else None.
    owner_hash: str | None = None

    def readable_with(self, authorization: str | None) -> bool:
        """Whether a request with this `Authorization` header may see the job."""
        if self.owner_hash is None:
            return True
        return same_hash(bearer_secret(authorization), self.owner_hash)

    @property
    def immutable(self) -> bool:
        """True when this response can never change."""
        return self.state in IMMUTABLE_STATES

    @property
    def cost(self) -> int:
        """Bytes this entry is charged against the cache budget."""
        return len(self.body) + len(self.job_id) + ENTRY_OVERHEAD_BYTES

    def response(self) -> Response:
        """The full 200 response."""
        return Response(self.body, media_type=MEDIA_TYPE, headers=self.headers)

    def not_modified(self) -> Response:
        """The 304 answer to a matching `If-None-Match`."""
        assert self.etag is not None
        return Response(status_code=304, headers=self.headers)


def json_bytes(content: dict[str, Any]) -> bytes:
    """Exactly what `JSONResponse` renders, so cached and fresh bodies are the same bytes."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def strong_etag(body: bytes) -> str:
    """A strong validator of the body bytes."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def render(job: Job, base_url: str, owner_hash: str | None = None) -> Rendered:
    """Render a job's status response once; immutable states get an ETag. `owner_hash`:
    the hash of the only key allowed to read it (see `Rendered.readable_with`)."""
    body = json_bytes(job_view(job, base_url))
    headers = {"Cache-Control": LIVE_CACHE_CONTROL}
    etag = None
    if job.state in IMMUTABLE_STATES:
        etag = strong_etag(body)
        headers = {"Cache-Control": IMMUTABLE_CACHE_CONTROL, "ETag": etag}
    full = Response(body, media_type=MEDIA_TYPE, headers=headers).raw_headers
    bare = Response(status_code=304, headers=headers).raw_headers
    return Rendered(job.id, job.state, body, etag, headers, full, bare, job.payer, owner_hash)


def etag_matches(if_none_match: str | None, etag: str | None) -> bool:
    """`If-None-Match` evaluation (weak comparison, `*` matches any current representation)."""
    if not if_none_match or etag is None:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


class ImmutableCache:
    """LRU of rendered immutable responses, bounded by a byte budget, not an entry count."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self._entries: OrderedDict[str, Rendered] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, job_id: str) -> Rendered | None:
        """The cached response, marked as recently used."""
        entry = self._entries.get(job_id)
        if entry is not None:
            self._entries.move_to_end(job_id)
        return entry

    def put(self, entry: Rendered) -> None:
        """Cache an immutable response, evicting the least recently used beyond the budget."""
        if not entry.immutable or entry.cost > self.budget_bytes:
            return
        old = self._entries.pop(entry.job_id, None)
        if old is not None:
            self.used_bytes -= old.cost
        self._entries[entry.job_id] = entry
        self.used_bytes += entry.cost
        while self.used_bytes > self.budget_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.used_bytes -= evicted.cost
