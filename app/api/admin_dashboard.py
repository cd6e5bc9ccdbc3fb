"""GET /admin: the operator dashboard, one self-contained page (inline CSS, script, SVG).

The page itself holds no data and needs no token: its script asks for the admin token,
keeps it in sessionStorage and reads the bearer-protected `/v1/admin/*` endpoints.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from app.api.deps import GatewayDep
from app.core.errors import NotFound

router = APIRouter(tags=["operator"])

# Nothing is loaded from elsewhere; the script only talks to this origin.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


@cache
def page() -> str:
    """The dashboard with its stylesheet and script inlined (read once)."""
    folder = files("app.api") / "dashboard"
    html = (folder / "dashboard.html").read_text()
    css = (folder / "dashboard.css").read_text()
    js = (folder / "dashboard.js").read_text()
    return html.replace("/*CSS*/", css).replace("/*JS*/", js)


@router.get("/admin", summary="Operator dashboard (HTML)", response_class=HTMLResponse)
async def dashboard(gw: GatewayDep) -> HTMLResponse:
    """The page; 404 like every operator route when no admin token is configured."""
    if gw.settings.admin_token is None:
        raise NotFound("not found")
    return HTMLResponse(
        page(),
        headers={
            "Content-Security-Policy": CSP,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )
