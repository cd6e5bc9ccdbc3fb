"""Properties over generated input: decoding never crashes, and whatever is accepted is sound.

- `parse_payment` raises PaymentRejected and nothing else, whatever the header; a payload it
  accepts always pays our price to our address on our network.
- `EditRequest` raises ValidationError and nothing else, whatever the JSON; a body it accepts
  forwards (`upstream_json()`) as UTF-8 JSON that is a fixed point of validation and that the
  simulated upstream, which validates the listing strictly, accepts too.
- Prices are the exact ceiling of the markup, in integers.
"""

from __future__ import annotations

import base64
import copy
import json
import unicodedata
from fractions import Fraction
from math import ceil
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from x402.http.utils import safe_base64_encode

from app.payments.incoming import IncomingPayment, PaymentRejected, parse_payment
from app.payments.offer import Offer
from app.payments.pricing import sale_price
from app.upstream.schemas import MAX_IMAGE_URLS, EditRequest
from sandbox.sim_images import EditRequest as UpstreamListingRequest
from sandbox.world import OPERATOR, address
from tests.settings_factory import make_offer, sign_v1, sign_v2, wire

FAST = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PRICE = 63240
REASONS = {
    "invalid_payment_header",
    "unsupported_x402_version",
    "invalid_payment_payload",
    "unsupported_payload",
    "unsupported_scheme",
    "network_mismatch",
    "asset_mismatch",
    "recipient_mismatch",
    "amount_mismatch",
    "invalid_exact_evm_payload_signature",  # a changed signed field no longer recovers
}

# Strings with every code point category, lone surrogates included.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | any_text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)


