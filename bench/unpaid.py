"""Scenario 1: the unpaid 402 — gateway vs a raw ASGI ceiling vs the SDK's FastAPI middleware.

The SDK runs twice: as a user would deploy it (the target's baseline: "what a user would pick
instead"), and with `gc.freeze()` after start-up, the one tuning the gateway applies to itself,
so the gap that is ours alone is reported too.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from bench.measure import check, expect, measure_all, ratio, row, write_spec
from bench.profile import Profile
from bench.stage import Stage
from bench.wrk import lua_post
from sandbox.pay import EDIT_BODY
from sandbox.world import OPERATOR, address

PATH = "/v1/images/edit"
_SKIP = {b"date", b"server"}


def _probe(url: str) -> httpx.Response:
    unpaid = httpx.post(url, json=EDIT_BODY, timeout=10)
    expect(unpaid.status_code == 402, f"{url}: unpaid valid body gave {unpaid.status_code}")
    return unpaid


def run(stage: Stage, profile: Profile) -> dict[str, Any]:
    """Measure the three 402 servers one after the other, each pinned to the same core."""
    gateway = stage.w.gateway_url(0) + PATH
    unpaid = _probe(gateway)
    invalid = httpx.post(gateway, json={**EDIT_BODY, "image_urls": []}, timeout=10)
    expect(invalid.status_code == 422, f"invalid body gave {invalid.status_code}, not 422")
    offer = unpaid.json()["accepts"][0]
    raw_spec = {
        "status": 402,
        "headers": [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in unpaid.headers.raw
            if k.lower() not in _SKIP
        ],
        "body": unpaid.content.decode(),
    }
    sdk_spec = {
        "facilitator_url": stage.w.facilitator_url,
        "pay_to": address(OPERATOR),
        "amount": int(offer["maxAmountRequired"]),
        "asset": offer["asset"],
    }
    raw = stage.start_baseline("raw", write_spec("raw", raw_spec)) + PATH
    sdk = stage.start_baseline("sdk", write_spec("sdk", sdk_spec)) + PATH
    sdk_frozen = (
        stage.start_baseline("sdk", write_spec("sdk_frozen", {**sdk_spec, "frozen": True})) + PATH
    )
    raw_probe, sdk_probe = _probe(raw), _probe(sdk)
    expect(_probe(sdk_frozen).content == sdk_probe.content, "the two SDK baselines differ")
    expect(raw_probe.content == unpaid.content, "the raw baseline does not serve the same bytes")
    script = lua_post(json.dumps(EDIT_BODY))
    try:
        results = measure_all(
            profile,
            {
                "gateway": (gateway, script),
                "raw": (raw, script),
                "sdk": (sdk, script),
                "sdk_frozen": (sdk_frozen, script),
            },
        )
    finally:
        stage.stop_baselines()
    for name, result in results.items():
        expect(result.non_2xx_3xx == result.requests, f"{name}: some answers were not 402")
    gw, ceiling, sdk_r = results["gateway"], results["raw"], results["sdk"]
    frozen_r = results["sdk_frozen"]
    vs_raw, vs_sdk = ratio(gw.rps, ceiling.rps), ratio(gw.rps, sdk_r.rps)
    vs_frozen = ratio(gw.rps, frozen_r.rps)
    return {
        "rows": [
            row(
                "gateway `POST /v1/images/edit` (validates the body)",
                gw,
                key="gateway",
                errors=gw.socket_errors,
            ),
            row(
                "raw ASGI app, same static 402 bytes (ceiling)",
                ceiling,
                key="raw",
                errors=ceiling.socket_errors,
            ),
            row(
                "x402 SDK `PaymentMiddlewareASGI` on FastAPI, as deployed",
                sdk_r,
                key="sdk",
                errors=sdk_r.socket_errors,
            ),
            row(
                "the same SDK app with `gc.freeze()` after start-up",
                frozen_r,
                key="sdk_frozen",
                errors=frozen_r.socket_errors,
            ),
        ],
        "ratios": {"gateway/raw": vs_raw, "gateway/sdk": vs_sdk, "gateway/sdk_frozen": vs_frozen},
        "bytes": {"body": len(unpaid.content), "sdk_body": len(sdk_probe.content)},
        "checks": [
            check("402: gateway vs raw ceiling", "≥ 0.55x", f"{vs_raw:.2f}x", vs_raw >= 0.55),
            check("402: gateway vs SDK middleware", "≥ 5x", f"{vs_sdk:.1f}x", vs_sdk >= 5),
            check(
                "402: gateway vs SDK middleware + gc.freeze (a stricter bar)",
                "≥ 5x",
                f"{vs_frozen:.1f}x",
                vs_frozen >= 5,
            ),
            check("402: gateway p99", "≤ 3 ms", f"{gw.p99_ms:.2f} ms", gw.p99_ms <= 3),
        ],
    }
