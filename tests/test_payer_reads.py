"""Payer-bound job reads (`X402R_JOB_READS=payer`): sign-in-with-x proofs from real signers.

The app runs in-process on SQLite; proofs are signed with eth_account keys through the SDK's
SIWX client functions, as a paying agent would, for the HTTP route and the MCP read tool.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from x402.extensions.sign_in_with_x import SIGN_IN_WITH_X, create_siwx_payload, encode_siwx_header

from app.api.read_proof import ReadProofs
from app.jobs.models import JobState
from tests.inprocess_app import client_for, complete, insert_job, start_app
from tests.settings_factory import PUBLIC_BASE_URL

PAYER = Account.create()
STRANGER = Account.create()


@pytest.fixture(scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    tmp = Path(tmp_path_factory.mktemp("payer-reads"))
    async for application in start_app(tmp, writes_jobs=True, job_reads="payer"):
        yield application


@pytest.fixture
async def job_id(app: FastAPI) -> str:
    """A completed job paid by PAYER (immutable: the fast path would serve it from memory)."""
    job = await insert_job(app, JobState.SUBMITTED, payer=PAYER.address)
    await complete(app, job)
    return job


def url(job: str) -> str:
    return f"/v1/jobs/{job}"


async def proof(challenge: dict[str, Any], signer: LocalAccount) -> str:
    """The `SIGN-IN-WITH-X` header: the challenge signed for its first chain with the SDK."""
    extension = challenge[SIGN_IN_WITH_X]
    info = {**extension["info"], **extension["supportedChains"][0]}
    payload = await create_siwx_payload(info, signer, extension["info"]["uri"])
    return encode_siwx_header(payload)


async def read(app: FastAPI, job: str, header: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"SIGN-IN-WITH-X": header} if header is not None else {}
    async with client_for(app) as http:
        response = await http.get(url(job), headers=headers)
    return response.status_code, response.json()


async def challenge_of(app: FastAPI, job: str) -> dict[str, Any]:
    status, body = await read(app, job)
    assert status == 401
    details: dict[str, Any] = body["details"]
    return details


@pytest.mark.parametrize("query", ["wait=1", "wait=0.5"])
async def test_a_long_poll_without_proof_is_a_401_too(
    app: FastAPI, job_id: str, query: str
) -> None:
    """Long polls are served apart from the route: they are proven all the same."""
    async with client_for(app) as http:
        response = await http.get(f"{url(job_id)}?{query}")
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "job_read_proof_required"


async def test_a_read_without_proof_is_a_401_with_the_challenge(app: FastAPI, job_id: str) -> None:
    async with client_for(app) as http:
        response = await http.get(url(job_id))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "SIGN-IN-WITH-X"
    body = response.json()
    assert body["error"] == "job_read_proof_required"
    extension = body["details"][SIGN_IN_WITH_X]
    info = extension["info"]
    assert info["domain"] == "gw.example.com"
    assert info["uri"] == PUBLIC_BASE_URL + url(job_id)
    assert info["resources"] == [info["uri"]]
    assert len(info["nonce"]) == 32
    issued = datetime.fromisoformat(info["issuedAt"])
    expires = datetime.fromisoformat(info["expirationTime"])
    assert expires - issued == timedelta(seconds=300)
    assert extension["supportedChains"] == [{"chainId": "eip155:8453", "type": "eip191"}]
    assert "signature" in extension["schema"]["required"]


async def test_the_payer_reads_and_a_proofless_read_stays_refused(
    app: FastAPI, job_id: str
) -> None:
    signed = await proof(await challenge_of(app, job_id), PAYER)
    for _ in range(2):  # the second answer would come from the cache of immutable jobs
        status, body = await read(app, job_id, signed)
        assert status == 200, body
        assert body["jobId"] == job_id
        assert body["status"] == "completed"
    status, body = await read(app, job_id)
    assert status == 401, "a cached job is never served without the proof"


async def test_another_signer_is_forbidden(app: FastAPI, job_id: str) -> None:
    signed = await proof(await challenge_of(app, job_id), STRANGER)
    status, body = await read(app, job_id, signed)
    assert status == 403
    assert body["error"] == "job_read_forbidden"
    assert job_id not in json.dumps(body)


async def test_an_expired_proof_is_refused(app: FastAPI, job_id: str) -> None:
    proofs = ReadProofs(app.state.gateway.settings)
    old = proofs.challenge(job_id, now=datetime.now(UTC) - timedelta(seconds=400))
    status, body = await read(app, job_id, await proof(old, PAYER))
    assert status == 401
    assert body["error"] == "job_read_proof_expired"
    assert body["details"]["reason"] == "invalid_siwx_issued_at_too_old"
    assert SIGN_IN_WITH_X in body["details"]  # a fresh challenge to sign


@pytest.mark.parametrize(
    "header",
    [
        "not base64!",
        base64.b64encode(b"[1, 2]").decode(),
        base64.b64encode(json.dumps({"domain": "gw.example.com"}).encode()).decode(),
    ],
    ids=["not-base64", "not-an-object", "fields-missing"],
)
async def test_a_malformed_proof_is_refused(app: FastAPI, job_id: str, header: str) -> None:
    status, body = await read(app, job_id, header)
    assert status == 401
    assert body["error"] == "job_read_proof_malformed"


async def test_proofs_are_bound_to_our_nonce_and_to_the_job(app: FastAPI, job_id: str) -> None:
    challenge = await challenge_of(app, job_id)
    forged = json.loads(json.dumps(challenge))
    forged[SIGN_IN_WITH_X]["info"]["nonce"] = "0" * 32  # a nonce we never issued
    status, body = await read(app, job_id, await proof(forged, PAYER))
    assert (status, body["error"]) == (401, "job_read_proof_invalid")
    assert body["details"]["reason"] == "invalid_siwx_nonce"

    other_job = await insert_job(app, JobState.SUBMITTED, payer=PAYER.address)
    status, body = await read(app, other_job, await proof(challenge, PAYER))
    assert (status, body["error"]) == (401, "job_read_proof_invalid")
    assert body["details"]["reason"] == "invalid_siwx_uri_mismatch"

    tampered = json.loads(base64.b64decode(await proof(challenge, PAYER)))
    tampered["address"] = STRANGER.address  # claims another address than the signer's
    header = base64.b64encode(json.dumps(tampered).encode()).decode()
    status, body = await read(app, job_id, header)
    assert (status, body["error"]) == (401, "job_read_proof_invalid")
    assert body["details"]["reason"] == "invalid_siwx_signature"


async def _mcp_read(app: FastAPI, job: str, meta: dict[str, Any]) -> dict[str, Any]:
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "get_job", "arguments": {"jobId": job}, "_meta": meta},
    }
    headers = {"Accept": "application/json, text/event-stream"}
    async with client_for(app) as http:
        response = await http.post("/mcp", json=message, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


async def test_the_mcp_read_tool_is_payer_bound_too(app: FastAPI, job_id: str) -> None:
    refused = await _mcp_read(app, job_id, {})
    assert refused["isError"] is True
    assert refused["structuredContent"]["error"] == "job_read_proof_required"
    assert refused["structuredContent"]["status"] == 401
    challenge = refused["structuredContent"]["details"]
    stranger = await _mcp_read(app, job_id, {SIGN_IN_WITH_X: await proof(challenge, STRANGER)})
    assert stranger["structuredContent"]["error"] == "job_read_forbidden"
    signed = await proof(challenge, PAYER)
    as_header = await _mcp_read(app, job_id, {SIGN_IN_WITH_X: signed})
    as_object = await _mcp_read(app, job_id, {SIGN_IN_WITH_X: json.loads(base64.b64decode(signed))})
    for answer in (as_header, as_object):
        assert answer["isError"] is False, answer
        assert answer["structuredContent"]["jobId"] == job_id
