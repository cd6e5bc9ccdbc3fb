"""A hostile upstream after the client paid: status URLs that point elsewhere, redirect, flood
or lose the job, 402s whose options differ from what we price, and purchases that blow up.
Every case ends with the money exactly where the policy says, and the client knows its job."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from app.jobs.models import Job
from sandbox.chain import free_port
from sandbox.world import OPERATOR, PAYER, World, address, key_hex
from tests.helpers import (
    EDIT_BODY,
    MONEY_PATH,
    NOTHING_MOVED,
    PRICE,
    REFUNDED_UPSTREAM_CHARGED,
    REFUNDED_UPSTREAM_NOT_CHARGED,
    SERVED,
    UPSTREAM_PRICE,
    balances,
    change,
    paid_post,
    sign_payment,
)
from tests.ledger_audit import audit
from tests.worlds import WorldMaker, fault_free

SECRET = "internal-secret-7f3a9c"


class Internal:
    """A service only the gateway's host can reach, with a secret in every answer."""

    def __init__(self) -> None:
        self.hits = 0
        internal = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                internal.hits += 1
                document = {
                    "status": "completed",
                    "description": SECRET,
                    "images": [{"url": f"http://169.254.169.254/{SECRET}"}],
                }
                body = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/latest/secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def internal() -> Iterator[Internal]:
    service = Internal()
    try:
        yield service
    finally:
        service.server.shutdown()


@pytest.fixture(scope="module")
def hostile_world(make_module_world: WorldMaker, module_db: str) -> World:
    """The upstream's 402 is asked for at the spend gate and again when signing (no cache)."""
    return make_module_world(
        job_delay_s=0.5,
        database_url=module_db,
        X402R_UPSTREAM_TIMEOUT_S="5",
        X402R_FACILITATOR_TIMEOUT_S="10",
        X402R_UPSTREAM_REQUIREMENTS_TTL_S="0",
        # Every end of a paid job is checked with its refund: `full` refunds even when the
        # upstream kept our payment (the default would not).
        X402R_REFUND_POLICY="full",
        X402R_REFUNDS_PER_PAYER_PER_DAY="1000",
    )


@pytest.fixture
def world(hostile_world: World, internal: Internal) -> Iterator[World]:
    internal.hits = 0
    yield from fault_free(hostile_world)


async def settled_job(gateway: str, job_id: str, timeout: float = 60) -> tuple[dict[str, Any], str]:
    """Long-poll until the job is final (refund settled); (job, every body the client read)."""
    seen = []
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=30) as http:
        while time.monotonic() < deadline:
            response = await http.get(f"{gateway}/v1/jobs/{job_id}", params={"wait": 5})
            seen.append(response.text)
            job: dict[str, Any] = response.json()
            if job["state"] in ("completed", "refunded", "failed", "needs_attention"):
                return job, "".join(seen)
    raise AssertionError(f"{job_id} still not final after {timeout}s: {seen[-1]}")


async def pay(world: World, gateway: str | None = None) -> httpx.Response:
    return await paid_post((gateway or world.gateway_url()) + "/v1/images/edit", key_hex(PAYER))


def job_id_of(response: httpx.Response) -> str:
    body = response.json()
    job_id = body.get("jobId") or body.get("details", {}).get("jobId")
    assert isinstance(job_id, str), (response.status_code, body)
    return job_id


async def paid_then_final(
    world: World, gateway: str | None = None
) -> tuple[httpx.Response, dict[str, Any], str]:
    response = await pay(world, gateway)
    assert response.headers["content-type"].startswith("application/json"), response.text
    job, seen = await settled_job(gateway or world.gateway_url(), job_id_of(response))
    return response, job, response.text + seen


def assert_refunded(job: dict[str, Any], code: str) -> None:
    assert job["status"] == "failed", job
    assert job["state"] == "refunded", job
    assert job["error"]["code"] == code, job
    assert job["refund"]["amount"] == str(PRICE)
    assert job["refund"]["transaction"].startswith("0x")


# ----------------------------------------------------------------- status reads (item 2, 14)


async def test_a_status_url_off_the_upstream_origin_is_never_fetched(
    world: World, internal: Internal, module_db: str
) -> None:
    world.set_faults({"status_url": internal.url})
    before = balances(world, MONEY_PATH)

    _, job, seen = await paid_then_final(world)

    assert internal.hits == 0
    assert SECRET not in seen
    assert_refunded(job, "upstream_status_url_refused")
    assert change(before, balances(world, MONEY_PATH)) == REFUNDED_UPSTREAM_CHARGED
    sums = await audit(module_db, world.rpc_url, [job["jobId"]])
    assert (sums["charge"], sums["upstream"], sums["refund"]) == (PRICE, UPSTREAM_PRICE, PRICE)


