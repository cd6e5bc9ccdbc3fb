"""Nothing secret or replayable reaches the gateway's logs, even at DEBUG.

A paid job and a refunded one run through a gateway at `X402R_LOG_LEVEL=DEBUG` (on SQLite,
whose driver logs SQL parameters, and on Postgres), with an RPC URL that carries a provider
key in its path. Afterwards its log must not contain the signed payment headers, any
signature (client, upstream, refund), the hot wallet or gas keys, the admin token, or the RPC
URL's secret part.
"""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from x402.http import decode_payment_signature_header

from app.core.logs import configure_logging, get_logger
from app.core.settings import Settings
from app.keys.tokens import new_secret
from sandbox.world import GATEWAY_FACILITATOR_GAS, HOT_WALLET, PAYER, World, key_hex
from tests.helpers import EDIT_BODY, PRICE, db_rows, poll_until_done, sign_payment
from tests.worlds import WorldMaker

RPC_SECRET = "KEY_SECRET_123abc"
ADMIN_TOKEN = "admin-token-that-must-never-be-logged-9f8e7d"
API_KEY = new_secret()


class _Forward(BaseHTTPRequestHandler):
    """Passes JSON-RPC through to the chain, whatever the path (the provider key) is."""

    upstream = ""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = urllib.request.Request(
            self.upstream, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            data = answer.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def debug_world(request: pytest.FixtureRequest, make_module_world: WorldMaker) -> Iterator[World]:
    """A world whose gateway logs at DEBUG and reaches the chain through a keyed RPC URL."""
    world = make_module_world(gateways=0, database_url="" if request.param == "sqlite" else None)
    handler = type("Forward", (_Forward,), {"upstream": world.rpc_url})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    try:
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        rpc = f"http://127.0.0.1:{proxy.server_address[1]}/v2/{RPC_SECRET}"
        world.gateway_env = {
            "X402R_LOG_LEVEL": "DEBUG",
            "X402R_REFUND_POLICY": "full",  # the failed job is refunded: its refund is logged too
            "X402R_RPC_URL": rpc,
            "X402R_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        world.start_gateway(0)
        yield world
    finally:
        world.stop()  # before the other parameter's world starts
        proxy.shutdown()
        proxy.server_close()


async def pay(world: World) -> tuple[str, str]:
    """One paid request; returns (the payment header value, the job id)."""
    url = world.gateway_url() + "/v1/images/edit"
    header = await sign_payment(url, key_hex(PAYER))
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(url, json=EDIT_BODY, headers=header)
    body = response.json()
    job_id = body.get("jobId") or body.get("details", {}).get("jobId")
    assert job_id, body
    await poll_until_done(f"{world.gateway_url()}/v1/jobs/{job_id}", timeout=60)
    return header["PAYMENT-SIGNATURE"], job_id


def secrets_of(header: str) -> list[str]:
    """A signed payment header and the parts of it that could be replayed."""
    signature = str(decode_payment_signature_header(header).payload["signature"])
    return [header, header[-60:], signature, signature.removeprefix("0x")]


async def test_debug_logs_hold_no_secret(debug_world: World) -> None:
    """A served job, a refunded one and an admin read; then the whole log is searched."""
    served_header, served_id = await pay(debug_world)
    debug_world.set_faults({"job_fails": True})
    try:
        refunded_header, refunded_id = await pay(debug_world)
    finally:
        debug_world.reset_upstream()
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(30):  # the refund settles in the request or, at worst, in the worker
            job = (
                await http.get(
                    f"{debug_world.gateway_url()}/v1/jobs/{refunded_id}", params={"wait": 2}
                )
            ).json()
            if job["state"] == "refunded":
                break
        assert job["state"] == "refunded", job
        summary = await http.get(
            debug_world.gateway_url() + "/v1/admin/summary",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert summary.status_code == 200, summary.text

    served, _ = await db_rows(debug_world.database_url or _sqlite(debug_world), served_id)
    refunded, _ = await db_rows(debug_world.database_url or _sqlite(debug_world), refunded_id)
    assert refunded.refund_amount == PRICE
    assert refunded.refund_payload is not None
    refund_signature = str(refunded.refund_payload["payload"]["signature"])
    forbidden = {
        "client payment": secrets_of(served_header) + secrets_of(refunded_header),
        "upstream payment": secrets_of(str(served.upstream_payment_header)),
        "refund signature": [refund_signature, refund_signature.removeprefix("0x")],
        "hot wallet key": [key_hex(HOT_WALLET), key_hex(HOT_WALLET).removeprefix("0x")],
        "gas key": [key_hex(GATEWAY_FACILITATOR_GAS).removeprefix("0x")],
        "admin token": [ADMIN_TOKEN],
        "RPC key": [RPC_SECRET],
    }
    log = debug_world.gateways[0].log_path.read_text(errors="replace")
    assert "[debug]" in log  # the gateway did log at DEBUG
    leaks = {
        what: [value[:16] for value in values if value.lower() in log.lower()]
        for what, values in forbidden.items()
    }
    assert not any(leaks.values()), leaks


def _sqlite(world: World) -> str:
    return f"sqlite+aiosqlite:///{world.log_dir / 'gateway.db'}"


def test_secrets_in_messages_and_tracebacks_are_scrubbed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a library or an exception still carries (an RPC URL with its key, a token) is
    replaced before it is written; ordinary words in URLs are left alone."""
    monkeypatch.setenv("X402R_RPC_URL", f"https://base.example/v2/{RPC_SECRET}?apikey=q12345678")
    monkeypatch.setenv("X402R_FACILITATOR_URL", "https://x402.example/facilitator")
    monkeypatch.setenv("X402R_FACILITATOR_AUTH_HEADER", "Authorization: Bearer tok_abcdef123")
    monkeypatch.setenv("X402R_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("X402R_PAY_TO", "0x" + "11" * 20)
    monkeypatch.setenv("X402R_HOT_WALLET_PRIVATE_KEY", key_hex(HOT_WALLET))
    monkeypatch.setenv("X402R_DATABASE_URL", "postgresql://app:pg_pass_5678@db/reseller")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging(Settings())  # the gateway's own set-up: structlog rendering, scrubbing
    log = logging.getLogger("test.scrub")
    try:
        log.warning("POST /v2/%s with q12345678 and tok_abcdef123", RPC_SECRET)
        try:
            raise ConnectionError(f"cannot reach https://base.example/v2/{RPC_SECRET}")
        except ConnectionError:
            log.exception("the facilitator refused; key %s", key_hex(HOT_WALLET)[2:])
        get_logger("test.scrub").info("event", password="pg_pass_5678")  # structlog keywords
        # API keys are no setting: they are scrubbed by their shape, and so is any bearer.
        log.warning("header Authorization: Bearer %s; again %s", API_KEY, API_KEY)
        log.warning("Authorization: Bearer opaque-token-998877 refused")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    written = capsys.readouterr().err
    for secret in (
        RPC_SECRET,
        "q12345678",
        "tok_abcdef123",
        key_hex(HOT_WALLET)[2:],
        "pg_pass",
        API_KEY[6:],
        "opaque-token-998877",
    ):
        assert secret not in written, written
    assert "Traceback" in written
    assert "the facilitator refused" in written  # "facilitator" in a URL path is no secret
