"""The browser's side of security: response headers, the login cookie, CSRF tokens.

* Every response carries a strict Content-Security-Policy: scripts, styles and images only
  from the UI's own static files, no inline script or style, no framing, forms posting only
  back here. Stored content is escaped by the templates anyway; the policy is the second wall.
* The standalone server's login cookie holds the API token itself, HttpOnly (no script reads
  it), ``Secure`` when the page came over https, ``SameSite=Lax`` and scoped to the UI's path.
  Every request checks the token again, so revoking it ends the login at once. Lax rather than
  Strict so that a link to a transcript opened from a chat or an e-mail shows the transcript,
  not the login form; nothing a GET does changes state, and every POST carries a CSRF token.
* CSRF: the double-submit pattern. A random value lives in an HttpOnly, SameSite=Strict
  cookie and in a hidden field of every form; a POST is accepted only when both are present
  and equal. Another site can make a browser send the cookie on a cross-site POST at most
  with SameSite disabled, and it can never read the value to put it in the form.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute

LOGIN_COOKIE = "agentledger_ui_token"
CSRF_COOKIE = "agentledger_ui_csrf"
CSRF_FIELD = "csrf_token"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SecureRoute(APIRoute):
    """A route whose every response carries :data:`SECURITY_HEADERS` (and is never cached:
    pages show private transcripts)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_headers(request: Request) -> Response:
            try:
                response = await handler(request)
            except HTTPException as error:
                response = PlainTextResponse(
                    str(error.detail), status_code=error.status_code, headers=error.headers
                )
            except RequestValidationError as error:
                wrong = ", ".join(str(entry.get("loc", ("?",))[-1]) for entry in error.errors())
                response = PlainTextResponse(f"bad request: check {wrong}", status_code=400)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return with_headers


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def csrf_token(request: Request) -> str:
    """The CSRF value of this browser: its cookie's, or a new one (set by :func:`keep_csrf`)."""
    existing = request.cookies.get(CSRF_COOKIE)
    if existing and 20 <= len(existing) <= 100 and existing.isascii():
        return existing
    fresh: str | None = getattr(request.state, "new_csrf", None)
    if fresh is None:
        fresh = secrets.token_urlsafe(32)
        request.state.new_csrf = fresh
    return fresh


def keep_csrf(request: Request, response: Response, path: str) -> None:
    """Set the CSRF cookie when :func:`csrf_token` made a new value for this page."""
    fresh = getattr(request.state, "new_csrf", None)
    if fresh is not None:
        response.set_cookie(
            CSRF_COOKIE,
            fresh,
            path=path,
            httponly=True,
            secure=is_https(request),
            samesite="strict",
        )


def check_csrf(request: Request, submitted: str | None) -> None:
    """Refuse a POST whose form field does not match the CSRF cookie (403)."""
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not submitted or not secrets.compare_digest(cookie, submitted):
        raise HTTPException(
            status_code=403,
            detail="the form is stale or did not come from this site; reload the page and "
            "submit it again",
        )


def set_login(request: Request, response: Response, token: str, path: str) -> None:
    """The login cookie: the token, re-checked on every request (see the module docstring)."""
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        path=path,
        httponly=True,
        secure=is_https(request),
        samesite="lax",
    )


def clear_login(response: Response, path: str) -> None:
    response.delete_cookie(LOGIN_COOKIE, path=path)
