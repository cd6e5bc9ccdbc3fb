"""A payer-bound read end to end: the SDK pays, then only the payer's signed proof reads the job."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from eth_account import Account
from x402.extensions.sign_in_with_x import SIGN_IN_WITH_X, create_siwx_payload, encode_siwx_header

from sandbox.world import PAYER, World, key_hex
from tests.helpers import paid_post
from tests.worlds import WorldMaker


async def _signed(challenge: dict[str, object], key: str) -> str:
    extension = challenge[SIGN_IN_WITH_X]
    assert isinstance(extension, dict)
    info = {**extension["info"], **extension["supportedChains"][0]}
    payload = await create_siwx_payload(info, Account.from_key(key), extension["info"]["uri"])
    return encode_siwx_header(payload)


@pytest.fixture(scope="module")
def payer_world(make_module_world: WorldMaker, module_db: str) -> World:
    return make_module_world(job_delay_s=0.3, database_url=module_db, X402R_JOB_READS="payer")


async def test_only_the_payer_reads_its_job(payer_world: World) -> None:
    world = payer_world
    paid = await paid_post(world.gateway_url() + "/v1/images/edit", key_hex(PAYER))
    assert paid.status_code == 200, paid.text
    status_url = paid.json()["statusUrl"]
    async with httpx.AsyncClient(timeout=30) as http:
        refused = await http.get(status_url)
        assert refused.status_code == 401
        assert refused.json()["error"] == "job_read_proof_required"
        challenge = refused.json()["details"]
        stranger = await http.get(
            status_url, headers={"SIGN-IN-WITH-X": await _signed(challenge, "0x" + "7" * 64)}
        )
        assert stranger.status_code == 403
        assert stranger.json()["error"] == "job_read_forbidden"
        proof = {"SIGN-IN-WITH-X": await _signed(challenge, key_hex(PAYER))}
        for _ in range(60):  # one proof serves the polls until it expires
            read = await http.get(status_url, params={"wait": 5}, headers=proof)
            assert read.status_code == 200, read.text
            if read.json()["status"] != "processing":
                break
            await asyncio.sleep(0.1)
    assert read.json()["status"] == "completed"
    assert read.json()["payment"]["payer"] == Account.from_key(key_hex(PAYER)).address
