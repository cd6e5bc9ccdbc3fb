"""One JSON-RPC call to an Ethereum node, on the gateway's aiohttp-backed HTTP client.

The paid path reads one receipt per settlement. Through web3's provider that read cost about
a fifth of the gateway's CPU per paid call (its middlewares format every field of the
receipt, it opens a new connection per call behind a lock taken in a thread): here it is one
POST and the node's JSON as it came. Errors never carry the RPC URL, which may hold a
provider's key.
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx

from app.core.http import http_client


class RpcError(Exception):
    """The node answered with an error, a non-200 status or something that is not JSON-RPC."""


class JsonRpc:
    """Calls on one node's HTTP endpoint (the client is made on first use, inside the loop)."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None
        self._ids = itertools.count(1)

    async def call(self, method: str, params: list[Any]) -> Any:
        """The call's `result` (None when the node has none); raises RpcError otherwise."""
        if self._http is None:
            self._http = http_client(timeout=self._timeout_s, max_connections=16)
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        response = await self._http.post(self._url, json=body)
        if response.status_code != 200:
            raise RpcError(f"{method}: the node answered HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError as exc:
            raise RpcError(f"{method}: the node's answer is not JSON") from exc
        if not isinstance(answer, dict):
            raise RpcError(f"{method}: the node's answer is not a JSON-RPC response")
        if answer.get("error") is not None:
            raise RpcError(f"{method}: the node refused: {answer['error']}")
        if "result" not in answer:
            raise RpcError(f"{method}: the node's answer has no result")
        return answer["result"]

    async def aclose(self) -> None:
        """Release the connections."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
