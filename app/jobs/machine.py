"""The job state machine, declared: every allowed write of a job row, and its diagram."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from app.jobs.models import JobState

__all__ = ["ARCS", "ARCS_BY_EVENT", "Arc", "JobState", "UndeclaredTransition", "render"]

S = JobState


class UndeclaredTransition(RuntimeError):
    """A job write that no declared arc allows: a programming error, never a runtime state."""


@dataclass(frozen=True, slots=True)
class Arc:
    """One allowed compare-and-set: from any of `sources`, on `event`, to `to` (None: the
    state is not written), writing only `columns` (`updated_at` is always written)."""

    event: str
    sources: frozenset[JobState]
    to: JobState | None
    columns: frozenset[str]
    why: str

    @property
    def source_values(self) -> frozenset[str]:
        """The from-states as stored."""
        return frozenset(s.value for s in self.sources)

    @property
    def writable(self) -> frozenset[str]:
        """Every column the arc's write may set."""
        return self.columns | {"updated_at"} | ({"state"} if self.to is not None else set())


def _arc(event: str, sources: set[JobState], to: JobState | None, columns: str, why: str) -> Arc:
    return Arc(event, frozenset(sources), to, frozenset(columns.split()), why)


# Columns that end a job (it leaves the worker's queue) with an error.
_ENDED = "error_code error_message finished_at next_check_at"
# States from which a job may be failed (and maybe refunded).
FAILABLE = {S.VERIFIED, S.PAID, S.UPSTREAM_SIGNED, S.SUBMITTED}
# The upstream purchase stored: its signature, the spend it counts, its first attempt.
_SIGNED = (
    "upstream_payment_header upstream_nonce upstream_amount upstream_pay_to "
    "upstream_valid_before upstream_attempts next_check_at spend_hour spend_reserved"
)

ARCS: tuple[Arc, ...] = (
    # Settling the client's payment.
    _arc("settle_counted", {S.VERIFIED, S.SUBMITTED}, None, "settle_attempts next_check_at",
         "a settle attempt counted, its lease taken"),
    _arc("settled", {S.VERIFIED}, S.PAID, "settle_tx error_code error_message next_check_at",
         "the charge recorded; the upstream is bought next"),
    _arc("settled_and_signed", {S.VERIFIED}, S.UPSTREAM_SIGNED,
         f"settle_tx error_code error_message {_SIGNED}",
         "the charge and the signed upstream purchase stored in one write"),
    _arc("settled_after_purchase", {S.SUBMITTED}, None,
         "settle_tx error_code error_message next_check_at",
         "settle_after: the charge recorded once the upstream accepted the job"),
    _arc("settle_refused", {S.VERIFIED}, S.PAYMENT_FAILED, _ENDED,
         "the facilitator or the chain refused the payment: nothing charged"),
    _arc("settle_refused_after_purchase", {S.SUBMITTED}, S.NEEDS_ATTENTION, _ENDED,
         "settle_after: the upstream is bought but the client's payment is refused"),
    _arc("settle_unresolved", {S.VERIFIED, S.SUBMITTED}, S.NEEDS_ATTENTION, _ENDED,
         "the settle outcome stays unknown: parked for the operator"),
    _arc("settle_unknown_retry", {S.VERIFIED, S.SUBMITTED}, None,
         "error_code error_message next_check_at", "an unknown settle outcome, retried later"),
    # Paying with an API key's budget instead (app.keys.budget): no settlement, ever.
    _arc("key_debited", {S.VERIFIED}, S.PAID, "next_check_at",
         "the key's budget debited in the transaction that records the job"),
    # Buying the upstream.
    _arc("upstream_signed", {S.PAID, S.VERIFIED}, S.UPSTREAM_SIGNED, _SIGNED,
         "the upstream purchase signed and stored before it is sent"),
    _arc("submit_counted", {S.UPSTREAM_SIGNED}, None, "upstream_attempts next_check_at",
         "a submit attempt counted, its lease taken"),
    _arc("submit_retry", {S.UPSTREAM_SIGNED}, None, "error_code error_message next_check_at",
         "the upstream was unreachable: the same payment is sent again later"),
    _arc("upstream_accepted", {S.UPSTREAM_SIGNED}, S.SUBMITTED,
         "upstream_job_id upstream_request_id upstream_status_url upstream_tx "
         "error_code error_message next_check_at",
         "the upstream accepted the job (and its payment)"),
    # Polling the upstream job.
    _arc("status_pending", {S.SUBMITTED}, None, "bad_status_reads next_check_at",
         "the upstream job still runs"),
    _arc("status_unreadable", {S.SUBMITTED}, None, "bad_status_reads next_check_at",
         "one more unreadable status answer"),
    _arc("completed", {S.SUBMITTED}, S.COMPLETED, "result finished_at next_check_at",
         "the upstream job completed: its result stored"),
    _arc("upstream_job_failed", {S.SUBMITTED}, None, "result last_polled_at next_check_at",
         "the upstream job failed: its answer kept before the job is failed (a read hands "
         "it to the worker)"),
    _arc("handed_to_worker", {S.SUBMITTED}, None, "last_polled_at next_check_at",
         "a status read saw an outcome that moves money: due now, for the worker"),
    # Failing a job, refunding by policy.
    _arc("upstream_spend_found", FAILABLE | {S.REFUNDING}, None, "upstream_tx",
         "the chain shows our upstream payment: recorded once (upstream_tx still null)"),
    _arc("failed_no_refund", FAILABLE, S.FAILED, _ENDED, "failed; policy refunds nothing"),
    _arc("refund_started", FAILABLE, S.REFUNDING,
         "refund_amount error_code error_message next_check_at", "failed; policy refunds"),
    _arc("fail_undecided", FAILABLE | {S.REFUNDING}, S.NEEDS_ATTENTION, _ENDED,
         "failed; whether the upstream charged us cannot be known: the operator decides"),
    _arc("refunded_to_key", FAILABLE | {S.REFUNDING}, S.REFUNDED, f"refund_amount {_ENDED}",
         "failed; policy refunds a key-paid job: its budget credited in the same write"),
    _arc("refund_postponed", {S.REFUNDING}, None, "next_check_at",
         "the refund waits: our upstream authorization can still be executed (or the chain "
         "could not be read); decided once it expired"),
    _arc("refund_withdrawn", {S.REFUNDING}, S.FAILED, f"refund_amount {_ENDED}",
         "our upstream authorization was executed after the failure: by policy no refund "
         "(or the payer's limit of refunds we paid for is reached)"),
    _arc("refund_expired_unused", {S.REFUNDING}, None, "refund_payload refund_nonce",
         "the refund authorization expired unused: dropped, to be signed again"),
    _arc("refund_signed", {S.REFUNDING}, None, "refund_payload refund_nonce",
         "the refund authorization signed and stored before it is sent"),
    _arc("refunded", {S.REFUNDING}, S.REFUNDED, "refund_tx finished_at next_check_at",
         "the chain confirms the refund"),
    _arc("refund_not_made", {S.REFUNDING}, S.NEEDS_ATTENTION, _ENDED,
         "the refund authorization was used by a transfer that did not pay the client"),
    _arc("refund_refused", {S.REFUNDING}, S.NEEDS_ATTENTION, _ENDED,
         "the facilitator refused the refund"),
    _arc("refund_unresolved", {S.REFUNDING}, S.NEEDS_ATTENTION, f"refund_attempts {_ENDED}",
         "the refund outcome stays unknown without a chain: parked"),
    _arc("refund_unknown_retry", {S.REFUNDING}, None, "refund_attempts next_check_at",
         "an unknown refund outcome, retried later"),
    # The operator's decisions on a parked job (app.operator.actions says when each is safe).
    _arc("operator_retry_settlement", {S.NEEDS_ATTENTION}, S.VERIFIED,
         f"settle_attempts {_ENDED}",
         "operator: settle the same stored payment again (the chain is asked first)"),
    _arc("operator_retry_refund", {S.NEEDS_ATTENTION}, S.REFUNDING,
         f"refund_attempts {_ENDED}",
         "operator: send the same stored refund authorization again"),
    _arc("operator_refund_to_key", {S.NEEDS_ATTENTION}, S.REFUNDED,
         "refund_amount finished_at next_check_at",
         "the operator refunds a parked key-paid job: its debit credited back to the key "
         "in the same write"),
    _arc("operator_refund", {S.NEEDS_ATTENTION}, S.REFUNDING,
         f"refund_amount refund_payload refund_nonce refund_attempts {_ENDED}",
         "operator: refund the client's charge (the worker signs and sends it)"),
)  # fmt: skip

