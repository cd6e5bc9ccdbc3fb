"""Named crash points for fault-injection tests: `X402R_TEST_CRASH_AT=<name>` kills the process.

The process dies with SIGKILL exactly where a power cut or OOM kill could strike, so the
recovery tests exercise the real restart path. Unset (the default), it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_TARGET = os.environ.get("X402R_TEST_CRASH_AT", "")

POINTS = frozenset(
    {
        "after_verify",  # job row recorded, client payment not settled yet
        "after_settle",  # client charged and recorded, upstream not bought
        "after_key_debit",  # key-paid job recorded with its debit, upstream not bought
        "after_upstream_signed",  # upstream authorization stored, not sent
        "after_upstream_submit",  # upstream accepted the job, acceptance not stored
        "after_refund_signed",  # refund authorization stored, not settled
    }
)


def crash_point(name: str) -> None:
    """Die here if the tests asked for it."""
    if _TARGET == name:
        os.kill(os.getpid(), signal.SIGKILL)
