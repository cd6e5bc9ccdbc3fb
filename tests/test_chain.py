"""The local chain is accepted by the official x402 SDK as Base mainnet.

Runs a real anvil (chain id 8453) with the sandbox USDC at the canonical Base USDC address
and checks the token itself, then a full v2 and v1 `exact` payment: the SDK client signs,
the SDK facilitator verifies and settles on-chain, and replays are refused.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_account.datastructures import SignedMessage
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError
from x402 import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequiredV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    x402Client,
    x402Facilitator,
)
from x402.mechanisms.evm import EthAccountSigner, FacilitatorWeb3Signer
from x402.mechanisms.evm.constants import BALANCE_OF_ABI, VERSION_ABI
from x402.mechanisms.evm.eip712 import hash_domain
from x402.mechanisms.evm.exact import (
    ExactEvmFacilitatorScheme,
    ExactEvmSchemeConfig,
    register_exact_evm_client,
)
from x402.mechanisms.evm.exact.v1.facilitator import ExactEvmSchemeV1, ExactEvmSchemeV1Config
from x402.mechanisms.evm.multicall import MulticallCall, multicall
from x402.mechanisms.evm.types import TypedDataDomain
from x402.schemas import parse_payment_payload, parse_payment_requirements

from sandbox.chain import (
    CHAIN_ID,
    MULTICALL3_ADDRESS,
    USDC_ADDRESS,
    LocalChain,
    authorization_state,
    code_at,
    dev_account,
    eth_balance,
    load_artifact,
    mint,
    runtime_code,
    usdc_balance,
)

PRICE = 10_000  # 0.01 USDC
USDC_EXTRA = {"name": "USD Coin", "version": "2"}
NONCE_USED = "invalid_exact_evm_nonce_already_used"
INSUFFICIENT = "invalid_exact_evm_insufficient_balance"

TRANSFER_TYPES = {
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ]
}
RECEIVE_TYPES = {"ReceiveWithAuthorization": TRANSFER_TYPES["TransferWithAuthorization"]}
CANCEL_TYPES = {
    "CancelAuthorization": [
        {"name": "authorizer", "type": "address"},
        {"name": "nonce", "type": "bytes32"},
    ]
}
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chain() -> Iterator[LocalChain]:
    """A real anvil on a free 127.0.0.1 port with the sandbox contracts installed."""
    local = LocalChain().start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def payer(chain: LocalChain) -> LocalAccount:
    """Dev account 1, holding 100 USDC."""
    account = dev_account(1)
    mint(chain.rpc_url, account.address, 100_000_000)
    return account


@pytest.fixture(scope="session")
def payee() -> str:
    """Checksummed address of dev account 2."""
    return str(dev_account(2).address)


@pytest.fixture(scope="session")
def facilitator(chain: LocalChain) -> x402Facilitator:
    """The SDK facilitator serving exact on eip155:8453 (v2) and base (v1) only."""
    signer = FacilitatorWeb3Signer(private_key=dev_account(9).key.hex(), rpc_url=chain.rpc_url)
    fac = x402Facilitator()
    fac.register(["eip155:8453"], ExactEvmFacilitatorScheme(signer))
    fac.register_v1(["base"], ExactEvmSchemeV1(signer))
    return fac


@pytest.fixture(scope="session")
def strict(chain: LocalChain) -> x402Facilitator:
    """Like ``facilitator`` but re-simulating the transfer in settle before broadcasting."""
    signer = FacilitatorWeb3Signer(private_key=dev_account(8).key.hex(), rpc_url=chain.rpc_url)
    fac = x402Facilitator()
    fac.register(
        ["eip155:8453"],
        ExactEvmFacilitatorScheme(signer, ExactEvmSchemeConfig(simulate_in_settle=True)),
    )
    fac.register_v1(
        ["base"], ExactEvmSchemeV1(signer, ExactEvmSchemeV1Config(simulate_in_settle=True))
    )
    return fac


@pytest.fixture(scope="session")
def client(payer: LocalAccount) -> x402Client:
    """The SDK client paying as the payer account."""
    return register_exact_evm_client(x402Client(), EthAccountSigner(payer))


@pytest.fixture(scope="session")
def w3(chain: LocalChain) -> Web3:
    """A web3 connection to the chain."""
    return Web3(Web3.HTTPProvider(chain.rpc_url))


@pytest.fixture(scope="session")
def usdc(w3: Web3) -> Contract:
    """The sandbox token bound to its Base address."""
    return w3.eth.contract(
        address=Web3.to_checksum_address(USDC_ADDRESS), abi=load_artifact("TestUSDC")["abi"]
    )


def v2_requirements(pay_to: str, amount: int = PRICE) -> PaymentRequirements:
    """V2 exact requirements for USDC on Base."""
    return PaymentRequirements(
        scheme="exact",
        network="eip155:8453",
        asset=USDC_ADDRESS,
        amount=str(amount),
        pay_to=pay_to,
        max_timeout_seconds=300,
        extra=dict(USDC_EXTRA),
    )


def v1_requirements(pay_to: str, amount: int = PRICE) -> PaymentRequirementsV1:
    """V1 exact requirements for USDC on the legacy network name "base"."""
    return PaymentRequirementsV1(
        scheme="exact",
        network="base",
        max_amount_required=str(amount),
        resource="http://127.0.0.1/paid",
        description="test",
        mime_type="application/json",
        pay_to=pay_to,
        max_timeout_seconds=300,
        asset=USDC_ADDRESS,
        extra=dict(USDC_EXTRA),
    )


def over_the_wire(payload: Any, requirements: Any) -> tuple[Any, Any]:
    """Round-trip payload and requirements through JSON as an HTTP facilitator would."""
    payload_json = json.loads(payload.model_dump_json(by_alias=True))
    requirements_json = json.loads(requirements.model_dump_json(by_alias=True))
    parsed_payload = parse_payment_payload(payload_json)
    parsed_requirements = parse_payment_requirements(parsed_payload.x402_version, requirements_json)
    return parsed_payload, parsed_requirements


async def assert_settle_replay_refused(
    payload: Any,
    requirements: Any,
    facilitator: x402Facilitator,
    strict: x402Facilitator,
    w3: Web3,
) -> None:
    """Settling an already-settled payload fails; how depends on ``simulate_in_settle``.

    By default settle skips the on-chain simulation, broadcasts, and the transaction
    reverts on-chain (gas spent, reason ``transaction_failed``). With
    ``simulate_in_settle=True`` it is refused before broadcasting with the nonce reason.
    """
    default = await facilitator.settle(payload, requirements)
    assert not default.success
    assert default.error_reason == "transaction_failed"
    assert w3.eth.get_transaction_receipt(HexStr(default.transaction))["status"] == 0

    checked = await strict.settle(payload, requirements)
    assert not checked.success
    assert checked.error_reason == NONCE_USED
    assert checked.transaction == ""


# ---------------------------------------------------------------------------------------------
# The chain and the token
# ---------------------------------------------------------------------------------------------


def test_chain_is_base_with_contracts(chain: LocalChain, w3: Web3) -> None:
    """Chain id 8453, both contracts installed, dev accounts funded with ETH."""
    assert w3.eth.chain_id == CHAIN_ID
    assert code_at(chain.rpc_url, USDC_ADDRESS) == runtime_code("TestUSDC")
    assert code_at(chain.rpc_url, MULTICALL3_ADDRESS) == runtime_code("Multicall3")
    assert eth_balance(chain.rpc_url, dev_account(9).address) > 10**18
    assert chain.running
    # attach() leaves a correctly installed chain alone
    assert LocalChain.attach(chain.rpc_url).rpc_url == chain.rpc_url


def test_multicall3_try_aggregate(chain: LocalChain, payer: LocalAccount) -> None:
    """The SDK's own multicall helper works against the sandbox Multicall3."""
    signer = FacilitatorWeb3Signer(private_key=dev_account(9).key.hex(), rpc_url=chain.rpc_url)
    results = multicall(
        signer,
        [
            MulticallCall(
                address=USDC_ADDRESS,
                abi=BALANCE_OF_ABI,
                function_name="balanceOf",
                args=(payer.address,),
            ),
            MulticallCall(address=USDC_ADDRESS, abi=VERSION_ABI, function_name="version"),
            MulticallCall(address=USDC_ADDRESS, call_data=bytes.fromhex("deadbeef")),
        ],
    )
    assert [r.success for r in results] == [True, True, False]
    assert results[0].result == usdc_balance(chain.rpc_url, payer.address)
    assert results[1].result == "2"


