"""`python -m sandbox`: the whole local world on fixed ports until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from sandbox.processes import ROOT
from sandbox.world import PAYER, World, key_hex


def fresh_database(directory: Path) -> str:
    """The sandbox's SQLite URL in `directory`, its file (and journals) from a previous run
    removed: each run starts from a fresh database, as its chain is fresh too. An absolute
    path, so the file removed is the gateway's whatever the working directory."""
    database = directory.resolve() / "x402-reseller.db"
    for stale in directory.glob(database.name + "*"):
        stale.unlink()
    return f"sqlite+aiosqlite:///{database}"


def main(argv: list[str] | None = None) -> int:
    """Start chain, facilitator, simulated upstream and the gateway (SQLite); wait."""
    parser = argparse.ArgumentParser(prog="python -m sandbox")
    parser.add_argument("--port", type=int, default=8402, help="gateway port")
    parser.add_argument("--chain-port", type=int, default=8545)
    parser.add_argument("--job-delay", type=float, default=3.0)
    options = parser.parse_args(argv)

    world = World(database_url=fresh_database(ROOT / ".sandbox"), job_delay_s=options.job_delay)
    world.ports["gateway0"] = options.port

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        world.start(chain_port=options.chain_port)
        print(world.describe())
        print("\nPay for an edit with the official x402 SDK client and poll it to completion:\n")
        print(
            f"  .venv/bin/python -m sandbox.pay --gateway {world.gateway_url()} "
            f"--key {key_hex(PAYER)}\n"
        )
        print("Ctrl-C stops everything.")
        while all(p.proc is not None and p.proc.poll() is None for p in world.gateways):
            time.sleep(0.5)
        print("the gateway exited; see", world.log_dir, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        world.stop()


if __name__ == "__main__":
    sys.exit(main())
