"""The whole local world: chain, facilitator, simulated upstream and gateway processes.

Used by `python -m sandbox` and by the end-to-end tests, so both run the same thing.

Accounts (anvil's deterministic dev keys): 0 mints, 1 and 2 are paying clients, 3 is the
operator (receives client payments), 4 is the hot wallet (pays the upstream, refunds),
5 is the upstream's payee, 8 pays gas for the upstream's facilitator, 9 for ours.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sandbox.chain import LocalChain, dev_account, free_port, mint
from sandbox.processes import ROOT, ServiceProcess

PAYER, PAYER_2, OPERATOR, HOT_WALLET, UPSTREAM_PAYEE = 1, 2, 3, 4, 5
UPSTREAM_FACILITATOR_GAS, GATEWAY_FACILITATOR_GAS = 8, 9
FUNDING_ATOMIC = 1_000 * 10**6  # 1000 USDC each
EDIT_PATH = "/api/ai/generations/images/nano-banana-edit"


def key_hex(index: int) -> str:
    """Private key of dev account `index` as 0x-hex (sandbox use only)."""
    return "0x" + bytes(dev_account(index).key).hex()


def address(index: int) -> str:
    """Checksummed address of dev account `index`."""
    return str(dev_account(index).address)


@dataclass
class World:
    """Processes of one local world; `start()` brings everything up, `stop()` tears down."""

    database_url: str = ""
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="x402r-")))
    job_delay_s: float = 1.0
    gateway_env: dict[str, str] = field(default_factory=dict)
    remote_facilitator: bool = False
    chain: LocalChain | None = None
    facilitator: ServiceProcess | None = None
    upstream: ServiceProcess | None = None
    gateways: list[ServiceProcess] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    # How a gateway is started: this interpreter's `-m app.cli` by default, or an installed
    # `x402-reseller` run from outside the checkout (the installed-product check).
    gateway_executable: list[str] | None = None
    gateway_command: list[str] = field(default_factory=lambda: ["-m", "app.cli"])
    gateway_cwd: Path | None = None

    @property
    def rpc_url(self) -> str:
        """The chain's JSON-RPC URL."""
        assert self.chain is not None
        return self.chain.rpc_url

    @property
    def facilitator_url(self) -> str:
        """Standalone facilitator (the upstream's, and ours in remote mode)."""
        return f"http://127.0.0.1:{self.ports['facilitator']}"

    @property
    def upstream_base(self) -> str:
        """The simulated upstream's base URL."""
        return f"http://127.0.0.1:{self.ports['upstream']}"

    def gateway_url(self, index: int = 0) -> str:
        """Base URL of gateway replica `index`."""
        return f"http://127.0.0.1:{self.ports[f'gateway{index}']}"

    def start(self, *, gateways: int = 1, chain_port: int | None = None) -> World:
        """Chain, funded accounts, facilitator, upstream, then `gateways` gateway replicas.

        If anything fails to start, whatever did start is stopped before the error propagates.
        """
        try:
            return self._start(gateways, chain_port)
        except BaseException:
            self.stop()
            raise

    def _start(self, gateways: int, chain_port: int | None) -> World:
        self.chain = LocalChain().start(chain_port)
        for index in (PAYER, PAYER_2, HOT_WALLET):
            mint(self.rpc_url, address(index), FUNDING_ATOMIC)
        self.ports["facilitator"] = free_port()
        self.facilitator = ServiceProcess(
            "facilitator",
            [
                "-m",
                "sandbox.facilitator_server",
                "--port",
                str(self.ports["facilitator"]),
                "--rpc-url",
                self.rpc_url,
            ],
            ready_url=f"{self.facilitator_url}/supported",
            env={"FACILITATOR_PRIVATE_KEY": key_hex(UPSTREAM_FACILITATOR_GAS)},
            log_dir=self.log_dir,
        ).start()
        self.ports["upstream"] = free_port()
        self.upstream = ServiceProcess(
            "upstream",
            [
                "-m",
                "sandbox.upstream_sim",
                "--port",
                str(self.ports["upstream"]),
                "--facilitator-url",
                self.facilitator_url,
                "--pay-to",
                address(UPSTREAM_PAYEE),
                "--job-delay",
                str(self.job_delay_s),
            ],
            ready_url=f"{self.upstream_base}/health",
            log_dir=self.log_dir,
        ).start()
        for index in range(gateways):
            self.start_gateway(index)
        return self

    def gateway_environment(self, port: int) -> dict[str, str]:
        """Environment of a gateway process in this world."""
        env = {
            "X402R_DATABASE_URL": self.database_url
            or f"sqlite+aiosqlite:///{self.log_dir / 'gateway.db'}",
            "X402R_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "X402R_PAY_TO": address(OPERATOR),
            "X402R_HOT_WALLET_PRIVATE_KEY": key_hex(HOT_WALLET),
            "X402R_UPSTREAM_URL": self.upstream_base + EDIT_PATH,
            # The simulated upstream runs on 127.0.0.1: its own origin must be readable there.
            "X402R_UPSTREAM_ALLOW_PRIVATE_ADDRESSES": "true",
            "X402R_RPC_URL": self.rpc_url,
            "X402R_POLL_INTERVAL_S": "0.5",
            "X402R_WORKER_INTERVAL_S": "0.2",
            # A refund that depends on the upstream not having charged us waits until our
            # upstream authorization expired: the shortest validity keeps that to seconds.
            "X402R_UPSTREAM_AUTH_VALIDITY_S": "30",
            "X402R_LOG_LEVEL": "INFO",
            # Tests and benchmarks pay in bulk from one key and one address; the limits
            # themselves are tested with small rates (tests/e2e/test_rate_limits.py).
            "X402R_VERIFY_RATE_PER_PAYER": "1000000/minute",
            "X402R_VERIFY_RATE_PER_CLIENT": "1000000/minute",
        }
        if self.remote_facilitator:
            env["X402R_FACILITATOR_URL"] = self.facilitator_url
        else:
            env["X402R_FACILITATOR_PRIVATE_KEY"] = key_hex(GATEWAY_FACILITATOR_GAS)
        env.update(self.gateway_env)
        return env

    def start_gateway(
        self, index: int = 0, extra_env: dict[str, str] | None = None
    ) -> ServiceProcess:
        """Start (or restart) gateway replica `index` on its port."""
        port = self.ports.setdefault(f"gateway{index}", free_port())
        env = {**self.gateway_environment(port), **(extra_env or {})}
        proc = ServiceProcess(
            f"gateway{index}",
            # --env-file '': an operator's .env in the checkout is not the sandbox's.
            [*self.gateway_command, "--env-file", "", "serve", "--port", str(port)],
            ready_url=f"http://127.0.0.1:{port}/healthz",
            env=env,
            log_dir=self.log_dir,
            command=self.gateway_executable,
            cwd=self.gateway_cwd or ROOT,
        ).start(timeout=60)
        while len(self.gateways) <= index:
            self.gateways.append(proc)
        self.gateways[index] = proc
        return proc

    def set_faults(self, faults: dict[str, Any]) -> None:
        """Switch the simulated upstream's faults."""
        httpx.post(f"{self.upstream_base}/_sim/faults", json=faults, timeout=5).raise_for_status()

    def reset_upstream(self) -> None:
        """Clear faults and counters of the simulated upstream."""
        httpx.post(f"{self.upstream_base}/_sim/reset", timeout=5).raise_for_status()

    def set_facilitator_faults(self, faults: dict[str, Any]) -> None:
        """Switch the standalone facilitator's faults (used by gateways in remote mode)."""
        url = f"{self.facilitator_url}/_faults"
        httpx.post(url, json=faults, timeout=5).raise_for_status()

    def reset_facilitator(self) -> None:
        """Clear the standalone facilitator's faults."""
        httpx.post(f"{self.facilitator_url}/_faults/reset", timeout=5).raise_for_status()

    def facilitator_calls(self) -> dict[str, int]:
        """Calls the standalone facilitator received, per endpoint (verify, settle, supported)."""
        calls: dict[str, int] = httpx.get(f"{self.facilitator_url}/_stats", timeout=5).json()[
            "calls"
        ]
        return calls

    def upstream_stats(self) -> dict[str, Any]:
        """Counters of the simulated upstream."""
        stats: dict[str, Any] = httpx.get(f"{self.upstream_base}/_sim/stats", timeout=5).json()
        return stats

    def stop(self) -> None:
        """Stop every process, newest first."""
        for service in [*reversed(self.gateways), self.upstream, self.facilitator]:
            if service is not None:
                service.stop()
        if self.chain is not None:
            self.chain.stop()

    def describe(self) -> str:
        """A JSON summary (URLs, addresses) for humans and scripts."""
        return json.dumps(
            {
                "gateway": self.gateway_url(0) if "gateway0" in self.ports else None,
                "upstream": self.upstream_base,
                "facilitator": self.facilitator_url,
                "rpc": self.rpc_url,
                "payer": address(PAYER),
                "operator": address(OPERATOR),
                "hot_wallet": address(HOT_WALLET),
                "logs": str(self.log_dir),
            },
            indent=2,
        )
