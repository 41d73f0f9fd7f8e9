"""API tokens of the standalone HTTP server: issue, authenticate, list and revoke.

The token is shown once, when it is issued; only its sha256 is stored
(:mod:`agentledger.domain.tokens`). Authenticating is one indexed lookup by that hash: the
token is a 256-bit random secret, so neither a salt nor a slow hash adds anything, and the
lookup's timing can tell an attacker nothing about a token they do not already hold.
"""

from __future__ import annotations

import uuid

from agentledger.domain.tokens import (
    ApiTokenRecord,
    IssuedToken,
    looks_like_token,
    new_token,
    token_hash,
)
from agentledger.domain.validation import check_name
from agentledger.errors import InvalidInputError
from agentledger.services.base import ServiceBase, operation


class ApiTokens(ServiceBase):
    """Token use cases (the CLI's ``tokens`` commands and the server's authentication)."""

    @operation()
    async def create_api_token(self, user_id: str, *, admin: bool = False) -> IssuedToken:
        """A new token acting for ``user_id`` (``admin``: it may also call the maintenance
        routes). The returned ``token`` is the only copy of the secret."""
        user = check_name(user_id, "user_id")
        if not isinstance(admin, bool):
            raise InvalidInputError(f"admin must be True or False, got {admin!r}")
        token = new_token()
        async with self._uow() as uow:
            record = await uow.tokens.add(
                uuid.uuid4(), token_hash(token), user, admin=admin, now=self._now()
            )
            await uow.commit()
        return IssuedToken(record, token)

    @operation()
    async def authenticate_api_token(self, token: str) -> ApiTokenRecord | None:
        """The active token ``token`` is, or ``None`` (unknown, revoked or malformed)."""
        if not looks_like_token(token):
            return None
        async with self._uow(autocommit=True) as uow:
            return await uow.tokens.active_by_hash(token_hash(token))

    @operation()
    async def list_api_tokens(self, user_id: str | None = None) -> list[ApiTokenRecord]:
        """Every token (``user_id``: that user's), revoked ones included, oldest first."""
        user = None if user_id is None else check_name(user_id, "user_id")
        async with self._uow(autocommit=True) as uow:
            return await uow.tokens.listed(user)

    @operation()
    async def has_api_tokens(self) -> bool:
        """Whether any token is active (the server refuses to listen beyond loopback without)."""
        async with self._uow(autocommit=True) as uow:
            return await uow.tokens.any_active()

    @operation()
    async def revoke_api_token(self, token_or_id: str) -> bool:
        """Revoke one token, named by its id (``tokens list``) or by the token itself;
        ``False`` when no such active token exists."""
        if not isinstance(token_or_id, str):
            raise InvalidInputError("name the token by its id or by the token itself")
        token_id: uuid.UUID | None = None
        hashed: str | None = None
        if looks_like_token(token_or_id):
            hashed = token_hash(token_or_id)
        else:
            try:
                token_id = uuid.UUID(token_or_id)
            except ValueError:
                raise InvalidInputError(
                    "not a token id nor a token: pass the id `agentledger tokens list` shows, "
                    "or the token itself (it starts with al_)"
                ) from None
        async with self._uow() as uow:
            revoked = await uow.tokens.revoke(self._now(), token_id=token_id, hashed=hashed)
            await uow.commit()
        return revoked > 0

    @operation()
    async def revoke_user_api_tokens(self, user_id: str) -> int:
        """Revoke every active token of ``user_id``; how many there were."""
        user = check_name(user_id, "user_id")
        async with self._uow() as uow:
            revoked = await uow.tokens.revoke(self._now(), user_id=user)
            await uow.commit()
        return revoked
