"""Baseline servers, each one uvicorn worker configured like the gateway's.

- `raw`: a bare ASGI app answering the gateway's own 402 bytes (the ceiling).
- `sdk`: FastAPI with the official x402 SDK's `PaymentMiddlewareASGI` protecting the route,
  as a user would deploy it, or with `gc.freeze()` after start-up as the gateway does.
- `orm`: FastAPI + SQLAlchemy ORM `session.get` of a job on the same Postgres, rendered with
  the same `job_view` (what a plain status endpoint costs).

Run `python -m bench.servers KIND --port N [...]`; `start_baseline` does it as a child process.
"""

from __future__ import annotations

import argparse
import gc
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.upstream.schemas import EditRequest

EDIT_PATH = "/v1/images/edit"
USDC_DOMAIN = {"name": "USD Coin", "version": "2"}


def raw_app(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> ASGIApp:
    """Reads the request body, answers the static bytes."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _frozen_lifespan() -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        gc.collect()
        gc.freeze()  # as the gateway does after start-up
        yield

    return lifespan


def sdk_app(
    facilitator_url: str, pay_to: str, amount: int, asset: str, *, frozen: bool = False
) -> FastAPI:
    """The SDK's FastAPI middleware in front of one edit route (v2 offer, same price)."""
    from x402 import x402ResourceServer
    from x402.http import FacilitatorConfig, HTTPFacilitatorClient
    from x402.http.middleware.fastapi import PaymentMiddlewareASGI
    from x402.http.types import PaymentOption, RouteConfig
    from x402.mechanisms.evm.exact import ExactEvmServerScheme
    from x402.schemas import AssetAmount

    server = x402ResourceServer(HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url)))
    scheme = ExactEvmServerScheme()  # type: ignore[no-untyped-call]
    server.register("eip155:8453", scheme)  # type: ignore[arg-type]  # SDK typing gap
    option = PaymentOption(
        scheme="exact",
        pay_to=pay_to,
        price=AssetAmount(amount=str(amount), asset=asset, extra=USDC_DOMAIN),
        network="eip155:8453",
        max_timeout_seconds=300,
    )
    routes = {f"POST {EDIT_PATH}": RouteConfig(accepts=option, description="image edit")}
    app = FastAPI(lifespan=_frozen_lifespan()) if frozen else FastAPI()
    app.add_middleware(PaymentMiddlewareASGI, routes=routes, server=server)

    @app.post(EDIT_PATH)
    async def edit(body: EditRequest) -> dict[str, str]:
        return {"status": "processing"}

    return app


def orm_app(database_url: str, base_url: str) -> FastAPI:
    """`session.get(Job, id)` and `job_view`, no caching and no upstream refresh."""
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from app.jobs.models import Job
    from app.jobs.views import job_view

    engine = create_async_engine(database_url, pool_size=20, max_overflow=20)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    app = FastAPI(lifespan=_frozen_lifespan())

    @app.get("/v1/jobs/{job_id}")
    async def get_job(job_id: str) -> Response:
        async with sessions() as session:
            job = await session.get(Job, job_id)
        if job is None:
            return JSONResponse({"error": "job_not_found"}, status_code=404)
        return JSONResponse(job_view(job, base_url))

    return app


def main(argv: list[str] | None = None) -> None:
    """CLI: serve one baseline on 127.0.0.1."""
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("kind", choices=["raw", "sdk", "orm"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--spec", required=True, help="JSON file with the baseline's inputs")
    options = parser.parse_args(argv)
    spec: dict[str, Any] = json.loads(Path(options.spec).read_text())
    app: ASGIApp
    if options.kind == "raw":
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in spec["headers"]]
        app = raw_app(spec["status"], headers, spec["body"].encode())
    elif options.kind == "sdk":
        app = sdk_app(
            spec["facilitator_url"],
            spec["pay_to"],
            spec["amount"],
            spec["asset"],
            frozen=spec.get("frozen", False),
        )
    else:
        app = orm_app(spec["database_url"], spec["base_url"])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=options.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
