"""Everything outside the gateway in one fast test: one fake token ledger, and the scripted
facilitator, the fake upstream and (optionally) the chain reader over it."""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.world import UPSTREAM_PAYEE, address
from tests.fast.chain import FakeChain, Ledger
from tests.fast.facilitator import ScriptedFacilitator
from tests.fast.upstream import FakeUpstream


@dataclass
class World:
    """Everything outside the gateway; it outlives a gateway (a crash and a restart)."""

    ledger: Ledger
    facilitator: ScriptedFacilitator
    upstream: FakeUpstream
    chain: FakeChain | None


def new_world(hot_wallet: str, *, chain: bool) -> World:
    """A fresh ledger, facilitator and upstream; a chain reader over them when `chain`."""
    ledger = Ledger()
    reader = FakeChain(ledger) if chain else None
    return World(
        ledger=ledger,
        facilitator=ScriptedFacilitator(ledger, hot_wallet, chain=reader),
        upstream=FakeUpstream(ledger, address(UPSTREAM_PAYEE)),
        chain=reader,
    )
