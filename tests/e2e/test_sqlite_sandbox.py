"""The embedded default: one gateway on SQLite, exactly as `make sandbox` runs it."""

from __future__ import annotations

import pytest

from sandbox.chain import usdc_balance
from sandbox.world import OPERATOR, PAYER, World, address, key_hex
from tests.helpers import PRICE, UPSTREAM_PRICE, paid_post, poll_until_done
from tests.ledger_audit import audit
from tests.worlds import WorldMaker


@pytest.fixture(scope="module")
def sqlite_world(make_module_world: WorldMaker) -> World:
    """A world whose gateway uses the SQLite default database."""
    return make_module_world(job_delay_s=0.5, database_url="")


async def test_paid_edit_on_the_sqlite_default(sqlite_world: World) -> None:
    world = sqlite_world
    env = world.gateway_environment(world.ports["gateway0"])
    assert env["X402R_DATABASE_URL"].startswith("sqlite+aiosqlite:///")
    before = usdc_balance(world.rpc_url, address(OPERATOR))

    response = await paid_post(world.gateway_url() + "/v1/images/edit", key_hex(PAYER))
    assert response.status_code == 200, response.text
    job = await poll_until_done(response.json()["statusUrl"])

    assert job["status"] == "completed"
    assert usdc_balance(world.rpc_url, address(OPERATOR)) - before == PRICE
    sums = await audit(env["X402R_DATABASE_URL"], world.rpc_url)
    assert sums["charge"] == PRICE
    assert sums["upstream"] == UPSTREAM_PRICE
