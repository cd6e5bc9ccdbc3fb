"""Read-only chain queries that settle unknown outcomes: which transfer used an authorization?

An authorization's nonce being used proves nothing about who was paid: its signer chooses the
nonce and can spend it on another transfer first. A payment counts only when the transaction
that used the nonce carries, right after that use, a `Transfer` log of our token, from the
payer, to the payee, of exactly the amount (`ChainReader.pays`).

Events are searched only inside the authorization's window (a little before the job was
recorded, up to its `validBefore`), in chunks of at most `LOG_RANGE_BLOCKS` blocks: public RPC
providers refuse wide `eth_getLogs` ranges, and a chunk they still refuse is halved.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

from eth_utils.crypto import keccak
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import TransactionNotFound, Web3RPCError
from x402.mechanisms.evm.exact.eip3009_utils import verify_eip3009_transfer_event

from app.payments.json_rpc import JsonRpc

_TOKEN_ABI = [  # the two views we read: authorizationState, balanceOf
    {
        "name": "authorizationState",
        "type": "function",
        "stateMutability": "view",
        "inputs": [
            {"name": "authorizer", "type": "address"},
            {"name": "nonce", "type": "bytes32"},
        ],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "name": "balanceOf",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
]
AUTHORIZATION_USED_TOPIC = "0x" + keccak(text="AuthorizationUsed(address,bytes32)").hex()
LOG_RANGE_BLOCKS = 2_000  # per eth_getLogs; common provider limits are 2,000-10,000
MAX_BLOCK_SEARCH_STEPS = 64  # finding a block by time: half of them bisect, enough for 2**32


def authorization_used_topics(authorizer: str, nonce: str) -> list[str]:
    """The topics of `AuthorizationUsed(authorizer, nonce)`, lower-case hex."""
    return [
        AUTHORIZATION_USED_TOPIC,
        "0x" + "00" * 12 + authorizer.lower().removeprefix("0x"),
        nonce.lower(),
    ]


@dataclass(frozen=True)
class Transfer:
    """A token transfer we expect to find: exactly `amount` from `sender` to `recipient`."""

    sender: str
    recipient: str
    amount: int


@dataclass(frozen=True)
class Window:
    """Unix times between which an authorization can have been used on chain."""

    start: int
    end: int


@dataclass(frozen=True)
class AuthorizationUse:
    """What the chain says about an authorization."""

    used: bool
    tx: str | None = None  # the transaction that used it, when found in the window
    paid: bool = False  # that transaction carries the expected Transfer


def _hex(value: Any) -> str:
    return value if isinstance(value, str) else "0x" + bytes(value).hex()


class ChainReader:
    """EIP-3009 authorization lookups on one token of one chain (`at` reaches the others)."""

    def __init__(
        self,
        rpc_url: str,
        token: str,
        *,
        timeout_s: float = 10.0,
        log_range_blocks: int = LOG_RANGE_BLOCKS,
        network: str | None = None,
        elsewhere: dict[str, ChainReader] | None = None,
    ) -> None:
        """`network`: this chain's CAIP-2 id; `elsewhere`: readers of the other networks we
        accept payments on, by CAIP-2 id."""
        self.network = network
        self._w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": timeout_s}))
        self._rpc = JsonRpc(rpc_url, timeout_s=timeout_s)  # the receipt read of every paid call
        self._token = AsyncWeb3.to_checksum_address(token)
        self._contract = self._w3.eth.contract(address=self._token, abi=_TOKEN_ABI)
        self._range = max(1, log_range_blocks)
        self._elsewhere = dict(elsewhere or {})
        self._tokens: dict[str, ChainReader] = {}

    def at(self, network: str, token: str) -> ChainReader:
        """The reader of `token` on `network` (CAIP-2), sharing each chain's connection.

        LookupError for a network we cannot read: never an answer read from another chain.
        """
        chain = self._elsewhere.get(network, self)
        if chain is self and self.network is not None and network != self.network:
            raise LookupError(f"no chain reader for {network}")
        address = AsyncWeb3.to_checksum_address(token)
        if address == chain._token:
            return chain
        sibling = chain._tokens.get(address)
        if sibling is None:
            sibling = copy.copy(chain)
            sibling._token = address
            sibling._contract = chain._w3.eth.contract(address=address, abi=_TOKEN_ABI)
            sibling._tokens = {}
            chain._tokens[address] = sibling
        return sibling

    async def authorization_used(self, authorizer: str, nonce: str) -> bool:
        """True once `transferWithAuthorization` with this nonce has been executed."""
        fn = self._contract.functions.authorizationState(
            AsyncWeb3.to_checksum_address(authorizer), bytes.fromhex(nonce.removeprefix("0x"))
        )
        return bool(await fn.call())

    async def latest_timestamp(self) -> int:
        """The latest block's timestamp: the time the token contract checks validity by."""
        return int((await self._w3.eth.get_block("latest"))["timestamp"])

    async def balance_of(self, owner: str) -> int:
        """The token balance of `owner`, in atomic units."""
        fn = self._contract.functions.balanceOf(AsyncWeb3.to_checksum_address(owner))
        return int(await fn.call())

    async def pays(self, tx: str, expected: Transfer, nonce: str) -> bool:
        """True when `tx` succeeded and, in it, the authorization `nonce` of `expected.sender`
        made exactly the expected Transfer of our token.

        The Transfer must be the log right after that authorization's `AuthorizationUsed` (an
        EIP-3009 token logs the two together): a real transaction paying the same amount for
        another of the payer's payments, or one that uses this nonce for something else and
        pays us with another authorization, proves nothing about this one.

        Raises (`TransactionNotFound`) when the node has no receipt for it: that is not a "no"
        (the node may lag behind the one that mined it), and callers treat it as unknown.
        """
        receipt = await self._rpc.call("eth_getTransactionReceipt", [tx])
        if receipt is None:
            raise TransactionNotFound(f"no receipt for transaction {tx} (yet)")
        if not isinstance(receipt, dict) or int(str(receipt.get("status") or "0x0"), 16) != 1:
            return False
        logs = list(receipt.get("logs") or [])
        wanted = authorization_used_topics(expected.sender, nonce)
        return any(
            self._is_ours(log, wanted)
            and verify_eip3009_transfer_event(
                [following],
                self._token,
                from_address=expected.sender,
                to=expected.recipient,
                value=expected.amount,
            )
            for log, following in itertools.pairwise(logs)
        )

    def _is_ours(self, log: Any, topics: list[str]) -> bool:
        """Whether `log` is our token's event with exactly these (lower-case) `topics`."""
        if str(log.get("address", "")).lower() != self._token.lower():
            return False
        return [_hex(t).lower() for t in (log.get("topics") or [])] == topics

    async def authorization_outcome(
        self, authorizer: str, nonce: str, window: Window, expected: Transfer
    ) -> AuthorizationUse:
        """Whether the authorization was used, by which transaction, and whether that paid
        `expected`; raises when the chain cannot be read."""
        if not await self.authorization_used(authorizer, nonce):
            return AuthorizationUse(used=False)
        tx = await self.authorization_tx(authorizer, nonce, window)
        if tx is None:
            return AuthorizationUse(used=True)
        return AuthorizationUse(used=True, tx=tx, paid=await self.pays(tx, expected, nonce))

    async def authorization_tx(self, authorizer: str, nonce: str, window: Window) -> str | None:
        """The transaction that used this authorization, from its `AuthorizationUsed` event."""
        latest = await self._w3.eth.get_block("latest")
        first = await self.block_at(window.start, latest)
        last = int(latest["number"])
        if window.end < int(latest["timestamp"]):
            last = await self.block_at(window.end + 1, latest)  # the first block too late
        logs = await self._logs(authorization_used_topics(authorizer, nonce), first, last)
        return _hex(logs[-1]["transactionHash"]) if logs else None

    async def _logs(self, topics: list[str], first: int, last: int) -> list[Any]:
        """Matching logs of the first chunk of [first, last] that has any."""
        size, block = self._range, first
        while block <= last:
            end = min(block + size - 1, last)
            query: Any = {
                "address": self._token,
                "fromBlock": block,
                "toBlock": end,
                "topics": topics,
            }
            try:
                logs = list(await self._w3.eth.get_logs(query))
            except Web3RPCError:
                if size == 1:
                    raise
                size //= 2  # the provider's range limit is below ours: remember it
                self._range = min(self._range, size)
                continue
            if logs:
                return logs
            block = end + 1
        return []

    async def block_at(self, timestamp: int, latest: Any | None = None) -> int:
        """The first block whose timestamp is >= `timestamp` (the latest block if none is).

        Interpolation steps (exact on a chain with regular blocks) alternate with bisection
        steps, so the search is short in practice and bounded whatever the block times.
        """
        latest = latest or await self._w3.eth.get_block("latest")
        hi, ts_hi = int(latest["number"]), int(latest["timestamp"])
        if ts_hi < timestamp:
            return hi
        lo, ts_lo = 0, int((await self._w3.eth.get_block(0))["timestamp"])
        if ts_lo >= timestamp:
            return 0
        for step in range(MAX_BLOCK_SEARCH_STEPS):  # invariant: ts_lo < timestamp <= ts_hi
            if hi - lo <= 1:
                break
            if step % 2 == 0:
                guess = lo + (timestamp - ts_lo) * (hi - lo) // max(ts_hi - ts_lo, 1)
            else:
                guess = (lo + hi) // 2
            guess = min(max(guess, lo + 1), hi - 1)
            ts = int((await self._w3.eth.get_block(guess))["timestamp"])
            if ts < timestamp:
                lo, ts_lo = guess, ts
            else:
                hi, ts_hi = guess, ts
        return hi

    async def close(self) -> None:
        """Release the HTTP sessions (this chain's and the other networks')."""
        for other in self._elsewhere.values():
            await other.close()
        await self._w3.provider.disconnect()
        await self._rpc.aclose()
