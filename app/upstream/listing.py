"""What the upstream's public listing says about its interface, reused in our own 402."""

from __future__ import annotations

from typing import Any

DESCRIPTION = "Generate image using nano-banana/edit"

INPUT_SCHEMA: dict[str, Any] = {
    "type": "http",
    "method": "POST",
    "bodyType": "json",
    "bodyFields": {
        "prompt": {
            "type": "string",
            "required": True,
            "description": "The prompt for image editing.",
        },
        "sync_mode": {
            "type": "boolean",
            "required": False,
            "description": "If `True`, the media will be returned as a data URI and the "
            "output data won't be available in the request history.",
        },
        "image_urls": {
            "type": "string[]",
            "required": True,
            "description": "The URLs of the images to use for image-to-image generation "
            "or image editing.",
        },
        "num_images": {
            "enum": ["1"],
            "type": "integer",
            "required": False,
            "description": "The number of images to generate.",
        },
        "aspect_ratio": {
            "type": '"auto" | "21:9" | "16:9" | "3:2" | "4:3" | "5:4" | "1:1" | "4:5" | '
            '"3:4" | "2:3" | "9:16" | null',
            "required": False,
            "description": "The aspect ratio of the generated image.",
        },
        "output_format": {
            "enum": ["jpeg", "png", "webp"],
            "type": '"jpeg" | "png" | "webp"',
            "required": False,
            "description": "The format of the generated image.",
        },
        "limit_generations": {
            "type": "boolean",
            "required": False,
            "description": "Experimental parameter to limit the number of generations from "
            "each round of prompting to 1.",
        },
    },
}

OUTPUT_SCHEMA: dict[str, Any] = {
    "jobId": {"type": "string", "description": "Unique job identifier"},
    "status": {
        "enum": ["processing", "completed", "failed"],
        "type": "string",
        "description": "Job status",
    },
    "requestId": {"type": "string", "description": "Provider request identifier"},
    "statusUrl": {"type": "string", "description": "URL to check job status"},
}