ARCS_BY_EVENT: dict[str, Arc] = {arc.event: arc for arc in ARCS}
assert len(ARCS_BY_EVENT) == len(ARCS), "event names are unique"


def _cell(states: frozenset[JobState]) -> str:
    return ", ".join(s.value for s in JobState if s in states)


def render() -> str:
    """The state machine as Markdown: a mermaid diagram and a table of every arc."""
    edges: dict[tuple[JobState, JobState], list[str]] = {}  # one edge per pair of states
    for arc in ARCS:
        if arc.to is not None:
            for source in (s for s in JobState if s in arc.sources):
                edges.setdefault((source, arc.to), []).append(arc.event)
    lines = ["```mermaid", "stateDiagram-v2", "    [*] --> verified : payment verified"]
    for (source, to), events in edges.items():
        lines.append(f"    {source.value} --> {to.value} : {', '.join(events)}")
    lines += ["```", "", "| from | event | to | columns written | why |", "|---|---|---|---|---|"]
    for arc in ARCS:
        target = "(same)" if arc.to is None else arc.to.value
        columns = ", ".join(sorted(arc.columns))
        lines.append(f"| {_cell(arc.sources)} | `{arc.event}` | {target} | {columns} | {arc.why} |")
    return "\n".join(lines) + "\n"


BEGIN = "<!-- state-machine:begin -->"
END = "<!-- state-machine:end -->"
DOC = Path(__file__).resolve().parents[2] / "docs" / "money-safety.md"


def with_rendering(doc: str) -> str:
    """`doc` with the text between the state-machine markers replaced by `render()`."""
    head, begin, rest = doc.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the document has no {BEGIN} ... {END} section")
    return f"{head}{BEGIN}\n{render()}{END}{tail}"


if __name__ == "__main__":  # python -m app.jobs.machine --write-docs
    if "--write-docs" in sys.argv:
        DOC.write_text(with_rendering(DOC.read_text()))
    else:
        sys.stdout.write(render())
