"""The x402 `bazaar` discovery extension of our paid edit, generated from its validators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from x402.extensions.bazaar import (
    BAZAAR,
    DeclareMcpDiscoveryConfig,
    OutputConfig,
    bazaar_resource_server_extension,
    declare_discovery_extension,
    declare_mcp_discovery_extension,
)

from app.api.schemas import AcceptedJob
from app.upstream.schemas import EXAMPLE_EDIT, EditRequest


@dataclass(frozen=True)
class _Post:
    """The transport context the SDK's server extension reads the method from."""

    method: str = "POST"


def _example_answer() -> dict[str, Any]:
    examples = AcceptedJob.model_json_schema()["examples"]
    return AcceptedJob.model_validate(examples[0]).model_dump(mode="json")


def edit_discovery() -> dict[str, Any]:
    """`{"bazaar": {info, schema}}` for `POST` with a JSON `EditRequest`, answering `AcceptedJob`.

    Declared with the SDK, then enriched with the method the way its resource-server extension
    does per request; ours is the same for every request, so it is done once.
    """
    declared = declare_discovery_extension(
        input=EXAMPLE_EDIT,
        input_schema=EditRequest.model_json_schema(),
        body_type="json",
        output=OutputConfig(example=_example_answer(), schema=AcceptedJob.model_json_schema()),
    )
    enriched = bazaar_resource_server_extension.enrich_declaration(declared[BAZAAR.key], _Post())
    return {BAZAAR.key: enriched}


EDIT_DISCOVERY: dict[str, Any] = edit_discovery()

MCP_EDIT_TOOL = "edit_image"


def mcp_edit_discovery() -> dict[str, Any]:
    """`{"bazaar": ...}` for the paid MCP tool (`streamable-http` transport)."""
    return declare_mcp_discovery_extension(
        DeclareMcpDiscoveryConfig(
            tool_name=MCP_EDIT_TOOL,
            description="Edit images with nano-banana (paid per call, x402 over MCP)",
            input_schema=EditRequest.model_json_schema(),
            transport="streamable-http",
            example=EXAMPLE_EDIT,
            output=OutputConfig(example=_example_answer(), schema=AcceptedJob.model_json_schema()),
        )
    )


MCP_EDIT_DISCOVERY: dict[str, Any] = mcp_edit_discovery()
