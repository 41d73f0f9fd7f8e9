"""Errors as ``application/problem+json`` (RFC 9457), one HTTP status per error class.

Every :class:`~agentledger.errors.LedgerError` subclass maps to one status (:data:`STATUSES`,
looked up along the class's MRO, so a subclass added later inherits its parent's). A retryable
error (``error.retryable``) carries ``Retry-After``. The body is ``type``, ``title``,
``status``, ``detail`` (the error's message, which says what to do; for a 5xx, a summary,
the message going to the server's log) and the extensions
``error`` (the class name) and ``retryable``; a :class:`~agentledger.errors.StaleSessionError`
adds ``last_seq``.

A router cannot install exception handlers in the app that mounts it, so the routes of
:func:`agentledger.web.create_router` use :func:`problem_route`, an ``APIRoute`` that turns
these errors (and request validation errors, as 400) into problem responses itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from agentledger import errors

logger = logging.getLogger("agentledger")

MEDIA_TYPE = "application/problem+json"

#: Seconds a client should wait before retrying a retryable error.
RETRY_AFTER_SECONDS = 1

#: The status of each error class; the nearest class on the MRO decides.
STATUSES: dict[type[errors.LedgerError], int] = {
    errors.PayloadTooLargeError: 413,
    errors.InvalidInputError: 400,
    errors.SessionNotFoundError: 404,
    errors.StaleSessionError: 409,
    errors.ConflictError: 409,
    errors.AlreadyExistsError: 409,
    errors.SessionReferencedError: 409,
    errors.PermissionDeniedError: 403,
    errors.UnsupportedBackendError: 501,
    errors.SchemaNotReadyError: 503,
    errors.ConnectionLostError: 503,
    errors.LedgerTimeoutError: 503,
    errors.DatabaseUnavailableError: 503,
    errors.ConfigurationError: 500,
    errors.LedgerDatabaseError: 500,
    errors.LedgerError: 500,
}


class WebProblem(Exception):
    """A problem of the HTTP layer itself (authentication, routing), not of agentledger."""

    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def response(self) -> Response:
        # Sending the same request again changes nothing: the credentials must change first.
        return problem(self.status, self.detail, kind=type(self).__name__, retryable=False)


class Unauthorized(WebProblem):
    status = 401

    def response(self) -> Response:
        answer = super().response()
        answer.headers["WWW-Authenticate"] = "Bearer"
        return answer


class Forbidden(WebProblem):
    status = 403


def status_of(error: errors.LedgerError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUSES:
            return STATUSES[kind]
    return 500  # pragma: no cover - LedgerError is in the table


def problem(status: int, detail: str, *, kind: str, **extensions: Any) -> JSONResponse:
    """A problem+json response; ``type`` names the error class (a URN, not a page to fetch)."""
    body = {
        "type": f"urn:agentledger:problem:{kind}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "error": kind,
        **extensions,
    }
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE)


def ledger_problem(error: errors.LedgerError) -> JSONResponse:
    extensions: dict[str, Any] = {"retryable": error.retryable}
    if isinstance(error, errors.StaleSessionError):
        extensions["last_seq"] = error.last_seq
        extensions["expected_last_seq"] = error.expected_last_seq
    status = status_of(error)
    detail = str(error)
    if status >= 500:
        # The server's side of a failure (database names, server messages, configuration) is
        # for its operator, not for API clients: logged here, summed up there.
        logger.warning("agentledger.web: %s answered %d: %s", type(error).__name__, status, error)
        detail = (
            "the server could not complete the request; try again later"
            if error.retryable or status == 503
            else "the server could not complete the request; its log says why"
        )
    answer = problem(status, detail, kind=type(error).__name__, **extensions)
    if error.retryable:
        answer.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return answer


def validation_problem(error: RequestValidationError) -> JSONResponse:
    """Bad input as 400 with the fields at fault; the input itself is never echoed."""
    fields = [
        {"loc": [str(part) for part in item.get("loc", ())], "msg": str(item.get("msg", ""))}
        for item in error.errors()
    ]
    first = fields[0] if fields else {"loc": [], "msg": "invalid request"}
    detail = f"{'.'.join(first['loc']) or 'request'}: {first['msg']}"
    return problem(400, detail, kind="InvalidInputError", retryable=False, errors=fields)


def problem_route(max_body_bytes: int) -> type[APIRoute]:
    """An ``APIRoute`` class whose handlers answer errors as problems and refuse a request
    body over ``max_body_bytes`` with 413 (read in chunks, never more than the limit)."""

    class ProblemRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handle = super().get_route_handler()

            async def run(request: Request) -> Response:
                try:
                    await _bounded_body(request, max_body_bytes)
                    return await handle(request)
                except errors.LedgerError as error:
                    return ledger_problem(error)
                except RequestValidationError as error:
                    return validation_problem(error)
                except WebProblem as error:
                    return error.response()

            return run

    return ProblemRoute


async def _bounded_body(request: Request, limit: int) -> None:
    if request.method in ("GET", "HEAD", "DELETE", "OPTIONS"):
        return
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.PayloadTooLargeError(_too_large(limit))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise errors.PayloadTooLargeError(_too_large(limit))
    request._body = bytes(body)  # what Request.body() returns from now on


def _too_large(limit: int) -> str:
    return (
        f"the request body is larger than {limit} bytes, this server's limit; send the "
        "messages in several smaller requests"
    )
