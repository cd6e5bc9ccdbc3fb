"""A paid request's idempotency key: the `Idempotency-Key` header or the payment-identifier id."""

from __future__ import annotations

import re

from x402.extensions.payment_identifier import PAYMENT_IDENTIFIER, is_valid_payment_id
from x402.schemas import PaymentPayload

from app.core.errors import InvalidRequest
from app.payments.incoming import IncomingPayment

_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def payment_identifier(payment: IncomingPayment) -> str | None:
    """The payment-identifier extension's id, checked against OUR rules only.

    The extension echoes a JSON schema the client controls; it is never evaluated (a hostile
    pattern could stall the event loop).
    """
    if not isinstance(payment.payload, PaymentPayload) or not payment.payload.extensions:
        return None
    extension = payment.payload.extensions.get(PAYMENT_IDENTIFIER)
    info = extension.get("info") if isinstance(extension, dict) else None
    if not isinstance(info, dict) or "id" not in info:
        return None  # declared, but the client chose no id
    payment_id = info["id"]
    if not isinstance(payment_id, str) or not is_valid_payment_id(payment_id):
        raise InvalidRequest(
            "payment-identifier id must be 16-128 characters of A-Z a-z 0-9 _ -",
            code="invalid_payment_identifier",
        )
    return payment_id


def idempotency_key_of(
    payment: IncomingPayment, header_key: str | None, *, required: bool
) -> str | None:
    """The request's idempotency key: `Idempotency-Key`, else the payment-identifier id."""
    if header_key is not None and not _KEY.match(header_key):
        raise InvalidRequest(
            "Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 _ - . :",
            code="invalid_idempotency_key",
        )
    payment_id = payment_identifier(payment)
    if required and header_key is None and payment_id is None:
        raise InvalidRequest(
            "this gateway requires an idempotency id: the x402 payment-identifier extension "
            "or an Idempotency-Key header",
            code="payment_identifier_required",
        )
    if header_key is not None:
        return "key:" + header_key
    return "pid:" + payment_id if payment_id else None
