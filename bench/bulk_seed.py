"""A year of finished jobs and their ledger rows, written with COPY (`copy_records_to_table`).

Rows look like the gateway's own: the same JSON payload shapes, creation times spread over
the last year in insertion order, about 93 % completed, the rest failed (most refunded, some
withheld by the refund limit), refused at settlement or parked for the operator; a charge
for every settled job, an upstream payment for every job the upstream was bought for, a
refund for every refunded one; one job in 20 paid with an API key (`bench.bulk_keys`) instead.
A few jobs stay in progress, half of them due for the worker.
Foreign keys and triggers are skipped while copying (`session_replication_role`): the rows
are consistent by construction, and the rollups are built afterwards like the migration does.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from app.jobs.models import Job
from bench import bulk_keys
from bench.bulk_rollups import rebuild_rollups

COLUMNS = [c.key for c in Job.__table__.columns]
LEDGER_COLUMNS = ["job_id", "kind", "amount", "asset", "network", "from_address", "to_address"]
LEDGER_COLUMNS += ["tx_hash", "created_at"]  # in that order in the tuples below
CHUNK = 20_000
WORKERS = 2  # processes generating and copying rows side by side
IN_PROGRESS = 200  # jobs still being worked on, whatever the size (a busy gateway has this many)
NETWORK, ASSET = "eip155:84532", "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAY_TO, HOT, UPSTREAM = "0x" + "a1" * 20, "0x" + "b2" * 20, "0x" + "c3" * 20
PRICES = (40_000, 40_000, 40_000, 60_000, 100_000)
UPSTREAM_PRICE = {40_000: 30_000, 60_000: 45_000, 100_000: 75_000}
# (state, share of finished jobs, upstream bought, refunded, error code)
OUTCOMES = (
    ("completed", 0.93, True, False, None),
    ("refunded", 0.035, True, True, "upstream_failed"),
    ("failed", 0.005, True, False, "refund_limit_reached"),
    ("payment_failed", 0.03, False, False, "payment_refused"),
)
PARKED_EVERY = 20_000  # one job needs the operator's attention per this many


@dataclass
class SeedStats:
    """How long seeding took and what it wrote."""

    jobs: int
    ledger_rows: int
    copy_s: float  # generating and copying the rows
    index_s: float  # building the secondary indexes again
    analyze_s: float  # VACUUM (ANALYZE)

    @property
    def total_s(self) -> float:
        """The whole seeding."""
        return self.copy_s + self.index_s + self.analyze_s

    @property
    def rows_per_s(self) -> float:
        """Jobs plus ledger rows written per second, indexes and analysis included."""
        return (self.jobs + self.ledger_rows) / self.total_s if self.total_s else 0.0


def _hex(rng: random.Random, nbytes: int) -> str:
    return "0x" + rng.randbytes(nbytes).hex()


_BODY = '{"prompt": "make the cat in %s wear a hat", "image_urls": ["https://example.com/cat.png"]}'
_REQUIREMENTS = json.dumps(
    {
        "scheme": "exact",
        "network": NETWORK,
        "amount": "%d",
        "asset": ASSET,
        "payTo": PAY_TO,
        "maxTimeoutSeconds": 300,
        "extra": {"name": "USDC", "version": "2"},
    }
)
_AUTHORIZATION = (
    json.dumps(
        {"from": "%s", "to": PAY_TO, "value": "%d", "validAfter": "0", "validBefore": "1893456000"}
    )[:-1]
    + ', "nonce": "%s"}'
)
_PAYLOAD = (
    '{"x402Version": 2, "accepted": %s, "payload": {"signature": "0x'
    + "5a" * 65
    + '", "authorization": %s}}'
)
_RESULT = (
    '{"jobId": "%s", "status": "completed", "images": [{"url": '
    '"https://upstream.example/files/%s.png", "width": 1024, "height": 1024, '
    '"content_type": "image/png"}]}'
)


def _payloads(job_id: str, payer: str, amount: int, nonce: str) -> tuple[str, str, str]:
    """The request body, payment payload and requirements as the gateway stores them (JSON)."""
    requirements = _REQUIREMENTS % amount
    authorization = _AUTHORIZATION % (payer, amount, nonce)
    return _BODY % job_id[-6:], _PAYLOAD % (requirements, authorization), requirements


def _outcome(rng: random.Random, index: int) -> tuple[str, bool, bool, str | None]:
    if index % PARKED_EVERY == PARKED_EVERY // 2:
        return "needs_attention", True, False, "settlement_unresolved"
    roll = rng.random()
    for state, share, bought, refunded, code in OUTCOMES:
        if roll < share:
            return state, bought, refunded, code
        roll -= share
    return "completed", True, False, None


def make_job(
    rng: random.Random, i: int, count: int, now: datetime
) -> tuple[Any, list[Any], list[Any]]:
    """Job `i` of `count` (created in order over the last year), its ledger rows and, when
    an API key paid for it, its key-ledger rows."""
    job_id = f"job_{i:08d}{rng.randbytes(6).hex()}"
    payer = "0x" + f"{rng.randrange(5000):040x}"
    amount = rng.choice(PRICES)
    nonce = _hex(rng, 32)
    created = now - timedelta(days=365) + timedelta(days=365) * (i / count)
    body, payload, requirements = _payloads(job_id, payer, amount, nonce)
    unfinished = i >= count - IN_PROGRESS
    if unfinished:
        state, bought, refunded, code = "submitted", True, False, None
    else:
        state, bought, refunded, code = _outcome(rng, i)
    key = None if unfinished else bulk_keys.key_of(i)
    if key is not None and state == "payment_failed":  # a key-paid job is never settled
        state, bought, refunded, code = "completed", True, False, None
    settled = state != "payment_failed" and key is None
    up_amount = UPSTREAM_PRICE[amount] if bought else None
    finished = None if unfinished else created + timedelta(seconds=rng.uniform(5, 90))
    due = now - timedelta(seconds=5) if i % 2 else now + timedelta(minutes=2)
    values = {
        "id": job_id,
        "state": state,
        "route": "/v1/images/edit",
        "request_body": body,
        "fingerprint": rng.randbytes(32).hex(),
        "x402_version": 2,
        "payer": payer,
        "pay_network": NETWORK,
        "pay_asset": ASSET,
        "pay_amount": amount,
        "pay_to": PAY_TO,
        "pay_nonce": nonce,
        "pay_valid_before": 1893456000,
        "payment_payload": payload,
        "payment_requirements": requirements,
        "settle_tx": _hex(rng, 32) if settled else None,
        "settle_attempts": 1,
        "upstream_attempts": 1 if bought else 0,
        "spend_reserved": up_amount or 0,
        "bad_status_reads": 0,
        "result": _RESULT % (job_id, job_id) if state == "completed" else None,
        "error_code": code,
        "error_message": None if code is None else f"{code} (seeded)",
        "refund_amount": amount if refunded or state == "failed" else None,
        "refund_tx": _hex(rng, 32) if refunded else None,
        "refund_attempts": 1 if refunded else 0,
        "next_check_at": due if unfinished else None,
        "last_polled_at": now - timedelta(seconds=1) if unfinished else None,
        "created_at": created,
        "updated_at": finished or created,
        "finished_at": finished,
    }
    if bought:
        values |= {
            "upstream_nonce": _hex(rng, 32),
            "upstream_amount": up_amount,
            "upstream_pay_to": UPSTREAM,
            "upstream_valid_before": 1893456000,
            "upstream_tx": _hex(rng, 32),
            "spend_hour": created.replace(minute=0, second=0, microsecond=0),
            "upstream_job_id": job_id,
            "upstream_request_id": job_id,
            "upstream_status_url": f"https://upstream.example/jobs/{job_id}",
        }
    if key is not None:
        values |= bulk_keys.key_paid_columns(job_id, key)
    keyed = bulk_keys.key_ledger_rows(key, job_id, amount, created, finished if refunded else None)
    transfers: list[tuple[str, int | None, str, str, datetime]] = []  # kind, amount, from, to
    if settled:
        transfers.append(("charge", amount, payer, PAY_TO, created))
    if bought:
        transfers.append(("upstream", up_amount, HOT, UPSTREAM, created + timedelta(seconds=2)))
    if refunded and finished is not None and key is None:  # a key is credited instead
        transfers.append(("refund", amount, HOT, payer, finished))
    ledger = [
        (job_id, k, a, ASSET, NETWORK, f, t, _hex(rng, 32), at) for k, a, f, t, at in transfers
    ]
    return tuple(values.get(c) for c in COLUMNS), ledger, keyed


async def _copy_range(dsn: str, count: int, low: int, high: int, now: datetime) -> int:
    """COPY jobs [low, high) of `count`; returns the ledger rows written."""
    rng = random.Random(low)
    conn = await asyncpg.connect(dsn)
    written = 0
    try:
        await conn.execute("SET session_replication_role = replica")
        for start in range(low, high, CHUNK):
            jobs, ledger, keyed = [], [], []
            for i in range(start, min(start + CHUNK, high)):
                job, entries, key_entries = make_job(rng, i, count, now)
                jobs.append(job)
                ledger += entries
                keyed += key_entries
            await conn.copy_records_to_table("jobs", records=jobs, columns=COLUMNS)
            await conn.copy_records_to_table("ledger", records=ledger, columns=LEDGER_COLUMNS)
            await conn.copy_records_to_table(
                "key_ledger", records=keyed, columns=bulk_keys.KEY_LEDGER_COLUMNS
            )
            written += len(ledger)
    finally:
        await conn.close()
    return written


def _copy_part(args: tuple[str, int, int, int, datetime]) -> int:
    return asyncio.run(_copy_range(*args))


_SECONDARY = """
SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
WHERE t.relname IN ('jobs', 'ledger')
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
"""


async def seed(dsn: str, count: int, now: datetime | None = None) -> SeedStats:
    """Copy `count` jobs and their ledger rows into the (migrated, empty) database at `dsn`.

    Secondary indexes are dropped first and built again after the copy (faster than
    maintaining them row by row); `WORKERS` processes each generate and copy a share.
    """
    now = now or datetime.now(UTC)
    conn = await asyncpg.connect(dsn)
    try:
        await bulk_keys.insert_keys(conn, now - timedelta(days=366))
        indexes = await conn.fetch(_SECONDARY)
        for name, _ in indexes:
            await conn.execute(f"DROP INDEX {name}")
        started = time.perf_counter()
        step = max(1, -(-count // (WORKERS * 4)))
        parts = [(dsn, count, low, min(low + step, count), now) for low in range(0, count, step)]
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(WORKERS) as pool:
            ledger_rows = sum(
                await asyncio.gather(*(loop.run_in_executor(pool, _copy_part, p) for p in parts))
            )
        copied = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute("SET maintenance_work_mem = '256MB'")
        for _, definition in indexes:
            await conn.execute(definition)
        await rebuild_rollups(conn)
        await bulk_keys.settle_keys(conn)
        indexed = time.perf_counter() - started
        started = time.perf_counter()
        # What autovacuum would have done over a year: statistics and the visibility map.
        await conn.execute("VACUUM (ANALYZE) jobs")
        await conn.execute("VACUUM (ANALYZE) ledger")
        await conn.execute("VACUUM (ANALYZE) key_ledger")
        return SeedStats(count, ledger_rows, copied, indexed, time.perf_counter() - started)
    finally:
        await conn.close()
