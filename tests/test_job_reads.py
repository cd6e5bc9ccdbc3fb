"""The read fast paths: cached job responses, ETag/304, bounded cache, and byte-identical answers.

Two instances of the app share one SQLite database: the real one (fast path in front) and one
with the fast path removed, so every fast answer is compared with what FastAPI itself sends.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.types import Message

from app.api.edits import EDIT_PATH, UPSTREAM_PATH
from app.api.job_cache import ImmutableCache, Rendered, etag_matches, render
from app.api.job_reads import MAX_READS_AHEAD, JobReads, job_reads
from app.context import Gateway
from app.jobs.models import Job, JobState
from app.jobs.status_reads import StatusReads
from app.upstream.client import Quote
from app.upstream.schemas import MAX_BODY_BYTES
from sandbox.pay import EDIT_BODY
from tests.helpers import ADMIN_TOKEN
from tests.inprocess_app import ROW, complete, fast_and_slow, insert_job
from tests.settings_factory import make_settings

POLL_INTERVAL_S = 0.2
RESULT_CACHE_MIB = 3
Answer = tuple[int, list[tuple[str, str]], bytes]


@pytest.fixture(scope="module")
async def apps(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[FastAPI, FastAPI]]:
    """(fast, slow): the gateway as built, and the same gateway without its fast path."""
    db = Path(tmp_path_factory.mktemp("job-reads")) / "gateway.db"
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{db}",
        workers_enabled=False,
        poll_interval_s=POLL_INTERVAL_S,
        max_wait_s=5,
        result_cache_mib=RESULT_CACHE_MIB,
        admin_token=ADMIN_TOKEN,
    )
    async with fast_and_slow(settings) as both:
        yield both


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw.test")


def _reads(app: FastAPI) -> JobReads:
    reads = job_reads(app)
    assert reads is not None
    return reads


async def _send(app: FastAPI, method: str, path: str, **kwargs: Any) -> Answer:
    async with _client(app) as http:
        response = await http.request(method, path, **kwargs)
    headers = [(k.decode(), v.decode()) for k, v in response.headers.raw]
    return response.status_code, headers, response.content


async def test_completed_job_is_cached_with_a_strong_etag(apps: tuple[FastAPI, FastAPI]) -> None:
    fast, _ = apps
    job_id = await insert_job(fast, JobState.SUBMITTED)
    await complete(fast, job_id)
    reads = _reads(fast)
    status, headers, body = await _send(fast, "GET", f"/v1/jobs/{job_id}")
    before = reads.db_reads
    again = await _send(fast, "GET", f"/v1/jobs/{job_id}")
    assert reads.db_reads == before, "a completed job is served from memory"
    assert (status, headers, body) == again
    head = dict(headers)
    assert status == 200
    assert head["cache-control"] == "private, max-age=31536000, immutable"
    assert head["etag"].startswith('"')
    assert not head["etag"].startswith("W/")
    assert json.loads(body)["status"] == "completed"


@pytest.mark.parametrize("form", ["{etag}", "W/{etag}", '"other", {etag}', "*"])
async def test_if_none_match_answers_304(apps: tuple[FastAPI, FastAPI], form: str) -> None:
    fast, _ = apps
    job_id = await insert_job(fast, JobState.SUBMITTED)
    await complete(fast, job_id)
    _, headers, _ = await _send(fast, "GET", f"/v1/jobs/{job_id}")
    etag = dict(headers)["etag"]
    condition = {"If-None-Match": form.format(etag=etag)}
    answers = [await _send(app, "GET", f"/v1/jobs/{job_id}", headers=condition) for app in apps]
    assert answers[0] == answers[1], "fast and slow 304s differ"
    status, headers, body = answers[0]
    assert (status, body) == (304, b"")
    assert dict(headers)["etag"] == etag
    stale = await _send(fast, "GET", f"/v1/jobs/{job_id}", headers={"If-None-Match": '"old"'})
    assert stale[0] == 200


async def test_fast_and_slow_job_answers_are_byte_identical(
    apps: tuple[FastAPI, FastAPI],
) -> None:
    fast, _ = apps
    done = await insert_job(fast, JobState.SUBMITTED)
    await complete(fast, done)
    await _send(fast, "GET", f"/v1/jobs/{done}")  # fills the fast path's cache
    cors = {"Origin": "https://app.example"}
    for headers in ({}, cors):
        answers = [await _send(app, "GET", f"/v1/jobs/{done}", headers=headers) for app in apps]
        assert answers[0] == answers[1]
    missing = [await _send(app, "GET", "/v1/jobs/job_doesnotexist") for app in apps]
    assert missing[0] == missing[1]
    assert missing[0][0] == 404
    assert json.loads(missing[0][2])["error"] == "job_not_found"


async def test_job_in_progress_costs_one_read_per_ttl_and_is_never_stale_longer(
    apps: tuple[FastAPI, FastAPI],
) -> None:
    fast, slow = apps
    reads = _reads(fast)
    job_id = await insert_job(fast, JobState.SUBMITTED)
    first = await _send(fast, "GET", f"/v1/jobs/{job_id}")
    assert dict(first[1])["cache-control"] == "no-store"
    assert await _send(fast, "GET", f"/v1/jobs/{job_id}") == first  # from the fast path
    assert await _send(slow, "GET", f"/v1/jobs/{job_id}") == first
    before = reads.db_reads
    polls = await asyncio.gather(*(_send(fast, "GET", f"/v1/jobs/{job_id}") for _ in range(20)))
    assert reads.db_reads == before, "polls within the TTL share the last read"
    assert all(json.loads(p[2])["status"] == "processing" for p in polls)
    await complete(fast, job_id)
    loop = asyncio.get_running_loop()
    finished = loop.time()
    while True:  # every poll answers at once; within one interval they show it finished
        status, _, body = await _send(fast, "GET", f"/v1/jobs/{job_id}")
        assert status == 200
        if json.loads(body)["status"] == "completed":
            break
        assert loop.time() - finished < POLL_INTERVAL_S
        await asyncio.sleep(0.01)


async def test_reads_ahead_are_bounded_and_never_make_a_reader_wait(
    apps: tuple[FastAPI, FastAPI],
) -> None:
    """Many jobs past their TTL: each poll is answered from memory at once, and only
    `MAX_READS_AHEAD` background re-reads run at a time (the rest wait for a later poll)."""
    fast, _ = apps
    reads = _reads(fast)
    ids = [await insert_job(fast, JobState.SUBMITTED) for _ in range(3 * MAX_READS_AHEAD)]
    for job_id in ids:
        assert await reads.read(job_id) is not None
    await asyncio.sleep(POLL_INTERVAL_S * 0.6)  # past the TTL, within the interval
    assert reads.reading_ahead == 0
    before = reads.db_reads
    answers = [reads.cached(job_id) for job_id in ids]
    assert all(answer is not None for answer in answers), "a reader waited"
    assert reads.reading_ahead == MAX_READS_AHEAD
    while reads.reading_ahead:
        await asyncio.sleep(0.005)
    assert reads.db_reads - before == MAX_READS_AHEAD


async def test_long_poll_returns_once_the_job_completes(apps: tuple[FastAPI, FastAPI]) -> None:
    fast, _ = apps
    job_id = await insert_job(fast, JobState.SUBMITTED)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def later() -> None:
        await asyncio.sleep(0.3)
        await complete(fast, job_id)

    finisher = asyncio.create_task(later())
    status, _, body = await _send(fast, "GET", f"/v1/jobs/{job_id}", params={"wait": 4})
    await finisher
    assert (status, json.loads(body)["status"]) == (200, "completed")
    assert loop.time() - started < 0.3 + 2 * POLL_INTERVAL_S + 1


@pytest.mark.parametrize("path", [EDIT_PATH, UPSTREAM_PATH])
@pytest.mark.parametrize("origin", [None, "https://app.example"])
async def test_fast_402_is_byte_identical_to_fastapi_402(
    apps: tuple[FastAPI, FastAPI], path: str, origin: str | None
) -> None:
    headers = {"Origin": origin} if origin else {}
    fast, slow = apps
    expected = await _send(slow, "POST", path, json=EDIT_BODY, headers=headers)
    # The front answers without the stack: the same bytes every time.
    for _ in range(3):
        assert await _send(fast, "POST", path, json=EDIT_BODY, headers=headers) == expected
    assert expected[0] == 402


async def test_front_follows_the_upstream_quote(apps: tuple[FastAPI, FastAPI]) -> None:
    fast, slow = apps
    gw: Gateway = fast.state.gateway
    await _send(fast, "POST", EDIT_PATH, json=EDIT_BODY)  # builds the answer at list price
    # As if the upstream had just quoted a higher price (what `UpstreamClient.quote` stores).
    s = gw.settings
    quoted = Quote(None, 80_000, s.pay_to, "base", s.asset, time.time())  # type: ignore[arg-type]
    for app in apps:
        app.state.gateway.upstream._quote = quoted
    try:
        answers = [
            await _send(app, "POST", EDIT_PATH, json=EDIT_BODY) for app in (fast, fast, slow)
        ]
    finally:
        for app in apps:
            app.state.gateway.upstream._quote = None
    assert answers[0] == answers[1] == answers[2]
    assert json.loads(answers[0][2])["accepts"][0]["maxAmountRequired"] == "96000"


JSON = "application/json"


def _body(**changes: Any) -> bytes:
    return json.dumps({**EDIT_BODY, **changes}).encode()


INVALID_BODIES: dict[str, tuple[bytes, str]] = {
    "not json": (b"{not json", JSON),
    "empty": (b"", JSON),
    "array": (b"[]", JSON),
    "missing prompt": (json.dumps({"image_urls": EDIT_BODY["image_urls"]}).encode(), JSON),
    "no images": (_body(image_urls=[]), JSON),
    "bad url": (_body(image_urls=["ftp://x"]), JSON),
    "extra field": (_body(seed=1), JSON),
    "two images": (_body(num_images=2), JSON),
    "string bool": (_body(sync_mode="true"), JSON),
    "blank prompt": (_body(prompt="   "), JSON),
    "text/plain": (_body(), "text/plain"),
    "too large": (_body(prompt="x" * MAX_BODY_BYTES), JSON),
    "vendor json": (_body(), "application/vnd.api+json; charset=utf-8"),
}


@pytest.mark.parametrize("name", list(INVALID_BODIES))
async def test_fast_path_never_changes_an_answer(apps: tuple[FastAPI, FastAPI], name: str) -> None:
    body, content_type = INVALID_BODIES[name]
    headers = {"Content-Type": content_type}
    answers = [await _send(app, "POST", EDIT_PATH, content=body, headers=headers) for app in apps]
    assert answers[0] == answers[1], name
    if name == "vendor json":
        assert answers[0][0] == 402
    else:
        assert 400 <= answers[0][0] < 500, name
        assert answers[0][0] != 402, f"{name}: an invalid body must never get a 402"


async def _asgi(app: FastAPI, chunks: list[bytes]) -> tuple[int, bytes]:
    """One edit request whose body arrives in `chunks` (several ASGI messages), straight in."""
    body = b"".join(chunks)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": EDIT_PATH,
        "raw_path": EDIT_PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"gw.test"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("gw.test", 80),
    }
    incoming = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("valid", _body()),
        ("invalid", _body(num_images=2)),
        ("too large", _body(prompt="x" * MAX_BODY_BYTES)),
    ],
)
async def test_a_body_in_several_messages_gets_the_same_answer(
    apps: tuple[FastAPI, FastAPI], name: str, body: bytes
) -> None:
    chunks = [body[:10], body[10:]] if len(body) < 7000 else [body[:7000], body[7000:]]
    answers = [await _asgi(app, chunks) for app in apps]
    assert answers[0] == answers[1], name
    assert (answers[0][0] == 402) == (name == "valid"), name


async def test_a_paid_request_is_not_taken_by_the_fast_path(
    apps: tuple[FastAPI, FastAPI],
) -> None:
    # The request id is echoed: the same one for both, so the answers can be compared whole.
    headers = {"PAYMENT-SIGNATURE": "bm90IGEgcGF5bWVudA==", "X-Request-ID": "req_same"}
    answers = [await _send(app, "POST", EDIT_PATH, json=EDIT_BODY, headers=headers) for app in apps]
    assert answers[0] == answers[1]


def _rendered(job_id: str, size: int) -> Rendered:
    job = Job(
        id=job_id,
        state=JobState.COMPLETED.value,
        result={"images": [], "description": "x" * size},
        payer="0x" + "1" * 40,
        pay_amount=1,
        pay_asset="0x" + "2" * 40,
        pay_network="eip155:8453",
    )
    return render(job, "https://gw.test")


def test_immutable_cache_is_bounded_by_bytes_and_evicts_least_recently_used() -> None:
    one = _rendered("job_one_aaaa", 1000)
    cache = ImmutableCache(budget_bytes=one.cost * 3)
    for name in ("job_one_aaaa", "job_two_aaaa", "job_three_aa"):
        cache.put(_rendered(name, 1000))
    assert cache.get("job_one_aaaa") is not None  # now the most recently used
    for i in range(50):
        cache.put(_rendered(f"job_more_{i:03d}", 1000))
        assert cache.used_bytes <= cache.budget_bytes
    assert len(cache) <= 3
    assert cache.get("job_two_aaaa") is None
    assert cache.get("job_more_049") is not None
    cache.put(_rendered("job_huge_aaaa", cache.budget_bytes))
    assert cache.get("job_huge_aaaa") is None, "an entry larger than the budget is not kept"


async def test_the_cache_budget_is_the_setting_and_its_use_is_on_metrics(
    apps: tuple[FastAPI, FastAPI],
) -> None:
    fast, _ = apps
    job_id = await insert_job(fast, JobState.SUBMITTED)
    await complete(fast, job_id)
    assert (await _send(fast, "GET", f"/v1/jobs/{job_id}"))[0] == 200
    cache = _reads(fast).immutable
    assert cache.budget_bytes == RESULT_CACHE_MIB * 2**20
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    _, _, body = await _send(fast, "GET", "/metrics", headers=auth)
    metrics = body.decode().splitlines()
    lines = dict(line.rsplit(" ", 1) for line in metrics if line.startswith("x402r_result"))
    assert float(lines["x402r_result_cache_budget_bytes"]) == RESULT_CACHE_MIB * 2**20
    assert float(lines["x402r_result_cache_entries"]) == len(cache) >= 1
    assert float(lines["x402r_result_cache_bytes"]) == cache.used_bytes > 0


def test_etag_matching() -> None:
    assert etag_matches('"a"', '"a"')
    assert etag_matches('W/"a"', '"a"')
    assert etag_matches('"b", "a"', '"a"')
    assert etag_matches("*", '"a"')
    assert not etag_matches('"b"', '"a"')
    assert not etag_matches(None, '"a"')
    assert not etag_matches("*", None)


async def test_postgres_rows_come_from_their_own_pool(module_db: str) -> None:
    engine = create_async_engine(module_db)
    rows = StatusReads(engine)
    try:
        async with engine.begin() as conn:
            result = {"status": "completed", "images": [{"url": "https://cdn.test/a.png"}]}
            row = {**ROW, "id": "job_pgrowtest1", "state": "completed", "pay_nonce": "0x01"}
            row["result"] = result
            await conn.execute(insert(Job), [row])
        found = await rows.fetch("job_pgrowtest1")
        assert found is not None
        assert isinstance(found, Job)
        assert (found.state, found.pay_amount) == ("completed", 63240)
        assert found.result == result, "JSON columns come back decoded"
        assert found.payment_payload is None, "only the view's columns are read"
        assert await rows.fetch("job_nosuchjob1") is None
    finally:
        await rows.aclose()
        await engine.dispose()
