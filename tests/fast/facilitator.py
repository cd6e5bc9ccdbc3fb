"""A scripted facilitator (the `Facilitator` protocol): each call takes the next outcome of
its script, moves money on the fake ledger as a real one would, and is recorded."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from x402.schemas import SettleResponse, VerifyResponse

from app.payments.facilitator import Payload, Requirements
from tests.fast.chain import FakeChain, Ledger, authorization_of, key

NONCE_USED = "invalid_exact_evm_nonce_already_used"
REFUSAL = "insufficient_funds"


class Verify(StrEnum):
    """What `verify` answers."""

    VALID = "valid"
    INVALID = "invalid"  # a definite no, with a reason
    RAISES = "raises"  # unreachable, 5xx, garbage: no answer at all


class Settle(StrEnum):
    """What `settle` does and answers."""

    SETTLED = "settled"  # executed, success with its transaction
    REFUSED = "refused"  # nothing executed, a definite refusal
    TIMEOUT = "timeout"  # nothing executed, no answer
    TIMEOUT_LANDED = "timeout_landed"  # executed, but the answer is lost
    RAISES = "raises"  # nothing executed, an error instead of an answer
    LIES = "lies"  # success naming a transaction that moved nothing
    FRONTRUN = "frontrun"  # the signer spent the nonce elsewhere first: "nonce used"


@dataclass(frozen=True)
class Call:
    """One call the gateway made: `verify` or `settle`, for the client's payment or a refund."""

    method: str
    party: str  # "client" or "refund"
    outcome: str
    tx: str | None = None  # what the call executed on the ledger
    confirmable: bool = True  # the chain (if any) could be read to confirm the answer


@dataclass
class ScriptedFacilitator:
    """Outcomes are taken in order; an empty script answers VALID / SETTLED."""

    ledger: Ledger
    hot_wallet: str
    verify_script: deque[Verify] = field(default_factory=deque)
    client_script: deque[Settle] = field(default_factory=deque)
    refund_script: deque[Settle] = field(default_factory=deque)
    calls: list[Call] = field(default_factory=list)
    chain: FakeChain | None = None  # the gateway's, when it has one

    def script(
        self,
        *,
        verify: list[Verify] | None = None,
        settle: list[Settle] | None = None,
        refund: list[Settle] | None = None,
    ) -> None:
        """Queue the next outcomes of each kind of call."""
        self.verify_script.extend(verify or [])
        self.client_script.extend(settle or [])
        self.refund_script.extend(refund or [])

    def settles(self, party: str) -> list[Call]:
        """The settle calls made for `party`."""
        return [c for c in self.calls if c.method == "settle" and c.party == party]

    def _party(self, payload: Payload) -> str:
        signer = str(authorization_of(payload)["from"]).lower()
        return "refund" if signer == self.hot_wallet.lower() else "client"

    async def verify(self, payload: Payload, requirements: Requirements) -> VerifyResponse:
        """Verify by script (a used nonce is always invalid, as on a real chain)."""
        outcome = self.verify_script.popleft() if self.verify_script else Verify.VALID
        self.calls.append(Call("verify", self._party(payload), outcome))
        auth = authorization_of(payload)
        if outcome is Verify.RAISES:
            raise ConnectionError("facilitator unreachable")
        if key(str(auth["from"]), str(auth["nonce"])) in self.ledger.used:
            return VerifyResponse(is_valid=False, invalid_reason=NONCE_USED)
        if outcome is Verify.INVALID:
            return VerifyResponse(is_valid=False, invalid_reason=REFUSAL, invalid_message="poor")
        return VerifyResponse(is_valid=True, payer=str(auth["from"]))

    async def settle(self, payload: Payload, requirements: Requirements) -> SettleResponse:
        """Settle by script: execute on the ledger (or not), answer (or not)."""
        party = self._party(payload)
        script = self.refund_script if party == "refund" else self.client_script
        outcome = script.popleft() if script else Settle.SETTLED
        tx = None
        if outcome in (Settle.SETTLED, Settle.TIMEOUT_LANDED):
            tx = self.ledger.execute_payload(payload)
        elif outcome is Settle.FRONTRUN:
            self.ledger.spend_elsewhere(payload)
        confirmable = self.chain is None or not self.chain.down
        self.calls.append(Call("settle", party, outcome, tx, confirmable))
        network = str(requirements.network)
        if outcome in (Settle.TIMEOUT, Settle.TIMEOUT_LANDED):
            raise TimeoutError
        if outcome is Settle.RAISES:
            raise RuntimeError("facilitator answered garbage")
        if outcome is Settle.REFUSED:
            return SettleResponse(
                success=False, error_reason=REFUSAL, transaction="", network=network
            )
        if outcome is Settle.LIES:
            return SettleResponse(success=True, transaction="0x" + "ab" * 32, network=network)
        if tx is None:  # SETTLED on a used nonce, FRONTRUN: what a real facilitator says
            return SettleResponse(
                success=False, error_reason=NONCE_USED, transaction="", network=network
            )
        return SettleResponse(success=True, transaction=tx, network=network)
