"""``GET /sessions/{id}/events``: Server-Sent Events of new messages, as they are appended.

Each message is one event, ``id: <seq>``, ``event: message``, ``data:`` the message as
``GET .../messages`` shows it. A client that reconnects sends ``Last-Event-ID`` (browsers do
it themselves) and the stream resumes after that seq: the events come from the history
itself, read in order after the last seq sent, so nothing is missed and nothing repeated.

**What wakes a stream.** On PostgreSQL, revision ``agentledger_0007`` adds a row trigger on
``agent_sessions`` that runs ``pg_notify('agentledger_appended', '<session id> <last seq>')``
when an append raises the session's ``last_seq``. One dedicated asyncpg connection per
process (:class:`PostgresListener`, opened on the first stream, shared by every stream)
LISTENs on that channel and wakes the streams of that session, which then read the new
messages: no polling. A stream subscribes before its first read, so a message committed
between the two is never lost. If the listening connection drops, every stream is woken
(it reads again) and the connection is opened again on the next wait. On SQLite there is no
notification, nor behind PgBouncer in transaction mode (``pgbouncer=True``: it does not
forward them); a stream reads again every ``poll_interval`` seconds there.

**Why a trigger on the session row, not on the messages.** Every append already updates that
one row (under its lock, to allocate the seqs), whatever the batch's size, so a row trigger
there notifies once per append; a statement-level trigger on ``conversation_messages`` would
need a transition table (and per-partition care on a partitioned history), and ``pg_notify``
inside the append statement would put it on the hot path's code for every caller and every
backend. The trigger is skipped by the lock-only update (``WHEN NEW.last_seq >
OLD.last_seq``), the payload never carries content, and a rolled-back append notifies
nobody (notifications are delivered at commit). Its cost on the append benchmark is reported
in ``docs/web.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from agentledger.ledger import Ledger
from agentledger.services.facade import SessionService
from agentledger.translation import translated
from agentledger.web.schemas import MessageOut

CHANNEL = "agentledger_appended"

#: Messages read per query while catching up.
PAGE = 500

#: Seconds between keep-alive comments (proxies close idle connections).
KEEPALIVE = 15.0

#: How long a reconnecting client waits (the SSE ``retry`` field), milliseconds.
RETRY_MS = 1000

log = logging.getLogger(__name__)


class PostgresListener:
    """One LISTEN connection shared by every stream of the process."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._connection: Any = None
        self._opening = asyncio.Lock()
        #: Counts the connections opened: a stream that read under an earlier one must read
        #: again, since notifications between the two connections went nowhere.
        self.generation = 0
        # Weak: a stream whose response never started (the client left first) never runs its
        # unsubscribe; its event then goes with it.
        self._waiters: dict[uuid.UUID, weakref.WeakSet[asyncio.Event]] = {}

    async def subscribe(self, session_id: uuid.UUID) -> asyncio.Event:
        """An event set whenever the session's history grows (or the listener was lost)."""
        await self._ensure()
        event = asyncio.Event()
        self._waiters.setdefault(session_id, weakref.WeakSet()).add(event)
        return event

    def unsubscribe(self, session_id: uuid.UUID, event: asyncio.Event) -> None:
        waiters = self._waiters.get(session_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[session_id]

    async def _ensure(self) -> None:
        if self._connection is not None and not self._connection.is_closed():
            return
        async with self._opening:
            if self._connection is not None and not self._connection.is_closed():
                return
            import asyncpg

            connection = await asyncpg.connect(self._dsn)
            connection.add_termination_listener(self._lost)
            await connection.add_listener(CHANNEL, self._notified)
            self._connection = connection
            self.generation += 1

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        head, _, _seq = payload.partition(" ")
        try:
            session_id = uuid.UUID(head)
        except ValueError:
            return
        waiters = self._waiters.get(session_id)
        if waiters is None:
            return
        for event in list(waiters):
            event.set()
        if not waiters:  # every stream of it went away without unsubscribing
            del self._waiters[session_id]

    def _lost(self, connection: Any) -> None:
        if connection is not self._connection:
            return  # closed on purpose (close()), or an older connection
        log.warning("the LISTEN connection for message events was lost; reopening it")
        self._connection = None
        for waiters in list(self._waiters.values()):
            for event in list(waiters):
                event.set()

    async def wait(self, event: asyncio.Event, seconds: float, read_under: int) -> bool:
        """Until notified (True) or ``seconds`` passed (False). ``read_under`` is the
        :attr:`generation` the caller last read under: if the connection was lost and opened
        again since, return True at once (read again: what was appended in between notified
        no one)."""
        await self._ensure()
        if self.generation != read_under:
            event.clear()
            return True
        woken = False
        with contextlib.suppress(TimeoutError):
            woken = await asyncio.wait_for(event.wait(), seconds)
        event.clear()
        return woken

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()


class Feeds:
    """The event streams of one API router (one listener, made on first use)."""

    def __init__(self, ledger: Ledger, *, poll_interval: float) -> None:
        self._ledger = ledger
        self._poll_interval = poll_interval
        self._listener: PostgresListener | None = None

    @property
    def listener(self) -> PostgresListener | None:
        """The process's LISTEN connection; ``None`` (poll) on SQLite and behind PgBouncer in
        transaction mode, which does not forward notifications."""
        notified = self._ledger.engine.dialect.name == "postgresql"
        if self._listener is None and notified and not self._ledger.settings.pgbouncer:
            url = self._ledger.engine.url.set(drivername="postgresql")
            self._listener = PostgresListener(url.render_as_string(hide_password=False))
        return self._listener

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()

    async def response(
        self,
        request: Request,
        chat: SessionService,
        user: str,
        session_id: uuid.UUID,
        start: int,
    ) -> StreamingResponse:
        """The stream, subscribed before it starts: a database that cannot be listened to is
        an error of the request (503), not a stream that breaks off."""
        listener = self.listener
        event = None
        if listener is not None:
            with translated():
                event = await listener.subscribe(session_id)
        return StreamingResponse(
            self._stream(request, chat, user, session_id, start, event),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _stream(
        self,
        request: Request,
        chat: SessionService,
        user: str,
        session_id: uuid.UUID,
        start: int,
        event: asyncio.Event | None,
    ) -> AsyncIterator[str]:
        listener = self._listener if event is not None else None
        try:
            yield f"retry: {RETRY_MS}\n\n"
            after = start
            idle = 0.0
            while True:
                read_under = 0 if listener is None else listener.generation
                after, chunk = await _read_after(chat, user, session_id, after)
                if chunk:
                    if not await still_allowed(request):
                        return
                    idle = 0.0
                    yield chunk
                    continue  # there may be more at once
                if await request.is_disconnected():
                    return
                if listener is None or event is None:
                    await asyncio.sleep(self._poll_interval)
                    idle += self._poll_interval
                else:
                    with translated():
                        woken = await listener.wait(event, KEEPALIVE, read_under)
                    if not woken:
                        idle = KEEPALIVE
                if idle >= KEEPALIVE:
                    if not await still_allowed(request):
                        return
                    idle = 0.0
                    yield ": keep-alive\n\n"
        finally:
            if listener is not None and event is not None:
                listener.unsubscribe(session_id, event)


#: Where an authentication dependency leaves how to check the caller again (an async callable
#: returning whether the credentials still hold): open event streams ask it before each batch
#: of events and each keep-alive, so a revoked token ends them. A host's own ``current_user``
#: may set it too (``request.state.agentledger_recheck``).
RECHECK = "agentledger_recheck"


async def still_allowed(request: Request) -> bool:
    """Whether the caller of a long-lived response may still see it (see :data:`RECHECK`)."""
    check = getattr(request.state, RECHECK, None)
    return True if check is None else bool(await check())


async def _read_after(
    chat: SessionService, user: str, session_id: uuid.UUID, after: int
) -> tuple[int, str]:
    """The events of the messages after ``after`` (one page) and the seq read up to."""
    page = await chat.get_messages(session_id, after_seq=after, limit=PAGE, user_id=user)
    if not page.items:
        return after, ""
    events = [
        f"id: {record.seq}\nevent: message\ndata: {MessageOut.of(record).model_dump_json()}\n\n"
        for record in page.items
    ]
    last = page.next_after_seq if page.next_after_seq is not None else page.items[-1].seq
    return last, "".join(events)
