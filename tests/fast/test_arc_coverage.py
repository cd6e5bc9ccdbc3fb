"""Every arc of the job state machine is taken by the fast suite (run after its other tests:
see tests/fast/conftest.py). A new arc fails this test until a fast test takes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.jobs.machine import ARCS_BY_EVENT
from tests.fast import arcs

# Arcs only the end-to-end suite can reach, each with the reason. Empty: every arc is
# reachable in-process.
E2E_ONLY: dict[str, str] = {}
FAST_TESTS = sorted(p.name for p in Path(__file__).parent.glob("test_*.py"))


def test_every_arc_is_taken(request: pytest.FixtureRequest) -> None:
    ran = {Path(str(item.path)).name for item in request.session.items}
    partial = [name for name in FAST_TESTS if name not in ran]
    if partial:
        pytest.skip(f"arc coverage needs the whole fast suite; not collected: {partial}")
    declared = set(ARCS_BY_EVENT)
    assert set(E2E_ONLY) <= declared, f"E2E_ONLY names no declared arc: {set(E2E_ONLY) - declared}"
    missing = sorted(declared - set(E2E_ONLY) - arcs.TAKEN)
    assert not missing, (
        f"{len(missing)} declared arc(s) of app/jobs/machine.py are never taken by tests/fast: "
        f"{', '.join(missing)}. Add a fast test that takes each one (or, if only real "
        "processes can reach it, list it in E2E_ONLY with the reason)."
    )
