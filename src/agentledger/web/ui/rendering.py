"""Templates: one Jinja2 environment with autoescape always on, and the page wrapper that
gives every template its URLs, the CSRF field and the signed-in user."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from agentledger.web.ui.security import CSRF_FIELD, csrf_token, keep_csrf

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

#: Autoescape for every template, whatever its name: nothing from the database is marked safe.
ENVIRONMENT = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,  # templates are part of the installed package: no stat per render
)


def _shown_time(iso: str) -> str:
    """An ISO 8601 UTC timestamp as people read it: ``2026-03-10 12:00 UTC``."""
    return f"{iso[:10]} {iso[11:16]} UTC" if len(iso) >= 16 else iso


ENVIRONMENT.filters["utc"] = _shown_time


def ui_root(request: Request) -> str:
    """The UI's root path where the host mounted it (``/ui`` for the standalone server)."""
    return request.url_for("ui_sessions").path.rstrip("/") or "/"


def url(request: Request, name: str, query: dict[str, Any] | None = None, **path: Any) -> str:
    """A path (no scheme or host, so it holds behind a proxy) to the route ``name``."""
    target = request.url_for(name, **{key: str(value) for key, value in path.items()}).path
    kept = {key: value for key, value in (query or {}).items() if value not in (None, "")}
    return f"{target}?{urlencode(kept, doseq=True)}" if kept else target


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page: the template with the request's helpers, and the CSRF cookie when new."""
    page = ENVIRONMENT.get_template(template).render(
        request=request,
        url=lambda name, query=None, **path: url(request, name, query, **path),
        csrf_field=CSRF_FIELD,
        csrf_token=csrf_token(request),
        user=getattr(request.state, "ui_user", None),
        can_logout=getattr(request.state, "ui_token_login", False),
        **context,
    )
    response = HTMLResponse(page, status_code=status_code)
    keep_csrf(request, response, ui_root(request))
    return response


def fragment(template: str, **context: Any) -> str:
    """A piece of a page (a message for the live tail), escaped like the pages."""
    return ENVIRONMENT.get_template(template).render(**context)
