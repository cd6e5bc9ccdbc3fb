"""Logs an operator can use: a start-up line, a line per paid request and job state, JSON."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from app.jobs.polling import Poller
from app.jobs.workers import run_forever
from app.main import build_gateway
from sandbox.pay import EDIT_BODY
from sandbox.world import PAYER, key_hex
from tests.helpers import paid_post, poll_until_done
from tests.settings_factory import make_settings
from tests.worlds import WorldMaker


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one JSON object


async def test_json_logs_tell_the_story_of_a_paid_request(make_world: WorldMaker) -> None:
    world = await asyncio.to_thread(make_world, X402R_LOG_FORMAT="json")
    response = await paid_post(world.gateway_url() + "/v1/images/edit", key_hex(PAYER), EDIT_BODY)
    assert response.status_code == 200, response.text
    rid = response.headers["x-request-id"]
    job_id = response.json()["jobId"]
    await poll_until_done(response.json()["statusUrl"])
    lines = _json_lines(world.gateways[0].log_path.read_text())
    await asyncio.to_thread(world.stop)
    start = next(line for line in lines if line["event"] == "starting")
    assert start["price_atomic"] == 63240
    assert start["database"].startswith("postgresql at 127.0.0.1:5432/")
    assert {"version", "pay_to", "network", "upstream", "facilitator"} <= set(start)
    request = [line for line in lines if line.get("request_id") == rid]
    assert {line["event"] for line in request} >= {"paid job", "paid request", "job state"}
    assert all(line.get("job_id") in (None, job_id) for line in request)
    states = [line["state"] for line in lines if line.get("job_id") == job_id and "state" in line]
    assert states[-1] == "completed"


async def test_worker_without_a_database_logs_one_line_per_failure_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(
        database_url="postgresql://postgres@127.0.0.1:9/none", worker_interval_s=0.1
    )
    gw = build_gateway(settings)
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="app.jobs.workers")
    try:
        worker = asyncio.create_task(run_forever(gw, Poller(gw), stop))
        await asyncio.sleep(2.0)  # at a fixed 0.1 s, about 20 failures; with backoff, 4
        stop.set()
        await asyncio.wait_for(worker, 10)
    finally:
        await gw.close()
    failures = [r for r in caplog.records if "worker batch failed" in r.getMessage()]
    assert 2 <= len(failures) <= 5, [r.getMessage() for r in failures]
    assert all(r.exc_info is None for r in failures)  # one line, no traceback
    assert "retrying in 0.4 s" in failures[1].getMessage()
