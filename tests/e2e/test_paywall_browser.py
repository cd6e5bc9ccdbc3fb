"""A real browser on a paid path: headless Chromium renders the SDK's paywall for our offer.

Chromium is driven over the DevTools protocol (loopback only), so the page's console and
uncaught exceptions are observed as they happen, not scraped from a log. The screenshot it
takes is kept as docs/paywall.png.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from app.api.edits import EDIT_PATH, UPSTREAM_PATH
from sandbox.world import World
from tests.browser import CHROMIUM, chromium_page, console_errors

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "paywall.png"
SETTLE_S = 4.0  # the page's script renders, then checks the page's URL with a HEAD

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"
)


@pytest.mark.parametrize("path", [EDIT_PATH, UPSTREAM_PATH])
async def test_chromium_renders_the_paywall_with_our_price_and_no_console_errors(
    world: World, tmp_path: Path, path: str
) -> None:
    origin = world.gateway_url()
    url = origin + path
    async with chromium_page(tmp_path) as page:
        await page.call("Page.navigate", url=url)
        await page.idle(SETTLE_S)
        text = (
            await page.call(
                "Runtime.evaluate", expression="document.body.innerText", returnByValue=True
            )
        )["result"]["value"]
        config = (
            await page.call(
                "Runtime.evaluate", expression="JSON.stringify(window.x402)", returnByValue=True
            )
        )["result"]["value"]
        shot = await page.call("Page.captureScreenshot", format="png")

    assert "Payment Required" in text
    assert "$0.06324 USD Coin" in text
    assert "Connect wallet" in text
    x402 = json.loads(config)
    assert x402["testnet"] is False  # the sandbox chain is Base (8453)
    (accepted,) = x402["paymentRequired"]["accepts"]
    assert (accepted["network"], accepted["amount"]) == ("eip155:8453", "63240")
    assert console_errors(page.events, url, origin) == []
    if path == EDIT_PATH:
        SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
