"""A local anvil chain that x402 clients and facilitators accept as Base mainnet.

The chain runs the real anvil binary with chain id 8453. A USDC-like EIP-3009 token is
installed at the canonical Base USDC address and a Multicall3 at its canonical address
(both with ``anvil_setCode``), so the SDK's default asset table works unchanged.

Typical use::

    with LocalChain() as chain:                 # free port on 127.0.0.1
        mint(chain.rpc_url, dev_account(1).address, 5_000_000)
        usdc_balance(chain.rpc_url, dev_account(1).address)  # -> 5000000

Run ``python -m sandbox.chain --port 8545`` for a chain in the foreground.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from functools import cache
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Self

from eth_abi.abi import decode, encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

USDC_ADDRESS = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
MULTICALL3_ADDRESS = "0xcA11bde05977b3631167028862bE2a173976CA11"
CHAIN_ID = 8453
NETWORK = "eip155:8453"
V1_NETWORK = "base"
USDC_DECIMALS = 6
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ACCOUNT_COUNT = 10
BLOCK_TIME_SECONDS = 2

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = Path(__file__).resolve().parent / "contracts" / "build"
ANVIL_RELATIVE_PATH = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")

_HOST = "127.0.0.1"
_RPC_TIMEOUT_SECONDS = 10.0
_send_lock = threading.Lock()


class ChainError(RuntimeError):
    """Raised when the local chain cannot be started, reached or used."""


# --------------------------------------------------------------------------------------------
# Accounts and artifacts
# --------------------------------------------------------------------------------------------


@cache
def dev_account(index: int = 0) -> LocalAccount:
    """Return anvil's deterministic dev account ``index`` (funded with ETH by anvil)."""
    if index < 0:
        raise ValueError(f"account index must be >= 0, got {index}")
    Account.enable_unaudited_hdwallet_features()
    account: LocalAccount = Account.from_mnemonic(
        DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}"
    )
    return account


@cache
def load_artifact(name: str) -> dict[str, Any]:
    """Load ``{abi, deployedBytecode}`` for a sandbox contract from the committed build."""
    path = BUILD_DIR / f"{name}.json"
    if not path.is_file():
        raise ChainError(f"missing contract build {path}; run `node sandbox/contracts/compile.mjs`")
    artifact: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return artifact


def runtime_code(name: str) -> str:
    """Return the 0x-prefixed runtime bytecode of a sandbox contract."""
    return str(load_artifact(name)["deployedBytecode"]).lower()


def anvil_binary() -> Path:
    """Locate the anvil binary (``ANVIL_BIN`` overrides the node_modules copy)."""
    override = os.environ.get("ANVIL_BIN")
    if override:
        path = Path(override)
        if not path.is_file():
            raise ChainError(f"ANVIL_BIN={override} does not exist")
    else:
        candidates = [PROJECT_ROOT / ANVIL_RELATIVE_PATH, Path.cwd() / ANVIL_RELATIVE_PATH]
        path = next((c for c in candidates if c.is_file()), candidates[0])
        if not path.is_file():
            raise ChainError(
                f"anvil binary not found at {path}; run `npm ci` (or `make deps`) "
                "in the project root, or set ANVIL_BIN"
            )
    if not os.access(path, os.X_OK):
        raise ChainError(f"anvil binary at {path} is not executable")
    return path


# --------------------------------------------------------------------------------------------
# JSON-RPC
# --------------------------------------------------------------------------------------------


