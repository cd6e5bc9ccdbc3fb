"""The operator dashboard in headless Chromium, against a real sandbox world.

A known mix is driven first: jobs paid by the SDK and served, one failed by the upstream and
refunded (refund policy `full`), one whose payment the chain refused at settlement
(`payment_failed`), and jobs bought with an API key made through the admin API (two served,
one failed and credited back to the key). One parked job (an unresolved settlement, nothing
charged) is written by `tests.operator_seed`: parking one for real takes a facilitator that
fails a dozen times. The page is opened, logged in with the admin token, and every number it
shows is compared with the ledger, the key ledger, the jobs table and the chain; no console
error is allowed. The screenshot is kept as docs/dashboard.png.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from app.jobs.models import Job, JobState, LedgerEntry
from app.keys.models import KeyLedgerEntry
from sandbox.chain import usdc_balance
from sandbox.world import HOT_WALLET, PAYER, World, address, key_hex
from tests import operator_seed as seed
from tests.browser import CHROMIUM, chromium_page, console_errors
from tests.helpers import (
    ADMIN_TOKEN,
    EDIT_BODY,
    PRICE,
    funded_payer,
    paid_post,
    payment_nonce,
    poll_until_done,
    run_until_resolved,
    sign_payment,
)
from tests.key_helpers import key_post, new_key, poll_with_key
from tests.ledger_audit import audit
from tests.worlds import WorldMaker, pause_mining, resume_mining

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
PARKED_PAYER = "0x" + "5e" * 20

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"
)


@pytest.fixture(scope="module")
def dashboard_world(make_module_world: WorldMaker, module_db: str) -> World:
    return make_module_world(
        remote_facilitator=True,
        job_delay_s=0.3,
        database_url=module_db,
        X402R_ADMIN_TOKEN=ADMIN_TOKEN,
        X402R_REFUND_POLICY="full",
        X402R_FACILITATOR_TIMEOUT_S="10",
        X402R_OPERATOR_CACHE_TTL_S="0",  # the page shows the balance as it is now
    )


async def _served(world: World, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await paid_post(world.gateway_url() + "/v1/images/edit", key_hex(PAYER), body)
    assert response.status_code == 200, response.text
    return await poll_until_done(response.json()["statusUrl"])


async def _refused_at_settlement(world: World) -> str:
    """Two payments from a payer who holds one price, settled in the same block: the second
    is refused by the chain; the nonce of that second payment."""
    key, _ = funded_payer(world, PRICE)
    url = world.gateway_url() + "/v1/images/edit"
    bodies = [{**EDIT_BODY, "prompt": f"race {i}"} for i in range(2)]
    payments = [await sign_payment(url, key, body) for body in bodies]
    settles = world.facilitator_calls()["settle"]
    pause_mining(world)
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            posts = [
                asyncio.create_task(http.post(url, json=body, headers=payment))
                for body, payment in zip(bodies, payments, strict=True)
            ]
            for _ in range(200):
                if world.facilitator_calls()["settle"] >= settles + 2:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # both transactions in the pool
            resume_mining(world)
            answers = await asyncio.gather(*posts)
    finally:
        resume_mining(world)
    statuses = sorted(a.status_code for a in answers)
    assert statuses[0] == 200, [a.text for a in answers]
    winner = next(a for a in answers if a.status_code == 200)
    assert (await poll_until_done(winner.json()["statusUrl"]))["status"] == "completed"
    losing = next(p for p, a in zip(payments, answers, strict=True) if a.status_code != 200)
    return payment_nonce(losing)


async def _drive(world: World) -> None:
    for i in range(2):
        assert (await _served(world, {**EDIT_BODY, "prompt": f"served {i}"}))["status"] == (
            "completed"
        )
    world.set_faults({"job_fails": "content policy violation"})
    try:
        failed = await _served(world, {**EDIT_BODY, "prompt": "fails upstream"})
    finally:
        world.reset_upstream()
    assert failed["status"] == "failed"
    nonce = await _refused_at_settlement(world)
    refused = await run_until_resolved(world.database_url, nonce)
    assert refused.state == "payment_failed", (refused.state, refused.error_code)
    await _key_paid(world)
    engine = create_async_engine(world.database_url)
    async with engine.begin() as conn:
        await seed.job(
            conn,
            JobState.NEEDS_ATTENTION,
            payer=PARKED_PAYER,
            charged=False,
            error_code="settlement_unresolved",
            error_message="settlement outcome still unknown after 12 attempts",
        )
    await engine.dispose()


async def _key_paid(world: World) -> None:
    """Two jobs bought with the key "research" and served, one failed and credited back."""
    _, secret = await new_key(world, name="research", budget=2_000_000)
    async with httpx.AsyncClient(timeout=60) as http:
        for i in range(2):
            answer = await key_post(http, world, secret, body={**EDIT_BODY, "prompt": f"key {i}"})
            assert answer.status_code == 200, answer.text
            await poll_with_key(http, answer.json()["statusUrl"], secret)
        world.set_faults({"job_fails": "content policy violation"})
        try:
            failed = await key_post(http, world, secret, body={**EDIT_BODY, "prompt": "key fails"})
            assert failed.status_code == 200, failed.text
            await poll_with_key(http, failed.json()["statusUrl"], secret)
        finally:
            world.reset_upstream()


async def _truth(world: World) -> dict[str, Any]:
    """What the page must show, from the database and the chain."""
    engine = create_async_engine(world.database_url)
    try:
        async with engine.connect() as conn:
            ledger = dict(
                (
                    await conn.execute(
                        select(LedgerEntry.kind, func.sum(LedgerEntry.amount)).group_by(
                            LedgerEntry.kind
                        )
                    )
                ).all()
            )
            keyed = dict(
                (
                    await conn.execute(
                        select(KeyLedgerEntry.kind, func.sum(KeyLedgerEntry.amount)).group_by(
                            KeyLedgerEntry.kind
                        )
                    )
                ).all()
            )
            states = dict(
                (await conn.execute(select(Job.state, func.count()).group_by(Job.state))).all()
            )
            parked = (
                await conn.execute(select(Job.id).where(Job.state == "needs_attention"))
            ).scalars()
            parked_ids = sorted(parked)
    finally:
        await engine.dispose()
    revenue = int(ledger.get("charge", 0)) + int(keyed.get("debit", 0))
    refunds = int(ledger.get("refund", 0)) + int(keyed.get("credit", 0))
    upstream = int(ledger.get("upstream", 0))
    return {
        "revenue": revenue,
        "charges": int(ledger.get("charge", 0)),
        "keyDebits": int(keyed.get("debit", 0)),
        "upstreamSpend": upstream,
        "refunds": refunds,
        "onchainRefunds": int(ledger.get("refund", 0)),
        "keyCredits": int(keyed.get("credit", 0)),
        "margin": revenue - refunds - upstream,
        "states": {s: int(n) for s, n in states.items()},
        "parked": parked_ids,
        "balance": usdc_balance(world.rpc_url, address(HOT_WALLET)),
    }


READ_PAGE = """JSON.stringify({
  cards: Object.fromEntries(["revenue", "charges", "keyDebits", "upstreamSpend", "refunds",
    "onchainRefunds", "keyCredits", "margin"].map((id) => [id, [
      document.getElementById(id).dataset.atomic, document.getElementById(id).textContent]])),
  states: Object.fromEntries([...document.querySelectorAll("#states .state-row")].map(
    (r) => [r.dataset.state, Number(r.querySelector(".count").textContent)])),
  parked: [...document.querySelectorAll("#attention tr[data-job]")].map((r) => [r.dataset.job,
    r.querySelector("[data-action=retry]").disabled,
    r.querySelector("[data-action=refund]").disabled]),
  keys: [...document.querySelectorAll("#keys tr[data-key]")].map((r) => [r.dataset.key,
    r.querySelector("[data-field=revenue]").dataset.atomic,
    r.querySelector("[data-field=budgetLeft]").dataset.atomic]),
  balance: document.getElementById("wallet-balance").dataset.atomic,
  bars: document.querySelectorAll("#chart rect").length,
})"""


async def _evaluate(page: Any, expression: str) -> Any:
    result = await page.call("Runtime.evaluate", expression=expression, returnByValue=True)
    return result["result"].get("value")


async def test_the_dashboard_shows_the_ledger(dashboard_world: World, tmp_path: Path) -> None:
    world = dashboard_world
    await _drive(world)
    truth = await _truth(world)
    origin = world.gateway_url()
    async with chromium_page(tmp_path) as page:
        await page.call("Page.navigate", url=origin + "/admin")
        await page.idle(1.0)
        assert await _evaluate(page, "document.getElementById('dash').className") == "hidden"
        await _evaluate(
            page,
            f"document.getElementById('token').value = {json.dumps(ADMIN_TOKEN)};"
            "document.getElementById('login-form').requestSubmit(); true",
        )
        for _ in range(100):
            if await _evaluate(page, "document.body.dataset.loaded || ''"):
                break
            await page.idle(0.1)
        shown = json.loads(await _evaluate(page, READ_PAGE))
        # The last 24 hours hold the whole mix too: the same revenue once reloaded.
        loaded = await _evaluate(page, "document.body.dataset.loaded")
        await _evaluate(
            page,
            "const r = document.getElementById('range'); r.value = '1';"
            "r.dispatchEvent(new Event('change')); true",
        )
        for _ in range(100):
            if await _evaluate(page, "document.body.dataset.loaded") != loaded:
                break
            await page.idle(0.1)
        day_revenue = await _evaluate(page, "document.getElementById('revenue').dataset.atomic")
        await _evaluate(
            page,
            "const s = document.getElementById('range'); s.value = '';"
            "s.dispatchEvent(new Event('change')); true",
        )
        await page.idle(1.0)
        await _evaluate(page, "document.querySelector('[data-action=retry]:enabled').click()")
        await page.idle(0.3)
        hint = await _evaluate(page, "document.getElementById('action-result').textContent")
        await _evaluate(page, "document.querySelector('#attention a.job').click()")
        await page.idle(0.5)
        trail = await _evaluate(page, "document.getElementById('trail').innerText")
        stored = await _evaluate(page, "sessionStorage.getItem('x402r_admin_token')")
        metrics = await page.call("Page.getLayoutMetrics")
        height = int(metrics["cssContentSize"]["height"])
        await page.call(
            "Emulation.setDeviceMetricsOverride",
            width=1280,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        await page.idle(0.5)
        shot = await page.call("Page.captureScreenshot", format="png")
        errors = console_errors(page.events, origin + "/admin", origin)

    assert errors == []
    assert stored == ADMIN_TOKEN
    for name in ("revenue", "charges", "keyDebits", "upstreamSpend", "refunds",
                 "onchainRefunds", "keyCredits", "margin"):  # fmt: skip
        atomic, text = shown["cards"][name]
        assert int(atomic) == truth[name], name
        sign, amount = ("-" if truth[name] < 0 else ""), abs(truth[name])
        assert text == f"{sign}{amount // 10**6}.{amount % 10**6:06d}", name
    assert truth["charges"] == 4 * PRICE  # 2 served, 1 refunded, 1 race winner
    assert truth["keyDebits"] == 3 * PRICE
    assert truth["onchainRefunds"] == truth["keyCredits"] == PRICE
    assert shown["states"] == truth["states"]
    assert truth["states"]["payment_failed"] == 1
    assert truth["states"]["refunded"] == 2  # one on chain, one credited to the key
    assert sorted(job for job, _, _ in shown["parked"]) == truth["parked"]
    assert all((retry, refund) == (False, True) for _, retry, refund in shown["parked"])
    assert shown["keys"] == [["research", str(3 * PRICE), str(2_000_000 - 2 * PRICE)]]
    assert int(shown["balance"]) == truth["balance"]
    assert shown["bars"] == 4  # one day, four series
    assert hint == "give a reason first"
    assert int(day_revenue) == truth["revenue"]
    assert truth["parked"][0] in trail
    assert "settlement outcome still unknown" in trail
    sums = await audit(world.database_url, world.rpc_url)
    assert sums["charge"] == truth["charges"]
    SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
