"""A client's status read polls the upstream but never moves money: an outcome that fails
the job (and so may refund it) is recorded and handed to the worker, which acts on it."""

from __future__ import annotations

import pytest

from app.core.modes import RefundPolicy
from app.jobs.models import JobState
from tests.fast.checks import money_is_consistent
from tests.fast.pool import Opener
from tests.fast.rules import failed_job_end
from tests.fast.upstream import Status

# The upstream's receipt names its settlement: the gateway knows it charged us.
UPSTREAM_CHARGED = True


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        ((Status.FAILED,), "upstream_job_failed"),  # recorded by the read, failed by the worker
        ((Status.LOST, Status.LOST), "upstream_job_lost"),  # the worker polls again itself
    ],
    ids=["failed", "lost"],
)
@pytest.mark.parametrize("policy", list(RefundPolicy))
async def test_a_status_read_hands_failures_to_the_worker(
    gateways: Opener, statuses: tuple[Status, ...], code: str, policy: RefundPolicy
) -> None:
    async with gateways(refund_policy=policy) as h:
        h.world.upstream.script(status=list(statuses))
        spent = await h.spent()
        accepted = await h.pay()
        read = await h.http.get(accepted.json()["statusUrl"].removeprefix(h.gw.settings.base_url))
        assert (read.status_code, read.json()["status"]) == (200, "processing")
        assert h.world.upstream.count("status") == 1
        job = await h.the_job()
        assert job.state == JobState.SUBMITTED  # nothing failed, nothing refunded by a read
        assert h.world.facilitator.settles("refund") == []
        job = await h.work(job.id)
        assert (job.state, job.error_code) == (failed_job_end(policy, UPSTREAM_CHARGED), code)
        await money_is_consistent(h, job, spent)


async def test_a_job_too_old_is_failed_by_the_worker_not_the_read(gateways: Opener) -> None:
    async with gateways(max_job_age_s=0.001) as h:
        spent = await h.spent()
        accepted = await h.pay()
        read = await h.http.get(accepted.json()["statusUrl"].removeprefix(h.gw.settings.base_url))
        assert read.status_code == 200
        assert h.world.upstream.count("status") == 0  # too old: not even asked
        job = await h.work((await h.the_job()).id)
        policy = h.gw.settings.refund_policy
        assert (job.state, job.error_code) == (
            failed_job_end(policy, UPSTREAM_CHARGED),
            "upstream_job_expired",
        )
        await money_is_consistent(h, job, spent)


async def test_a_readable_answer_after_an_unreadable_one_clears_the_count(
    gateways: Opener,
) -> None:
    """One unreadable status answer is counted; the next readable "still processing" answer
    resets the count (arc `status_pending`), and the job completes as usual."""
    async with gateways() as h:
        h.world.upstream.script(status=[Status.MALFORMED, Status.PROCESSING, Status.COMPLETED])
        spent = await h.spent()
        await h.pay()
        job = await h.work((await h.the_job()).id)
        assert job.state == JobState.COMPLETED
        assert job.bad_status_reads == 0
        assert h.world.upstream.count("status") == 3
        await money_is_consistent(h, job, spent)
