"""``create_ui_router``: the transcript browser's routes, and who the signed-in user is.

Two routers in one: the public part (static files, the login form) and the pages, which
all depend on the user. A host app passes its own ``current_user`` dependency (returning the
user id); the standalone server passes ``token_login=True`` and the browser signs in once with
an API token (see :mod:`agentledger.web.ui.security`).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from agentledger.web.events import RECHECK
from agentledger.web.ui.live import LiveTail
from agentledger.web.ui.pages import Pages
from agentledger.web.ui.rendering import STATIC, render, ui_root, url
from agentledger.web.ui.security import (
    LOGIN_COOKIE,
    SecureRoute,
    check_csrf,
    clear_login,
    set_login,
)

if TYPE_CHECKING:
    from agentledger.ledger import Ledger

#: The static files the router serves, and their types; nothing else under ``static/`` is.
STATIC_FILES = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}


def create_ui_router(
    ledger: Ledger,
    *,
    current_user: Callable[..., Any] | None = None,
    token_login: bool = False,
) -> APIRouter:
    """The transcript browser as a router to include (e.g. at prefix ``/ui``).

    ``current_user``: the host's FastAPI dependency returning the signed-in user's id; the
    pages show that user's sessions. ``token_login=True`` (the standalone server) adds a
    ``/login`` page instead, where an API token is pasted once.
    """
    if (current_user is None) == (not token_login):
        raise ValueError(
            "pass current_user (your app's dependency returning the user id) or "
            "token_login=True (sign in with an API token), exactly one of them"
        )
    live = LiveTail(ledger)

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await live.close()

    router = APIRouter(route_class=SecureRoute, lifespan=lifespan)
    _add_static(router)
    if token_login:
        _add_login(router, ledger)
        remember = _token_user(ledger)
    else:
        assert current_user is not None
        remember = _host_user(current_user)
    pages = APIRouter(route_class=SecureRoute)
    Pages(ledger, live).register(pages)
    router.include_router(pages, dependencies=[Depends(remember)])
    return router


def _host_user(current_user: Callable[..., Any]) -> Callable[..., Awaitable[None]]:
    async def remember(request: Request, user: Any = Depends(current_user)) -> None:  # noqa: B008
        if not isinstance(user, str) or not user:
            raise HTTPException(status_code=401, detail="sign in to see your sessions")
        request.state.ui_user = user

    return remember


def _token_user(ledger: Ledger) -> Callable[..., Awaitable[None]]:
    async def remember(request: Request) -> None:
        token = request.cookies.get(LOGIN_COOKIE)
        principal = None if not token else await _authenticate(ledger, token)
        if principal is None:
            target = url(request, "ui_login", {"next": _local_path(request.url.path)})
            raise HTTPException(status_code=303, headers={"Location": target})
        request.state.ui_user = principal.user_id
        request.state.ui_token_login = True
        signed_in = str(token)

        async def recheck() -> bool:
            return await _authenticate(ledger, signed_in) is not None

        setattr(request.state, RECHECK, recheck)  # a revoked token ends the live tail

    return remember


async def _authenticate(ledger: Ledger, token: str) -> Any:
    """The token's principal (``None``: unknown or revoked), checked on every request."""
    from agentledger.web.auth import authenticate_token

    result: Any = authenticate_token(ledger, token)
    return await result if inspect.isawaitable(result) else result


def _local_path(candidate: str | None) -> str | None:
    """``candidate`` when it is a path on this site (never another host: no open redirect)."""
    if not candidate or not candidate.startswith("/") or candidate.startswith("//"):
        return None
    parts = urlsplit(candidate)
    return None if parts.scheme or parts.netloc or "\\" in candidate else candidate


def _add_static(router: APIRouter) -> None:
    contents = {name: (STATIC / name).read_bytes() for name in STATIC_FILES}

    @router.get("/static/{file}", name="ui_static", include_in_schema=False)
    async def static(file: str) -> Response:
        if file not in contents:
            raise HTTPException(status_code=404, detail="no such file")
        return Response(
            contents[file],
            media_type=STATIC_FILES[file],
            headers={"Cache-Control": "public, max-age=3600"},
        )


def _add_login(router: APIRouter, ledger: Ledger) -> None:
    @router.get("/login", name="ui_login", include_in_schema=False)
    async def login_form(request: Request, next: str | None = None) -> Response:
        return render(request, "login.html", next=_local_path(next) or "", error=None)

    @router.post("/login", name="ui_login_submit", include_in_schema=False)
    async def login(
        request: Request,
        token: Annotated[str, Form()] = "",
        csrf_token: Annotated[str, Form()] = "",
        next: Annotated[str, Form()] = "",
    ) -> Response:
        check_csrf(request, csrf_token)
        principal = await _authenticate(ledger, token.strip()) if token.strip() else None
        if principal is None:
            return render(
                request,
                "login.html",
                status_code=401,
                next=_local_path(next) or "",
                error="That token is unknown or revoked. Create one with "
                "`agentledger tokens create` and paste it here.",
            )
        response = RedirectResponse(
            _local_path(next) or url(request, "ui_sessions"), status_code=303
        )
        set_login(request, response, token.strip(), ui_root(request))
        return response

    @router.post("/logout", name="ui_logout", include_in_schema=False)
    async def logout(request: Request, csrf_token: Annotated[str, Form()] = "") -> Response:
        check_csrf(request, csrf_token)
        response = RedirectResponse(url(request, "ui_login"), status_code=303)
        clear_login(response, ui_root(request))
        return response
