"""API tokens: how one is made, recognized and stored.

A token is ``al_`` followed by 32 random bytes in URL-safe base64 (``secrets.token_urlsafe``):
high entropy, so its sha256 alone is a safe thing to store and to look it up by (no salt or
slow hash is needed for a random secret of 256 bits, and a lookup by hash leaks nothing
useful through timing). The prefix lets secret scanners and people recognize one.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime

#: Every token starts with this.
TOKEN_PREFIX = "al_"

#: Random bytes in a token.
TOKEN_BYTES = 32

#: The longest string that could be a token (base64 of TOKEN_BYTES, with room to spare):
#: anything longer is refused before it is hashed.
MAX_TOKEN_LENGTH = 128


@dataclass(frozen=True, slots=True)
class ApiTokenRecord:
    """A stored token, without the secret (only its hash is stored)."""

    id: uuid.UUID
    user_id: str
    admin: bool
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just made: the only time its secret is known."""

    record: ApiTokenRecord
    token: str = field(repr=False)


def new_token() -> str:
    """A fresh random token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What is stored for ``token``: its sha256, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def looks_like_token(text: str) -> bool:
    """Whether ``text`` has a token's shape (prefix, length): anything else is refused at
    once, without a database lookup."""
    return (
        isinstance(text, str)
        and text.startswith(TOKEN_PREFIX)
        and len(TOKEN_PREFIX) < len(text) <= MAX_TOKEN_LENGTH
        and text.isascii()
    )


__all__ = [
    "MAX_TOKEN_LENGTH",
    "TOKEN_PREFIX",
    "ApiTokenRecord",
    "IssuedToken",
    "looks_like_token",
    "new_token",
    "token_hash",
]