def test_token_reports_usdc_domain(usdc: Contract) -> None:
    """Metadata and EIP-712 domain match Base USDC (name "USD Coin", version "2")."""
    assert usdc.functions.name().call() == "USD Coin"
    assert usdc.functions.symbol().call() == "USDC"
    assert usdc.functions.decimals().call() == 6
    assert usdc.functions.version().call() == "2"
    expected = hash_domain(
        TypedDataDomain(
            name="USD Coin", version="2", chain_id=CHAIN_ID, verifying_contract=USDC_ADDRESS
        )
    )
    assert bytes(usdc.functions.DOMAIN_SEPARATOR().call()) == expected


def test_mint_transfer_approve(chain: LocalChain, usdc: Contract, w3: Web3) -> None:
    """Plain ERC-20 behaviour with the helper functions."""
    holder, spender, target = dev_account(3), dev_account(4), dev_account(5)
    supply_before = usdc.functions.totalSupply().call()
    mint(chain.rpc_url, holder.address, 3_000_000)
    assert usdc_balance(chain.rpc_url, holder.address) == 3_000_000
    assert usdc.functions.totalSupply().call() == supply_before + 3_000_000

    def send(account: LocalAccount, call: Any) -> Any:
        tx = call.build_transaction(
            {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address)}
        )
        raw = account.sign_transaction(tx).raw_transaction
        return w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(raw), timeout=10)

    send(holder, usdc.functions.approve(spender.address, 1_000_000))
    assert usdc.functions.allowance(holder.address, spender.address).call() == 1_000_000
    send(spender, usdc.functions.transferFrom(holder.address, target.address, 400_000))
    send(holder, usdc.functions.transfer(target.address, 100_000))
    assert usdc_balance(chain.rpc_url, holder.address) == 2_500_000
    assert usdc_balance(chain.rpc_url, target.address) == 500_000
    assert usdc.functions.allowance(holder.address, spender.address).call() == 600_000
    with pytest.raises(ContractLogicError, match="transfer amount exceeds balance"):
        usdc.functions.transfer(target.address, 10**12).call({"from": holder.address})


