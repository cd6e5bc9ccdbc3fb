"""`/mcp`: our MCP server over Streamable HTTP (stateless, JSON answers).

Tools: `edit_image` (paid, x402 over MCP; see `app.api.mcp_edit`) and `get_job` (free: the job
document of `GET /v1/jobs/{id}`, through the same read path). The server is built with the app;
its session manager runs inside the app's lifespan (`McpEndpoint.running`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.types import CallToolResult, Tool, ToolAnnotations
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import Receive, Scope, Send
from x402.extensions.sign_in_with_x import SIGN_IN_WITH_X

from app import __version__
from app.api import mcp_results as results
from app.api.bazaar import MCP_EDIT_TOOL
from app.api.job_reads import job_reads
from app.api.jobs import JOB_ID_MAX, JOB_ID_PATTERN
from app.api.mcp_edit import call_edit
from app.api.read_proof import ReadProofs, ensure_payer
from app.context import Gateway
from app.core.db_errors import database_unreachable
from app.core.errors import AppError, InvalidRequest, NotFound, RetryLater, ServiceUnavailable
from app.core.logs import get_logger
from app.upstream.schemas import EditRequest

MCP_PATH = "/mcp"
READ_TOOL = "get_job"
log = get_logger(__name__)
_JOB_ID = re.compile(JOB_ID_PATTERN)

TOOLS = [
    Tool(
        name=MCP_EDIT_TOOL,
        description="Edit images with nano-banana. Paid per call with x402: the first call "
        "answers with the price (PaymentRequired); pay in _meta['x402/payment']. Returns the "
        "job; follow it with get_job.",
        inputSchema=EditRequest.model_json_schema(),
        annotations=ToolAnnotations(readOnlyHint=False, idempotentHint=True, openWorldHint=True),
    ),
    Tool(
        name=READ_TOOL,
        description="Read a job: status, images once completed, payment and refund. Free. "
        "Where reads are payer-bound, sign the challenge of the first answer and pass it in "
        "_meta['sign-in-with-x'].",
        inputSchema={
            "type": "object",
            "properties": {"jobId": {"type": "string", "pattern": JOB_ID_PATTERN}},
            "required": ["jobId"],
            "additionalProperties": False,
        },
        annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False),
    ),
]


async def read_job(
    app: Starlette,
    gw: Gateway,
    arguments: dict[str, Any],
    meta: dict[str, Any],
    authorization: str | None = None,
) -> CallToolResult:
    """`get_job`: the job document, as `GET /v1/jobs/{id}` answers it (and as guarded)."""
    job_id = arguments.get("jobId")
    if not isinstance(job_id, str) or len(job_id) > JOB_ID_MAX or not _JOB_ID.match(job_id):
        return results.error_result(InvalidRequest("jobId is not a job id", status_code=422))
    reads = job_reads(app)
    if reads is None:
        raise ServiceUnavailable("starting up", code="service_unavailable")
    reader = None
    if gw.settings.payer_bound_reads:
        reader = await ReadProofs(gw.settings).reader(job_id, meta.get(SIGN_IN_WITH_X))
    rendered = await reads.read(job_id)
    # A job its API key keeps to itself is, to anyone else, a job that does not exist.
    if rendered is None or not rendered.readable_with(authorization):
        return results.error_result(NotFound("no such job", code="job_not_found"))
    if reader is not None:
        ensure_payer(reader, rendered.payer)
    return results.tool_result(json.loads(rendered.body), error=False)


def build_server(app: Starlette) -> Server[Any, Request]:
    """The MCP server; each call reads the gateway the app's lifespan built."""
    server: Server[Any, Request] = Server("x402-reseller", version=__version__)

    @server.list_tools()  # type: ignore[no-untyped-call, untyped-decorator]
    async def list_tools() -> list[Tool]:
        return TOOLS

    @server.call_tool(validate_input=False)  # type: ignore[untyped-decorator]
    async def call_tool(name: str, arguments: dict[str, Any]) -> CallToolResult:
        context = server.request_context
        meta = dict(context.meta.model_extra or {}) if context.meta is not None else {}
        try:
            gw: Gateway | None = getattr(app.state, "gateway", None)
            if gw is None:
                raise ServiceUnavailable("starting up", code="service_unavailable")
            if name == MCP_EDIT_TOOL:
                return await call_edit(gw, arguments, meta, context.request)
            if name == READ_TOOL:
                request = context.request
                authorization = request.headers.get("authorization") if request else None
                return await read_job(app, gw, arguments, meta, authorization)
            return results.error_result(NotFound(f"no tool named {name!r}", code="unknown_tool"))
        except AppError as exc:
            return results.error_result(exc)
        except Exception as exc:
            if isinstance(exc, SQLAlchemyError) or database_unreachable(exc):
                return results.error_result(
                    RetryLater(
                        "the database is unavailable; retry with the same payment",
                        code="database_unavailable",
                        retry_after_s=2,
                    )
                )
            log.exception("mcp tool failed", tool=name)
            return results.error_result(
                AppError("internal error; retry with the same payment", code="internal_error")
            )

    return server


class McpEndpoint:
    """The ASGI endpoint at `/mcp`; answers 503 until `running()` has started it."""

    def __init__(self, app: Starlette) -> None:
        self.server = build_server(app)
        self._manager: StreamableHTTPSessionManager | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve MCP for the lifespan of the app (a manager runs once: a new one each time).

        The manager's task group lives in a task of its own: a lifespan may be entered and
        left in different tasks, and a task group may not.
        """
        # No DNS-rebinding guard: nothing here rides on an ambient credential (every call
        # is paid by its own signature; reads are capabilities or signed), like our HTTP API.
        manager = StreamableHTTPSessionManager(self.server, json_response=True, stateless=True)
        started, stop = asyncio.Event(), asyncio.Event()

        async def serve() -> None:
            async with manager.run():
                self._manager = manager
                started.set()
                await stop.wait()

        task = asyncio.create_task(serve())
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            task.result()  # the manager failed to start: raise its error
        try:
            yield
        finally:
            self._manager = None
            stop.set()
            await task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager = self._manager
        if manager is None:
            body = ServiceUnavailable("starting up", code="service_unavailable").body()
            payload = json.dumps(body).encode()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
            return
        await manager.handle_request(scope, receive, send)
