"""Pay for one edit with the official x402 SDK client and poll it to completion.

python -m sandbox.pay --gateway http://127.0.0.1:8402 --key 0x… [--v1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import httpx
from eth_account import Account
from x402 import x402Client
from x402.http import X_PAYMENT_HEADER, encode_payment_signature_header
from x402.http.clients import wrapHttpxWithPayment
from x402.mechanisms.evm import EthAccountSigner
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.mechanisms.evm.exact.v1.client import ExactEvmSchemeV1
from x402.schemas import PaymentRequiredV1

EDIT_BODY: dict[str, Any] = {
    "prompt": "turn the cat into a cyberpunk portrait, neon rim light",
    "image_urls": ["https://example.com/cat.png"],
    "num_images": 1,
    "output_format": "png",
}


def payer_client(private_key: str, *, v1_only: bool = False) -> x402Client:
    """An SDK client that pays from `private_key` (v2 and v1, or v1 only)."""
    signer = EthAccountSigner(Account.from_key(private_key))
    client = x402Client()
    if v1_only:
        client.register_v1("base", ExactEvmSchemeV1(signer))
    else:
        register_exact_evm_client(client, signer)
    return client


async def _post_paid_v1(url: str, private_key: str, body: dict[str, Any]) -> httpx.Response:
    """What a v1-only client does: read `accepts` from the 402 body, answer with X-PAYMENT.

    The SDK's transport prefers the v2 `PAYMENT-REQUIRED` header whenever the server sends
    one (ours always does), so v1 is paid by hand here, with the SDK's own v1 scheme.
    """
    async with httpx.AsyncClient(timeout=60) as http:
        unpaid = await http.post(url, json=body)
        if unpaid.status_code != 402:
            return unpaid
        required = PaymentRequiredV1.model_validate(unpaid.json())
        payload = await payer_client(private_key, v1_only=True).create_payment_payload(required)
        header = encode_payment_signature_header(payload)
        return await http.post(url, json=body, headers={X_PAYMENT_HEADER: header})


async def pay_and_wait(
    gateway: str, private_key: str, body: dict[str, Any], *, v1_only: bool = False
) -> dict[str, Any]:
    """POST the edit (the SDK pays on 402), then long-poll our status URL until it finishes."""
    url = f"{gateway}/v1/images/edit"
    if v1_only:
        response = await _post_paid_v1(url, private_key, body)
    else:
        async with wrapHttpxWithPayment(payer_client(private_key), timeout=60) as http:
            response = await http.post(url, json=body)
    if response.status_code != 200:
        raise SystemExit(f"payment failed: {response.status_code} {response.text}")
    accepted: dict[str, Any] = response.json()
    print("accepted:", json.dumps(accepted))
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient(timeout=60) as http:
        while time.monotonic() < deadline:
            job: dict[str, Any] = (
                await http.get(accepted["statusUrl"], params={"wait": 20})
            ).json()
            if job["status"] != "processing":
                return job
    raise SystemExit("job did not finish in 120 s")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.pay")
    parser.add_argument("--gateway", default="http://127.0.0.1:8402")
    parser.add_argument("--key", required=True, help="payer private key (sandbox account)")
    parser.add_argument("--prompt", default=EDIT_BODY["prompt"])
    parser.add_argument("--v1", action="store_true", help="pay with x402 v1 only")
    options = parser.parse_args(argv)
    body = {**EDIT_BODY, "prompt": options.prompt}
    job = asyncio.run(pay_and_wait(options.gateway, options.key, body, v1_only=options.v1))
    print(json.dumps(job, indent=2))
    return 0 if job["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
