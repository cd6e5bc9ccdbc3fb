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


async def _recording(*args: Any, event: str, **kwargs: Any) -> Any:
    written = await _ORIGINAL(*args, event=event, **kwargs)
    if written is not None:  # the compare-and-set matched: the arc was taken
        TAKEN.add(event)
    return written


def recording() -> Iterator[None]:
    """Record every arc taken while the generator is suspended."""
    with pytest.MonkeyPatch.context() as patch:
        for name, module in list(sys.modules.items()):
            if (name == "app" or name.startswith("app.")) and getattr(
                module, "transition", None
            ) is _ORIGINAL:
                patch.setattr(module, "transition", _recording)
        yield
