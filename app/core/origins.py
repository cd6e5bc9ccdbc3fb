"""URL origins (scheme, host, port): what a status URL is compared against."""

from __future__ import annotations

from urllib.parse import urlsplit

Origin = tuple[str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> Origin:
    """The origin of an absolute http(s) URL; ValueError for anything else."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {url[:200]!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("a URL with credentials is not accepted")
    port = parts.port  # ValueError when out of range
    return scheme, parts.hostname.lower().rstrip("."), port or _DEFAULT_PORTS[scheme]


def parse_origin(text: str) -> Origin:
    """An origin as configured: `scheme://host[:port]`, nothing after it."""
    parts = urlsplit(text)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"an origin has no path, query or fragment: {text[:200]!r}")
    return origin_of(text)
