"""The upstream's request and response bodies, validated exactly as its listing describes."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    UrlConstraints,
    field_validator,
)

AspectRatio = Literal[
    "auto", "21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16"
]
OutputFormat = Literal["jpeg", "png", "webp"]
ImageUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=2048, allowed_schemes=["http", "https"])]


def _visible(prompt: str) -> str:
    """A prompt must contain something visible, not only control or zero-width characters."""
    if not any(unicodedata.category(ch)[0] not in "CZ" for ch in prompt):
        raise ValueError("prompt has no visible characters")
    return prompt


Prompt = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=5000),
    AfterValidator(_visible),
]

MAX_IMAGE_URLS = 10
MAX_BODY_BYTES = 64 * 1024


class EditRequest(BaseModel):
    """Body of `POST …/nano-banana-edit`; unknown fields are refused so typos cost nothing."""

    model_config = ConfigDict(extra="forbid")

    prompt: Prompt = Field(description="The prompt for image editing.")
    image_urls: list[ImageUrl] = Field(
        min_length=1,
        max_length=MAX_IMAGE_URLS,
        description="The URLs of the images to use for image-to-image generation or editing.",
    )
    num_images: Literal[1] | None = Field(
        None, description="The number of images to generate (the upstream allows 1)."
    )
    aspect_ratio: AspectRatio | None = Field(None, description="Aspect ratio of the output.")
    output_format: OutputFormat | None = Field(None, description="Format of the output image.")
    sync_mode: StrictBool | None = Field(
        None, description="If true, the media is returned as a data URI."
    )
    limit_generations: StrictBool | None = Field(
        None, description="Limit generations per round of prompting to 1."
    )

    @field_validator("num_images", mode="before")
    @classmethod
    def _integer_one(cls, value: Any) -> Any:
        # Literal[1] alone would take `true` and `1.0` as 1; the listing says integer.
        if value is not None and type(value) is not int:
            raise ValueError("num_images must be the integer 1")
        return value

    def upstream_json(self) -> dict[str, Any]:
        """The body we forward: only the fields the client set, URLs as plain strings."""
        return self.model_dump(mode="json", exclude_none=True)


# A valid request, for asking the upstream its price (`x402-reseller check`) and for docs.
EXAMPLE_EDIT: dict[str, Any] = {
    "prompt": "turn the cat into a watercolor painting",
    "image_urls": ["https://example.com/cat.png"],
    "num_images": 1,
    "output_format": "png",
}


class UpstreamJobAccepted(BaseModel):
    """The upstream's answer to a paid submission."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    job_id: str = Field(alias="jobId", min_length=1)
    status: str
    request_id: str | None = Field(None, alias="requestId")
    status_url: AnyHttpUrl = Field(alias="statusUrl")
