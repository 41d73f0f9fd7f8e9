"""Who is calling: API tokens for the standalone server, as FastAPI dependencies.

A host application that mounts :func:`agentledger.web.create_router` brings its own
authentication (its ``current_user`` dependency); this module is the standalone server's:
``Authorization: Bearer al_...`` checked against the tokens ``agentledger tokens create``
stored (by hash, see :mod:`agentledger.services.tokens`). A request without a valid token
gets 401 with ``WWW-Authenticate: Bearer``. The token is never logged nor echoed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agentledger.ledger import Ledger
from agentledger.web.events import RECHECK
from agentledger.web.problems import Forbidden, Unauthorized


@dataclass(frozen=True)
class Principal:
    """The caller a token stands for."""

    user_id: str
    #: May call the maintenance routes (retention, erase-user).
    admin: bool


async def authenticate_token(ledger: Ledger, token: str) -> Principal | None:
    """The principal of an active token, or ``None`` (unknown, revoked or malformed)."""
    record = await ledger.service.authenticate_api_token(token)
    return None if record is None else Principal(record.user_id, record.admin)


#: The scheme as OpenAPI shows it; ``auto_error=False`` so a missing token is our own 401.
bearer_scheme = HTTPBearer(
    auto_error=False, description="an API token made by `agentledger tokens create`"
)


def bearer_principal(ledger: Ledger) -> Callable[..., Awaitable[Principal]]:
    """A dependency resolving the request's bearer token to its :class:`Principal` (once per
    request, however many dependencies ask)."""

    async def principal(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),  # noqa: B008
    ) -> Principal:
        found = getattr(request.state, "agentledger_principal", None)
        if isinstance(found, Principal):
            return found
        if credentials is None:
            raise Unauthorized("send Authorization: Bearer <token> (agentledger tokens create)")
        caller = await authenticate_token(ledger, credentials.credentials)
        if caller is None:
            raise Unauthorized(
                "the token is unknown or revoked; create one with "
                "`agentledger tokens create --user USER`"
            )
        request.state.agentledger_principal = caller
        token = credentials.credentials

        async def recheck() -> bool:
            return await authenticate_token(ledger, token) is not None

        setattr(request.state, RECHECK, recheck)  # a revoked token ends open event streams
        return caller

    return principal


def bearer_user(ledger: Ledger) -> Callable[..., Awaitable[str]]:
    """``current_user`` for :func:`~agentledger.web.create_router`: the token's user id."""
    principal = bearer_principal(ledger)

    async def user(caller: Principal = Depends(principal)) -> str:  # noqa: B008
        return caller.user_id

    return user


def bearer_admin(ledger: Ledger) -> Callable[..., Awaitable[Principal]]:
    """The caller, who must hold an admin token (403 otherwise)."""
    principal = bearer_principal(ledger)

    async def admin(caller: Principal = Depends(principal)) -> Principal:  # noqa: B008
        if not caller.admin:
            raise Forbidden("this route needs an admin token (agentledger tokens create --admin)")
        return caller

    return admin
