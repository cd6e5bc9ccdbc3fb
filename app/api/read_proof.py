"""Payer-bound job reads: a sign-in-with-x (SIWX) proof that the reader is the address that paid.

Opt-in with `X402R_JOB_READS=payer` (by default a job id is the capability to read it). A read
without a proof is answered 401 with the SIWX challenge for that job (`details`, in the
extension's own shape); the client signs it (EIP-4361) and sends it back base64 in the
`SIGN-IN-WITH-X` header (MCP: `_meta["sign-in-with-x"]`). The SDK checks domain, URI origin,
age, expiry and the signature. We add two checks of our own: the proof names this job's URI,
and its nonce is one we issued for that URI at that `issuedAt` (an HMAC under a key derived
from the hot wallet's, so any replica checks it without state). A proof then serves every read
of its job until it expires (`X402R_SIWX_MAX_AGE_S`): reads move no money and are idempotent,
so used nonces are not tracked.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

from pydantic import ValidationError
from x402.extensions.sign_in_with_x import (
    SIGN_IN_WITH_X,
    SIWxPayload,
    SIWxValidationOptions,
    build_siwx_schema,
    parse_siwx_header,
    validate_siwx_message,
    verify_siwx_signature,
)

from app.core.errors import AppError, Unauthorized
from app.core.networks import caip2
from app.core.settings import Settings
from app.jobs.views import JOBS_PREFIX

HEADER = "SIGN-IN-WITH-X"
# SDK reasons that mean "this proof is too old or not yet valid": sign a fresh challenge.
_STALE = frozenset(
    {
        "invalid_siwx_issued_at_too_old",
        "invalid_siwx_expired",
        "invalid_siwx_issued_at_in_future",
        "invalid_siwx_not_yet_valid",
    }
)


def _timestamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ReadProofs:
    """Challenges for, and checks of, proofs that a reader is a job's payer."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.hot_wallet_private_key.get_secret_value().encode()
        self._key = hashlib.sha256(b"x402-reseller siwx nonce\0" + secret).digest()
        self._base = settings.base_url
        parsed = urlparse(self._base)
        self._origin = f"{parsed.scheme}://{parsed.netloc}"
        self._domain = parsed.netloc
        self._chain = caip2(settings.network)
        self._max_age_s = settings.siwx_max_age_s

    def job_uri(self, job_id: str) -> str:
        """The resource a proof for `job_id` names: the job's URL."""
        return self._base + JOBS_PREFIX + job_id

    def _nonce(self, issued_at: str, uri: str) -> str:
        return hmac.new(self._key, f"{issued_at}\n{uri}".encode(), hashlib.sha256).hexdigest()[:32]

    def challenge(self, job_id: str, now: datetime | None = None) -> dict[str, Any]:
        """`{"sign-in-with-x": {info, supportedChains, schema}}` for reading `job_id`, issued
        `now` (by default, the present)."""
        now = now or datetime.now(UTC)
        issued_at, uri = _timestamp(now), self.job_uri(job_id)
        info = {
            "domain": self._domain,
            "uri": uri,
            "version": "1",
            "nonce": self._nonce(issued_at, uri),
            "issuedAt": issued_at,
            "expirationTime": _timestamp(now + timedelta(seconds=self._max_age_s)),
            "statement": f"Read job {job_id} as the address that paid for it",
            "resources": [uri],
        }
        chains = [{"chainId": self._chain, "type": "eip191"}]
        return {
            SIGN_IN_WITH_X: {"info": info, "supportedChains": chains, "schema": build_siwx_schema()}
        }

    def _refused(self, job_id: str, code: str, message: str, reason: str) -> Unauthorized:
        return Unauthorized(
            message,
            code=code,
            details={"reason": reason, **self.challenge(job_id)},
            headers={"WWW-Authenticate": HEADER},
        )

    async def reader(self, job_id: str, proof: str | dict[str, Any] | None) -> str:
        """The address proven by `proof` for reading `job_id`; Unauthorized (401) otherwise."""
        if proof is None:
            raise self._refused(
                job_id,
                "job_read_proof_required",
                f"this gateway lets only the payer read a job: sign the challenge and send it "
                f"in the {HEADER} header",
                "missing",
            )
        try:
            payload = (
                parse_siwx_header(proof)
                if isinstance(proof, str)
                else SIWxPayload.model_validate(proof)
            )
        except (ValueError, ValidationError) as exc:
            raise self._refused(
                job_id,
                "job_read_proof_malformed",
                f"the read proof is malformed: {exc}",
                "malformed",
            ) from exc
        options = SIWxValidationOptions(max_age=self._max_age_s * 1000)
        validation = await validate_siwx_message(payload, self._origin, options)
        if not validation.is_valid:
            reason: str = validation.invalid_reason or "invalid_siwx"
            code = "job_read_proof_expired" if reason in _STALE else "job_read_proof_invalid"
            raise self._refused(job_id, code, validation.invalid_message or reason, reason)
        if payload.uri != self.job_uri(job_id):
            raise self._refused(
                job_id,
                "job_read_proof_invalid",
                "the read proof names another resource than this job",
                "invalid_siwx_uri_mismatch",
            )
        if not hmac.compare_digest(payload.nonce, self._nonce(payload.issued_at, payload.uri)):
            raise self._refused(
                job_id,
                "job_read_proof_invalid",
                "the read proof's nonce was not issued by this gateway for this job and time",
                "invalid_siwx_nonce",
            )
        verification = await verify_siwx_signature(payload)
        if not verification.is_valid or not verification.payer:
            why = verification.invalid_reason or "invalid_siwx_signature"
            raise self._refused(
                job_id, "job_read_proof_invalid", verification.invalid_message or why, why
            )
        return verification.payer


def ensure_payer(reader: str, payer: str | None) -> None:
    """403 unless the proven reader is the job's payer."""
    if payer is None or reader.lower() != payer.lower():
        raise AppError(
            "this job was paid for by another address; only its payer may read it",
            code="job_read_forbidden",
            status_code=403,
        )
