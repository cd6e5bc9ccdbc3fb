"""`parse_payment`: every malformed or mismatched payment header is refused locally, by reason.

Payloads are signed by the official SDK client against our real offer (the one the route
serves), then tampered with. Nothing here reaches a facilitator: these checks run before one.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from x402.http import encode_payment_signature_header
from x402.http.utils import safe_base64_encode

from app.api.edits import EDIT_PATH
from app.core.settings import BASE_USDC
from app.payments.incoming import (
    MAX_HEADER_CHARS,
    PaymentRejected,
    parse_payment,
)
from app.payments.offer import Offer
from sandbox.world import OPERATOR, PAYER, PAYER_2, address, key_hex
from tests.helpers import PRICE
from tests.settings_factory import PUBLIC_BASE_URL, Payload, make_offer, sign_v1, sign_v2, wire

OTHER = "0x000000000000000000000000000000000000dEaD"
SEPOLIA_USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
DELETE = object()


def encode(data: Any) -> str:
    """Any JSON value as a payment header (the SDK's base64 helper)."""
    return safe_base64_encode(json.dumps(data))


def tampered(data: Payload, path: str, value: Any) -> Payload:
    """A deep copy of `data` with the dotted `path` set to `value` (or removed: DELETE)."""
    out = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return out


def rejected(header: str, offer: Offer) -> PaymentRejected:
    """The PaymentRejected that `header` must raise."""
    with pytest.raises(PaymentRejected) as info:
        parse_payment(header, offer)
    return info.value


@pytest.fixture(scope="module")
def offer() -> Offer:
    """Our offer on the main path."""
    return make_offer()


@pytest.fixture
async def v2(offer: Offer) -> Payload:
    """A freshly signed v2 payload (wire JSON)."""
    return wire(await sign_v2(offer))


@pytest.fixture
async def v1(offer: Offer) -> Payload:
    """A freshly signed v1 payload (wire JSON)."""
    return wire(await sign_v1(offer))


# --- genuine payments ------------------------------------------------------------------------


async def test_offer_is_the_listing_price_plus_markup(offer: Offer) -> None:
    assert offer.terms.price_atomic == PRICE
    assert offer.v1.max_amount_required == offer.v2.amount == str(PRICE)
    assert offer.v1.network == "base"
    assert offer.network_caip2 == "eip155:8453"
    assert offer.v1.resource == PUBLIC_BASE_URL + EDIT_PATH


async def test_sdk_v2_payment_is_accepted_with_its_identity(offer: Offer) -> None:
    payload = await sign_v2(offer)
    auth = payload.payload["authorization"]

    payment = parse_payment(encode_payment_signature_header(payload), offer)

    assert payment.version == 2
    assert payment.network == "eip155:8453"
    assert payment.payer == address(PAYER)
    assert payment.pay_to == address(OPERATOR)
    assert payment.nonce == auth["nonce"].lower()
    assert payment.value == PRICE
    assert payment.valid_before == int(auth["validBefore"])
    assert payment.requirements == offer.v2
    assert payment.payload_dict() == wire(payload)


async def test_sdk_v1_payment_is_accepted_with_its_identity(offer: Offer) -> None:
    payload = await sign_v1(offer, key_hex(PAYER_2))
    auth = payload.payload["authorization"]

    payment = parse_payment(encode_payment_signature_header(payload), offer)

    assert payment.version == 1
    assert payment.network == "eip155:8453"  # identity uses CAIP-2 for both versions
    assert payment.payer == address(PAYER_2)
    assert payment.nonce == auth["nonce"].lower()
    assert payment.value == PRICE
    assert payment.requirements == offer.v1


async def test_lower_case_addresses_are_the_same_addresses(offer: Offer, v2: Payload) -> None:
    data = tampered(v2, "accepted.payTo", address(OPERATOR).lower())
    data = tampered(data, "payload.authorization.to", address(OPERATOR).lower())
    data = tampered(data, "payload.authorization.from", address(PAYER).lower())

    payment = parse_payment(encode(data), offer)

    assert payment.payer == address(PAYER)  # checksummed for storage
    assert payment.pay_to == address(OPERATOR)


async def test_surrounding_whitespace_is_tolerated(offer: Offer, v2: Payload) -> None:
    assert parse_payment(f"  {encode(v2)}\t", offer).value == PRICE


# --- header encoding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("%%% not base64 %%%", id="garbage"),
        pytest.param("eyJ4NDAyVmVyc2lvbiI6", id="truncated-base64"),
        pytest.param("é" * 12, id="non-ascii"),
        pytest.param(base64.b64encode(b"hello, world").decode(), id="base64-of-text"),
        pytest.param(base64.b64encode(b"\xff\xfe\x00\x01").decode(), id="base64-of-binary"),
        pytest.param(base64.b64encode(b"{'x402Version': 2}").decode(), id="python-repr"),
        pytest.param(base64.b64encode(b'{"x402Version": 2').decode(), id="unterminated-json"),
    ],
)
def test_undecodable_header_is_rejected(header: str, offer: Offer) -> None:
    exc = rejected(header, offer)
    assert exc.reason == "invalid_payment_header"
    assert exc.message == "payment header is not base64-encoded JSON"


