"""`x402-reseller keys create|list|show|revoke|topup`: the admin API's key service, offline.

Amounts are atomic USDC (6 decimals: 1000000 = 1 USDC). `--json` prints one JSON document;
otherwise readable lines. The secret is printed once, at creation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import create_engine, create_sessionmaker, transaction
from app.core.errors import AppError
from app.core.settings import Settings
from app.keys import service
from app.keys.models import ChargeAt
from app.payments.pricing import format_usdc

FAILED = 1
UNREACHABLE = 3  # as `app.cli`: a dependency failed


def _positive(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer (atomic USDC)")
    return number


def _moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def add_keys_parser(sub: Any) -> None:
    """The `keys` command and its subcommands."""
    keys = sub.add_parser("keys", help="manage API keys (team gateway)")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="create a key; prints its secret once")
    create.add_argument("name")
    create.add_argument("--budget", type=_positive, help="total budget, atomic USDC")
    create.add_argument("--daily-budget", type=_positive, help="per UTC day, atomic USDC")
    create.add_argument("--rate", type=_positive, help="requests per minute")
    create.add_argument("--expires", type=_moment, help="ISO 8601 moment, e.g. 2027-01-01T00:00Z")
    create.add_argument("--charge-at", choices=[c.value for c in ChargeAt], default="sale")
    create.add_argument(
        "--own-jobs-only", action="store_true", help="its jobs are readable with this key only"
    )
    listing = actions.add_parser("list", help="keys with what they spent")
    listing.add_argument("--limit", type=_positive, default=50)
    listing.add_argument("--cursor")
    for name in ("show", "revoke"):
        actions.add_parser(name, help=f"{name} one key").add_argument("key_id")
    topup = actions.add_parser("topup", help="raise a key's total budget")
    topup.add_argument("key_id")
    topup.add_argument("amount", type=_positive, help="atomic USDC")
    topup.add_argument("--reason")
    for action in actions.choices.values():
        action.add_argument("--json", action="store_true", help="print JSON")


def _work(args: argparse.Namespace) -> Callable[[AsyncSession], Awaitable[Any]]:
    command = args.keys_command
    if command == "create":
        new = service.NewKey(
            name=args.name,
            budget_atomic=args.budget,
            daily_budget_atomic=args.daily_budget,
            rate_per_minute=args.rate,
            expires_at=args.expires,
            charge_at=args.charge_at,
            own_jobs_only=args.own_jobs_only,
        )

        async def create(session: AsyncSession) -> Any:
            key, secret = await service.create_key(session, new)
            return {"key": key, "secret": secret}

        return create
    if command == "list":

        async def listing(session: AsyncSession) -> Any:
            keys, cursor = await service.list_keys(session, limit=args.limit, cursor=args.cursor)
            return {"keys": keys, "nextCursor": cursor}

        return listing
    if command == "topup":
        return lambda s: service.topup_key(s, args.key_id, args.amount, args.reason)
    if command == "revoke":
        return lambda s: service.revoke_key(s, args.key_id)
    return lambda s: service.show_key(s, args.key_id)


async def _run(settings: Settings, work: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
    engine = create_engine(settings.database_url, pool_size=1, max_overflow=0)
    try:
        async with transaction(create_sessionmaker(engine)) as session:
            return await work(session)
    finally:
        await engine.dispose()


def _money(value: str | None) -> str:
    return "unlimited" if value is None else f"{format_usdc(int(value))} USDC"


def _line(key: dict[str, Any]) -> str:
    return (
        f"{key['id']}  {key['name']}  {key['prefix']}…  {key['status']}  "
        f"spent {_money(key['spent'])} of {_money(key['budget'])} "
        f"(today {_money(key['spentToday'])} of {_money(key['dailyBudget'])}), "
        f"{key['jobs']} jobs, credited {_money(key['credited'])}"
    )


def _print(result: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
    elif "secret" in result:
        print(_line(result["key"]))
        print(f"secret (shown once, store it now): {result['secret']}")
    elif "keys" in result:
        for key in result["keys"]:
            print(_line(key))
        if result["nextCursor"]:
            print(f"more: --cursor {result['nextCursor']}")
    else:
        print(_line(result))


def run_keys(args: argparse.Namespace, settings: Settings) -> None:
    """Run one `keys` subcommand; exit 1 with the error's code and message on failure."""
    try:
        result = asyncio.run(_run(settings, _work(args)))
    except AppError as exc:
        print(f"x402-reseller keys: {exc.code}: {exc.message}", file=sys.stderr)
        raise SystemExit(FAILED) from None
    except (SQLAlchemyError, OSError) as exc:
        # The kind only: the message may quote the database URL (and its password).
        print(
            f"x402-reseller keys: the database failed ({type(exc).__name__}); check "
            "X402R_DATABASE_URL and run `x402-reseller migrate`",
            file=sys.stderr,
        )
        raise SystemExit(UNREACHABLE) from None
    _print(result, args.json)
