"""``create_app``: the standalone server's complete application.

The API of :func:`~agentledger.web.router.create_router` under ``/api/v1`` with bearer-token
authentication (:mod:`agentledger.web.auth`), the maintenance routes for admin tokens under
``/api/v1/admin``, and the transcript browser (``agentledger.web.ui``) under ``/ui`` when that
module is installed. Every error, unknown routes included, is ``application/problem+json``.
"""

from __future__ import annotations

import importlib
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentledger._version import __version__
from agentledger.errors import LedgerError
from agentledger.ledger import Ledger
from agentledger.web.admin import create_admin_router
from agentledger.web.auth import bearer_admin, bearer_user
from agentledger.web.problems import (
    WebProblem,
    ledger_problem,
    problem,
    validation_problem,
)
from agentledger.web.router import DEFAULT_MAX_BODY_BYTES, create_router, problem_responses

_UNAUTHORIZED = {401: "no token, or an unknown or revoked one"}

API_PREFIX = "/api/v1"
UI_PREFIX = "/ui"


def create_app(
    ledger: Ledger,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    sse_poll_interval: float = 0.5,
    ui: bool = True,
    title: str = "agentledger",
) -> FastAPI:
    """The standalone app on ``ledger`` (which the caller opens and closes). ``ui=False``
    leaves the transcript browser out even when it is installed."""
    app = FastAPI(
        title=title,
        version=__version__,
        docs_url=f"{API_PREFIX}/docs",
        openapi_url=f"{API_PREFIX}/openapi.json",
        redoc_url=None,
    )
    app.include_router(
        create_router(
            ledger,
            current_user=bearer_user(ledger),
            max_body_bytes=max_body_bytes,
            sse_poll_interval=sse_poll_interval,
        ),
        prefix=API_PREFIX,
        responses=problem_responses(_UNAUTHORIZED),
    )
    app.include_router(
        create_admin_router(ledger, current_admin=bearer_admin(ledger)),
        prefix=f"{API_PREFIX}/admin",
        responses=problem_responses(
            {
                **_UNAUTHORIZED,
                403: "not an admin token",
                400: "bad input",
                503: "unavailable",
                "default": "another error (500: the server failed; its log says why)",
            }
        ),
    )
    ui_router = _ui_router(ledger) if ui else None
    if ui_router is not None:
        app.include_router(ui_router, prefix=UI_PREFIX)

        @app.get("/", include_in_schema=False)
        async def home() -> Response:
            return RedirectResponse(f"{UI_PREFIX}/", status_code=307)

    _problem_handlers(app)
    return app


def _ui_router(ledger: Ledger) -> Any:
    """The transcript browser's router, when ``agentledger.web.ui`` exists."""
    try:
        module = importlib.import_module("agentledger.web.ui")
    except ImportError as error:
        if error.name not in ("agentledger.web.ui",):
            raise
        return None
    factory = getattr(module, "create_ui_router", None)
    return None if factory is None else factory(ledger, token_login=True)


def _problem_handlers(app: FastAPI) -> None:
    """Errors outside the API's own routes (unknown paths, wrong methods, the UI) as
    problems too."""

    async def on_http(_request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        answer = problem(error.status_code, str(error.detail), kind="HTTPError")
        for name, value in (error.headers or {}).items():
            answer.headers[name] = value
        return answer

    async def on_ledger(_request: Request, error: Exception) -> Response:
        assert isinstance(error, LedgerError)
        return ledger_problem(error)

    async def on_validation(_request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        return validation_problem(error)

    async def on_web(_request: Request, error: Exception) -> Response:
        assert isinstance(error, WebProblem)
        return error.response()

    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(LedgerError, on_ledger)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(WebProblem, on_web)