@pytest.mark.parametrize("cut", [8, 100, -3, -40])
async def test_truncated_sdk_header_is_rejected(cut: int, offer: Offer) -> None:
    header = encode_payment_signature_header(await sign_v2(offer))

    exc = rejected(header[:cut], offer)

    assert exc.reason == "invalid_payment_header"
    assert exc.message == "payment header is not base64-encoded JSON"


@pytest.mark.parametrize(
    "value",
    [[], [{"x402Version": 2}], "x402Version", 2, None, True],
    ids=["empty-array", "array", "string", "number", "null", "true"],
)
def test_header_json_must_be_an_object(value: Any, offer: Offer) -> None:
    exc = rejected(encode(value), offer)
    assert exc.reason == "invalid_payment_header"
    assert exc.message == "payment header JSON must be an object"


@pytest.mark.parametrize(
    "document",
    [b"[" * 50_000, b'{"x402Version": 2, "payload": ' + b"[" * 5000 + b"]" * 5000 + b"}"],
    ids=["unclosed", "balanced"],
)
def test_deeply_nested_json_is_rejected_not_crashed(document: bytes, offer: Offer) -> None:
    header = base64.b64encode(document).decode()[:MAX_HEADER_CHARS]

    exc = rejected(header, offer)

    assert exc.reason == "invalid_payment_header"
    assert exc.message == "payment header JSON is nested too deeply"


async def test_oversize_header_is_rejected_before_decoding(offer: Offer, v2: Payload) -> None:
    padded = tampered(v2, "extensions", {"padding": "x" * MAX_HEADER_CHARS})
    header = encode(padded)
    assert len(header) > MAX_HEADER_CHARS

    exc = rejected(header, offer)

    assert exc.reason == "invalid_payment_header"
    assert exc.message == f"payment header is too large (over {MAX_HEADER_CHARS} chars)"


# --- protocol version and schema -------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "shown"),
    [(3, "3"), (0, "0"), (DELETE, "None"), ("2", "'2'"), (True, "True"), (2.0, "2.0")],
    ids=["3", "0", "missing", "string", "bool", "float"],
)
def test_unsupported_x402_version(version: Any, shown: str, offer: Offer, v2: Payload) -> None:
    exc = rejected(encode(tampered(v2, "x402Version", version)), offer)
    assert exc.reason == "unsupported_x402_version"
    assert exc.message == f"x402Version must be 1 or 2, got {shown}"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("accepted", DELETE),
        ("accepted", "exact"),
        ("accepted.amount", PRICE),
        ("accepted.payTo", DELETE),
        ("accepted.network", None),
        ("payload", DELETE),
        ("payload", [1, 2]),
        ("resource", "https://gw.example.com/v1/images/edit"),
        ("extensions", ["payment-identifier"]),
    ],
)
def test_v2_schema_violations(path: str, value: Any, offer: Offer, v2: Payload) -> None:
    exc = rejected(encode(tampered(v2, path, value)), offer)
    assert exc.reason == "invalid_payment_payload"
    assert exc.message == "payment payload does not match x402 v2 schema"