def _sign(account: LocalAccount, types: dict[str, Any], message: dict[str, Any]) -> SignedMessage:
    """Sign EIP-712 data for the token's domain; return the signed message."""
    domain = {
        "name": "USD Coin",
        "version": "2",
        "chainId": CHAIN_ID,
        "verifyingContract": USDC_ADDRESS,
    }
    signable = encode_typed_data(domain, types, message)
    return account.sign_message(signable)


def _authorization(frm: str, to: str, value: int, w3: Web3) -> dict[str, Any]:
    """An authorization valid for the next 10 minutes of chain time."""
    now = w3.eth.get_block("latest")["timestamp"]
    return {
        "from": frm,
        "to": to,
        "value": value,
        "validAfter": 0,
        "validBefore": now + 600,
        "nonce": secrets.token_bytes(32),
    }


def test_eip3009_contract_rules(chain: LocalChain, usdc: Contract, w3: Web3) -> None:
    """Both overloads, receive's caller rule, window, malleability and cancel checks."""
    owner, other = dev_account(6), dev_account(7)
    mint(chain.rpc_url, owner.address, 1_000_000)
    auth = _authorization(owner.address, other.address, 1_000, w3)
    sig = _sign(owner, TRANSFER_TYPES, auth)
    args = [auth[k] for k in ("from", "to", "value", "validAfter", "validBefore", "nonce")]
    caller = {"from": dev_account(8).address}

    tw_bytes = usdc.get_function_by_signature(
        "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
    )
    tw_vrs = usdc.get_function_by_signature(
        "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
    )
    rw_bytes = usdc.get_function_by_signature(
        "receiveWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
    )
    cancel_bytes = usdc.get_function_by_signature("cancelAuthorization(address,bytes32,bytes)")
    r, s = sig.r.to_bytes(32, "big"), sig.s.to_bytes(32, "big")

    tw_bytes(*args, sig.signature).call(caller)
    tw_vrs(*args, sig.v, r, s).call(caller)
    # tampered value
    with pytest.raises(ContractLogicError, match="FiatTokenV2: invalid signature"):
        tw_bytes(*args[:2], 999, *args[3:], sig.signature).call(caller)
    # high-s twin of a valid signature is rejected
    high_s = (SECP256K1_N - sig.s).to_bytes(32, "big")
    with pytest.raises(ContractLogicError, match="FiatTokenV2: invalid signature"):
        tw_vrs(*args, 55 - sig.v, r, high_s).call(caller)
    # time window
    late = {**auth, "validAfter": auth["validBefore"] - 1}
    late_sig = _sign(owner, TRANSFER_TYPES, late)
    with pytest.raises(ContractLogicError, match="authorization is not yet valid"):
        tw_bytes(*late.values(), late_sig.signature).call(caller)
    old = {**auth, "validBefore": 1}
    old_sig = _sign(owner, TRANSFER_TYPES, old)
    with pytest.raises(ContractLogicError, match="authorization is expired"):
        tw_bytes(*old.values(), old_sig.signature).call(caller)

    # receiveWithAuthorization: only the payee may submit it
    rsig = _sign(owner, RECEIVE_TYPES, auth)
    with pytest.raises(ContractLogicError, match="caller must be the payee"):
        rw_bytes(*args, rsig.signature).call(caller)
    rw_bytes(*args, rsig.signature).call({"from": other.address})

    # cancelAuthorization burns the nonce
    csig = _sign(owner, CANCEL_TYPES, {"authorizer": owner.address, "nonce": args[5]})
    tx = cancel_bytes(owner.address, args[5], csig.signature).build_transaction(
        {"from": other.address, "nonce": w3.eth.get_transaction_count(other.address)}
    )
    raw = other.sign_transaction(tx).raw_transaction
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(raw), timeout=10)
    assert receipt["status"] == 1
    assert authorization_state(chain.rpc_url, owner.address, "0x" + args[5].hex())
    with pytest.raises(ContractLogicError, match="authorization is used"):
        tw_bytes(*args, sig.signature).call(caller)


