from tests.fast.harness import fast_gateway


async def test_happy(database_url: str) -> None:
    async with fast_gateway(database_url) as h:
        answer = await h.pay()
        assert answer.status_code == 200, answer.text
        job = await h.the_job()
        job = await h.work(job.id)
        assert job.state == "completed"
        rows = await h.ledger_rows(job.id)
        assert [r.kind for r in rows] == ["charge", "upstream"], rows
