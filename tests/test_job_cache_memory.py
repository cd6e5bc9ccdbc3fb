"""The finished-job cache's byte budget bounds the memory it really holds.

Entries are rendered from jobs shaped like the sandbox's completed ones (one image URL, a
description, a settlement) and the jobs dropped, as on the read path, so an entry holds
only what `render` made for it. tracemalloc counts the bytes Python asked for.
"""

from __future__ import annotations

import gc
import secrets
import tracemalloc
from datetime import UTC, datetime

from app.api.job_cache import ImmutableCache, Rendered, render
from app.jobs.models import Job, JobState

BUDGET = 512 * 1024
# The cache's own table (with the holes evictions leave) and tracemalloc's own noise: a few
# KiB whatever the budget. The charge includes the allocator's rounding, which tracemalloc
# does not see, so the entries themselves trace a little under what they are charged.
SLACK = 16 * 1024


def _completed(description_len: int) -> Rendered:
    now = datetime.now(UTC)
    job = Job(
        id="job_" + secrets.token_urlsafe(18),
        state="".join(JobState.COMPLETED.value),  # its own string, as read from a row
        result={
            "images": [{"url": f"https://cdn.test/{secrets.token_hex(16)}.png"}],
            "description": "d" * description_len,
        },
        payer="0x" + secrets.token_hex(20),
        pay_amount=63240,
        pay_asset="0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        pay_network="eip155:8453",
        x402_version=2,
        settle_tx="0x" + secrets.token_hex(32),
        upstream_request_id="req_" + secrets.token_hex(8),
        created_at=now,
        finished_at=now,
    )
    return render(job, "http://127.0.0.1:8000")


def _held_by_full_cache(description_len: int) -> tuple[ImmutableCache, int, int]:
    """A cache filled with three budgets' worth of entries, and the bytes it holds."""
    for _ in range(50):  # first uses allocate for good (mapper setup, caches): not the cache's
        _completed(description_len)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache = ImmutableCache(BUDGET)
        put = 0
        while put * 1000 < 3 * BUDGET:
            cache.put(_completed(description_len))
            put += 1
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return cache, held, put


def test_memory_held_by_a_full_cache_stays_within_its_budget() -> None:
    for description_len in (0, 300, 2000):
        cache, held, put = _held_by_full_cache(description_len)
        assert len(cache) < put, "the cache was filled past its budget"
        assert cache.used_bytes <= BUDGET
        assert held <= BUDGET + SLACK, (
            f"{held:,} bytes held for a budget of {BUDGET:,} ({len(cache)} entries of "
            f"{description_len}-character descriptions)"
        )
        # Charged honestly, not over: most of the budget is really in use.
        assert held >= BUDGET * 0.8, f"only {held:,} bytes held for {BUDGET:,}"


def test_an_entry_is_charged_what_it_holds() -> None:
    entry = _completed(300)
    assert entry.cost > len(entry.body) + 1000  # headers, ETag, strings: not only the body
    same = _completed(300)
    assert abs(same.cost - entry.cost) < 64
