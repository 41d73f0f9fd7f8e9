"""The live tail of a running session, as server-sent events of rendered messages.

Each new message is sent as one event whose id is the last seq it covers, so a browser that
reconnects (EventSource does by itself, sending ``Last-Event-ID``) continues where it stopped.
What wakes a stream is the API's: :class:`agentledger.web.events.Feeds` (LISTEN/NOTIFY on
PostgreSQL, one connection per router; a read every :data:`POLL_SECONDS` on SQLite); the
messages themselves are read with ``get_messages(after_seq=...)``, one indexed query. A stream
ends after :data:`STREAM_SECONDS` and the browser reconnects, so no request lives forever.
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
from agentledger.domain.records import MessagePage
from agentledger.translation import translated
from agentledger.web.events import KEEPALIVE, Feeds, PostgresListener, still_allowed
from agentledger.web.ui.rendering import fragment, url
from agentledger.web.ui.view import paired

if TYPE_CHECKING:
    from agentledger.ledger import Ledger
    from agentledger.services.facade import SessionService

POLL_SECONDS = 0.5
STREAM_SECONDS = 300.0
BATCH = 100


class LiveTail:
    """The transcript pages' event streams (one listener for the router, closed with it)."""

    def __init__(self, ledger: Ledger) -> None:
        self._feeds = Feeds(ledger, poll_interval=POLL_SECONDS)

    async def close(self) -> None:
        await self._feeds.close()

    async def response(
        self,
        request: Request,
        service: SessionService,
        session_id: uuid.UUID,
        user: str,
        after: int,
    ) -> StreamingResponse:
        """The response streaming the session's messages after seq ``after``, subscribed
        before it starts (so a message stored in between still wakes it, and a database
        that cannot be listened to fails the request, not the stream)."""
        listener = self._feeds.listener
        woken = None
        if listener is not None:
            with translated():
                woken = await listener.subscribe(session_id)
        return StreamingResponse(
            self._events(request, service, session_id, user, after, listener, woken),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _events(
        self,
        request: Request,
        service: SessionService,
        session_id: uuid.UUID,
        user: str,
        after: int,
        listener: PostgresListener | None,
        woken: asyncio.Event | None,
    ) -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            started, idle = time.monotonic(), 0.0
            while time.monotonic() - started < STREAM_SECONDS:
                # The listener's generation before the read: a connection lost and opened
                # again after it makes the wait return at once (nothing missed).
                read_under = 0 if listener is None else listener.generation
                page = await service.get_messages(
                    session_id, after_seq=after, limit=BATCH, user_id=user
                )
                if len(page):
                    if not await still_allowed(request):
                        return
                    after, idle = page[-1].seq, 0.0
                    for event in _rendered(request, session_id, page):
                        yield event
                    continue
                if await request.is_disconnected():
                    return
                if listener is None or woken is None:
                    await asyncio.sleep(POLL_SECONDS)
                    idle += POLL_SECONDS
                else:
                    with translated():
                        if not await listener.wait(woken, KEEPALIVE, read_under):
                            idle = KEEPALIVE
                if idle >= KEEPALIVE:
                    if not await still_allowed(request):
                        return
                    idle = 0.0
                    yield ": keepalive\n\n"
        finally:
            if listener is not None and woken is not None:
                listener.unsubscribe(session_id, woken)


def _rendered(request: Request, session_id: uuid.UUID, page: MessagePage) -> list[str]:
    """One event per shown message (tool outputs ride with their calls when both are new)."""

    def link(name: str, query: dict[str, object] | None = None, **path: object) -> str:
        return url(request, name, query, **path)

    events: list[str] = []
    sent = 0
    for message in paired(page):
        covered = [message.seq, *(c.output.seq for c in message.calls if c.output)]
        sent = max(sent, *covered)
        html = fragment("message.html", message=message, session_id=session_id, url=link)
        data = dump_json(
            {"seq": message.seq, "html": html, "tool_call_id": message.tool_call_id}, "event"
        )
        events.append(f"id: {sent}\nevent: message\ndata: {data}\n\n")
    return events
