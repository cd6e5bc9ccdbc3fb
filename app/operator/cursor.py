"""Opaque page cursors for newest-first listings: (created_at, id) of the last row shown."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from app.core.errors import InvalidRequest


def encode(created_at: datetime, job_id: str) -> str:
    """A cursor that resumes after this row."""
    raw = f"{created_at.isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) of the row a cursor resumes after; 400 when it is not ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, job_id = raw.partition("|")
        if not job_id:
            raise ValueError("no id")
        return datetime.fromisoformat(moment), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest(
            "the cursor is not one this service gave", code="invalid_cursor"
        ) from None
