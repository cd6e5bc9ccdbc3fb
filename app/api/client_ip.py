"""The client's address for per-client limits: the socket peer, or what trusted proxies saw."""

from __future__ import annotations

from starlette.requests import Request


def client_address(request: Request, trusted_hops: int) -> str | None:
    """The peer address; behind `trusted_hops` proxies, the address the outermost one saw.

    Each proxy appends the address it received the request from to `X-Forwarded-For`, so the
    last `trusted_hops` entries are written by our proxies and anything before them by the
    client (who may write anything). With no trusted proxy the header is ignored.
    """
    peer = request.client.host if request.client else None
    if trusted_hops == 0:
        return peer
    forwarded = [
        part.strip()
        for header in request.headers.getlist("x-forwarded-for")
        for part in header.split(",")
        if part.strip()
    ]
    # The nearest proxy is the peer itself; it appended what it saw last.
    if len(forwarded) >= trusted_hops:
        return forwarded[-trusted_hops][:64]
    return forwarded[0][:64] if forwarded else peer
