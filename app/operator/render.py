"""Plain-text renderings for the command line: aligned tables, CSV, JSON; progress on stderr."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from app.payments.pricing import format_usdc

MONEY_COLUMNS = frozenset(
    {
        "revenue",
        "charges",
        "keyDebits",
        "upstreamSpend",
        "refunds",
        "onchainRefunds",
        "keyCredits",
        "margin",
        "amount",
        "upstreamAmount",
        "refundAmount",
        "budgetLeft",
    }
)


def cell(name: str, value: Any) -> str:
    """A value as shown in a table: money in USDC, None as '-'."""
    if value is None:
        return "-"
    if name in MONEY_COLUMNS:
        return format_usdc(int(value))
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows under a header, each column as wide as its widest cell."""
    cells = [[cell(c, row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    for r in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as CSV with a header (amounts stay atomic: exact for spreadsheets)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_json(document: Any) -> str:
    """Indented JSON with a final newline."""
    return json.dumps(document, indent=2, sort_keys=True, default=str) + "\n"


class Progress:
    """A row counter on stderr, shown only when stderr is a terminal."""

    def __init__(self, what: str, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.what = what
        self.count = 0

    def step(self, n: int = 1) -> None:
        """Count `n` more rows (redrawn every 100)."""
        self.count += n
        if self.enabled and self.count % 100 < n:
            self.stream.write(f"\r{self.what}: {self.count}")
            self.stream.flush()

    def note(self, text: str) -> None:
        """A stage of a long command."""
        if self.enabled:
            self.stream.write(f"\r{text}\x1b[K")
            self.stream.flush()

    def done(self) -> None:
        """Clear the line."""
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
