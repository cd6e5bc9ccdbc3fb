"""The stage benchmarks run on: a throwaway Postgres database and the sandbox world.

The gateway talks to the facilitator and the upstream through timing relays (bench.hops),
uses the remote facilitator (so facilitator + chain time is one measurable hop), and its
upstream jobs stay `processing` for the whole run. Processes are pinned with `taskset`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from app.core.migrate import upgrade_to_head
from bench.hops import HopRelays
from sandbox.chain import free_port
from sandbox.processes import ServiceProcess
from sandbox.world import EDIT_PATH, World

PG_HOST = os.environ.get("X402R_TEST_PG_HOST", "127.0.0.1")
PG_USER = os.environ.get("X402R_TEST_PG_USER", "postgres")
SERVER_CORE, CLIENT_CORE = 0, 1
POLL_INTERVAL_S = 0.5  # the sandbox world's X402R_POLL_INTERVAL_S


def pin(pid: int, core: int | None) -> None:
    """Pin every thread of `pid` to `core` (None: let the scheduler use every core)."""
    if shutil.which("taskset") is None:
        return
    cores = str(core) if core is not None else f"0-{(os.cpu_count() or 1) - 1}"
    subprocess.run(["taskset", "-a", "-pc", cores, str(pid)], capture_output=True, check=False)


async def admin(sql: str) -> None:
    """One statement on the `postgres` database (CREATE / DROP DATABASE)."""
    conn = await asyncpg.connect(host=PG_HOST, user=PG_USER, database="postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass
class Stage:
    """Database + world + relays; `start()` and `stop()` are the whole lifecycle."""

    log_dir: Path
    db_name: str = field(default_factory=lambda: f"x402r_bench_{secrets.token_hex(4)}")
    world: World | None = None
    relays: HopRelays | None = None
    baselines: list[ServiceProcess] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        """asyncpg URL of the throwaway database."""
        return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:5432/{self.db_name}"

    @property
    def w(self) -> World:
        """The running world."""
        assert self.world is not None
        return self.world

    def start(self) -> Stage:
        """Create and migrate the database, start the world and gateway 0 behind relays."""
        asyncio.run(admin(f'CREATE DATABASE "{self.db_name}"'))
        upgrade_to_head(self.database_url)
        self.world = World(
            database_url=self.database_url,
            log_dir=self.log_dir,
            job_delay_s=3600,
            remote_facilitator=True,
        ).start(gateways=0)
        self.relays = HopRelays(
            {"facilitator": self.w.ports["facilitator"], "upstream": self.w.ports["upstream"]}
        ).start()
        self.w.gateway_env = {
            "X402R_FACILITATOR_URL": self.relays.url("facilitator"),
            "X402R_UPSTREAM_URL": self.relays.url("upstream") + EDIT_PATH,
            # The simulated upstream's status URLs name its own port, not the relay's.
            "X402R_UPSTREAM_STATUS_ORIGINS": self.w.upstream_base,
            "X402R_POLL_INTERVAL_S": str(POLL_INTERVAL_S),
        }
        self.start_gateway(0)
        return self

    def start_gateway(self, index: int, core: int | None = SERVER_CORE) -> ServiceProcess:
        """(Re)start gateway `index`, pinned to `core`."""
        if index < len(self.w.gateways):
            self.w.gateways[index].stop()
        proc = self.w.start_gateway(index)
        self.pin_gateway(index, core)
        return proc

    def pin_gateway(self, index: int, core: int | None) -> None:
        """Move gateway `index` to `core`."""
        proc = self.w.gateways[index].proc
        assert proc is not None
        pin(proc.pid, core)

    def gateway_pid(self, index: int = 0) -> int:
        """Process id of gateway `index`."""
        proc = self.w.gateways[index].proc
        assert proc is not None
        return proc.pid

    def start_baseline(self, kind: str, spec_path: Path) -> str:
        """Start `python -m bench.servers KIND` pinned like the gateway; returns its base URL."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        ready = {"raw": "/", "sdk": "/healthz", "orm": "/v1/jobs/job_none"}[kind]
        proc = ServiceProcess(
            f"baseline-{kind}",
            ["-m", "bench.servers", kind, "--port", str(port), "--spec", str(spec_path)],
            ready_url=url + ready,
            log_dir=self.log_dir,
        ).start(timeout=60)
        assert proc.proc is not None
        pin(proc.proc.pid, SERVER_CORE)
        self.baselines.append(proc)
        return url

    def stop_baselines(self) -> None:
        """Stop every baseline server."""
        while self.baselines:
            self.baselines.pop().stop()

    def stop(self) -> None:
        """Tear everything down and drop the database."""
        self.stop_baselines()
        if self.world is not None:
            self.world.stop()
        if self.relays is not None:
            self.relays.stop()
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
