"""The upstream as an `httpx.MockTransport`: its x402 v1 402, paid submissions and status
reads, each answer scripted; a paid submission it accepts moves money on the fake ledger."""

from __future__ import annotations

import json
import secrets
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum

import httpx
from x402.http import (
    X_PAYMENT_HEADER,
    X_PAYMENT_RESPONSE_HEADER,
    decode_payment_signature_header,
    encode_payment_response_header,
)
from x402.schemas import PaymentRequiredV1, SettleResponse

from sandbox.sim_hostile import EDIT_PATH, build_requirements
from sandbox.upstream_sim import JOBS_PATH, LISTING_PRICE_ATOMIC, NO_PAYMENT_ERROR
from tests.fast.chain import Ledger

ORIGIN = "http://127.0.0.1:9"
URL = ORIGIN + EDIT_PATH
# Prices of a changed offer, against the listing's 52700, the 63240 a client pays for it and
# our ceiling of 100000.
PRICES = {"cheaper": 40_000, "dearer": 60_000, "above_paid": 70_000, "too_expensive": 1_000_000}


class Quote(StrEnum):
    """What an unpaid request gets."""

    OFFER = "offer"  # the listing's 402
    CHEAPER = "cheaper"
    DEARER = "dearer"  # still under what the client paid
    ABOVE_PAID = "above_paid"
    TOO_EXPENSIVE = "too_expensive"
    UNREACHABLE = "unreachable"


class Submit(StrEnum):
    """What a paid submission gets."""

    ACCEPT = "accept"  # paid (unless its nonce is used: then a 402), job created
    REFUSE = "refuse"  # 402: the payment is refused, nothing moved
    UNREACHABLE = "unreachable"  # connection refused, nothing moved
    ERROR_5XX = "error_5xx"  # 500 before the payment is taken
    REJECT = "reject"  # 400: the request is refused, nothing moved
    MALFORMED = "malformed"  # paid and created, but the answer is cut off
    ELSEWHERE = "elsewhere"  # paid and created, its statusUrl on a foreign origin


class Status(StrEnum):
    """What a status read gets."""

    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    LOST = "lost"  # 404
    MALFORMED = "malformed"  # cut-off JSON
    OVERSIZE = "oversize"  # larger than the gateway reads
    DOWN = "down"  # 500: transient


@dataclass
class FakeUpstream:
    """Scripts per kind of request; an empty script answers OFFER / ACCEPT / COMPLETED."""

    ledger: Ledger
    pay_to: str
    quotes: deque[Quote] = field(default_factory=deque)
    submits: deque[Submit] = field(default_factory=deque)
    statuses: deque[Status] = field(default_factory=deque)
    seen: list[tuple[str, str]] = field(default_factory=list)  # (request kind, outcome)

    def script(
        self,
        *,
        quote: list[Quote] | None = None,
        submit: list[Submit] | None = None,
        status: list[Status] | None = None,
    ) -> None:
        """Queue the next answers of each kind of request."""
        self.quotes.extend(quote or [])
        self.submits.extend(submit or [])
        self.statuses.extend(status or [])

    def count(self, kind: str) -> int:
        """How many requests of `kind` (quote, submit, status) arrived."""
        return sum(1 for seen, _ in self.seen if seen == kind)

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request (the handler of the gateway's `httpx.MockTransport`)."""
        if request.method == "POST" and request.url.path == EDIT_PATH:
            if X_PAYMENT_HEADER not in request.headers:
                return self._quote(request)
            return self._submit(request)
        if request.method == "GET" and request.url.path.startswith(JOBS_PATH + "/"):
            return self._status(request, request.url.path.rsplit("/", 1)[-1])
        return httpx.Response(404, json={"error": "Not found"})

    def _offer(self, price: int) -> httpx.Response:
        options = [build_requirements(self.pay_to, ORIGIN, price)]
        body = PaymentRequiredV1(error=NO_PAYMENT_ERROR, accepts=options)
        return httpx.Response(402, json=body.model_dump(mode="json", by_alias=True))

    def _quote(self, request: httpx.Request) -> httpx.Response:
        outcome = self.quotes.popleft() if self.quotes else Quote.OFFER
        self.seen.append(("quote", outcome))
        if outcome is Quote.UNREACHABLE:
            raise httpx.ConnectError("connection refused", request=request)
        return self._offer(PRICES.get(outcome, LISTING_PRICE_ATOMIC))

    def _submit(self, request: httpx.Request) -> httpx.Response:
        outcome = self.submits.popleft() if self.submits else Submit.ACCEPT
        self.seen.append(("submit", outcome))
        if outcome is Submit.UNREACHABLE:
            raise httpx.ConnectError("connection refused", request=request)
        if outcome is Submit.ERROR_5XX:
            return httpx.Response(500, json={"error": "Internal server error"})
        if outcome is Submit.REJECT:
            return httpx.Response(400, json={"error": "Invalid request body"})
        if outcome is Submit.REFUSE:
            return httpx.Response(402, json={"error": "insufficient_funds", "accepts": []})
        payload = decode_payment_signature_header(request.headers[X_PAYMENT_HEADER])
        tx = self.ledger.execute_payload(payload)
        if tx is None:  # a payment already used: its facilitator refuses it
            return httpx.Response(402, json={"error": "invalid_exact_evm_nonce_already_used"})
        settled = SettleResponse(success=True, transaction=tx, network="base")
        headers = {X_PAYMENT_RESPONSE_HEADER: encode_payment_response_header(settled)}
        job_id = secrets.token_hex(8)
        if outcome is Submit.MALFORMED:
            return httpx.Response(200, content=f'{{"jobId": "{job_id}", "sta', headers=headers)
        origin = "https://elsewhere.example" if outcome is Submit.ELSEWHERE else ORIGIN
        accepted = {
            "jobId": job_id,
            "status": "processing",
            "requestId": secrets.token_hex(8),
            "statusUrl": f"{origin}{JOBS_PATH}/{job_id}",
        }
        return httpx.Response(200, json=accepted, headers=headers)

    def _status(self, request: httpx.Request, job_id: str) -> httpx.Response:
        outcome = self.statuses.popleft() if self.statuses else Status.COMPLETED
        self.seen.append(("status", outcome))
        if outcome is Status.LOST:
            return _streamed(404, {"error": "Job not found"})
        if outcome is Status.DOWN:
            return _streamed(500, {"error": "Internal server error"})
        if outcome is Status.MALFORMED:
            return _streamed(200, f'{{"jobId": "{job_id}", "sta')
        if outcome is Status.OVERSIZE:  # the harness caps status answers at 1 KiB
            return _streamed(200, {"status": "processing", "pad": "x" * 4096})
        document: dict[str, object] = {"jobId": job_id, "status": str(outcome), "images": []}
        if outcome is Status.COMPLETED:
            document["images"] = [{"url": f"{ORIGIN}/files/{job_id}.png", "width": 1024}]
        if outcome is Status.FAILED:
            document["error"] = "the model refused the prompt"
        return _streamed(200, document)


class _Body(httpx.AsyncByteStream):
    """A body as the network hands it over: streamed, not read yet."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._data


def _streamed(status: int, document: object) -> httpx.Response:
    """A status answer the guarded reader streams (a `content=` body counts as read)."""
    data = document.encode() if isinstance(document, str) else json.dumps(document).encode()
    headers = {"content-type": "application/json"}
    return httpx.Response(status, headers=headers, stream=_Body(data))
