"""Rendered job responses and the bounded in-process cache of the immutable ones."""

from __future__ import annotations

import hashlib
import json
import sys
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
# Per entry beyond its objects' sizes: its LRU slot (table entry, index, list node; 66-91
# bytes under tracemalloc on CPython 3.11) and the allocator rounding each object up. With
# it, charged bytes matched the RSS growth per entry within 1% (40,000 entries, 0.6-1.7 KB
# bodies).
LRU_SLOT_BYTES = 128
CACHE_CONTROL = "Cache-Control"
ETAG = "ETag"
# Header lines every response has: one shared copy instead of one per cached entry.
_CONSTANT_LINES = {
    line: line
    for line in (
        (b"cache-control", IMMUTABLE_CACHE_CONTROL.encode("latin-1")),
        (b"cache-control", LIVE_CACHE_CONTROL.encode("latin-1")),
        (b"content-type", MEDIA_TYPE.encode("latin-1")),
    )
}
# What entries share (module constants): charged to none of them.
_SHARED_IDS = frozenset(
    id(part)
    for part in (
        CACHE_CONTROL,
        ETAG,
        IMMUTABLE_CACHE_CONTROL,
        LIVE_CACHE_CONTROL,
        *_CONSTANT_LINES,
        *(item for line in _CONSTANT_LINES for item in line),
    )
)


@dataclass(frozen=True, slots=True)
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
    # Bytes this entry holds (its objects and its LRU slot): what the cache budget is charged.
    cost: int = field(init=False, compare=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cost", LRU_SLOT_BYTES + footprint(self))

    def readable_with(self, authorization: str | None) -> bool:
        """Whether a request with this `Authorization` header may see the job."""
        if self.owner_hash is None:
            return True
        return same_hash(bearer_secret(authorization), self.owner_hash)

    @property
    def immutable(self) -> bool:
        """True when this response can never change."""
        return self.state in IMMUTABLE_STATES

    def response(self) -> Response:
        """The full 200 response."""
        return Response(self.body, media_type=MEDIA_TYPE, headers=self.headers)

    def not_modified(self) -> Response:
        """The 304 answer to a matching `If-None-Match`."""
        assert self.etag is not None
        return Response(status_code=304, headers=self.headers)


def footprint(entry: Rendered) -> int:
    """`sys.getsizeof` of the entry and of every object it reaches through its fields, lists,
    tuples and dicts, each counted once, shared constants not at all. About 25 objects."""
    total = sys.getsizeof(entry)
    seen: set[int] = set()
    stack: list[object] = [getattr(entry, name) for name in _OWN_FIELDS]
    while stack:
        part = stack.pop()
        if part is None or id(part) in _SHARED_IDS or id(part) in seen:
            continue
        seen.add(id(part))
        total += sys.getsizeof(part)
        if isinstance(part, dict):
            stack.extend(part.keys())
            stack.extend(part.values())
        elif isinstance(part, list | tuple):
            stack.extend(part)
    return total


_OWN_FIELDS = tuple(name for name in Rendered.__dataclass_fields__ if name != "cost")


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
    headers = {CACHE_CONTROL: LIVE_CACHE_CONTROL}
    etag = None
    if job.state in IMMUTABLE_STATES:
        etag = strong_etag(body)
        headers = {CACHE_CONTROL: IMMUTABLE_CACHE_CONTROL, ETAG: etag}
    full = [
        _CONSTANT_LINES.get(line, line)
        for line in Response(body, media_type=MEDIA_TYPE, headers=headers).raw_headers
    ]
    # The 304's lines are the same objects as the 200's (its ETag line among them).
    same = {line: line for line in full}
    bare = [same.get(line, line) for line in Response(status_code=304, headers=headers).raw_headers]
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
