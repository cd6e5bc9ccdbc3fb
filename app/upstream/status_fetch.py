"""Reading an upstream job's status URL as a hostile party's: allowed origins only, public
addresses only (unless allowed), no redirects, a size cap and a deadline.

The name is resolved before every read and every address it resolves to is checked; the
request then goes to the checked address itself (the Host header and TLS server name stay
the URL's), so a DNS answer that changes between the check and the connection cannot
redirect the read to an internal address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from dataclasses import dataclass
from typing import Any

import httpx

from app.core.origins import Origin, origin_of
from app.upstream.errors import (
    UpstreamMalformed,
    UpstreamRejected,
    UpstreamUnavailable,
)

STATUSES = ("processing", "completed", "failed")
_LOST = (404, 410)  # the upstream says the job does not exist (any more)


@dataclass(frozen=True)
class StatusPolicy:
    """Where status reads may go and how much of them we read."""

    origins: frozenset[Origin]
    allow_private: bool = False
    max_bytes: int = 1 << 20
    timeout_s: float = 60.0


def refused(message: str) -> UpstreamRejected:
    """A status URL we will not read (permanent: the job ends)."""
    return UpstreamRejected("upstream_status_url_refused", message)


def check_origin(url: str, policy: StatusPolicy) -> Origin:
    """The URL's origin if it is one we read from; UpstreamRejected otherwise."""
    try:
        origin = origin_of(url)
    except ValueError as exc:
        raise refused(f"status URL is not a plain http(s) URL: {exc}") from exc
    if origin not in policy.origins:
        raise refused(
            f"status URL is on {origin[0]}://{origin[1]}:{origin[2]}, not an allowed origin"
        )
    return origin


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known NAT64 prefix (RFC 6052)


def address_allowed(address: str, policy: StatusPolicy) -> bool:
    """Public unicast addresses always; loopback/private/link-local only when allowed.

    An IPv6 address that carries an IPv4 one (6to4, NAT64) is judged by the IPv4 address
    it reaches: Python counts `2002:7f00:1::1` (6to4 of 127.0.0.1) as global.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.sixtofour is not None:
            return address_allowed(str(ip.sixtofour), policy)
        if ip in _NAT64:
            return address_allowed(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)), policy)
    if ip.is_multicast or ip.is_unspecified:
        return False
    return ip.is_global or policy.allow_private


async def resolve_checked(host: str, port: int, policy: StatusPolicy) -> list[str]:
    """Every address `host` resolves to, each checked; UpstreamRejected if any is refused."""
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise UpstreamUnavailable("upstream_unreachable", f"cannot resolve {host}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise UpstreamUnavailable("upstream_unreachable", f"{host} resolves to nothing")
    bad = [a for a in addresses if not address_allowed(a, policy)]
    if bad:
        raise refused(f"status URL host resolves to a non-public address ({bad[0]})")
    return addresses


class StatusReader:
    """Guarded status reads over a client of their own (no redirects, no proxy from env)."""

    def __init__(
        self, policy: StatusPolicy, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        """`transport`: where reads go (tests play the upstream with one; default: network)."""
        self.policy = policy
        self._http = httpx.AsyncClient(
            follow_redirects=False, trust_env=False, timeout=policy.timeout_s, transport=transport
        )

    def origin_allowed(self, url: str) -> bool:
        """Whether a status URL is on an origin we read from (no DNS: for recording it)."""
        try:
            check_origin(url, self.policy)
        except UpstreamRejected:
            return False
        return True

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def read(self, url: str) -> dict[str, Any]:
        """One status read; raises a classified UpstreamError (see app.upstream.errors)."""
        scheme, host, port = check_origin(url, self.policy)
        address = (await resolve_checked(host, port, self.policy))[0]
        target = httpx.URL(url).copy_with(host=address)
        headers = {
            "Host": httpx.URL(url).netloc.decode("ascii"),
            "Accept": "application/json",
            "Accept-Encoding": "identity",  # the cap counts what we hold, not what was sent
        }
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                body = await self._get(target, headers, extensions)
        except TimeoutError as exc:
            raise UpstreamUnavailable("upstream_timeout", "status read timed out") from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable("upstream_unreachable", type(exc).__name__) from exc
        return _document(body)

    async def _get(
        self, target: httpx.URL, headers: dict[str, str], extensions: dict[str, Any]
    ) -> bytes:
        cap = self.policy.max_bytes
        request = self._http.build_request("GET", target, headers=headers, extensions=extensions)
        response = await self._http.send(request, stream=True)
        try:
            _check_answer(response, cap)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > cap:
                    raise UpstreamMalformed(f"status answer too large (over {cap} bytes)")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            await response.aclose()


def _check_answer(response: httpx.Response, cap: int) -> None:
    code = response.status_code
    if code in _LOST:
        raise UpstreamRejected("upstream_job_lost", f"upstream status answered {code}: job lost")
    if 300 <= code < 400:
        raise UpstreamMalformed(f"status answered a redirect ({code}); redirects are not followed")
    if code >= 500 or code in (408, 429):
        raise UpstreamUnavailable("upstream_http_error", f"upstream status request answered {code}")
    if code != 200:
        raise UpstreamMalformed(f"status answered {code}")
    if response.headers.get("content-encoding", "identity") != "identity":
        raise UpstreamMalformed("compressed status answers are not read")
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise UpstreamMalformed(f"status answer too large ({length} bytes, cap {cap})")


def _document(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise UpstreamMalformed("status is not JSON") from exc
    if not isinstance(data, dict) or data.get("status") not in STATUSES:
        raise UpstreamMalformed("status has no known status field")
    return data
