"""Read-only chain queries used to reconcile unknown outcomes: was this authorization used?"""

from __future__ import annotations

from eth_utils.crypto import keccak
from web3 import AsyncHTTPProvider, AsyncWeb3

_AUTH_STATE_ABI = [
    {
        "name": "authorizationState",
        "type": "function",
        "stateMutability": "view",
        "inputs": [
            {"name": "authorizer", "type": "address"},
            {"name": "nonce", "type": "bytes32"},
        ],
        "outputs": [{"name": "", "type": "bool"}],
    }
]
AUTHORIZATION_USED_TOPIC = "0x" + keccak(text="AuthorizationUsed(address,bytes32)").hex()


class ChainReader:
    """EIP-3009 authorization lookups on one token."""

    def __init__(self, rpc_url: str, token: str, *, timeout_s: float = 10.0) -> None:
        self._w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": timeout_s}))
        self._token = AsyncWeb3.to_checksum_address(token)
        self._contract = self._w3.eth.contract(address=self._token, abi=_AUTH_STATE_ABI)

    async def authorization_used(self, authorizer: str, nonce: str) -> bool:
        """True once `transferWithAuthorization` with this nonce has been executed."""
        fn = self._contract.functions.authorizationState(
            AsyncWeb3.to_checksum_address(authorizer), bytes.fromhex(nonce.removeprefix("0x"))
        )
        return bool(await fn.call())

    async def authorization_tx(self, authorizer: str, nonce: str) -> str | None:
        """The transaction that used this authorization, from its `AuthorizationUsed` event."""
        topic_authorizer = "0x" + "00" * 12 + authorizer.lower().removeprefix("0x")
        logs = await self._w3.eth.get_logs(
            {
                "address": self._token,
                "fromBlock": 0,
                "toBlock": "latest",
                "topics": [AUTHORIZATION_USED_TOPIC, topic_authorizer, nonce.lower()],
            }
        )
        if not logs:
            return None
        tx = logs[-1]["transactionHash"]
        return tx if isinstance(tx, str) else "0x" + bytes(tx).hex()

    async def authorization_outcome(self, authorizer: str, nonce: str) -> tuple[bool, str | None]:
        """(used?, the transaction that used it); raises when the chain cannot be read."""
        if not await self.authorization_used(authorizer, nonce):
            return False, None
        return True, await self.authorization_tx(authorizer, nonce)

    async def close(self) -> None:
        """Release the HTTP session."""
        await self._w3.provider.disconnect()
