"""Deterministic integer pricing: the 402 and the paid retry must agree to the atomic unit."""

from __future__ import annotations

BPS = 10_000


def sale_price(upstream_atomic: int, markup_bps: int, markup_fixed_atomic: int) -> int:
    """Upstream price plus a percentage (basis points, rounded up) plus a fixed fee."""
    if upstream_atomic < 0 or markup_bps < 0 or markup_fixed_atomic < 0:
        raise ValueError("prices and markups are non-negative")
    marked_up = -(-upstream_atomic * (BPS + markup_bps) // BPS)  # ceiling without floats
    return marked_up + markup_fixed_atomic


def format_usdc(atomic: int, decimals: int = 6) -> str:
    """Human display of an atomic amount, e.g. 63240 -> '0.063240'."""
    sign = "-" if atomic < 0 else ""
    whole, frac = divmod(abs(atomic), 10**decimals)
    return f"{sign}{whole}.{frac:0{decimals}d}"
