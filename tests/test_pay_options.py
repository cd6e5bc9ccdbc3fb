"""`X402R_EXTRA_OFFERS`: what a further way to pay must say, and which ones we can settle."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from app import checks
from app.core.pay_options import PayOption, parse_pay_options
from app.core.settings import BASE_USDC
from tests.settings_factory import make_settings

SEPOLIA_USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
SEPOLIA = {"network": "base-sepolia", "asset": SEPOLIA_USDC, "pay_to": PAY_TO}


def test_a_known_token_needs_no_domain() -> None:
    (option,) = parse_pay_options(json.dumps([SEPOLIA]))
    assert option == PayOption("base-sepolia", SEPOLIA_USDC, PAY_TO)
    assert option.network_caip2 == "eip155:84532"
    assert option.eip712() == {"name": "USDC", "version": "2"}


def test_caip2_networks_are_named_as_v1_does_where_it_can() -> None:
    (option,) = parse_pay_options(json.dumps([{**SEPOLIA, "network": "eip155:84532"}]))
    assert option.network == "base-sepolia"


@pytest.mark.parametrize(
    ("entries", "complaint"),
    [
        ("{", "not JSON"),
        ({"network": "base"}, "must be a JSON list"),
        ([{**SEPOLIA, "asset": "0x12"}], "asset is not an EVM address"),
        ([{**SEPOLIA, "pay_to": None}], "pay_to is not an EVM address"),
        ([{**SEPOLIA, "network": "nowhere"}], "unknown x402 network"),
        ([{**SEPOLIA, "colour": "red"}], "unknown keys ['colour']"),
        ([{**SEPOLIA, "name": "USDC"}], "name and version together"),
        ([{**SEPOLIA, "network": "base"}], "give its EIP-712 name and version"),
        ([SEPOLIA, SEPOLIA], "the same asset on the same network"),
    ],
)
def test_refused_offers_say_why(entries: Any, complaint: str) -> None:
    raw = entries if isinstance(entries, str) else json.dumps(entries)
    with pytest.raises(ValueError, match=re.escape(complaint)):
        parse_pay_options(raw)


def test_settings_offer_the_primary_option_first() -> None:
    settings = make_settings(extra_offers=json.dumps([SEPOLIA]), rpc_url=None)
    primary, extra = settings.pay_options
    assert (primary.network, primary.asset) == ("base", BASE_USDC)
    assert extra.pay_to == PAY_TO


def test_another_network_needs_a_remote_facilitator_and_its_rpc() -> None:
    with pytest.raises(ValidationError, match="embedded facilitator settles on base only"):
        make_settings(
            extra_offers=json.dumps([SEPOLIA]),
            facilitator_url=None,
            facilitator_private_key="0x" + "11" * 32,
            rpc_url="http://127.0.0.1:8545",
        )
    with pytest.raises(ValidationError, match="give its rpc_url"):
        make_settings(extra_offers=json.dumps([SEPOLIA]), rpc_url="http://127.0.0.1:8545")
    settings = make_settings(
        extra_offers=json.dumps([{**SEPOLIA, "rpc_url": "http://127.0.0.1:8546"}]),
        rpc_url="http://127.0.0.1:8545",
    )
    assert settings.pay_options[1].rpc_url == "http://127.0.0.1:8546"
    # The same network, another asset: the embedded facilitator settles it.
    second = {**SEPOLIA, "network": "base", "name": "USD Coin", "version": "2"}
    embedded = make_settings(
        extra_offers=json.dumps([second]),
        facilitator_url=None,
        facilitator_private_key="0x" + "11" * 32,
        rpc_url="http://127.0.0.1:8545",
    )
    assert len(embedded.pay_options) == 2


async def test_the_config_check_wants_every_option_settled() -> None:
    settings = make_settings(
        extra_offers=json.dumps([{**SEPOLIA, "rpc_url": "http://127.0.0.1:8546"}]), rpc_url=None
    )
    primary_only = {(1, "exact", "base"), (2, "exact", "eip155:8453")}

    def gateway(kinds: set[tuple[int, str, str]]) -> Any:
        async def supported_kinds() -> set[tuple[int, str, str]]:
            return kinds

        return SimpleNamespace(settings=settings, supported_kinds=supported_kinds)

    with pytest.raises(RuntimeError, match="eip155:84532"):
        await checks._facilitator(gateway(primary_only))
    both = primary_only | {(1, "exact", "base-sepolia"), (2, "exact", "eip155:84532")}
    assert (await checks._facilitator(gateway(both))).endswith("and 1 further option(s)")
