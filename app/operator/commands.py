"""`x402-reseller jobs list|show|retry|refund` and `x402-reseller report`, on the database."""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import create_engine, create_sessionmaker, transaction
from app.core.errors import AppError
from app.core.settings import Settings
from app.operator import actions
from app.operator.jobs import JobFilter, iterate_jobs, job_summary, job_trail
from app.operator.render import Progress, cell, table, to_csv, to_json
from app.operator.report import GROUPINGS, Window
from app.operator.reporting import report_document

REFUSED = 1  # the action or lookup was refused; nothing changed
JOB_COLUMNS = ("id", "state", "createdAt", "payer", "apiKeyId", "amount", "settleTx", "error")
MONEY = ("revenue", "upstreamSpend", "refunds", "margin", "charges", "keyDebits", "keyCredits")
_RELATIVE = re.compile(r"^(\d+)([mhd])$")


def moment(text: str) -> datetime:
    """An ISO date or datetime (UTC unless it says otherwise), or `30m`/`24h`/`7d` ago."""
    if found := _RELATIVE.match(text):
        unit = {"m": "minutes", "h": "hours", "d": "days"}[found.group(2)]
        return datetime.now(UTC) - timedelta(**{unit: int(found.group(1))})
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date, a time or 24h/7d: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def add_commands(sub: Any) -> None:
    """Register `jobs` and `report` on the CLI's subparsers."""
    jobs = sub.add_parser("jobs", help="list, show, retry or refund jobs").add_subparsers(
        dest="jobs_command", required=True
    )
    listing = jobs.add_parser("list", help="jobs, newest first")
    listing.add_argument("--state")
    listing.add_argument("--key", help="an API key's id or name")
    listing.add_argument("--payer")
    listing.add_argument("--search", help="a job id, payer address or transaction hash")
    listing.add_argument("--since", type=moment, help="ISO date/time, or 30m, 24h, 7d ago")
    listing.add_argument("--until", type=moment)
    listing.add_argument("--limit", type=int, default=None, help="at most this many rows")
    listing.add_argument("--format", choices=("table", "json", "csv"), default="table")
    show = jobs.add_parser("show", help="one job and its full money trail")
    show.add_argument("job_id")
    show.add_argument("--format", choices=("table", "json"), default="table")
    for name, what in (("retry", "resume a parked job"), ("refund", "refund a parked job")):
        action = jobs.add_parser(name, help=what)
        action.add_argument("job_id")
        action.add_argument("--reason", required=True, help="why (kept with the action)")
        action.add_argument("--actor", default=f"cli:{getpass.getuser()}")
    report = sub.add_parser("report", help="revenue, upstream spend, refunds, margin")
    report.add_argument("--since", type=moment)
    report.add_argument("--until", type=moment)
    report.add_argument("--by", choices=GROUPINGS)
    report.add_argument("--format", choices=("table", "json", "csv"), default="table")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run a `jobs` or `report` command; the exit status."""
    engine = create_engine(settings.database_url, pool_size=1, max_overflow=0)
    sessions = create_sessionmaker(engine)
    try:
        async with transaction(sessions) as session:
            if args.command == "report":
                return await _report(session, args)
            command = args.jobs_command
            if command == "list":
                return await _list(session, settings, args)
            if command == "show":
                trail = await job_trail(session, args.job_id, settings.settlement_order)
                sys.stdout.write(to_json(trail) if args.format == "json" else _trail(trail))
                return 0
            who = {"reason": args.reason, "actor": args.actor}
            if command == "retry":
                job = await actions.retry(
                    session, args.job_id, order=settings.settlement_order, **who
                )
            else:
                job = await actions.refund(session, args.job_id, **who)
            sys.stdout.write(f"{job.id}: {command} recorded; the job is now {job.state}\n")
            return 0
    except AppError as exc:
        sys.stderr.write(f"x402-reseller: {exc.code}: {exc.message}\n")
        return REFUSED
    finally:
        await engine.dispose()


async def _list(session: AsyncSession, settings: Settings, args: argparse.Namespace) -> int:
    f = JobFilter(args.state, args.key, args.payer, args.since, args.until, args.search)
    progress = Progress("jobs read")
    rows: list[dict[str, Any]] = []
    async for job in iterate_jobs(session, f):
        rows.append(job_summary(job, settings.settlement_order))
        progress.step()
        if args.limit is not None and len(rows) >= args.limit:
            break
    progress.done()
    if args.format == "json":
        sys.stdout.write(to_json(rows))
        return 0
    flat = [r | {"error": (r["error"] or {}).get("code")} for r in rows]
    sys.stdout.write((to_csv if args.format == "csv" else table)(flat, JOB_COLUMNS))
    return 0


def _trail(trail: dict[str, Any]) -> str:
    head = {k: v for k, v in trail.items() if not isinstance(v, dict | list)}
    lines = [f"{k:<15} {cell(k, v)}" for k, v in head.items()]
    if trail["error"]:
        lines.append(f"{'error':<15} {trail['error']['code']}: {trail['error']['message']}")
    for action, why in trail["actionRefusals"].items():
        lines.append(f"{action:<15} {'allowed' if why is None else 'refused: ' + why}")
    for name in ("ledger", "keyLedger", "operatorActions"):
        rows = trail[name]
        lines.append(f"\n{name}:")
        lines.append(table(rows, list(rows[0])).rstrip() if rows else "  (none)")
    return "\n".join(lines) + "\n"


async def _report(session: AsyncSession, args: argparse.Namespace) -> int:
    progress = Progress("report")
    progress.note("report: summing the ledger...")
    document = await report_document(session, Window(args.since, args.until), args.by)
    progress.done()
    if args.format == "json":
        sys.stdout.write(to_json(document))
        return 0
    totals = {"group": "total"} | document["totals"]
    # A key is shown by its name (its id when it has none: `x402` for x402-paid money).
    rows = [{"group": r.get("keyName") or r[args.by]} | r for r in document.get("rows", [])]
    rows.append(totals)
    if args.format == "csv":
        sys.stdout.write(to_csv(rows, ("group", *MONEY)))
        return 0
    sys.stdout.write(table(rows, ("group", *MONEY)))
    states = [{"state": s, "jobs": n} for s, n in sorted(document["jobsByState"].items())]
    sys.stdout.write("\n" + table(states, ("state", "jobs")))
    return 0
