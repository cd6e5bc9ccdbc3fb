"""Schema-driven fuzzing of every operation in our OpenAPI document: no input causes a 5xx.

Schemathesis generates requests (valid and invalid bodies, paths, queries, headers) from the
app's own schema and sends them in-process. Paid routes also get random payment headers, which
must be refused locally (402) before any facilitator call: the facilitator and the upstream
are a closed port here, and reaching either would show up as a 503.
`/readyz` is excluded from the fuzzing: it answers 503 by design while the facilitator is down,
which a separate test asserts.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.python import asgi

from app.main import create_app
from tests.settings_factory import make_settings

PAYMENT_HEADER_NAMES = ["X-PAYMENT", "PAYMENT-SIGNATURE", "x-payment"]

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=8,
)
_payment_like = st.fixed_dictionaries(
    {
        "x402Version": st.sampled_from([1, 2]),
        "scheme": st.sampled_from(["exact", "upto"]),
        "network": st.sampled_from(["base", "eip155:8453"]),
        "payload": st.dictionaries(st.sampled_from(["authorization", "signature"]), _json),
    }
)
payment_headers = st.one_of(
    st.none(),
    # Any latin-1 text an HTTP client can send (no line breaks, no leading whitespace).
    st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=200).map(
        str.lstrip
    ),
    (_json | _payment_like).map(lambda v: base64.b64encode(json.dumps(v).encode()).decode()),
)


# The app is built here, but nothing runs until the first request starts its lifespan.
_DB_DIR = Path(tempfile.mkdtemp(prefix="x402r-fuzz-"))
APP = create_app(
    make_settings(
        database_url=f"sqlite+aiosqlite:///{_DB_DIR / 'gateway.db'}",
        workers_enabled=False,
        facilitator_timeout_s=2,
        upstream_timeout_s=2,
        max_wait_s=1,
    )
)
schema = schemathesis.openapi.from_dict(APP.openapi())
schema.app = APP


@pytest.fixture(scope="module", autouse=True)
def _stop_app() -> Iterator[None]:
    """Stop the app's lifespan (started by the first fuzzed request) and drop its database."""
    yield
    asgi.shutdown_lifespans()
    shutil.rmtree(_DB_DIR, ignore_errors=True)


@schema.exclude(path="/readyz").parametrize()
@schema.given(payment=payment_headers, header_name=st.sampled_from(PAYMENT_HEADER_NAMES))
@settings(
    max_examples=50,
    deadline=None,
    # Generated cases only: the documented request example is an unpaid valid body (a 402),
    # checked in tests/test_openapi_contract.py; schemathesis refuses it beside `given`.
    phases=[Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_operation_answers_5xx(
    case: schemathesis.Case[Any], payment: str | None, header_name: str
) -> None:
    if payment is not None and case.method == "POST":
        case.headers[header_name] = payment
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])


def test_the_fuzzed_schema_has_the_paid_routes() -> None:
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    documented = {(operation.method.upper(), operation.path) for operation in operations}
    assert documented >= {
        ("POST", "/v1/images/edit"),
        ("POST", "/api/ai/generations/images/nano-banana-edit"),
        ("GET", "/v1/jobs/{job_id}"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
    }


async def test_readyz_reports_the_unreachable_facilitator(tmp_path: Path) -> None:
    app = create_app(
        make_settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'r.db'}", workers_enabled=False
        )
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http,
    ):
        response = await http.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["facilitator"].startswith("error: ")
