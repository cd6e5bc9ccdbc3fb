"""Chain reconciliation on a real anvil: proof is the transfer, and the log search is bounded.

`ChainReader` finds the transaction that used an authorization only inside the authorization's
window, in chunks a public RPC provider accepts (a proxy here refuses `eth_getLogs` spanning
more than 100 blocks, as providers do), and counts it as a payment only when it carries the
expected `Transfer` log.
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_account.messages import encode_typed_data
from eth_utils.crypto import keccak
from web3.exceptions import TransactionNotFound

from app.payments.chain import ChainReader, Transfer, Window
from sandbox.chain import (
    CHAIN_ID,
    USDC_ADDRESS,
    LocalChain,
    dev_account,
    mint,
    rpc_call,
    send_transaction,
)

OWNER, PAYEE = dev_account(6), dev_account(7).address
PROVIDER_LIMIT = 100  # blocks per eth_getLogs the proxy accepts
SPAN = 800  # blocks mined before and after the transfer
TYPES = {
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ]
}


class Provider(ThreadingHTTPServer):
    """A JSON-RPC pass-through that refuses wide log ranges and records what it was asked."""

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream
        self.calls: list[str] = []
        self.ranges: list[tuple[int, int]] = []  # accepted eth_getLogs ranges
        self.refused = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _Handler(BaseHTTPRequestHandler):
    server: Provider

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = json.loads(body)
        self.server.calls.append(request["method"])
        if request["method"] == "eth_getLogs":
            query = request["params"][0]
            try:
                first, last = int(query["fromBlock"], 16), int(query["toBlock"], 16)
            except (KeyError, ValueError):  # "latest", "earliest" or missing: unbounded
                first, last = 0, 1 << 62
            if last - first + 1 > PROVIDER_LIMIT:
                self.server.refused += 1
                error = {"code": -32005, "message": "query exceeds max block range 100"}
                self._reply({"jsonrpc": "2.0", "id": request["id"], "error": error})
                return
            self.server.ranges.append((first, last))
        forwarded = urllib.request.Request(
            self.server.upstream, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(forwarded, timeout=10) as answer:
            self._reply(json.loads(answer.read()))

    def _reply(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def chain() -> Iterator[LocalChain]:
    with LocalChain() as running:
        mint(running.rpc_url, OWNER.address, 1_000_000)
        yield running


@pytest.fixture
def provider(chain: LocalChain) -> Iterator[Provider]:
    server = Provider(chain.rpc_url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def latest(rpc_url: str) -> tuple[int, int]:
    """(number, timestamp) of the latest block."""
    block = rpc_call(rpc_url, "eth_getBlockByNumber", ["latest", False])
    return int(block["number"], 16), int(block["timestamp"], 16)


def mine(rpc_url: str, blocks: int) -> None:
    """Mine `blocks` blocks, 2 s apart (Base's block time)."""
    rpc_call(rpc_url, "anvil_mine", [hex(blocks), hex(2)], timeout=120)


def use_authorization(rpc_url: str, nonce: bytes, to: str, value: int) -> tuple[str, int]:
    """The owner signs and executes a transfer with this nonce; returns (tx, block)."""
    _, now = latest(rpc_url)
    message = {
        "from": OWNER.address,
        "to": to,
        "value": value,
        "validAfter": 0,
        "validBefore": now + 86_400,
        "nonce": nonce,
    }
    domain = {"name": "USD Coin", "version": "2", "chainId": CHAIN_ID}
    domain["verifyingContract"] = USDC_ADDRESS
    signature = OWNER.sign_message(encode_typed_data(domain, TYPES, message)).signature
    selector = keccak(
        text="transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
    )[:4]
    args = encode(
        ["address", "address", "uint256", "uint256", "uint256", "bytes32", "bytes"],
        [*message.values(), signature],
    )
    receipt = send_transaction(rpc_url, dev_account(8), USDC_ADDRESS, selector + args)
    return str(receipt["transactionHash"]), int(str(receipt["blockNumber"]), 16)


def block_time(rpc_url: str, number: int) -> int:
    block = rpc_call(rpc_url, "eth_getBlockByNumber", [hex(number), False])
    return int(block["timestamp"], 16)


async def test_payment_found_in_its_window_through_a_provider_that_refuses_wide_ranges(
    chain: LocalChain, provider: Provider
) -> None:
    """Thousands of blocks on either side; the provider refuses our default 2,000-block
    chunks, the reader halves them and still finds the transfer, never asking from block 0."""
    mine(chain.rpc_url, SPAN)
    nonce = secrets.token_bytes(32)
    tx, block = use_authorization(chain.rpc_url, nonce, PAYEE, 4_321)
    mine(chain.rpc_url, SPAN)
    used_at = block_time(chain.rpc_url, block)
    window = Window(start=used_at - 600, end=used_at + 3_600)
    reader = ChainReader(provider.url, USDC_ADDRESS)
    try:
        use = await reader.authorization_outcome(
            OWNER.address, "0x" + nonce.hex(), window, Transfer(OWNER.address, PAYEE, 4_321)
        )
    finally:
        await reader.close()
    assert use.used
    assert use.tx == tx
    assert use.paid
    assert provider.refused > 0  # our 2,000-block chunks were refused, then halved
    assert provider.ranges, provider.calls
    assert all(last - first < PROVIDER_LIMIT for first, last in provider.ranges)
    # The search starts where the window starts (about 300 blocks before the transfer) ...
    first = min(start for start, _ in provider.ranges)
    assert block_time(chain.rpc_url, first - 1) < window.start <= block_time(chain.rpc_url, first)
    assert block - 301 <= first <= block - 299
    # ... and the chunks are contiguous up to the first one holding the event.
    ordered = sorted(provider.ranges)
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ordered))
    assert ordered[-1][0] <= block <= ordered[-1][1]