@pytest.mark.parametrize(
    ("path", "value"),
    [("scheme", DELETE), ("network", DELETE), ("payload", "0x00"), ("scheme", 1)],
)
def test_v1_schema_violations(path: str, value: Any, offer: Offer, v1: Payload) -> None:
    exc = rejected(encode(tampered(v1, path, value)), offer)
    assert exc.reason == "invalid_payment_payload"
    assert exc.message == "payment payload does not match x402 v1 schema"


# --- what is being paid for ------------------------------------------------------------------


@pytest.mark.parametrize(("version", "path"), [(2, "accepted.scheme"), (1, "scheme")])
@pytest.mark.parametrize("scheme", ["upto", "EXACT", ""])
def test_wrong_scheme(
    version: int, path: str, scheme: str, offer: Offer, v1: Payload, v2: Payload
) -> None:
    data = v2 if version == 2 else v1

    exc = rejected(encode(tampered(data, path, scheme)), offer)

    assert exc.reason == "unsupported_scheme"
    assert exc.message == f"scheme {scheme!r} is not offered"


@pytest.mark.parametrize(
    ("version", "network", "expected"),
    [
        (2, "eip155:84532", "eip155:8453"),
        (2, "eip155:1", "eip155:8453"),
        (2, "base", "eip155:8453"),  # a v1 name inside a v2 payload
        (1, "base-sepolia", "base"),
        (1, "eip155:8453", "base"),  # a CAIP-2 id inside a v1 payload
        (1, "solana", "base"),
    ],
)
def test_wrong_network(
    version: int, network: str, expected: str, offer: Offer, v1: Payload, v2: Payload
) -> None:
    data = tampered(v2, "accepted.network", network) if version == 2 else None
    data = data or tampered(v1, "network", network)

    exc = rejected(encode(data), offer)

    assert exc.reason == "network_mismatch"
    assert exc.message == f"network {network!r} is not offered; x402 v{version} uses {expected!r}"


@pytest.mark.parametrize("asset", [SEPOLIA_USDC, OTHER, BASE_USDC[:-1] + "4"])
def test_wrong_asset(asset: str, offer: Offer, v2: Payload) -> None:
    exc = rejected(encode(tampered(v2, "accepted.asset", asset)), offer)
    assert exc.reason == "asset_mismatch"
    assert exc.message == "accepted asset is not the offered token"


def test_wrong_pay_to_in_accepted(offer: Offer, v2: Payload) -> None:
    exc = rejected(encode(tampered(v2, "accepted.payTo", OTHER)), offer)
    assert exc.reason == "recipient_mismatch"
    assert exc.message == "accepted payTo is not ours"


@pytest.mark.parametrize("version", [1, 2])
def test_wrong_pay_to_in_authorization(
    version: int, offer: Offer, v1: Payload, v2: Payload
) -> None:
    data = v2 if version == 2 else v1

    exc = rejected(encode(tampered(data, "payload.authorization.to", OTHER)), offer)

    assert exc.reason == "recipient_mismatch"
    assert exc.message == "authorization pays someone else"


@pytest.mark.parametrize("amount", [str(PRICE - 1), str(PRICE + 1), "0", f"{PRICE}.0", "052700"])
def test_wrong_amount_in_accepted(amount: str, offer: Offer, v2: Payload) -> None:
    exc = rejected(encode(tampered(v2, "accepted.amount", amount)), offer)
    assert exc.reason == "amount_mismatch"
    assert exc.message == f"accepted amount {amount} != price {PRICE}"


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("value", [str(PRICE - 1), "52700", "0", str(2**256 - 1)])
def test_wrong_amount_in_authorization(
    version: int, value: str, offer: Offer, v1: Payload, v2: Payload
) -> None:
    data = v2 if version == 2 else v1

    exc = rejected(encode(tampered(data, "payload.authorization.value", value)), offer)

    assert exc.reason == "amount_mismatch"
    assert exc.message == f"authorization value {value} != price {PRICE}"


# --- the EIP-3009 authorization itself --------------------------------------------------------

