"""`x402-reseller jobs …` and `x402-reseller report` over a real Postgres database.

A known mix is written first (x402-paid jobs served, refunded, parked; key-paid jobs, one
credited back); the reports must add up to the ledger and the key ledger row for row, and the
actions on parked jobs must move exactly the jobs they may, recording who and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from app.cli import main
from app.jobs.models import Job, JobState, LedgerEntry, OperatorAction
from app.keys.models import KeyLedgerEntry
from app.operator.render import Progress
from sandbox.world import HOT_WALLET, OPERATOR, address, key_hex
from tests import operator_seed as seed

PRICE, UPSTREAM = 63240, 52700
PAYER_A, PAYER_B, PAYER_K = ("0x" + c * 40 for c in "ade")
S = JobState


async def _seed(url: str) -> dict[str, str]:
    engine = create_async_engine(url)
    ids: dict[str, str] = {}
    async with engine.begin() as conn:
        for _ in range(2):
            await seed.job(conn, S.COMPLETED, payer=PAYER_A, upstream=UPSTREAM)
        done = await seed.job(conn, S.REFUNDED, payer=PAYER_B, upstream=UPSTREAM, refund=True)
        undecided = await seed.job(
            conn,
            S.NEEDS_ATTENTION,
            payer=PAYER_B,
            upstream_payment_header="stored",
            upstream_nonce="0x" + "77" * 32,
            error_code="upstream_unreachable",
        )
        unsettled = await seed.job(
            conn,
            S.NEEDS_ATTENTION,
            payer=PAYER_A,
            charged=False,
            error_code="settlement_unresolved",
        )
        refused = await seed.job(conn, S.PAYMENT_FAILED, payer=PAYER_A, charged=False)
        key = await seed.api_key(conn, "team-a", budget=1_000_000, spent=2 * PRICE)
        for _ in range(2):
            await seed.key_paid_job(
                conn, key, S.COMPLETED, payer=PAYER_K, amount=PRICE, upstream=UPSTREAM
            )
        await seed.key_paid_job(conn, key, S.FAILED, payer=PAYER_K, amount=PRICE, credited=True)
    await engine.dispose()
    ids |= {"refunded": done.id, "undecided": undecided.id, "unsettled": unsettled.id}
    return ids | {"payment_failed": refused.id, "key": key}


@pytest.fixture(scope="module")
def mix(module_db: str) -> Iterator[dict[str, str]]:
    """The seeded mix, and the CLI's environment pointing at its database."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "X402R_DATABASE_URL": module_db,
            "X402R_PAY_TO": address(OPERATOR),
            "X402R_HOT_WALLET_PRIVATE_KEY": key_hex(HOT_WALLET),
            "X402R_FACILITATOR_URL": "http://127.0.0.1:9",
            "X402R_ALLOW_NO_RPC": "true",
        }.items():
            env.setenv(name, value)
        yield asyncio.run(_seed(module_db))