async def test_a_status_redirect_is_not_followed(
    world: World, internal: Internal, module_db: str
) -> None:
    world.set_faults({"status_redirect": internal.url})
    before = balances(world, MONEY_PATH)

    _, job, seen = await paid_then_final(world)

    assert internal.hits == 0
    assert SECRET not in seen
    assert_refunded(job, "upstream_status_unreadable")
    assert "redirect" in job["error"]["message"]
    assert change(before, balances(world, MONEY_PATH)) == REFUNDED_UPSTREAM_CHARGED
    await audit(module_db, world.rpc_url, [job["jobId"]])


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_huge_status_answer_is_cut_off_and_the_job_ends(
    world: World, module_db: str
) -> None:
    proc = world.gateways[0].proc
    assert proc is not None
    peak = [_rss_kib(proc.pid)]
    start_kib = peak[0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak.append(_rss_kib(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    world.set_faults({"status_huge": 200_000_000})
    before = balances(world, MONEY_PATH)
    try:
        outcome: Any = await paid_then_final(world)
    except AssertionError as exc:  # the memory is checked first, whatever became of the job
        outcome = exc
    finally:
        stop.set()
        sampler.join()

    grown_kib = max(peak) - start_kib
    assert grown_kib < 64 * 1024, f"the gateway's RSS grew by {grown_kib} KiB"
    assert not isinstance(outcome, AssertionError), outcome
    _, job, _ = outcome
    assert_refunded(job, "upstream_status_unreadable")
    assert "too large" in job["error"]["message"]
    assert change(before, balances(world, MONEY_PATH)) == REFUNDED_UPSTREAM_CHARGED
    await audit(module_db, world.rpc_url, [job["jobId"]])


async def test_a_job_the_upstream_lost_ends_refunded(world: World, module_db: str) -> None:
    world.set_faults({"status_404": True})
    before = balances(world, MONEY_PATH)

    _, job, _ = await paid_then_final(world)

    assert_refunded(job, "upstream_job_lost")
    assert change(before, balances(world, MONEY_PATH)) == REFUNDED_UPSTREAM_CHARGED
    await audit(module_db, world.rpc_url, [job["jobId"]])


async def test_a_job_past_the_maximum_age_ends_refunded(
    world: World, new_database: Callable[[], str]
) -> None:
    database = await asyncio.to_thread(new_database)  # it migrates with its own event loop
    world.start_gateway(1, {"X402R_DATABASE_URL": database, "X402R_MAX_JOB_AGE_S": "4"})
    gateway = world.gateway_url(1)
    world.set_faults({"status_processing": True})
    before = balances(world, MONEY_PATH)

    started = time.monotonic()
    _, job, _ = await paid_then_final(world, gateway)

    assert time.monotonic() - started >= 4
    assert_refunded(job, "upstream_job_expired")
    assert change(before, balances(world, MONEY_PATH)) == REFUNDED_UPSTREAM_CHARGED
    await audit(database, world.rpc_url, [job["jobId"]])
    world.gateways[1].stop()


# ---------------------------------------------------------------- the 402's options (item 3)


async def test_an_expensive_exact_option_behind_a_cheap_one_is_refused_before_charging(
    world: World,
) -> None:
    world.set_faults({"offer_options": [["upto", "base", 1], ["exact", "base", 900_000]]})
    before = balances(world, MONEY_PATH)

    response = await pay(world)

    assert response.status_code == 503, response.text
    assert response.json()["error"] == "upstream_price_above_ceiling"
    assert change(before, balances(world, MONEY_PATH)) == NOTHING_MOVED
    assert world.upstream_stats()["paid_submits"] == 0


async def test_the_exact_option_is_bought_whatever_comes_first(
    world: World, module_db: str
) -> None:
    world.set_faults({"offer_options": [["upto", "base", 1], ["exact", "base", UPSTREAM_PRICE]]})
    before = balances(world, MONEY_PATH)

    response, job, _ = await paid_then_final(world)

    assert response.status_code == 200
    assert job["state"] == "completed", job
    assert change(before, balances(world, MONEY_PATH)) == SERVED
    await audit(module_db, world.rpc_url, [job["jobId"]])


async def test_a_price_above_what_the_client_paid_is_never_signed(
    world: World, module_db: str
) -> None:
    # 52 700 at the spend gate, 70 000 (below the ceiling, above the client's 63 240) after.
    world.set_faults({"price_atomic": {"after": 1, "value": 70_000}})
    before = balances(world, MONEY_PATH)

    response, job, _ = await paid_then_final(world)

    assert response.status_code == 502
    assert_refunded(job, "upstream_price_above_paid")
    assert change(before, balances(world, MONEY_PATH)) == REFUNDED_UPSTREAM_NOT_CHARGED
    assert world.upstream_stats()["paid_submits"] == 0
    await audit(module_db, world.rpc_url, [job["jobId"]])


async def test_an_unsupported_network_is_refused_before_charging(world: World) -> None:
    world.set_faults({"offer_options": [["exact", "solana", UPSTREAM_PRICE]]})
    before = balances(world, MONEY_PATH)

    response = await pay(world)

    assert response.status_code == 503, response.text
    assert response.json()["error"] == "upstream_unavailable"
    assert change(before, balances(world, MONEY_PATH)) == NOTHING_MOVED


async def test_a_pinned_upstream_payee_that_differs_stops_selling(
    world: World, new_database: Callable[[], str]
) -> None:
    database = await asyncio.to_thread(new_database)
    pinned = {"X402R_DATABASE_URL": database, "X402R_UPSTREAM_PAY_TO": address(OPERATOR)}
    world.start_gateway(2, pinned)
    before = balances(world, MONEY_PATH)
    try:
        response = await pay(world, world.gateway_url(2))
    finally:
        world.gateways[2].stop()

    assert response.status_code == 503, response.text
    assert response.json()["error"] == "upstream_unavailable"
    assert "pinned payee" in response.json()["message"]
    assert change(before, balances(world, MONEY_PATH)) == NOTHING_MOVED
    assert world.upstream_stats()["paid_submits"] == 0


# ------------------------------------------------------ failures after charging (item 4)


@pytest.mark.parametrize(
    ("faults", "code"),
    [
        (
            {"offer_options": {"after": 1, "value": [["exact", "solana", UPSTREAM_PRICE]]}},
            "upstream_no_acceptable_offer",
        ),
        # The SDK cannot encode a negative validBefore: an unexpected error while signing.
        # (A huge one no longer gets that far: it is cut to X402R_UPSTREAM_AUTH_VALIDITY_S.)
        ({"offer_timeout_s": {"after": 1, "value": -(10**80)}}, "upstream_purchase_error"),
    ],
    ids=["unsupported-network", "signing-crashes"],
)
async def test_a_purchase_failing_after_the_charge_refunds_and_names_the_job(
    world: World, module_db: str, faults: dict[str, Any], code: str
) -> None:
    world.set_faults(faults)
    before = balances(world, MONEY_PATH)

    response, job, _ = await paid_then_final(world)

    assert response.status_code == 502, response.text
    body = response.json()
    assert body["error"] == code
    assert body["details"]["jobId"] == job["jobId"]
    assert_refunded(job, code)
    assert change(before, balances(world, MONEY_PATH)) == REFUNDED_UPSTREAM_NOT_CHARGED
    assert world.upstream_stats()["paid_submits"] == 0
    await audit(module_db, world.rpc_url, [job["jobId"]])


async def test_a_purchase_failing_in_the_worker_ends_refunded(world: World, module_db: str) -> None:
    """The request dies after recording the job; the worker settles, then signing crashes."""
    url = world.gateway_url() + "/v1/images/edit"
    world.set_faults({"offer_timeout_s": {"after": 1, "value": -(10**80)}})
    world.gateways[0].stop()
    world.start_gateway(0, extra_env={"X402R_TEST_CRASH_AT": "after_verify"})
    before = balances(world, MONEY_PATH)
    payment = await sign_payment(url, key_hex(PAYER))
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            with pytest.raises(httpx.TransportError):
                await http.post(url, json=EDIT_BODY, headers=payment)
        assert world.gateways[0].proc is not None
        assert world.gateways[0].proc.wait(10) == -9
    finally:
        world.start_gateway(0)  # no crash point: the worker takes the job over
    (value,) = payment.values()
    nonce = str(json.loads(base64.b64decode(value))["payload"]["authorization"]["nonce"])

    job_id = await _job_id_by_nonce(module_db, nonce.lower())
    job, _ = await settled_job(world.gateway_url(), job_id)

    assert_refunded(job, "upstream_purchase_error")
    assert change(before, balances(world, MONEY_PATH)) == REFUNDED_UPSTREAM_NOT_CHARGED
    assert world.upstream_stats()["paid_submits"] == 0
    await audit(module_db, world.rpc_url, [job_id])


async def _job_id_by_nonce(database_url: str, nonce: str) -> str:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            found = await conn.execute(select(Job.id).where(Job.pay_nonce == nonce))
            return str(found.scalar_one())
    finally:
        await engine.dispose()
