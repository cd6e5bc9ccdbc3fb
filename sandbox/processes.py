"""Start a Python service as a child process on 127.0.0.1 and stop it reliably."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


class ServiceProcess:
    """One child process with a readiness URL; its output goes to a log file."""

    def __init__(
        self,
        name: str,
        args: list[str],
        *,
        ready_url: str,
        env: dict[str, str] | None = None,
        log_dir: Path,
        command: list[str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.args = args
        self.ready_url = ready_url
        # The operator's own X402R_* variables never leak into the local world.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("X402R_")}
        self.env = {**inherited, **(env or {})}
        self.command = command or [sys.executable]  # e.g. an installed `x402-reseller`
        self.cwd = cwd
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ServiceProcess:
        """Spawn and wait until `ready_url` answers (any status below 500)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.command, *self.args], cwd=self.cwd, env=self.env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            try:
                if httpx.get(self.ready_url, timeout=1.0).status_code < 500:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 40) -> str:
        """The end of the log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"
