"""Pay one request with the legacy v1-only x402 client (PyPI `x402==1.0.0`), print the result.

Runs inside its own virtualenv (`.venv-x402v1`, made by `make deps`): the legacy release
shares the import name `x402` with the current SDK.

    .venv-x402v1/bin/python tests/legacy/pay_v1.py URL PRIVATE_KEY BODY_JSON
"""

import asyncio
import json
import sys

from eth_account import Account
from x402.clients.base import decode_x_payment_response
from x402.clients.httpx import x402HttpxClient


async def main(url: str, key: str, body: str) -> None:
    async with x402HttpxClient(account=Account.from_key(key), timeout=60) as client:
        response = await client.post(url, json=json.loads(body))
        await response.aread()
    settlement = response.headers.get("x-payment-response")
    json.dump(
        {
            "status": response.status_code,
            "body": response.json(),
            "settlement": decode_x_payment_response(settlement) if settlement else None,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
