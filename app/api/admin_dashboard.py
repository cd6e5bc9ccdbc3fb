"""GET /admin: the operator dashboard, one self-contained page (inline CSS, script, SVG).

The page itself holds no data and needs no token: its script asks for the admin token,
keeps it in sessionStorage and reads the bearer-protected `/v1/admin/*` endpoints.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from app.api.deps import GatewayDep
from app.core.errors import NotFound

router = APIRouter(tags=["operator"])


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@cache
def page() -> tuple[str, str]:
    """The dashboard with its stylesheet and script inlined (read once), and the CSP that
    allows exactly those two: nothing loaded from elsewhere, no other inline code."""
    folder = files("app.api") / "dashboard"
    html = (folder / "dashboard.html").read_text()
    css = (folder / "dashboard.css").read_text()
    js = (folder / "dashboard.js").read_text()
    csp = (
        f"default-src 'none'; script-src {_sha256(js)}; style-src {_sha256(css)}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return html.replace("/*CSS*/", css).replace("/*JS*/", js), csp


@router.get("/admin", summary="Operator dashboard (HTML)", response_class=HTMLResponse)
async def dashboard(gw: GatewayDep) -> HTMLResponse:
    """The page; 404 like every operator route when no admin token is configured."""
    if gw.settings.admin_token is None:
        raise NotFound("not found")
    html, csp = page()
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": csp,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )
