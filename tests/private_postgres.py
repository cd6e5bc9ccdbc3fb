"""A throwaway Postgres cluster of a test's own, to stop and start (a database outage).

The shared server serves every other test, so an outage is simulated on a private cluster:
`initdb` in a temporary directory, one server on a free port of 127.0.0.1, trust auth.
`initdb` refuses to run as root, so the binaries run as the `postgres` OS user then.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.migrate import upgrade_to_head
from sandbox.chain import free_port

PG_BIN = Path(os.environ.get("X402R_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"


class PrivatePostgres:
    """One cluster: `start()`, `stop()` (fast shutdown: connections die), `url(db)`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="x402r-pg-"))
        self.data = self.dir / "data"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            entry = pwd.getpwnam(OS_USER)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            self._as_user = ["runuser", "-u", OS_USER, "--"]

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [*self._as_user, *args], check=True, capture_output=True, timeout=timeout, cwd="/"
        )

    def init(self) -> PrivatePostgres:
        """initdb with trust auth for local and 127.0.0.1 connections."""
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        return self

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.dir} -c fsync=off -c max_connections=100"
        )
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self) -> None:
        """Fast shutdown: every open connection is terminated, new ones are refused."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of `database` on this cluster."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        """Stop (if running) and delete the cluster."""
        pg_ctl = str(PG_BIN / "pg_ctl")
        subprocess.run(
            [*self._as_user, pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
            cwd="/",
            check=False,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


def private_postgres() -> Iterator[PrivatePostgres]:
    """A running, migrated cluster (database `postgres`); skips when the binaries are missing."""
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        pytest.skip(f"Postgres server binaries not found in {PG_BIN} (set X402R_TEST_PG_BIN)")
    cluster = PrivatePostgres()
    try:
        cluster.init().start()
        upgrade_to_head(cluster.url())
        yield cluster
    finally:
        cluster.remove()
