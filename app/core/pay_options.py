"""Further ways to pay: more (network, asset, pay-to) options offered after the primary one.

`X402R_EXTRA_OFFERS` is a JSON list of `{"network", "asset", "pay_to", "name"?, "version"?,
"rpc_url"?}`: `network` an x402 v1 name or CAIP-2 id of an EVM chain; `name`/`version` the
token's EIP-712 domain (needed unless the SDK knows the asset); `rpc_url` the chain to read
on-chain proofs from, required for a network other than the primary one. Every option is
asked the same atomic price: offer only 6-decimal USD stablecoins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from web3 import Web3
from x402.mechanisms.evm import get_asset_info

from app.core.networks import caip2, network_for_version

_KEYS = {"network", "asset", "pay_to", "name", "version", "rpc_url"}


@dataclass(frozen=True)
class PayOption:
    """One accepted way to pay: a token on a network, paid to an address."""

    network: str  # the x402 v1 name where there is one, else CAIP-2
    asset: str
    pay_to: str
    name: str | None = None  # EIP-712 domain of the token, when the SDK does not know it
    version: str | None = None
    rpc_url: str | None = None

    @property
    def network_caip2(self) -> str:
        """The CAIP-2 id of the option's network."""
        return caip2(self.network)

    def eip712(self) -> dict[str, str]:
        """The token's EIP-712 domain (name, version), which exact-EVM clients sign against."""
        if self.name is not None and self.version is not None:
            return {"name": self.name, "version": self.version}
        info = get_asset_info(self.network_caip2, self.asset)
        return {"name": info["name"], "version": info["version"]}


def _address(entry: dict[str, Any], key: str, index: int) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not Web3.is_address(value):
        raise ValueError(f"offer {index}: {key} is not an EVM address: {value!r}")
    return str(Web3.to_checksum_address(value))


def _option(entry: object, index: int) -> PayOption:
    if not isinstance(entry, dict):
        raise ValueError(f"offer {index} is not an object")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ValueError(f"offer {index}: unknown keys {sorted(unknown)}")
    network = entry.get("network")
    if not isinstance(network, str):
        raise ValueError(f"offer {index}: network is required")
    network = network_for_version(network, 1)  # ValueError for unknown v1 names
    name, version = entry.get("name"), entry.get("version")
    if (name is None) != (version is None):
        raise ValueError(f"offer {index}: give the token's EIP-712 name and version together")
    for key, value in (("name", name), ("version", version), ("rpc_url", entry.get("rpc_url"))):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"offer {index}: {key} must be a non-empty string")
    option = PayOption(
        network=network,
        asset=_address(entry, "asset", index),
        pay_to=_address(entry, "pay_to", index),
        name=name,
        version=version,
        rpc_url=entry.get("rpc_url"),
    )
    try:
        option.eip712()
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"offer {index}: the SDK does not know {option.asset} on {network}: give its "
            "EIP-712 name and version"
        ) from exc
    return option


def parse_pay_options(raw: str) -> tuple[PayOption, ...]:
    """The options of `X402R_EXTRA_OFFERS`; ValueError naming what is wrong."""
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(entries, list):
        raise ValueError("must be a JSON list of offers")
    options = tuple(_option(entry, i) for i, entry in enumerate(entries))
    seen = {(o.network_caip2, o.asset.lower()) for o in options}
    if len(seen) != len(options):
        raise ValueError("two offers name the same asset on the same network")
    return options


def all_options(network: str, asset: str, pay_to: str, extra_json: str) -> tuple[PayOption, ...]:
    """The primary option (`X402R_NETWORK`, `_ASSET`, `_PAY_TO`), then the extra ones."""
    primary = PayOption(network_for_version(network, 1), asset, pay_to)
    return (primary, *parse_pay_options(extra_json))


def check_reachable(options: tuple[PayOption, ...], chain_reads: bool, embedded: bool) -> None:
    """Every option (the primary first) must settle and be provable: ValueError otherwise.

    The embedded facilitator settles on the primary network only; with chain reads on (an
    RPC URL), an option on another network names the RPC its proofs are read from.
    """
    primary = options[0]
    for index, option in enumerate(options[1:]):
        if option.network_caip2 == primary.network_caip2:
            continue
        if embedded:
            raise ValueError(
                f"offer {index} is on {option.network}: the embedded facilitator settles on "
                f"{primary.network} only (use a remote facilitator)"
            )
        if chain_reads and option.rpc_url is None:
            raise ValueError(f"offer {index} is on {option.network}: give its rpc_url")