# ---------------------------------------------------------------------------------------------
# The SDK end to end
# ---------------------------------------------------------------------------------------------


def test_facilitator_supported_kinds(facilitator: x402Facilitator) -> None:
    """Only the two kinds registered are advertised."""
    kinds = {(k.x402_version, k.scheme, k.network) for k in facilitator.get_supported().kinds}
    assert kinds == {(2, "exact", "eip155:8453"), (1, "exact", "base")}


async def test_v2_exact_payment_settles(
    chain: LocalChain,
    client: x402Client,
    facilitator: x402Facilitator,
    strict: x402Facilitator,
    payer: LocalAccount,
    payee: str,
    w3: Web3,
) -> None:
    """SDK client signs v2; SDK facilitator verifies, settles, and refuses the replay."""
    requirements = v2_requirements(payee)
    payload = await client.create_payment_payload(PaymentRequired(accepts=[requirements]))
    assert isinstance(payload, PaymentPayload)
    assert payload.x402_version == 2
    assert payload.accepted.network == "eip155:8453"
    auth = payload.payload["authorization"]
    assert auth["from"] == payer.address
    assert auth["value"] == str(PRICE)

    wire_payload, wire_requirements = over_the_wire(payload, requirements)
    payer_before = usdc_balance(chain.rpc_url, payer.address)
    payee_before = usdc_balance(chain.rpc_url, payee)
    assert not authorization_state(chain.rpc_url, payer.address, auth["nonce"])

    verified = await facilitator.verify(wire_payload, wire_requirements)
    assert verified.is_valid, verified
    assert verified.payer == payer.address

    settled = await facilitator.settle(wire_payload, wire_requirements)
    assert settled.success, settled
    assert settled.network == "eip155:8453"
    assert settled.payer == payer.address
    assert settled.transaction.startswith("0x")
    assert len(settled.transaction) == 66

    assert usdc_balance(chain.rpc_url, payer.address) == payer_before - PRICE
    assert usdc_balance(chain.rpc_url, payee) == payee_before + PRICE
    assert authorization_state(chain.rpc_url, payer.address, auth["nonce"])

    replay_verify = await facilitator.verify(wire_payload, wire_requirements)
    assert not replay_verify.is_valid
    assert replay_verify.invalid_reason == NONCE_USED
    await assert_settle_replay_refused(wire_payload, wire_requirements, facilitator, strict, w3)
    assert usdc_balance(chain.rpc_url, payee) == payee_before + PRICE


