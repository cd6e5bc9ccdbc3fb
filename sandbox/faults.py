"""Switchable faults for the sandbox services (simulated upstream, facilitator).

A spec is ``{name: spec}``: ``true`` or a bare value is sticky, ``{"times": n, "value": v}``
fires on the next n occasions, ``{"after": n, ...}`` lets the first n occasions pass first,
``null``/``false`` clears it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

UPSTREAM_FAULTS = frozenset(
    "submit_5xx submit_5xx_before_settle submit_timeout submit_malformed job_fails status_5xx"
    " status_malformed price_atomic payment_loop status_url status_huge status_404"
    " status_redirect status_processing offer_options offer_timeout_s".split()
)
FACILITATOR_FAULTS = frozenset(
    "verify_5xx verify_timeout settle_5xx settle_lost settle_timeout settle_garbage"
    " settle_fake_success settle_wrong_tx".split()
)
_SECONDS = frozenset({"submit_timeout", "verify_timeout", "settle_timeout"})


@dataclass
class Fault:
    """A switched-on fault: its value and how many more times it fires (None = sticky)."""

    value: Any = True
    times: int | None = None
    after: int = 0  # occasions that pass before it starts firing


def parse_fault(name: str, spec: Any, known: frozenset[str] = UPSTREAM_FAULTS) -> Fault | None:
    """One fault spec → a Fault, or None to clear it; ValueError when it makes no sense."""
    if name not in known:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(known))}")
    if spec is None or spec is False:
        return None
    times, value, after = None, spec, 0
    if isinstance(spec, dict):
        if set(spec) - {"times", "value", "after"}:
            raise ValueError(f"{name}: only 'times', 'value' and 'after' are allowed")
        times, value, after = spec.get("times"), spec.get("value", True), spec.get("after", 0)
        if times is not None and (type(times) is not int or times < 1):
            raise ValueError(f"{name}: times must be a positive integer")
        if type(after) is not int or after < 0:
            raise ValueError(f"{name}: after must be a non-negative integer")
    if name == "price_atomic" and (type(value) is not int or value <= 0):
        raise ValueError("price_atomic: value must be a positive integer (atomic units)")
    if name in _SECONDS:
        value = 30.0 if value is True else value
        if type(value) not in (int, float) or value <= 0:
            raise ValueError(f"{name}: value must be a number of seconds > 0")
    if name == "job_fails":
        value = "Image generation failed" if value is True else str(value)
    _check_hostile(name, value)
    return Fault(value=value, times=times, after=after)


def _check_hostile(name: str, value: Any) -> None:
    """Values of the faults a hostile upstream uses (see upstream_sim)."""
    if name in ("status_url", "status_redirect") and not (
        isinstance(value, str) and value.startswith(("http://", "https://"))
    ):
        raise ValueError(f"{name}: value must be an http(s) URL")
    if name == "status_huge" and (type(value) is not int or value <= 0):
        raise ValueError(f"{name}: value must be a positive integer")
    if name == "offer_timeout_s" and (type(value) is not int or value == 0):
        raise ValueError(f"{name}: value must be a non-zero integer (negative: hostile)")
    if name == "offer_options" and not (
        isinstance(value, list)
        and value
        and all(
            isinstance(o, list)
            and len(o) == 3
            and isinstance(o[0], str)
            and isinstance(o[1], str)
            and type(o[2]) is int
            for o in value
        )
    ):
        raise ValueError("offer_options: value must be a list of [scheme, network, amount]")


class FaultBoard:
    """The faults currently switched on."""

    def __init__(
        self, spec: dict[str, Any] | None = None, known: frozenset[str] = UPSTREAM_FAULTS
    ) -> None:
        self._known = known
        self._active: dict[str, Fault] = {}
        self.update(spec or {})

    def update(self, spec: Any) -> None:
        """Apply ``{name: spec}``; nothing changes if any entry is invalid."""
        if not isinstance(spec, dict):
            raise ValueError("faults must be a JSON object of {name: spec}")
        parsed = {name: parse_fault(name, value, self._known) for name, value in spec.items()}
        for name, fault in parsed.items():
            if fault is None:
                self._active.pop(name, None)
            else:
                self._active[name] = fault

    def take(self, name: str) -> Fault | None:
        """The fault if it fires now, using up one of its ``times``."""
        fault = self._active.get(name)
        if fault is not None and fault.after > 0:
            fault.after -= 1
            return None
        if fault is not None and fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                del self._active[name]
        return fault

    def wire(self) -> dict[str, Any]:
        """The faults as JSON."""
        return {name: _wire(fault) for name, fault in sorted(self._active.items())}


def _wire(fault: Fault) -> dict[str, Any]:
    out = asdict(fault)
    if not fault.after:
        del out["after"]
    return out
