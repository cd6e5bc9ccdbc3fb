"""Which arcs of the job state machine the fast suite takes: every module's `transition`
wrapped to record the event of each write that changed a row."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

import app.main  # noqa: F401  # imports every module that writes jobs
from app.jobs import transitions

TAKEN: set[str] = set()
_ORIGINAL = transitions.transition
_during_fast_tests = [False]  # other tests of the session count for nothing


async def _recording(*args: Any, event: str, **kwargs: Any) -> Any:
    written = await _ORIGINAL(*args, event=event, **kwargs)
    if written is not None and _during_fast_tests[0]:  # the compare-and-set matched
        TAKEN.add(event)
    return written


def counting() -> Iterator[None]:
    """Count the arcs taken while the generator is suspended (one fast test)."""
    _during_fast_tests[0] = True
    try:
        yield
    finally:
        _during_fast_tests[0] = False


def recording() -> Iterator[None]:
    """Wrap every module's `transition` while the generator is suspended (the session)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, module in list(sys.modules.items()):
            if (name == "app" or name.startswith("app.")) and getattr(
                module, "transition", None
            ) is _ORIGINAL:
                patch.setattr(module, "transition", _recording)
        yield
