"""A fake token ledger and the chain reader over it: the outside world the fast suite's fake
facilitator and upstream move money in, and the gateway reads back (as `ChainReader`)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from app.payments.chain import AuthorizationUse, Transfer, Window


class RpcDown(ConnectionError):
    """The RPC node could not be reached."""


def authorization_of(payload: Any) -> dict[str, Any]:
    """The EIP-3009 authorization inside an x402 payload (model or wire dict)."""
    inner = payload["payload"] if isinstance(payload, dict) else payload.payload
    authorization: dict[str, Any] = inner["authorization"]
    return authorization


def key(authorizer: str, nonce: str) -> tuple[str, str]:
    """How the token contract indexes an authorization."""
    return authorizer.lower(), nonce.lower()


@dataclass
class Ledger:
    """Executed `transferWithAuthorization` calls: at most one per (authorizer, nonce)."""

    transfers: dict[str, Transfer] = field(default_factory=dict)  # tx -> what it moved
    used: dict[tuple[str, str], str] = field(default_factory=dict)  # authorization -> tx

    def execute(self, authorizer: str, nonce: str, transfer: Transfer) -> str | None:
        """Execute an authorization once: its transaction, or None when its nonce is used."""
        if key(authorizer, nonce) in self.used:
            return None
        tx = "0x" + secrets.token_hex(32)
        self.used[key(authorizer, nonce)] = tx
        self.transfers[tx] = Transfer(
            transfer.sender.lower(), transfer.recipient.lower(), transfer.amount
        )
        return tx

    def execute_payload(self, payload: Any) -> str | None:
        """Execute the authorization a signed x402 payload carries, as it is signed."""
        auth = authorization_of(payload)
        moved = Transfer(str(auth["from"]), str(auth["to"]), int(auth["value"]))
        return self.execute(str(auth["from"]), str(auth["nonce"]), moved)

    def spend_elsewhere(self, payload: Any) -> str | None:
        """The signer uses the payload's nonce first, on a transfer to somebody else."""
        auth = authorization_of(payload)
        other = Transfer(str(auth["from"]), "0x" + "ee" * 20, 1)
        return self.execute(str(auth["from"]), str(auth["nonce"]), other)

    def paid_to(self, recipient: str) -> int:
        """Everything transferred to `recipient`."""
        return sum(t.amount for t in self.transfers.values() if t.recipient == recipient.lower())

    def moved(self, sender: str, recipient: str) -> list[int]:
        """The amounts of every transfer from `sender` to `recipient`."""
        pair = (sender.lower(), recipient.lower())
        return [t.amount for t in self.transfers.values() if (t.sender, t.recipient) == pair]


@dataclass
class FakeChain:
    """`ChainReader` over a `Ledger`; `down` makes every read fail; the authorizations of a
    `hidden` signer show as used, but their transactions are not found (a lagging node);
    its clock (the latest block's time) runs `ahead_s` ahead of the wall clock."""

    ledger: Ledger
    down: bool = False
    hidden: set[str] = field(default_factory=set)
    reads: int = 0
    ahead_s: float = 0.0

    def reach(self, moment: float) -> None:
        """Time passes on chain until at least `moment` (unix seconds)."""
        self.ahead_s = max(self.ahead_s, moment - time.time())

    async def latest_timestamp(self) -> int:
        """The latest block's time."""
        self._read()
        return int(time.time() + self.ahead_s)

    def _read(self) -> None:
        self.reads += 1
        if self.down:
            raise RpcDown("connection refused")

    def at(self, network: str, token: str) -> FakeChain:
        """As `ChainReader.at`: the fake world has one chain and one token."""
        return self

    async def authorization_used(self, authorizer: str, nonce: str) -> bool:
        """Whether the authorization was executed."""
        self._read()
        return key(authorizer, nonce) in self.ledger.used

    async def pays(self, tx: str, expected: Transfer, nonce: str) -> bool:
        """Whether `tx` used the sender's authorization `nonce` and moved exactly `expected`."""
        self._read()
        if self.ledger.used.get(key(expected.sender, nonce)) != tx:
            return False
        moved = self.ledger.transfers.get(tx)
        wanted = Transfer(expected.sender.lower(), expected.recipient.lower(), expected.amount)
        return moved == wanted

    async def authorization_outcome(
        self, authorizer: str, nonce: str, window: Window, expected: Transfer
    ) -> AuthorizationUse:
        """As `ChainReader.authorization_outcome`."""
        assert window.start <= window.end
        if not await self.authorization_used(authorizer, nonce):
            return AuthorizationUse(used=False)
        if authorizer.lower() in self.hidden:
            return AuthorizationUse(used=True)
        tx = self.ledger.used[key(authorizer, nonce)]
        return AuthorizationUse(used=True, tx=tx, paid=await self.pays(tx, expected, nonce))

    async def close(self) -> None:
        """Nothing to release."""