def rpc_call(
    rpc_url: str, method: str, params: list[Any], timeout: float = _RPC_TIMEOUT_SECONDS
) -> Any:
    """Send one JSON-RPC request and return its ``result`` (raises ChainError on error)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    request = urllib.request.Request(
        rpc_url,
        data=body.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply: dict[str, Any] = json.loads(response.read())
    if "error" in reply:
        raise ChainError(f"{method} failed: {reply['error']}")
    return reply.get("result")


def _selector(signature: str) -> bytes:
    """Return the 4-byte function selector for a canonical signature."""
    return keccak(text=signature)[:4]


def eth_call(rpc_url: str, to: str, data: bytes) -> bytes:
    """Run ``eth_call`` against the latest block and return the raw result."""
    result = rpc_call(rpc_url, "eth_call", [{"to": to, "data": "0x" + data.hex()}, "latest"])
    return bytes.fromhex(str(result).removeprefix("0x"))


def _call_uint(rpc_url: str, to: str, signature: str, types: list[str], args: list[Any]) -> int:
    """Call a view function returning a single uint256."""
    (value,) = decode(
        ["uint256"], eth_call(rpc_url, to, _selector(signature) + encode(types, args))
    )
    return int(value)


def code_at(rpc_url: str, address: str) -> str:
    """Return the lower-case 0x-prefixed code at ``address`` ("0x" when empty)."""
    return str(rpc_call(rpc_url, "eth_getCode", [address, "latest"])).lower()


def chain_id(rpc_url: str) -> int:
    """Return the chain id reported by the node."""
    return int(str(rpc_call(rpc_url, "eth_chainId", [])), 16)


# --------------------------------------------------------------------------------------------
# Token helpers
# --------------------------------------------------------------------------------------------


def usdc_balance(rpc_url: str, address: str, token: str = USDC_ADDRESS) -> int:
    """Return the token balance of ``address`` in atomic units (6 decimals)."""
    return _call_uint(
        rpc_url, token, "balanceOf(address)", ["address"], [to_checksum_address(address)]
    )


def usdc_total_supply(rpc_url: str) -> int:
    """Return the token's total supply in atomic units."""
    return _call_uint(rpc_url, USDC_ADDRESS, "totalSupply()", [], [])


def eth_balance(rpc_url: str, address: str) -> int:
    """Return the native balance of ``address`` in wei."""
    return int(str(rpc_call(rpc_url, "eth_getBalance", [address, "latest"])), 16)


def authorization_state(rpc_url: str, authorizer: str, nonce_hex: str) -> bool:
    """Return whether the EIP-3009 ``nonce_hex`` of ``authorizer`` is used or canceled."""
    nonce = bytes.fromhex(nonce_hex.removeprefix("0x"))
    if len(nonce) != 32:
        raise ValueError(f"nonce must be 32 bytes, got {len(nonce)}")
    data = _selector("authorizationState(address,bytes32)") + encode(
        ["address", "bytes32"], [to_checksum_address(authorizer), nonce]
    )
    (used,) = decode(["bool"], eth_call(rpc_url, USDC_ADDRESS, data))
    return bool(used)


