"""The installed product, end to end: the wheel in a fresh venv, run from outside the checkout.

Runs the steps of README's "Run it for real", in its order, as the Dockerfile and
docker-compose.yml run them: the configuration in a `.env` in the working directory (a
directory that is not the checkout, a fresh Postgres database named by a plain
`postgresql://` URL), `x402-reseller check` after `x402-reseller migrate`, then
`x402-reseller serve` with auto-migration off and `/readyz`. The checkout's local world
(chain, facilitator, simulated upstream) stands in for Base and Dopamint. Then an official
x402 SDK client pays for an edit and the job is polled to completion; balances must move by
exactly the price.

python scripts/check_installed.py --venv /tmp/x402r-installed/venv
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the sandbox and test helpers come from the checkout

from sandbox.chain import free_port  # noqa: E402
from sandbox.pay import EDIT_BODY  # noqa: E402
from sandbox.processes import ServiceProcess  # noqa: E402
from sandbox.world import HOT_WALLET, OPERATOR, PAYER, UPSTREAM_PAYEE, World, key_hex  # noqa: E402
from tests import pgadmin  # noqa: E402
from tests.helpers import PRICE, UPSTREAM_PRICE, balances, paid_post, poll_until_done  # noqa: E402

PG_HOST, PG_USER = "127.0.0.1", "postgres"


def run(cli: Path, args: list[str], env: dict[str, str], cwd: Path) -> str:
    """One CLI command as an operator types it; its output, or exit with it."""
    done = subprocess.run(
        [str(cli), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    print(f"$ x402-reseller {' '.join(args)}  (exit {done.returncode})")
    print(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"x402-reseller {args[0]} failed")
    return done.stdout + done.stderr


async def paid_edit(world: World) -> None:
    before = balances(world)
    response = await paid_post(world.gateway_url() + "/v1/images/edit", key_hex(PAYER), EDIT_BODY)
    assert response.status_code == 200, response.text
    job = await poll_until_done(response.json()["statusUrl"])
    assert job["status"] == "completed", job
    after = balances(world)
    delta = {i: after[i] - before[i] for i in before if after[i] != before[i]}
    expected = {
        PAYER: -PRICE,
        OPERATOR: PRICE,
        HOT_WALLET: -UPSTREAM_PRICE,
        UPSTREAM_PAYEE: UPSTREAM_PRICE,
    }
    assert delta == expected, f"balances moved {delta}, expected {expected}"
    print(f"paid edit completed: job {job['jobId']}, balances moved exactly {delta}")


def write_env_file(directory: Path, variables: dict[str, str]) -> None:
    """What an operator does with `cp .env.example .env`: the settings in a file."""
    lines = [f"{name}={value}" for name, value in sorted(variables.items())]
    (directory / ".env").write_text("\n".join(lines) + "\n")


def serve(world: World, cli: Path, env: dict[str, str], cwd: Path) -> None:
    """`X402R_AUTO_MIGRATE=false x402-reseller serve --host … --port …`, as README and the
    compose file run it (bound to 127.0.0.1 here); ready once `/readyz` answers 200."""
    port = world.ports["gateway0"]
    gateway = ServiceProcess(
        "gateway0",
        ["serve", "--host", "127.0.0.1", "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env={**env, "X402R_AUTO_MIGRATE": "false"},
        log_dir=world.log_dir,
        command=[str(cli)],
        cwd=cwd,
    )
    world.gateways.append(gateway)  # world.stop() stops it
    gateway.start(timeout=60)
    ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30)
    print(f"$ curl -s 127.0.0.1:{port}/readyz  ({ready.status_code})\n{ready.text}\n")
    if ready.status_code != 200:
        raise SystemExit("/readyz is not ready")


def main(argv: list[str] | None = None) -> int:
    """Check the product installed in `--venv`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--venv", type=Path, required=True, help="venv with the wheel installed")
    options = parser.parse_args(argv)
    cli = options.venv.resolve() / "bin" / "x402-reseller"
    outside = Path(tempfile.mkdtemp(prefix="x402r-installed-run-"))  # not the checkout
    database = f"x402r_installed_{secrets.token_hex(4)}"
    pgadmin.create_database(PG_HOST, PG_USER, database)
    world = World(database_url=f"postgresql://{PG_USER}@{PG_HOST}:5432/{database}")
    try:
        world.start(gateways=0)
        world.ports["gateway0"] = free_port()
        write_env_file(outside, world.gateway_environment(world.ports["gateway0"]))
        # Nothing from this process's environment: the `.env` file is the configuration.
        env = {k: v for k, v in os.environ.items() if not k.startswith("X402R_")}
        version = run(cli, ["--version"], env, outside)
        assert version.startswith("x402-reseller "), version
        run(cli, ["migrate"], env, outside)
        run(cli, ["check"], env, outside)
        serve(world, cli, env, outside)
        asyncio.run(paid_edit(world))
    finally:
        world.stop()
        pgadmin.drop_database(PG_HOST, PG_USER, database)
    return 0


if __name__ == "__main__":
    sys.exit(main())
