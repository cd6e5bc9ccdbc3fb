"""Request dependencies as `Annotated` aliases.

All `async def`: FastAPI runs a plain `def` dependency in its thread pool, a thread hand-off
per request for what is an attribute read (seen in the paid path's profile).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.context import Gateway
from app.jobs.polling import Poller


async def get_gateway(request: Request) -> Gateway:
    """The process-wide gateway built in the lifespan."""
    gw: Gateway = request.app.state.gateway
    return gw


async def get_poller(request: Request) -> Poller:
    """The process-wide coalescing poller."""
    poller: Poller = request.app.state.poller
    return poller


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
PollerDep = Annotated[Poller, Depends(get_poller)]