def send_transaction(
    rpc_url: str,
    sender: LocalAccount,
    to: str,
    data: bytes,
    *,
    value: int = 0,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Sign and send a transaction from ``sender``, wait for it, return the receipt."""
    tx_fields = {"from": sender.address, "to": to, "data": "0x" + data.hex(), "value": hex(value)}
    gas = int(str(rpc_call(rpc_url, "eth_estimateGas", [tx_fields])), 16)
    gas_price = int(str(rpc_call(rpc_url, "eth_gasPrice", [])), 16)
    with _send_lock:
        nonce = int(
            str(rpc_call(rpc_url, "eth_getTransactionCount", [sender.address, "pending"])), 16
        )
        signed = sender.sign_transaction(
            {
                "chainId": chain_id(rpc_url),
                "nonce": nonce,
                "to": to_checksum_address(to),
                "value": value,
                "data": data,
                "gas": gas + gas // 5,
                "gasPrice": gas_price * 2,
            }
        )
        tx_hash = str(
            rpc_call(rpc_url, "eth_sendRawTransaction", ["0x" + signed.raw_transaction.hex()])
        )
    return wait_for_receipt(rpc_url, tx_hash, timeout=timeout)


def wait_for_receipt(rpc_url: str, tx_hash: str, timeout: float = 30.0) -> dict[str, Any]:
    """Poll until ``tx_hash`` is mined; raise ChainError if it reverted or timed out."""
    deadline = time.monotonic() + timeout
    while True:
        receipt = rpc_call(rpc_url, "eth_getTransactionReceipt", [tx_hash])
        if isinstance(receipt, dict):
            if int(str(receipt.get("status", "0x0")), 16) != 1:
                raise ChainError(f"transaction {tx_hash} reverted")
            return receipt
        if time.monotonic() > deadline:
            raise ChainError(f"transaction {tx_hash} not mined within {timeout:.0f}s")
        time.sleep(0.05)


def mint(rpc_url: str, to: str, amount_atomic: int, token: str = USDC_ADDRESS) -> str:
    """Mint ``amount_atomic`` token units to ``to`` (tx from dev account 0); return tx hash."""
    if amount_atomic < 0:
        raise ValueError("amount must be >= 0")
    data = _selector("mint(address,uint256)") + encode(
        ["address", "uint256"], [to_checksum_address(to), amount_atomic]
    )
    receipt = send_transaction(rpc_url, dev_account(0), token, data)
    return str(receipt["transactionHash"])


def install_token(rpc_url: str, address: str) -> None:
    """Another TestUSDC at ``address`` (a second asset on this chain): same code, so the same
    EIP-712 name and version, with its own address as the verifying contract."""
    rpc_call(rpc_url, "anvil_setCode", [to_checksum_address(address), runtime_code("TestUSDC")])


def install_contracts(rpc_url: str, *, force: bool = False) -> list[str]:
    """Install the token and Multicall3 code unless already present; return what was set."""
    installed: list[str] = []
    for address, name in ((USDC_ADDRESS, "TestUSDC"), (MULTICALL3_ADDRESS, "Multicall3")):
        wanted = runtime_code(name)
        if force or code_at(rpc_url, address) != wanted:
            rpc_call(rpc_url, "anvil_setCode", [address, wanted])
            installed.append(name)
    return installed


# --------------------------------------------------------------------------------------------
# The chain process
# --------------------------------------------------------------------------------------------


def port_is_free(port: int) -> bool:
    """Return whether ``port`` on 127.0.0.1 can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the node's own listener: ignore TIME_WAIT leftovers, still fail on a listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class LocalChain:
    """An anvil process on 127.0.0.1 (or an attached node) set up as Base mainnet."""

    def __init__(
        self,
        port: int | None = None,
        *,
        startup_timeout: float = 20.0,
        block_time: int = BLOCK_TIME_SECONDS,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """Configure a chain; nothing runs until ``start`` (or ``with``)."""
        self._port = port
        self._startup_timeout = startup_timeout
        self._block_time = block_time
        self._extra_args = extra_args
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._rpc_url: str | None = None

    @classmethod
    def attach(cls, rpc_url: str) -> LocalChain:
        """Use an already-running chain at ``rpc_url``, installing the contracts if missing."""
        try:
            remote_chain_id = chain_id(rpc_url)
        except (OSError, ChainError) as exc:
            raise ChainError(f"no chain answering at {rpc_url}: {exc}") from exc
        if remote_chain_id != CHAIN_ID:
            raise ChainError(f"chain at {rpc_url} has id {remote_chain_id}, expected {CHAIN_ID}")
        chain = cls()
        chain._rpc_url = rpc_url
        install_contracts(rpc_url)
        return chain

    @property
    def rpc_url(self) -> str:
        """The HTTP JSON-RPC URL of the chain."""
        if self._rpc_url is None:
            raise ChainError("chain is not started")
        return self._rpc_url

    @property
    def pid(self) -> int | None:
        """PID of the anvil process this object started, if any."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether this object owns a live anvil process."""
        return self._process is not None and self._process.poll() is None

    def start(self, port: int | None = None) -> Self:
        """Spawn anvil on 127.0.0.1, wait for its RPC, install the contracts."""
        if self._rpc_url is not None:
            raise ChainError("chain already started or attached")
        chosen = port if port is not None else self._port
        chosen = chosen if chosen else free_port()
        if not port_is_free(chosen):
            raise ChainError(f"port {chosen} on {_HOST} is already in use")
        args = [
            str(anvil_binary()),
            "--host",
            _HOST,
            "--port",
            str(chosen),
            "--chain-id",
            str(CHAIN_ID),
            "--block-time",
            str(self._block_time),
            "--mixed-mining",
            "--silent",
            *self._extra_args,
        ]
        self._log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        atexit.register(self.stop)
        rpc_url = f"http://{_HOST}:{chosen}"
        try:
            self._wait_ready(rpc_url)
            install_contracts(rpc_url, force=True)
        except BaseException:
            self.stop()
            raise
        self._rpc_url = rpc_url
        return self

    def _wait_ready(self, rpc_url: str) -> None:
        """Poll ``eth_chainId`` until anvil answers, exits, or the timeout passes."""
        deadline = time.monotonic() + self._startup_timeout
        while True:
            process = self._process
            if process is not None and process.poll() is not None:
                raise ChainError(f"anvil exited with code {process.returncode}: {self._log_text()}")
            try:
                reply = rpc_call(rpc_url, "eth_chainId", [], timeout=1.0)
                answered = int(str(reply), 16) == CHAIN_ID
            except (OSError, ChainError, ValueError):
                answered = False
            # Only trust the answer if our process is still alive (not another node's reply).
            if answered and process is not None and process.poll() is None:
                return
            if time.monotonic() > deadline:
                raise ChainError(
                    f"anvil did not answer at {rpc_url} within {self._startup_timeout:.0f}s"
                )
            time.sleep(0.05)

    def _log_text(self) -> str:
        """Return what anvil wrote to stdout/stderr so far (for error messages)."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace").strip()[-2000:]

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the anvil process this object started (kill it after ``timeout``)."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=timeout)
            self._rpc_url = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        """Start the chain unless it is already started or attached."""
        if self._rpc_url is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the chain if this object started it."""
        self.stop()


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _format_usdc(amount_atomic: int) -> str:
    """Format atomic token units as a decimal USDC amount."""
    return f"{amount_atomic / 10**USDC_DECIMALS:,.6f}"


def main(argv: list[str] | None = None) -> int:
    """Run a local chain in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.chain", description="Run a local Base-like chain with USDC."
    )
    parser.add_argument("--port", type=int, default=8545, help="port on 127.0.0.1 (0 = any)")
    parser.add_argument(
        "--usdc",
        type=int,
        default=1000,
        help="whole USDC to mint to each listed dev account at start (default 1000, 0 = none)",
    )
    parser.add_argument(
        "--accounts", type=int, default=DEV_ACCOUNT_COUNT, help="dev accounts to list"
    )
    options = parser.parse_args(argv)

    def _on_sigterm(signum: int, frame: FrameType | None) -> None:
        """Turn SIGTERM into KeyboardInterrupt so the chain is stopped cleanly."""
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_sigterm)
    # A shell may start background jobs with SIGINT ignored; Ctrl-C must always stop us.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    chain = LocalChain(options.port or None)
    try:
        chain.start()
        accounts = [dev_account(i) for i in range(min(options.accounts, DEV_ACCOUNT_COUNT))]
        for account in accounts:
            if options.usdc > 0:
                mint(chain.rpc_url, account.address, options.usdc * 10**USDC_DECIMALS)
        print(f"RPC URL:    {chain.rpc_url}  (chain id {CHAIN_ID}, network {NETWORK})")
        print(f"USDC:       {USDC_ADDRESS}")
        print(f"Multicall3: {MULTICALL3_ADDRESS}")
        print(f"anvil pid:  {chain.pid}")
        print("Accounts (mnemonic: " + DEV_MNEMONIC + "):")
        for i, account in enumerate(accounts):
            eth = eth_balance(chain.rpc_url, account.address) / 10**18
            usdc = _format_usdc(usdc_balance(chain.rpc_url, account.address))
            print(f"  ({i}) {account.address}  {eth:,.2f} ETH  {usdc} USDC")
            print(f"      key 0x{account.key.hex().removeprefix('0x')}")
        print("Press Ctrl-C to stop.", flush=True)
        while chain.running:
            time.sleep(0.5)
        print("anvil exited unexpectedly", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except (ChainError, urllib.error.URLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        chain.stop()


if __name__ == "__main__":
    sys.exit(main())
