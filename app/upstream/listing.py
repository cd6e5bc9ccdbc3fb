"""What our 402 says about the interface: the request generated from its validator, the
answer as the upstream's public listing describes it."""

from __future__ import annotations

from typing import Any

from app.upstream.schemas import EditRequest

DESCRIPTION = "Generate image using nano-banana/edit"

_CONSTRAINTS = ("minLength", "maxLength", "minItems", "maxItems")


def _field(schema: dict[str, Any], required: bool) -> dict[str, Any]:
    """One body field in the listing's style, from the validator's JSON schema."""
    options = [o for o in schema.get("anyOf", [schema]) if o.get("type") != "null"]
    (only,) = options  # every field of the request has one non-null shape
    field: dict[str, Any] = {}
    if only.get("type") == "array":
        field["type"] = f"{only['items']['type']}[]"
    else:
        field["type"] = only["type"]
    if "const" in only:
        field["enum"] = [only["const"]]
    elif "enum" in only:
        field["enum"] = list(only["enum"])
    field["required"] = required
    field["description"] = schema.get("description", "")
    field |= {k: only[k] for k in _CONSTRAINTS if k in only}
    return field


def input_schema() -> dict[str, Any]:
    """The request as our 402 advertises it, generated from the validator (`EditRequest`), so
    an agent that follows it is never refused: every enum value listed is accepted as listed."""
    schema = EditRequest.model_json_schema()
    required = set(schema.get("required", []))
    return {
        "type": "http",
        "method": "POST",
        "bodyType": "json",
        "bodyFields": {
            name: _field(prop, name in required) for name, prop in schema["properties"].items()
        },
    }


INPUT_SCHEMA: dict[str, Any] = input_schema()

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