def cli(*args: str) -> tuple[int, str, str]:
    """Run the real command line in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["--env-file", "", *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def _sql(url: str, query: Callable[[Any], Any]) -> Any:
    async def run() -> Any:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return await query(conn)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def ledger_sums(url: str) -> dict[str, int]:
    """Sums straight from `ledger` and `key_ledger`, by kind."""

    async def query(conn: Any) -> dict[str, int]:
        rows = await conn.execute(
            select(LedgerEntry.kind, func.sum(LedgerEntry.amount)).group_by(LedgerEntry.kind)
        )
        keyed = await conn.execute(
            select(KeyLedgerEntry.kind, func.sum(KeyLedgerEntry.amount)).group_by(
                KeyLedgerEntry.kind
            )
        )
        return {k: int(v) for k, v in [*rows.all(), *keyed.all()]}

    result: dict[str, int] = _sql(url, query)
    return result


def test_report_totals_equal_the_ledgers(mix: dict[str, str], module_db: str) -> None:
    code, out, err = cli("report", "--format", "json")
    assert (code, err) == (0, ""), err
    totals = json.loads(out)["totals"]
    sums = ledger_sums(module_db)
    assert totals["charges"] == sums["charge"] == 4 * PRICE
    assert totals["keyDebits"] == sums["debit"] == 3 * PRICE
    assert totals["upstreamSpend"] == sums["upstream"] == 5 * UPSTREAM
    assert totals["onchainRefunds"] == sums["refund"] == PRICE
    assert totals["keyCredits"] == sums["credit"] == PRICE
    assert totals["revenue"] == 7 * PRICE
    assert totals["refunds"] == 2 * PRICE
    assert totals["margin"] == 7 * PRICE - 2 * PRICE - 5 * UPSTREAM
    assert json.loads(out)["jobsByState"] == {
        "completed": 4,
        "refunded": 1,
        "needs_attention": 2,
        "payment_failed": 1,
        "failed": 1,
    }


def test_report_by_payer_csv_and_by_key_table(mix: dict[str, str]) -> None:
    code, out, _ = cli("report", "--by", "payer", "--format", "csv")
    assert code == 0
    rows = {r["group"]: r for r in csv.DictReader(io.StringIO(out))}
    assert int(rows[PAYER_A]["revenue"]) == 2 * PRICE
    assert int(rows[PAYER_B]["revenue"]) == 2 * PRICE
    assert int(rows[PAYER_B]["refunds"]) == PRICE
    assert int(rows[PAYER_K]["revenue"]) == 3 * PRICE
    assert int(rows[PAYER_K]["refunds"]) == PRICE  # the key credit
    assert sum(int(r["margin"]) for g, r in rows.items() if g != "total") == int(
        rows["total"]["margin"]
    )
    code, out, _ = cli("report", "--by", "key")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["group", "revenue", "upstreamSpend"]
    (team,) = [line for line in lines if line.startswith("team-a ")]
    assert team.split()[1:4] == ["0.189720", "0.105400", "0.063240"]
    code, out, _ = cli("report", "--by", "day", "--format", "json")
    (today,) = json.loads(out)["rows"]
    assert today["revenue"] == 7 * PRICE


def test_report_window(mix: dict[str, str]) -> None:
    code, out, _ = cli("report", "--since", "2999-01-01", "--format", "json")
    assert code == 0
    document = json.loads(out)
    assert document["totals"]["revenue"] == 0
    assert document["jobsByState"] == {}
    code, out, _ = cli("report", "--since", "1d", "--until", "2999-01-01", "--format", "json")
    assert json.loads(out)["totals"]["revenue"] == 7 * PRICE
    code, _, err = cli("report", "--since", "yesterday-ish")
    assert code == 2
    assert "not a date" in err


def test_jobs_list_filters_and_formats(mix: dict[str, str]) -> None:
    def ids(*args: str) -> set[str]:
        code, out, err = cli("jobs", "list", "--format", "json", *args)
        assert (code, err) == (0, ""), err  # stderr is no terminal: no progress drawn
        return {row["id"] for row in json.loads(out)}

    parked = ids("--state", "needs_attention")
    assert parked == {mix["undecided"], mix["unsettled"]}
    assert len(ids("--key", "team-a")) == 3
    assert len(ids("--key", mix["key"])) == 3
    assert len(ids("--payer", PAYER_B.upper().replace("0X", "0x"))) == 2
    assert len(ids("--since", "1h")) == 9
    assert ids("--since", "2999-01-01") == set()
    assert len(ids("--limit", "4")) == 4
    code, out, _ = cli("jobs", "list", "--state", "needs_attention")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["id", "state", "createdAt", "payer", "apiKeyId", "amount",
                              "settleTx", "error"]  # fmt: skip
    assert {r.split()[0] for r in rows} == parked
    _, out, _ = cli("jobs", "list", "--format", "csv", "--state", "payment_failed")
    (row,) = csv.DictReader(io.StringIO(out))
    assert row["id"] == mix["payment_failed"]


def test_jobs_show_the_money_trail(mix: dict[str, str]) -> None:
    code, out, _ = cli("jobs", "show", mix["refunded"], "--format", "json")
    assert code == 0
    trail = json.loads(out)
    assert [e["kind"] for e in trail["ledger"]] == ["charge", "upstream", "refund"]
    assert trail["ledger"][0]["txHash"] == trail["settleTx"]
    assert trail["ledger"][2]["txHash"] == trail["refundTx"]
    code, out, _ = cli("jobs", "show", mix["refunded"])
    assert trail["refundTx"] in out
    assert "refundAmount    0.063240" in out
    assert "refund          refused: only needs_attention jobs are refunded here" in out
    code, _, err = cli("jobs", "show", "job_nope")
    assert code == 1
    assert "job_not_found" in err


def test_retry_and_refund_move_only_what_is_safe(mix: dict[str, str], module_db: str) -> None:
    code, _, err = cli("jobs", "retry", mix["undecided"], "--reason", "try again")
    assert code == 1
    assert "job_not_retryable" in err
    code, _, err = cli("jobs", "refund", mix["unsettled"], "--reason", "give it back")
    assert code == 1
    assert "job_not_refundable" in err
    code, _, err = cli("jobs", "refund", mix["payment_failed"], "--reason", "x")
    assert code == 1
    assert "job_not_parked" in err

    code, out, _ = cli("jobs", "retry", mix["unsettled"], "--reason", "RPC configured now")
    assert code == 0
    assert "now verified" in out
    code, out, _ = cli(
        "jobs", "refund", mix["undecided"], "--reason", "upstream down", "--actor", "alice"
    )
    assert code == 0
    assert "now refunding" in out
    code, _, err = cli("jobs", "refund", mix["undecided"], "--reason", "again")
    assert (code, "job_not_parked" in err) == (1, True)  # once only

    async def rows(conn: Any) -> tuple[list[Any], list[Any]]:
        jobs = await conn.execute(
            select(Job.id, Job.state, Job.refund_amount, Job.settle_attempts).where(
                Job.id.in_([mix["undecided"], mix["unsettled"]])
            )
        )
        acts = await conn.execute(select(OperatorAction).order_by(OperatorAction.id))
        return list(jobs.all()), list(acts.all())

    jobs, acts = _sql(module_db, rows)
    states = {j.id: (j.state, j.refund_amount, j.settle_attempts) for j in jobs}
    assert states[mix["unsettled"]] == ("verified", None, 1)
    assert states[mix["undecided"]] == ("refunding", PRICE, 1)
    assert [(a.job_id, a.action, a.reason, a.actor) for a in acts] == [
        (mix["unsettled"], "retry", "RPC configured now", acts[0].actor),
        (mix["undecided"], "refund", "upstream down", "alice"),
    ]
    assert acts[0].actor.startswith("cli:")


def test_progress_is_drawn_only_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    shown, hidden = Terminal(), io.StringIO()
    for stream in (shown, hidden):
        progress = Progress("jobs read", stream)
        progress.step(250)
        progress.done()
    assert "jobs read: 250" in shown.getvalue()
    assert hidden.getvalue() == ""
