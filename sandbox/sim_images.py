"""The simulated upstream's model, without HTTP: request schema, jobs, real PNGs and faults.

Mirrors the public listing of Dopamint's nano-banana-edit: request body fields, output schema
and job status shape. Images are small gradients built in pure Python (zlib + struct) whose
colours come from a hash of the prompt, so every download of a job is identical.

Faults, set as ``{name: spec}``: ``true`` or a bare value is sticky, ``{"times": n, "value":
v}`` fires on the next n occasions, ``null``/``false`` switches it off.
``submit_5xx`` (500 after settling: the money is taken), ``submit_5xx_before_settle`` (500, no
charge), ``submit_timeout`` (value = seconds to stall after settling; the job is then created),
``submit_malformed`` (200 with broken JSON after settling; the job exists), ``job_fails``
(value = error message), ``status_5xx``, ``status_malformed``, ``price_atomic`` (value = price
asked; one occasion per submit) and ``payment_loop`` (402 to a paid request, no settling).
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CONTENT_TYPE = "image/png"
BASE_SIZE = 64
DESCRIPTION = "Generate image using nano-banana/edit"

AspectRatio = Literal[
    "auto", "21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16"
]
OutputFormat = Literal["jpeg", "png", "webp"]


def _field(kind: str, required: bool, description: str, **more: Any) -> dict[str, Any]:
    return {"type": kind, "required": required, "description": description, **more}


# The listing's outputSchema, field for field (its `hints`).
OUTPUT_SCHEMA: dict[str, Any] = {
    "input": {
        "type": "http",
        "method": "POST",
        "bodyType": "json",
        "bodyFields": {
            "prompt": _field("string", True, "The prompt for image editing."),
            "sync_mode": _field(
                "boolean",
                False,
                "If `True`, the media will be returned as a data URI and the output data "
                "won't be available in the request history.",
            ),
            "image_urls": _field(
                "string[]",
                True,
                "The URLs of the images to use for image-to-image generation or image editing.",
            ),
            "num_images": _field("integer", False, "The number of images to generate.", enum=["1"]),
            "aspect_ratio": _field(
                " | ".join(f'"{ratio}"' for ratio in get_args(AspectRatio)) + " | null",
                False,
                "The aspect ratio of the generated image.",
            ),
            "output_format": _field(
                " | ".join(f'"{fmt}"' for fmt in get_args(OutputFormat)),
                False,
                "The format of the generated image.",
                enum=list(get_args(OutputFormat)),
            ),
            "limit_generations": _field(
                "boolean",
                False,
                "Experimental parameter to limit the number of generations from each round "
                "of prompting to 1. Set to `True` to to disregard any instructions in the "
                "prompt regarding the number of images to generate.",
            ),
        },
    },
    "output": {
        "jobId": {"type": "string", "description": "Unique job identifier"},
        "status": {
            "enum": ["processing", "completed", "failed"],
            "type": "string",
            "description": "Job status",
        },
        "requestId": {"type": "string", "description": "Provider request identifier"},
        "statusUrl": {"type": "string", "description": "URL to check job status"},
    },
}


class EditRequest(BaseModel):
    """The listing's request body, validated strictly (unknown fields are refused)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1)
    image_urls: list[str] = Field(min_length=1)
    num_images: int = Field(default=1, ge=1, le=1)
    aspect_ratio: AspectRatio | None = None
    output_format: OutputFormat = "png"
    sync_mode: bool = False
    limit_generations: bool = False

    @field_validator("image_urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"not an http(s) URL: {url!r}")
        return urls


@dataclass
class Job:
    """One accepted generation; its status is a function of elapsed time."""

    job_id: str
    request_id: str
    prompt: str
    aspect_ratio: str | None
    sync_mode: bool
    created: float
    failure: str | None

    @classmethod
    def create(cls, body: EditRequest, failure: str | None = None) -> Job:
        """A new job, submitted now; ``failure`` makes it end ``failed`` with that message."""
        return cls(
            job_id=uuid.uuid4().hex,
            request_id=str(uuid.uuid4()),
            prompt=body.prompt,
            aspect_ratio=body.aspect_ratio,
            sync_mode=body.sync_mode,
            created=time.monotonic(),
            failure=failure,
        )

    def status(self, delay_s: float) -> str:
        """``processing`` until ``delay_s`` has passed, then ``completed`` or ``failed``."""
        if time.monotonic() - self.created < delay_s:
            return "processing"
        return "failed" if self.failure is not None else "completed"

    def png(self) -> bytes:
        """The output image: deterministic in the prompt, so every download is identical."""
        width, height = dimensions(self.aspect_ratio)
        return gradient_png(width, height, self.prompt)

    def view(self, delay_s: float, base_url: str) -> dict[str, Any]:
        """The status document: ``{jobId, status, requestId, images, description, error}``."""
        status = self.status(delay_s)
        images: list[dict[str, Any]] = []
        if status == "completed":
            width, height = dimensions(self.aspect_ratio)
            url = data_uri(self.png()) if self.sync_mode else f"{base_url}/files/{self.job_id}.png"
            images.append(
                {
                    "url": url,
                    "content_type": PNG_CONTENT_TYPE,
                    "width": width,
                    "height": height,
                    "file_name": f"{self.job_id}.png",
                }
            )
        return {
            "jobId": self.job_id,
            "status": status,
            "requestId": self.request_id,
            "images": images,
            "description": f'An edited image for the prompt "{self.prompt}".' if images else None,
            "error": self.failure if status == "failed" else None,
        }


def dimensions(aspect_ratio: str | None, base: int = BASE_SIZE) -> tuple[int, int]:
    """Width and height for an aspect ratio: the long side is ``base`` pixels."""
    if aspect_ratio is None or aspect_ratio == "auto":
        return base, base
    w, h = (int(part) for part in aspect_ratio.split(":"))
    if w >= h:
        return base, max(1, round(base * h / w))
    return max(1, round(base * w / h)), base


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC over type + data."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def gradient_png(width: int, height: int, seed: str) -> bytes:
    """An 8-bit RGB diagonal gradient between two colours derived from ``seed``."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    start, end = digest[0:3], digest[3:6]
    span = max(1, width + height - 2)
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type "None" for every scanline
        for x in range(width):
            t = (x + y) * 255 // span
            rows.extend((a * (255 - t) + b * t) // 255 for a, b in zip(start, end, strict=True))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + _chunk(b"IEND", b"")
    )


def data_uri(data: bytes, content_type: str = PNG_CONTENT_TYPE) -> str:
    """The image inline as a ``data:`` URI (what the upstream returns with sync_mode)."""
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