def _leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON value (containers and leaves)."""
    paths = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            paths += _leaf_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths += _leaf_paths(child, (*prefix, index))
    return paths


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    out = copy.deepcopy(value)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = new
    return out


@pytest.fixture(scope="module")
def offer() -> Offer:
    """Our offer on the main path."""
    return make_offer()


@pytest.fixture(scope="module")
async def genuine(offer: Offer) -> list[dict[str, Any]]:
    """One SDK-signed payload per x402 version (wire JSON)."""
    return [wire(await sign_v2(offer)), wire(await sign_v1(offer))]


def _parse(header: str, offer: Offer) -> IncomingPayment | PaymentRejected:
    try:
        return parse_payment(header, offer)
    except PaymentRejected as exc:  # anything else fails the test
        return exc


def _assert_sound(header: str, offer: Offer) -> None:
    """Rejected with a reason, or accepted as a payment of our price to us."""
    outcome = _parse(header, offer)
    if isinstance(outcome, PaymentRejected):
        assert outcome.reason in REASONS
        assert outcome.message
        return
    assert outcome.value == PRICE
    assert outcome.pay_to == address(OPERATOR)
    assert outcome.network == "eip155:8453"
    assert outcome.version in (1, 2)
    assert len(outcome.nonce) == 66
    assert 0 <= outcome.valid_before < 2**63


# --- parse_payment ---------------------------------------------------------------------------


@FAST
@given(header=st.text(max_size=300))
def test_parse_payment_on_arbitrary_text(offer: Offer, header: str) -> None:
    _assert_sound(header, offer)


@FAST
@given(raw=st.binary(max_size=300))
def test_parse_payment_on_arbitrary_base64_bytes(offer: Offer, raw: bytes) -> None:
    _assert_sound(base64.b64encode(raw).decode(), offer)


@FAST
@given(value=json_values)
def test_parse_payment_on_arbitrary_json(offer: Offer, value: Any) -> None:
    _assert_sound(safe_base64_encode(json.dumps(value)), offer)


@FAST
@given(data=st.data(), version=st.sampled_from([2, 1]), value=json_values)
def test_parse_payment_on_mutated_sdk_payloads(
    offer: Offer, genuine: list[dict[str, Any]], data: st.DataObject, version: int, value: Any
) -> None:
    """One field of a real signed payload replaced by arbitrary JSON."""
    payload = genuine[0] if version == 2 else genuine[1]
    path = data.draw(st.sampled_from(_leaf_paths(payload)))
    _assert_sound(safe_base64_encode(json.dumps(_replace(payload, path, value))), offer)


@FAST
@given(data=st.data(), version=st.sampled_from([2, 1]))
def test_parse_payment_on_truncated_and_corrupted_headers(
    offer: Offer, genuine: list[dict[str, Any]], data: st.DataObject, version: int
) -> None:
    header = safe_base64_encode(json.dumps(genuine[0] if version == 2 else genuine[1]))
    cut = data.draw(st.integers(0, len(header)))
    flip = data.draw(st.integers(0, len(header) - 1))
    char = data.draw(st.characters(codec="ascii"))
    _assert_sound(header[:cut], offer)
    _assert_sound(header[:flip] + char + header[flip + 1 :], offer)


# --- EditRequest ---------------------------------------------------------------------------


def _fields(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    names = st.sampled_from(
        [
            "prompt",
            "image_urls",
            "num_images",
            "aspect_ratio",
            "output_format",
            "sync_mode",
            "limit_generations",
            "extra",
        ]
    )
    return st.dictionaries(names | any_text, values, max_size=8)


@FAST
@given(value=json_values | _fields(json_values))
def test_edit_request_on_arbitrary_json(value: Any) -> None:
    for validate, data in (
        (EditRequest.model_validate_json, json.dumps(value)),
        (EditRequest.model_validate, value),
    ):
        outcome = _validate(validate, data)
        if isinstance(outcome, ValidationError):
            assert outcome.error_count() >= 1
        else:
            assert outcome.upstream_json()["image_urls"]


def _validate(validate: Any, data: Any) -> EditRequest | ValidationError:
    try:
        request: EditRequest = validate(data)
    except ValidationError as exc:  # anything else fails the test
        return exc
    return request


labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
hosts = st.builds(
    lambda parts, tld: ".".join([*parts, tld]),
    st.lists(labels, min_size=1, max_size=3),
    st.sampled_from(["com", "io", "example", "co.uk"]),
)
paths = st.lists(st.text("abcXYZ019._~-%", max_size=10), max_size=4).map(
    lambda parts: "".join("/" + p for p in parts)
)
urls = st.builds(
    lambda scheme, host, port, path, query: f"{scheme}://{host}{port}{path}{query}",
    st.sampled_from(["http", "https", "HTTPS"]),
    hosts,
    st.sampled_from(["", ":8080", ":443"]),
    paths,
    st.sampled_from(["", "?w=512", "?a=1&b=%20"]),
)
# A valid prompt has at least one visible character (not control, format or separator).
prompts = st.text(min_size=1, max_size=300).filter(
    lambda p: any(unicodedata.category(ch)[0] not in "CZ" for ch in p.strip())
)
valid_bodies = st.fixed_dictionaries(
    {"prompt": prompts, "image_urls": st.lists(urls, min_size=1, max_size=MAX_IMAGE_URLS)},
    optional={
        "num_images": st.just(1) | st.none(),
        "aspect_ratio": st.sampled_from(["auto", "21:9", "16:9", "1:1", "9:16"]) | st.none(),
        "output_format": st.sampled_from(["jpeg", "png", "webp"]) | st.none(),
        "sync_mode": st.booleans() | st.none(),
        "limit_generations": st.booleans() | st.none(),
    },
)


@FAST
@given(body=valid_bodies)
def test_valid_bodies_round_trip_through_upstream_json(body: dict[str, Any]) -> None:
    request = EditRequest.model_validate_json(json.dumps(body))
    forwarded = request.upstream_json()

    assert set(forwarded) == {k for k, v in body.items() if v is not None}
    assert forwarded["prompt"].strip() == body["prompt"].strip()
    assert len(forwarded["image_urls"]) == len(body["image_urls"])
    for sent, out in zip(body["image_urls"], forwarded["image_urls"], strict=True):
        assert isinstance(out, str)
        assert out.split("://", 1)[0] == sent.split("://", 1)[0].lower()
    for key in ("num_images", "aspect_ratio", "output_format", "sync_mode", "limit_generations"):
        assert forwarded.get(key) == body.get(key)

    encoded = json.dumps(forwarded, ensure_ascii=False).encode("utf-8")  # as httpx sends it
    assert EditRequest.model_validate_json(encoded).upstream_json() == forwarded
    UpstreamListingRequest.model_validate_json(encoded)


@FAST
@given(value=_fields(json_values | urls | prompts))
def test_whatever_is_accepted_is_forwardable(value: dict[str, Any]) -> None:
    """Any JSON the gateway accepts (and would charge for) the upstream accepts as sent."""
    try:
        request = EditRequest.model_validate_json(json.dumps(value))
    except ValidationError:
        return
    encoded = json.dumps(request.upstream_json(), ensure_ascii=False).encode("utf-8")
    UpstreamListingRequest.model_validate_json(encoded)


# --- pricing -------------------------------------------------------------------------------


@FAST
@given(
    upstream=st.integers(0, 10**12),
    markup_bps=st.integers(0, 100_000),
    fixed=st.integers(0, 10**9),
)
def test_sale_price_is_the_exact_ceiling(upstream: int, markup_bps: int, fixed: int) -> None:
    price = sale_price(upstream, markup_bps, fixed)
    assert price == ceil(Fraction(upstream * (10_000 + markup_bps), 10_000)) + fixed
    assert price >= upstream + fixed


def test_listing_price_with_default_markup() -> None:
    assert sale_price(52700, 2000, 0) == PRICE
    assert sale_price(52701, 2000, 0) == 63242  # 63241.2 rounds up