async def test_v1_exact_payment_settles(
    chain: LocalChain,
    client: x402Client,
    facilitator: x402Facilitator,
    strict: x402Facilitator,
    payer: LocalAccount,
    payee: str,
    w3: Web3,
) -> None:
    """SDK client signs v1 on "base"; SDK facilitator verifies, settles, refuses the replay."""
    requirements = v1_requirements(payee)
    payload = await client.create_payment_payload(PaymentRequiredV1(accepts=[requirements]))
    assert isinstance(payload, PaymentPayloadV1)
    assert (payload.x402_version, payload.scheme, payload.network) == (1, "exact", "base")
    auth = payload.payload["authorization"]
    assert int(auth["validAfter"]) < time.time()

    wire_payload, wire_requirements = over_the_wire(payload, requirements)
    payer_before = usdc_balance(chain.rpc_url, payer.address)
    payee_before = usdc_balance(chain.rpc_url, payee)

    verified = await facilitator.verify(wire_payload, wire_requirements)
    assert verified.is_valid, verified

    settled = await facilitator.settle(wire_payload, wire_requirements)
    assert settled.success, settled
    assert settled.network == "base"

    assert usdc_balance(chain.rpc_url, payer.address) == payer_before - PRICE
    assert usdc_balance(chain.rpc_url, payee) == payee_before + PRICE
    assert authorization_state(chain.rpc_url, payer.address, auth["nonce"])

    replay_verify = await facilitator.verify(wire_payload, wire_requirements)
    assert not replay_verify.is_valid
    assert replay_verify.invalid_reason == NONCE_USED
    await assert_settle_replay_refused(wire_payload, wire_requirements, facilitator, strict, w3)
    assert usdc_balance(chain.rpc_url, payee) == payee_before + PRICE


async def test_unfunded_payer_is_refused(
    chain: LocalChain, facilitator: x402Facilitator, payee: str
) -> None:
    """A payer without USDC gets the specific insufficient-balance reason (v2 and v1)."""
    broke: LocalAccount = Account.create()
    broke_client = register_exact_evm_client(x402Client(), EthAccountSigner(broke))

    v2 = v2_requirements(payee)
    payload = await broke_client.create_payment_payload(PaymentRequired(accepts=[v2]))
    verified = await facilitator.verify(payload, v2)
    assert not verified.is_valid
    assert verified.invalid_reason == INSUFFICIENT

    v1 = v1_requirements(payee)
    payload_v1 = await broke_client.create_payment_payload(PaymentRequiredV1(accepts=[v1]))
    verified_v1 = await facilitator.verify(payload_v1, v1)
    assert not verified_v1.is_valid
    assert verified_v1.invalid_reason == INSUFFICIENT
    assert usdc_balance(chain.rpc_url, broke.address) == 0
