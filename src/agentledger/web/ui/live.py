"""The live tail of a running session, as server-sent events.

Each new message is sent as one event whose id is its seq, so a browser that reconnects
(EventSource does by itself, sending ``Last-Event-ID``) continues where it stopped. New
messages are found by polling ``get_messages(after_seq=...)`` (one indexed query) every
:data:`POLL_SECONDS`; a stream ends after :data:`STREAM_SECONDS` and the browser reconnects,
so no request lives forever.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import StreamingResponse

from agentledger.domain.encoding import dump_json
from agentledger.web.ui.rendering import fragment, url
from agentledger.web.ui.view import paired

if TYPE_CHECKING:
    from agentledger.services.facade import SessionService

POLL_SECONDS = 0.5
STREAM_SECONDS = 300.0
#: A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0
BATCH = 100


def event_stream(
    request: Request, service: SessionService, session_id: uuid.UUID, user: str, after: int
) -> StreamingResponse:
    """The response streaming the session's messages after seq ``after``."""
    return StreamingResponse(
        _events(request, service, session_id, user, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _events(
    request: Request, service: SessionService, session_id: uuid.UUID, user: str, after: int
) -> AsyncIterator[str]:
    def link(name: str, query: dict[str, object] | None = None, **path: object) -> str:
        return url(request, name, query, **path)

    yield "retry: 2000\n\n"
    started = quiet_since = time.monotonic()
    while time.monotonic() - started < STREAM_SECONDS:
        if await request.is_disconnected():
            return
        page = await service.get_messages(session_id, after_seq=after, limit=BATCH, user_id=user)
        sent = after
        for message in paired(page):
            covered = [message.seq, *(c.output.seq for c in message.calls if c.output)]
            sent = max(sent, *covered)
            html = fragment("message.html", message=message, session_id=session_id, url=link)
            calls = [call.call_id for call in message.calls if call.output is not None]
            data = dump_json(
                {
                    "seq": message.seq,
                    "html": html,
                    "tool_call_id": message.tool_call_id,
                    "answered": calls,
                },
                "event",
            )
            yield f"id: {sent}\nevent: message\ndata: {data}\n\n"
        if len(page):
            after, quiet_since = page[-1].seq, time.monotonic()
            continue
        if time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keepalive\n\n"
        await asyncio.sleep(POLL_SECONDS)
