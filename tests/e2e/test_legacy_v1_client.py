"""A v1-only agent (the legacy `x402==1.0.0` client, its own virtualenv) pays the gateway."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from sandbox.chain import usdc_balance
from sandbox.world import OPERATOR, PAYER_2, World, address, key_hex
from tests.helpers import EDIT_BODY, PRICE, poll_until_done

ROOT = Path(__file__).resolve().parents[2]
LEGACY_PYTHON = ROOT / ".venv-x402v1" / "bin" / "python"


async def test_legacy_v1_client_pays_and_gets_a_job(world: World) -> None:
    assert LEGACY_PYTHON.exists(), "the legacy v1 client venv is missing: run `make deps`"
    before = usdc_balance(world.rpc_url, address(PAYER_2))
    operator_before = usdc_balance(world.rpc_url, address(OPERATOR))

    run = subprocess.run(
        [
            str(LEGACY_PYTHON),
            str(ROOT / "tests" / "legacy" / "pay_v1.py"),
            world.gateway_url() + "/v1/images/edit",
            key_hex(PAYER_2),
            json.dumps(EDIT_BODY),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT / "tests" / "legacy",  # so `x402` resolves to the legacy package only
        check=False,
    )

    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["status"] == 200, result
    assert result["settlement"]["success"] is True
    assert result["settlement"]["network"] == "base"
    job = await poll_until_done(result["body"]["statusUrl"])
    assert job["status"] == "completed"
    assert job["payment"]["transaction"] == result["settlement"]["transaction"]
    assert job["payment"]["network"] == result["settlement"]["network"]  # named alike
    assert usdc_balance(world.rpc_url, address(PAYER_2)) == before - PRICE
    assert usdc_balance(world.rpc_url, address(OPERATOR)) == operator_before + PRICE
