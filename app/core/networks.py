"""Network naming: x402 v1 names (`base`) and their CAIP-2 ids (`eip155:8453`)."""

from __future__ import annotations

from x402.mechanisms.evm.v1.constants import V1_NETWORK_CHAIN_IDS


def caip2(network: str) -> str:
    """CAIP-2 id for a v1 name or a CAIP-2 id; ValueError for unknown names."""
    if network.startswith("eip155:"):
        return network
    chain_id = V1_NETWORK_CHAIN_IDS.get(network)
    if chain_id is None:
        raise ValueError(f"unknown x402 network {network!r}")
    return f"eip155:{chain_id}"


def chain_id(network: str) -> int:
    """Numeric EVM chain id of a v1 name or CAIP-2 id."""
    return int(caip2(network).split(":", 1)[1])


def network_for_version(network: str, x402_version: int) -> str:
    """The network as x402 `x402_version` names it: a v1 name for v1, CAIP-2 for v2."""
    caip = caip2(network)
    if x402_version != 1:
        return caip
    for name, chain in V1_NETWORK_CHAIN_IDS.items():
        if f"eip155:{chain}" == caip:
            return name
    return caip