MALFORMED: list[tuple[str, Any, str]] = [
    ("payload.authorization", DELETE, "exact EVM payload needs an EIP-3009 authorization"),
    ("payload.authorization", "0x00", "exact EVM payload needs an EIP-3009 authorization"),
    ("payload.signature", DELETE, "payload.signature is not 0x-hex bytes"),
    ("payload.signature", "not hex", "payload.signature is not 0x-hex bytes"),
    ("payload.signature", "0x", "payload.signature is not 0x-hex bytes"),
    ("payload.signature", "0xabc", "payload.signature is not 0x-hex bytes"),
    ("payload.signature", 12345, "payload.signature is not 0x-hex bytes"),
    ("payload.authorization.nonce", DELETE, "authorization.nonce is not bytes32"),
    ("payload.authorization.nonce", "0x1234", "authorization.nonce is not bytes32"),
    ("payload.authorization.nonce", "0x" + "g" * 64, "authorization.nonce is not bytes32"),
    ("payload.authorization.nonce", "00" * 33, "authorization.nonce is not bytes32"),
    ("payload.authorization.nonce", 7, "authorization.nonce is not bytes32"),
    ("payload.authorization.from", DELETE, "authorization.from not an address"),
    ("payload.authorization.from", "0x1234", "authorization.from not an address"),
    ("payload.authorization.from", "alice.eth", "authorization.from not an address"),
    ("payload.authorization.from", 1, "authorization.from not an address"),
    ("payload.authorization.to", "0x" + "z" * 40, "authorization.to not an address"),
    ("payload.authorization.value", DELETE, "authorization.value is not an integer in range"),
    ("payload.authorization.value", PRICE, "authorization.value is not an integer in range"),
    ("payload.authorization.value", "-1", "authorization.value is not an integer in range"),
    ("payload.authorization.value", "6.324e4", "authorization.value is not an integer in range"),
    ("payload.authorization.value", "0x f708", "authorization.value is not an integer in range"),
    ("payload.authorization.value", "", "authorization.value is not an integer in range"),
    (
        "payload.authorization.value",
        "\uff16\uff13\uff12\uff14\uff10",
        "authorization.value is not an integer in range",
    ),
    ("payload.authorization.value", str(2**256), "authorization.value is not an integer in range"),
    ("payload.authorization.validAfter", "soon", "authorization.validAfter is not an integer"),
    ("payload.authorization.validAfter", None, "authorization.validAfter is not an integer"),
    ("payload.authorization.validBefore", "-5", "authorization.validBefore is not an integer"),
    ("payload.authorization.validBefore", str(2**63), "authorization.validBefore is not an"),
    ("payload.authorization.validBefore", "9" * 78, "authorization.validBefore is not an integer"),
]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize(("path", "value", "message"), MALFORMED)
def test_malformed_authorization(
    version: int,
    path: str,
    value: Any,
    message: str,
    offer: Offer,
    v1: Payload,
    v2: Payload,
) -> None:
    data = v2 if version == 2 else v1

    exc = rejected(encode(tampered(data, path, value)), offer)

    assert exc.reason == "invalid_payment_payload"
    assert exc.message.startswith(message)


def test_mixed_case_address_with_a_bad_checksum_is_not_an_address(
    offer: Offer, v2: Payload
) -> None:
    good = address(PAYER)
    last_letter = max(i for i, c in enumerate(good) if c.isalpha() and i > 1)
    flipped = good[:last_letter] + good[last_letter].swapcase() + good[last_letter + 1 :]
    assert flipped.lower() == good.lower()
    assert flipped != good

    exc = rejected(encode(tampered(v2, "payload.authorization.from", flipped)), offer)

    assert exc.reason == "invalid_payment_payload"
    assert exc.message == "authorization.from not an address"


def test_permit2_payloads_are_refused(offer: Offer, v2: Payload) -> None:
    """A payment is identified by its EIP-3009 nonce; a Permit2 transfer would bypass that."""
    data = tampered(v2, "payload.permit2Authorization", {"from": address(PAYER)})

    exc = rejected(encode(data), offer)

    assert exc.reason == "unsupported_payload"
    assert exc.message == "only EIP-3009 authorizations are accepted, not Permit2"


async def test_a_payment_is_valid_on_either_path() -> None:
    """Both paths sell the same edit at the same price to the same payee."""
    main, alias = make_offer(), make_offer("/api/ai/generations/images/nano-banana-edit")
    header = encode_payment_signature_header(await sign_v2(main))

    assert parse_payment(header, alias).value == PRICE
    assert alias.v1.resource == PUBLIC_BASE_URL + "/api/ai/generations/images/nano-banana-edit"
