"""Dying at a crash point: every module's `crash_point` raises `Crash` at the points a test
names (app.core.crashpoints lists them)."""

from __future__ import annotations

import sys

import pytest

from app.core import crashpoints


class Crash(BaseException):
    """The process died here (a BaseException: no `except Exception` in the app stops it)."""


@pytest.fixture
def crash_at(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every module's `crash_point` dies at the point named in the list returned."""
    target: list[str] = []

    def crash_point(name: str) -> None:
        assert name in crashpoints.POINTS, name
        if name in target:
            raise Crash(name)

    dies = crashpoints.crash_point
    for name, module in list(sys.modules.items()):
        if name.startswith("app.") and getattr(module, "crash_point", None) is dies:
            monkeypatch.setattr(module, "crash_point", crash_point)
    return target
