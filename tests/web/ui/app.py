"""A host app mounting the transcript browser with its own ``current_user`` dependency (the
user id comes from a header, as a host's authentication would provide it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import httpx
from fastapi import FastAPI, Header

from agentledger import Ledger
from agentledger.web.ui import create_ui_router


def host_app(ledger: Ledger) -> FastAPI:
    app = FastAPI()

    async def current_user(x_user: Annotated[str, Header()] = "alice") -> str:
        return x_user

    app.include_router(create_ui_router(ledger, current_user=current_user), prefix="/ui")
    return app


@asynccontextmanager
async def browser(ledger: Ledger, user: str = "alice") -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the host app, signed in as ``user``; keeps cookies like a browser."""
    transport = httpx.ASGITransport(app=host_app(ledger))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"x-user": user}
    ) as client:
        yield client
