"""`/v1/admin/keys`: the team gateway's API keys, behind the admin bearer token."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from app.api.admin import AdminDep
from app.api.deps import GatewayDep
from app.core.db import transaction
from app.keys import service
from app.keys.models import ChargeAt

router = APIRouter(prefix="/v1/admin/keys", tags=["operator"])
KeyId = Annotated[str, Path(min_length=4, max_length=40, pattern=r"^key_[A-Za-z0-9_-]+$")]


class KeyCreate(BaseModel):
    """A key to create; amounts in atomic USDC (6 decimals)."""

    name: str = Field(min_length=1, max_length=100)
    budget: int | None = Field(None, gt=0, description="Total budget; null: unlimited")
    dailyBudget: int | None = Field(None, gt=0, description="Per UTC day; null: unlimited")
    ratePerMinute: int | None = Field(None, gt=0, description="Requests per minute")
    expiresAt: datetime | None = None
    chargeAt: ChargeAt = ChargeAt.SALE
    ownJobsOnly: bool = False


class KeyTopup(BaseModel):
    """Raise a key's total budget."""

    amount: int = Field(gt=0, description="Atomic USDC")
    reason: str | None = Field(None, max_length=500)


@router.get("", summary="API keys with what they spent (paginated)")
async def list_keys(
    gw: GatewayDep,
    _: AdminDep,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
) -> dict[str, Any]:
    """A page of keys; pass `nextCursor` as `cursor` for the next one."""
    async with transaction(gw.sessions) as session:
        keys, next_cursor = await service.list_keys(session, limit=limit, cursor=cursor)
    return {"keys": keys, "nextCursor": next_cursor}


@router.post("", status_code=201, summary="Create an API key (its secret is shown once)")
async def create_key(body: KeyCreate, gw: GatewayDep, _: AdminDep) -> dict[str, Any]:
    """The new key and, once only, its secret: `Authorization: Bearer <secret>`."""
    new = service.NewKey(
        name=body.name,
        budget_atomic=body.budget,
        daily_budget_atomic=body.dailyBudget,
        rate_per_minute=body.ratePerMinute,
        expires_at=body.expiresAt,
        charge_at=body.chargeAt.value,
        own_jobs_only=body.ownJobsOnly,
    )
    async with transaction(gw.sessions) as session:
        key, secret = await service.create_key(session, new)
    return {"key": key, "secret": secret}


@router.get("/{key_id}", summary="One API key with what it spent")
async def show_key(key_id: KeyId, gw: GatewayDep, _: AdminDep) -> dict[str, Any]:
    """The key; 404 `api_key_not_found`."""
    async with transaction(gw.sessions) as session:
        return await service.show_key(session, key_id)


@router.post("/{key_id}/revoke", summary="Revoke an API key at once")
async def revoke_key(key_id: KeyId, gw: GatewayDep, _: AdminDep) -> dict[str, Any]:
    """Its next request is refused (401 `invalid_api_key`) on every replica."""
    async with transaction(gw.sessions) as session:
        return await service.revoke_key(session, key_id)


@router.post("/{key_id}/topup", summary="Raise an API key's total budget")
async def topup_key(key_id: KeyId, body: KeyTopup, gw: GatewayDep, _: AdminDep) -> dict[str, Any]:
    """The key after the top-up (recorded as a key_ledger `topup` row)."""
    async with transaction(gw.sessions) as session:
        return await service.topup_key(session, key_id, body.amount, body.reason)
