"""The report's rows by payer on Postgres, in one statement: the database subtracts the
running sums, adds the key ledger's days and the parts of days at the window's ends, drops
the payers with nothing in the window and sorts; Python only names the columns.

The same sums as `app.jobs.group_totals.by_payer` (which SQLite uses), read another way.
Per payer, the on-chain sums over [since, until) are R(upper) - R(lower) plus or minus the
ledger's rows between those days' midnights and the window's ends, where R(day) is the
payer's last `payer_running` row before `day` (`payer_totals` for no upper day). Each end
takes whichever midnight is nearer, so at most half a day is read from the ledgers at
either end. R(day) for the payers with a row in the week before `day` is one range of
`ix_payer_running_day`, read from the index alone; only the others are probed one by one
(before, every payer was probed, and its thousands of rows merged and sorted in Python).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Date, DateTime, bindparam, text

from app.core.db import Executor, plain_rows
from app.jobs.group_totals import KEY_KINDS, ONCHAIN_KINDS, unbounded_where_empty
from app.jobs.totals import midnight, utc

# The report's row, in `app.operator.report`'s order.
COLUMNS = (
    "payer",
    "revenue",
    "charges",
    "keyDebits",
    "upstreamSpend",
    "refunds",
    "onchainRefunds",
    "keyCredits",
    "margin",
)
_MOMENT = DateTime(timezone=True)
Edge = tuple[datetime, datetime, int]  # [low, high) of the ledgers, added (1) or taken (-1)


@dataclass
class Bounds:
    """Sums over [since, until) as the running sums before `upper` less those before
    `lower` (None: no upper day, all of it; no lower day, nothing), key-ledger days
    [lower, upper), and `edges` of the ledgers themselves."""

    lower: date | None = None
    upper: date | None = None
    edges: list[Edge] = field(default_factory=list)
    days: bool = True  # False: the window is `edges` alone


def _nearer_midnight(moment: datetime) -> tuple[date, Edge | None]:
    """The midnight nearer `moment`, and the part of the day between them: +1 when it
    lies after that midnight (sums up to the midnight lack it), -1 when before it (sums up
    to the midnight hold it too)."""
    day = moment.date()
    start, end = midnight(day), midnight(day + timedelta(days=1))
    if moment == start:
        return day, None
    if moment - start <= end - moment:
        return day, (start, moment, 1)
    return day + timedelta(days=1), (moment, end, -1)


def bounds(since: datetime | None, until: datetime | None) -> Bounds:
    """How [since, until) is read (see `Bounds`)."""
    since = None if since is None else utc(since)
    until = None if until is None else utc(until)
    if since is not None and until is not None and until - since <= timedelta(days=1):
        return Bounds(edges=[(since, until, 1)] if since < until else [], days=False)
    out = Bounds()
    if since is not None:
        out.lower, edge = _nearer_midnight(since)
        if edge is not None:  # the window's sums are the ones up to `until` less these
            out.edges.append((edge[0], edge[1], -edge[2]))
    if until is not None:
        out.upper, edge = _nearer_midnight(until)
        if edge is not None:
            out.edges.append(edge)
    return out


def _listed(kinds: tuple[str, ...]) -> str:
    """`kinds` as an SQL list of literals (they are our constants, never input)."""
    return "(" + ", ".join(f"'{k}'" for k in kinds) + ")"


def _kinds(kinds: tuple[str, ...], column: str, sign: int = 1) -> str:
    return ", ".join(
        f"CASE WHEN {column}.kind = '{k}' THEN {sign} * {column}.amount ELSE 0 END" for k in kinds
    )


_SUMS = ("charges", "upstream_spend", "refunds")
RECENT_DAYS = 7  # how far back from a bound its rows are read by day instead of per payer

# A payer's running sums never decrease from one day to the next (every ledger amount is
# positive, `ck_ledger_amount_positive`): the last row before a day holds the largest sums.
_RECENT = """{name}_recent AS (SELECT payer, {maxes} FROM payer_running
    WHERE day >= CAST(:{name} AS date) - {days} AND day < :{name} GROUP BY payer)"""
# Only for payers with no row in the days just before the bound (the `IS NULL` is checked
# once per payer, before the index is touched).
_PROBE = """LEFT JOIN {name}_recent AS {a}r ON {a}r.payer = t.payer
LEFT JOIN LATERAL (SELECT {sums} FROM payer_running p WHERE {a}r.payer IS NULL
    AND p.payer = t.payer AND p.day < CAST(:{name} AS date) - {days}
    ORDER BY p.day DESC LIMIT 1) AS {a}p ON true"""


def _running(b: Bounds) -> tuple[list[str], str]:
    """The bounds' recent rows (named subqueries) and, per payer, the running sums'
    difference between them (one row per payer of `payer_totals`)."""
    maxes = ", ".join(f"max({c}) AS {c}" for c in _SUMS)
    recent, joins = [], []
    columns = {c: f"t.{c}" for c in _SUMS}
    for name, a, day in (("upper", "h", b.upper), ("lower", "l", b.lower)):
        if day is None:
            continue
        recent.append(_RECENT.format(name=name, maxes=maxes, days=RECENT_DAYS))
        sums = ", ".join(f"p.{c}" for c in _SUMS)
        joins.append(_PROBE.format(name=name, a=a, sums=sums, days=RECENT_DAYS))
        at = {c: f"coalesce({a}r.{c}, {a}p.{c}, 0)" for c in _SUMS}
        columns = {c: at[c] if name == "upper" else f"{columns[c]} - {at[c]}" for c in _SUMS}
    select = ", ".join(f"{v} AS {c}" for c, v in zip("cur", columns.values(), strict=True))
    return recent, f"SELECT t.payer, {select} FROM payer_totals t {' '.join(joins)}"


def _key_days(b: Bounds) -> str:
    where = [f"d.kind IN {_listed(KEY_KINDS)}", "d.payer <> ''"]
    where += ["d.day >= :lower"] if b.lower is not None else []
    where += ["d.day < :upper"] if b.upper is not None else []
    return (
        f"SELECT d.payer, 0, 0, 0, {_kinds(KEY_KINDS, 'd')} FROM key_days d "
        f"WHERE {' AND '.join(where)}"
    )


def _edge(i: int, sign: int) -> list[str]:
    """Both ledgers' rows in edge `i`, under their jobs' payers, with `sign`."""
    span = f"l.created_at >= :low{i} AND l.created_at < :high{i}"
    return [
        f"SELECT j.payer, {_kinds(ONCHAIN_KINDS, 'l', sign)}, 0, 0 FROM ledger l "
        f"JOIN jobs j ON j.id = l.job_id WHERE {span}",
        f"SELECT j.payer, 0, 0, 0, {_kinds(KEY_KINDS, 'l', sign)} FROM key_ledger l "
        f"JOIN jobs j ON j.id = l.job_id WHERE l.kind IN {_listed(KEY_KINDS)} AND {span}",
    ]


_NO_DAYS = "SELECT ''::text AS payer, 0::bigint AS c, 0::bigint AS u, 0::bigint AS r WHERE false"
# The few payers with key-ledger money or money in the edges are summed apart and joined to
# the running sums' thousands of rows, which need no grouping.
_REPORT = """WITH {recent}onchain AS ({onchain}),
extra AS (SELECT payer, sum(c)::bigint AS c, sum(u)::bigint AS u, sum(r)::bigint AS r,
                 sum(d)::bigint AS d, sum(k)::bigint AS k
          FROM ({parts}) AS parts (payer, c, u, r, d, k) GROUP BY payer)
