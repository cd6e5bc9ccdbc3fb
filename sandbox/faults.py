"""Switchable faults for the sandbox services (simulated upstream, facilitator).

A spec is ``{name: spec}``: ``true`` or a bare value is sticky, ``{"times": n, "value": v}``
fires on the next n occasions, ``null``/``false`` clears it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

UPSTREAM_FAULTS = frozenset(
    "submit_5xx submit_5xx_before_settle submit_timeout submit_malformed job_fails status_5xx"
    " status_malformed price_atomic payment_loop".split()
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


def parse_fault(name: str, spec: Any, known: frozenset[str] = UPSTREAM_FAULTS) -> Fault | None:
    """One fault spec → a Fault, or None to clear it; ValueError when it makes no sense."""
    if name not in known:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(known))}")
    if spec is None or spec is False:
        return None
    times, value = None, spec
    if isinstance(spec, dict):
        if set(spec) - {"times", "value"}:
            raise ValueError(f"{name}: only 'times' and 'value' are allowed")
        times, value = spec.get("times"), spec.get("value", True)
        if times is not None and (type(times) is not int or times < 1):
            raise ValueError(f"{name}: times must be a positive integer")
    if name == "price_atomic" and (type(value) is not int or value <= 0):
        raise ValueError("price_atomic: value must be a positive integer (atomic units)")
    if name in _SECONDS:
        value = 30.0 if value is True else value
        if type(value) not in (int, float) or value <= 0:
            raise ValueError(f"{name}: value must be a number of seconds > 0")
    if name == "job_fails":
        value = "Image generation failed" if value is True else str(value)
    return Fault(value=value, times=times)


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
        if fault is not None and fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                del self._active[name]
        return fault

    def wire(self) -> dict[str, Any]:
        """The faults as JSON."""
        return {name: asdict(fault) for name, fault in sorted(self._active.items())}
