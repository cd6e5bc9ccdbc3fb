"""One error base for the service, rendered everywhere as `{"error": code, "message": ...}`.

AppError
 ├── InvalidRequest (400)      malformed input the schema could not express
 ├── Unauthorized (401)        an admin route without its token
 ├── NotFound (404)
 ├── MethodNotAllowed (405)    a paid route asked with another method than POST
 ├── Conflict (409)            an idempotency key reused with a different request
 ├── PaymentOutcomeUnknown (503 / 504)  retry with the SAME payment, never pay again
 ├── RetryLater (503)          come back after Retry-After with the SAME payment
 ├── ServiceUnavailable (503)  selling is paused (spend cap, upstream price above ceiling)
 └── UpstreamFailed (502)      the upstream failed; the job carries the refund outcome

The upstream's own failures (`app.upstream.errors.UpstreamError`) are domain errors: the job
steps turn them into job states, and a paid request's answer into `UpstreamFailed`.

A 402 is not an AppError: it is the x402 payment-required answer, built in app.payments.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.db_errors import UNREACHABLE_TYPES, database_unreachable


class AppError(Exception):
    """Base of every error we answer deliberately."""

    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.details = details or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body every error shares."""
        out: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


class InvalidRequest(AppError):
    """The request cannot be understood."""

    status_code = 400
    code = "invalid_request"


class Unauthorized(AppError):
    """A route that needs a credential the request did not carry."""

    status_code = 401
    code = "unauthorized"


class NotFound(AppError):
    """No such resource."""

    status_code = 404
    code = "not_found"


class MethodNotAllowed(AppError):
    """The route exists, but not for this method."""

    status_code = 405
    code = "method_not_allowed"


class Conflict(AppError):
    """The request conflicts with an earlier one."""

    status_code = 409
    code = "conflict"


class PaymentOutcomeUnknown(AppError):
    """Settlement may or may not have happened; the client must retry with the same payment."""

    status_code = 503
    code = "payment_outcome_unknown"

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"Retry-After": "5"})
        super().__init__(message, **kwargs)


class RetryLater(AppError):
    """Not answerable yet; nothing more will be charged when retried with the same payment."""

    status_code = 503

    def __init__(self, message: str, *, retry_after_s: int, **kwargs: Any) -> None:
        kwargs["headers"] = {"Retry-After": str(retry_after_s), **kwargs.get("headers", {})}
        super().__init__(message, **kwargs)


class ServiceUnavailable(AppError):
    """Selling is paused; no money was taken."""

    status_code = 503
    code = "service_unavailable"


class UpstreamFailed(AppError):
    """The upstream failed to serve a paid request."""

    status_code = 502
    code = "upstream_error"


# Errors raised by the framework itself (routing, body parsing), in our vocabulary.
_FRAMEWORK_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def database_unavailable() -> JSONResponse:
    """503 while the database cannot be reached (a restart, an outage)."""
    # Every step is persisted before the next outside call, so a retry with the same
    # payment resumes where this one stopped; it can never be charged twice.
    return JSONResponse(
        {
            "error": "database_unavailable",
            "message": "the database is unavailable; retry with the same payment",
        },
        status_code=503,
        headers={"Retry-After": "2"},
    )


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for err in exc.errors():
        # A JSON syntax error's loc is ("body", <character offset>): it is about the body.
        raw = () if err.get("type") == "json_invalid" else err.get("loc", ())
        loc = [str(p) for p in raw if p != "body"]
        details.append(
            {"field": ".".join(loc) or "body", "message": err.get("msg"), "type": err.get("type")}
        )
    return details


def install_error_handlers(app: FastAPI) -> None:
    """Render AppError and request validation errors in the one shape."""

    async def app_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AppError)
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        fields = _validation_details(exc)
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
        return JSONResponse(
            {"error": "invalid_request", "message": summary, "details": fields},
            status_code=422,
        )

    async def framework_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _FRAMEWORK_CODES.get(exc.status_code, "http_error")
        return JSONResponse(
            {"error": code, "message": str(exc.detail)},
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
        )

    async def database_error(_: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, SQLAlchemyError) and not database_unreachable(exc):
            raise exc  # some other OSError: a plain 500 (see `unexpected_error`)
        return database_unavailable()

    async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        # Whatever escaped everything else, the pure-ASGI fast paths and middleware included.
        if database_unreachable(exc):
            return database_unavailable()
        return JSONResponse(
            {"error": "internal_error", "message": "internal error; retry with the same payment"},
            status_code=500,
        )

    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(SQLAlchemyError, database_error)
    for kind in UNREACHABLE_TYPES:
        app.add_exception_handler(kind, database_error)
    app.add_exception_handler(Exception, unexpected_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, framework_error)