SELECT payer, c + d AS revenue, c, d, u, r + k AS refunds, r, k, c + d - r - k - u AS margin
FROM (SELECT coalesce(o.payer, e.payer) AS payer, coalesce(o.c, 0) + coalesce(e.c, 0) AS c,
             coalesce(o.u, 0) + coalesce(e.u, 0) AS u, coalesce(o.r, 0) + coalesce(e.r, 0) AS r,
             coalesce(e.d, 0) AS d, coalesce(e.k, 0) AS k
      FROM onchain o FULL JOIN extra e ON e.payer = o.payer) AS sums
WHERE c <> 0 OR d <> 0 OR u <> 0 OR r <> 0 OR k <> 0
ORDER BY revenue DESC, payer COLLATE "C"
"""


def statement(b: Bounds) -> Any:
    """The one statement for `b`, its parameters bound."""
    recent, onchain = _running(b) if b.days else ([], _NO_DAYS)
    parts = [_key_days(b)] if b.days else []
    binds = [
        bindparam(name, day, type_=Date)
        for name, day in (("lower", b.lower), ("upper", b.upper))
        if b.days and day is not None
    ]
    for i, (low, high, sign) in enumerate(b.edges):
        parts += _edge(i, sign)
        binds += [
            bindparam(f"{e}{i}", at, type_=_MOMENT) for e, at in (("low", low), ("high", high))
        ]
    if not parts:
        return None
    sql = _REPORT.format(
        recent="".join(f"{r},\n" for r in recent),
        onchain=onchain,
        parts="\nUNION ALL ".join(parts),
    )
    return text(sql).bindparams(*binds)


async def payer_rows(
    db: Executor, since: datetime | None = None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """The report's rows by payer over [since, until) (None: unbounded), largest revenue
    first, then by payer; Postgres only."""
    since, until = await unbounded_where_empty(db, since, until)
    stmt = statement(bounds(since, until))
    if stmt is None:
        return []
    return [dict(zip(COLUMNS, row, strict=True)) for row in await plain_rows(db, stmt)]
