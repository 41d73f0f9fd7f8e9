"""The API mounted in a host application that brings its own authentication.

The host's ``current_user`` reads ``X-Host-User`` (a stand-in for the host's sessions or
tokens) and answers 401 itself without it; agentledger never sees anything else of who the
caller is. Each test gets the host app on a fresh database of each backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException

from agentledger import Ledger
from agentledger.web import create_router

PREFIX = "/api/v1"


async def host_user(x_host_user: Annotated[str | None, Header()] = None) -> str:
    if x_host_user is None:
        raise HTTPException(status_code=401, detail="the host's login is required")
    return x_host_user


def host_app(ledger: Ledger, **options: object) -> FastAPI:
    app = FastAPI(title="a host application")
    app.include_router(
        create_router(ledger, current_user=host_user, **options),  # type: ignore[arg-type]
        prefix=PREFIX,
    )
    return app


def as_user(user: str) -> dict[str, str]:
    return {"X-Host-User": user}


@pytest.fixture
async def client(ledger: Ledger) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=host_app(ledger))
    async with httpx.AsyncClient(transport=transport, base_url=f"http://host{PREFIX}") as opened:
        yield opened