async def test_nonce_spent_on_another_transfer_is_used_but_not_paid(
    chain: LocalChain, provider: Provider
) -> None:
    """The payer spends the nonce it gave us on 1 atomic unit to itself: used, not paid."""
    nonce = secrets.token_bytes(32)
    tx, block = use_authorization(chain.rpc_url, nonce, OWNER.address, 1)
    used_at = block_time(chain.rpc_url, block)
    window = Window(start=used_at - 600, end=used_at + 300)
    reader = ChainReader(provider.url, USDC_ADDRESS)
    try:
        ours = Transfer(OWNER.address, PAYEE, 4_321)
        use = await reader.authorization_outcome(OWNER.address, "0x" + nonce.hex(), window, ours)
        assert use.used
        assert use.tx == tx
        assert not use.paid
        # The same check on a real payment: a wrong amount or payee is not a payment either.
        used = "0x" + nonce.hex()
        assert await reader.pays(tx, Transfer(OWNER.address, OWNER.address, 1), used)
        assert not await reader.pays(tx, Transfer(OWNER.address, OWNER.address, 2), used)
        assert not await reader.pays(tx, Transfer(PAYEE, OWNER.address, 1), used)
        with pytest.raises(TransactionNotFound):  # no receipt is "unknown", never "not paid"
            await reader.pays("0x" + "ab" * 32, ours, used)
        unused = await reader.authorization_outcome(OWNER.address, "0x" + "11" * 32, window, ours)
        assert not unused.used
    finally:
        await reader.close()


async def test_a_payment_vouches_only_for_its_own_authorization(chain: LocalChain) -> None:
    """Two real payments of the same amount from the same payer to the same payee: each
    transaction proves its own nonce only (a facilitator naming the other one is not believed)."""
    first, second = secrets.token_bytes(32), secrets.token_bytes(32)
    tx_first, _ = use_authorization(chain.rpc_url, first, PAYEE, 777)
    tx_second, _ = use_authorization(chain.rpc_url, second, PAYEE, 777)
    reader = ChainReader(chain.rpc_url, USDC_ADDRESS)
    paid = Transfer(OWNER.address, PAYEE, 777)
    try:
        assert await reader.pays(tx_first, paid, "0x" + first.hex())
        assert await reader.pays(tx_second, paid, "0x" + second.hex())
        assert not await reader.pays(tx_first, paid, "0x" + second.hex())
        assert not await reader.pays(tx_second, paid, "0x" + first.hex())
        assert not await reader.pays(tx_first, paid, "0x" + secrets.token_hex(32))
    finally:
        await reader.close()


async def test_scan_stops_at_the_end_of_the_window(chain: LocalChain, provider: Provider) -> None:
    """An authorization that expired long ago is searched only up to its validBefore, in
    contiguous chunks of the configured size."""
    mine(chain.rpc_url, SPAN)
    nonce = secrets.token_bytes(32)
    _, block = use_authorization(chain.rpc_url, nonce, PAYEE, 5)
    mine(chain.rpc_url, SPAN)
    used_at = block_time(chain.rpc_url, block)
    # A window that closed 100 blocks before the transfer: the search must not reach it,
    # and starts about 500 blocks before it ...
    window = Window(start=used_at - 1_000, end=used_at - 200)
    reader = ChainReader(provider.url, USDC_ADDRESS, log_range_blocks=40)
    try:
        tx = await reader.authorization_tx(OWNER.address, "0x" + nonce.hex(), window)
        assert tx is None
        ordered = sorted(provider.ranges)
        assert provider.refused == 0
        first, last = ordered[0][0], ordered[-1][1]
        assert block_time(chain.rpc_url, first - 1) < window.start
        assert window.start <= block_time(chain.rpc_url, first)
        # ... up to the first block after the window, inclusive: about 100 blocks before.
        assert block_time(chain.rpc_url, last - 1) <= window.end < block_time(chain.rpc_url, last)
        assert block - 501 <= first <= block - 499
        assert block - 101 <= last <= block - 99
        assert all(last - first + 1 <= 40 for first, last in ordered)
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ordered))
        # Finding a block by time takes a handful of reads, not one per block.
        provider.calls.clear()
        number, _ = latest(chain.rpc_url)
        assert await reader.block_at(block_time(chain.rpc_url, number - 1234)) == number - 1234
        assert await reader.block_at(block_time(chain.rpc_url, 7) + 1) == 8
        assert len(provider.calls) <= 20, provider.calls
    finally:
        await reader.close()
