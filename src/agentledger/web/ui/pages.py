"""The transcript browser's pages: sessions, a transcript, its actions and exports, usage.

Each handler is a thin call of the service with the signed-in user as owner, so another
user's session is simply not found (404). Lists are keyset pages: a page costs the same
whether the user has a hundred sessions or a million.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from agentledger.domain.records import SearchHit, SessionState, SessionSummary
from agentledger.domain.transcripts import dumps_jsonl, render_markdown
from agentledger.errors import LedgerError, SessionNotFoundError
from agentledger.web.ui.chart import usage_chart
from agentledger.web.ui.live import LiveTail
from agentledger.web.ui.rendering import render, url
from agentledger.web.ui.security import check_csrf
from agentledger.web.ui.view import (
    checkpoints_after,
    one_line,
    paired,
    parse_metadata_filter,
    shown_checkpoint,
)

if TYPE_CHECKING:
    from agentledger.ledger import Ledger
    from agentledger.services.facade import SessionService

#: Sessions per page of the list, messages per page of a transcript.
SESSIONS_PER_PAGE = 50
MESSAGES_PER_PAGE = 100
#: ``before_seq`` that means "from the newest message back".
NEWEST = 2**62
USAGE_ENTRIES_SHOWN = 200


def _user(request: Request) -> str:
    user: str = request.state.ui_user
    return user


def _session_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise HTTPException(status_code=404, detail="no such session") from None


def _refused(request: Request, error: LedgerError) -> Response:
    status = 404 if isinstance(error, SessionNotFoundError) else 400
    return render(request, "error.html", status_code=status, message=str(error))


class Pages:
    """The page handlers over one ledger's service."""

    def __init__(self, ledger: Ledger, live: LiveTail) -> None:
        self._ledger = ledger
        self._live = live

    @property
    def _service(self) -> SessionService:
        return self._ledger.service

    def register(self, router: APIRouter) -> None:
        router.add_api_route("/", self.sessions, name="ui_sessions", methods=["GET"])
        router.add_api_route("/usage", self.usage, name="ui_usage", methods=["GET"])
        router.add_api_route(
            "/sessions/{session_id}", self.transcript, name="ui_session", methods=["GET"]
        )
        router.add_api_route(
            "/sessions/{session_id}/messages/{seq}",
            self.message_content,
            name="ui_message_content",
            methods=["GET"],
        )
        router.add_api_route(
            "/sessions/{session_id}/export", self.export, name="ui_export", methods=["GET"]
        )
        router.add_api_route(
            "/sessions/{session_id}/events", self.events, name="ui_events", methods=["GET"]
        )
        router.add_api_route(
            "/sessions/{session_id}/fork", self.fork, name="ui_fork", methods=["POST"]
        )
        router.add_api_route(
            "/sessions/{session_id}/rewind", self.rewind, name="ui_rewind", methods=["POST"]
        )
        for route in router.routes:
            route.include_in_schema = False  # type: ignore[attr-defined]

    async def sessions(
        self,
        request: Request,
        q: str = "",
        agent: str = "",
        title: str = "",
        archived: bool = False,
        meta: Annotated[list[str] | None, Query()] = None,
        cursor: str | None = None,
    ) -> Response:
        """The user's sessions (newest activity first; by agent, title text, metadata
        values; archived ones too on request), or the messages matching ``q``."""
        user = _user(request)
        filters = {
            "q": q,
            "agent": agent,
            "title": title,
            "archived": "1" if archived else "",
            "meta": meta or [],
        }
        try:
            if q.strip():
                hits = await self._service.search(
                    user,
                    q,
                    limit=SESSIONS_PER_PAGE,
                    cursor=cursor,
                    agent_name=agent or None,
                    include_archived=archived,
                )
                return render(
                    request,
                    "sessions.html",
                    filters=filters,
                    sessions=None,
                    hits=[_hit(hit) for hit in hits],
                    next_cursor=hits.next_cursor,
                    cursor=cursor,
                )
            page = await self._service.list_user_sessions(
                user,
                limit=SESSIONS_PER_PAGE,
                cursor=cursor,
                agent_name=agent or None,
                metadata=parse_metadata_filter(meta or []) or None,
                title=title.strip() or None,
                include_archived=archived,
            )
        except LedgerError as error:
            return render(
                request,
                "sessions.html",
                status_code=400,
                filters=filters,
                sessions=[],
                hits=None,
                next_cursor=None,
                cursor=None,
                error=str(error),
            )
        return render(
            request,
            "sessions.html",
            filters=filters,
            hits=None,
            sessions=[_listed(summary) for summary in page],
            next_cursor=page.next_cursor,
            cursor=cursor,
        )

    async def transcript(
        self,
        request: Request,
        session_id: str,
        after: int | None = None,
        before: int | None = None,
    ) -> Response:
        """One page of a session's transcript, its metadata, checkpoints and usage."""
        user, sid = _user(request), _session_id(session_id)
        try:
            summary = await self._service.describe_session(sid, user_id=user)
            if summary is None:
                raise HTTPException(status_code=404, detail="no such session")
            if before is not None and after is None:
                page = await self._service.get_messages(
                    sid, before_seq=before, limit=MESSAGES_PER_PAGE, user_id=user
                )
            else:
                page = await self._service.get_messages(
                    sid, after_seq=after, limit=MESSAGES_PER_PAGE, user_id=user
                )
            checkpoints = [
                shown_checkpoint(c) for c in await self._service.get_checkpoints(sid, user_id=user)
            ]
            entries = await self._service.get_usage_entries(
                sid, user_id=user, limit=USAGE_ENTRIES_SHOWN
            )
            totals = await self._service.get_usage(sid, user_id=user)
        except LedgerError as error:
            return _refused(request, error)
        messages = paired(page)
        backward = before is not None and after is None
        first = page[0].seq if len(page) else None
        last = page[-1].seq if len(page) else None
        if backward:
            older = page.next_before_seq
            newer = last if before is not None and before < NEWEST and last is not None else None
            at_end = before is not None and before >= NEWEST
        else:
            older = first if first is not None and first > 1 else None
            newer = page.next_after_seq
            at_end = newer is None
        return render(
            request,
            "session.html",
            session=_listed(summary),
            metadata=[(one_line(k), one_line(v)[:500]) for k, v in summary.metadata.items()],
            messages=messages,
            checkpoints=checkpoints,
            checkpoint_at=checkpoints_after(checkpoints, messages),
            usage_entries=entries,
            usage_totals=totals,
            older_before=older,
            newer_after=newer,
            tail_after=(last if last is not None else (after or 0)) if at_end else None,
            newest=NEWEST,
        )

    async def message_content(self, request: Request, session_id: str, seq: int) -> Response:
        """The whole content of one message as plain text (the "show all" of a cut one)."""
        user, sid = _user(request), _session_id(session_id)
        try:
            page = await self._service.get_messages(
                sid, after_seq=max(seq - 1, 0), limit=1, user_id=user
            )
        except LedgerError as error:
            return _refused(request, error)
        if not len(page) or page[0].seq != seq:
            raise HTTPException(status_code=404, detail="no such message")
        return PlainTextResponse(
            page[0].content,
            headers={"Content-Disposition": f'inline; filename="message-{seq}.txt"'},
        )

    async def export(self, request: Request, session_id: str, format: str = "jsonl") -> Response:
        """The session as a file: lossless JSONL (importable) or readable Markdown."""
        user, sid = _user(request), _session_id(session_id)
        if format not in ("jsonl", "markdown"):
            raise HTTPException(status_code=404, detail="export as jsonl or markdown")
        try:
            transcript = await self._service.export_session(sid, user_id=user)
        except LedgerError as error:
            return _refused(request, error)
        if format == "jsonl":
            body, media, suffix = dumps_jsonl(transcript), "application/x-ndjson", "jsonl"
        else:
            body, media, suffix = render_markdown(transcript), "text/markdown", "md"
        return Response(
            body.encode("utf-8"),
            media_type=f"{media}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="session-{sid}.{suffix}"'},
        )

    async def events(self, request: Request, session_id: str, after: int = 0) -> Response:
        """Server-sent events: each new message, rendered, as it is stored."""
        user, sid = _user(request), _session_id(session_id)
        summary = await self._service.describe_session(sid, user_id=user)
        if summary is None:
            raise HTTPException(status_code=404, detail="no such session")
        last_id = request.headers.get("last-event-id", "")
        resumed = int(last_id) if last_id.isdigit() and len(last_id) <= 18 else None
        start = resumed if resumed is not None else min(max(after, 0), NEWEST)
        try:
            return await self._live.response(request, self._service, sid, user, start)
        except LedgerError as error:  # the database cannot be listened to: try again later
            return render(request, "error.html", status_code=503, message=str(error))

    async def fork(
        self,
        request: Request,
        session_id: str,
        csrf_token: Annotated[str, Form()] = "",
        at_seq: Annotated[int | None, Form()] = None,
    ) -> Response:
        """Fork at a message: a new session with the history up to it; go there."""
        check_csrf(request, csrf_token)
        user, sid = _user(request), _session_id(session_id)
        try:
            forked = await self._service.fork_session(sid, at_seq, user_id=user)
        except LedgerError as error:
            return _refused(request, error)
        return RedirectResponse(url(request, "ui_session", session_id=forked.id), 303)

    async def rewind(
        self,
        request: Request,
        session_id: str,
        to_seq: Annotated[int, Form()],
        csrf_token: Annotated[str, Form()] = "",
    ) -> Response:
        """Rewind to a message: drop every message after it; show the session's end."""
        check_csrf(request, csrf_token)
        user, sid = _user(request), _session_id(session_id)
        try:
            await self._service.rewind_session(sid, to_seq, user_id=user)
        except LedgerError as error:
            return _refused(request, error)
        target = url(request, "ui_session", {"before": NEWEST}, session_id=sid)
        return RedirectResponse(target, 303)

    async def usage(self, request: Request, days: int = 30) -> Response:
        """Tokens per day per agent over the last ``days`` days, as an SVG chart."""
        user = _user(request)
        span = min(max(days, 2), 366)
        try:
            daily = await self._service.get_daily_usage(user, days=span)
            totals = await self._service.get_user_usage(user)
        except LedgerError as error:
            return _refused(request, error)
        today = datetime.now(UTC).date()
        chart = usage_chart(daily, last_day=today, days=span)
        return render(request, "usage.html", chart=chart, totals=totals, days=span)


def _listed(summary: SessionSummary | SessionState) -> dict[str, Any]:
    return {
        "id": summary.id,
        "title": one_line(summary.title) if summary.title else None,
        "agent_name": one_line(summary.agent_name),
        "name": one_line(summary.name) if summary.name else None,
        "archived": summary.archived_at is not None,
        "message_count": summary.message_count,
        "created_at": summary.created_at.isoformat(timespec="seconds"),
        "updated_at": summary.updated_at.isoformat(timespec="seconds"),
        "metadata": [(one_line(k), one_line(v)[:80]) for k, v in summary.metadata.items()][:4],
    }


def _hit(hit: SearchHit) -> dict[str, Any]:
    return {
        "session_id": hit.session_id,
        "seq": hit.seq,
        "role": hit.role,
        "agent_name": one_line(hit.agent_name),
        "snippet": one_line(hit.snippet),
        "created_at": hit.created_at.isoformat(timespec="seconds"),
    }
