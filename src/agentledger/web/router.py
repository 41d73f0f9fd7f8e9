"""``create_router``: the HTTP API's routes, to mount in a host application.

Each route is a thin call of one service operation for the caller ``current_user`` names (the
host's dependency; a user id in the path, query or body is never trusted): ownership,
validation and limits live in the service. Another user's session answers 404 exactly as a
missing one, because the service treats it exactly as a missing one. Errors are problem
documents (:mod:`agentledger.web.problems`). Listing, message pages and the export read a
bounded amount per query, so the server's memory stays flat whatever a session's size.
"""

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from agentledger.domain.records import SessionState
from agentledger.domain.validation import MAX_PAGE_SIZE, check_metadata_changes, check_title
from agentledger.errors import InvalidInputError, SessionNotFoundError
from agentledger.ledger import Ledger
from agentledger.services.facade import SessionService
from agentledger.web import events, export
from agentledger.web.problems import problem_route
from agentledger.web.schemas import (
    AppendOut,
    ForkRequest,
    ItemsOut,
    MessageOut,
    MessagePageOut,
    MessagesAppend,
    ProblemOut,
    RewindOut,
    RewindRequest,
    SearchHitOut,
    SearchPageOut,
    SessionCreate,
    SessionOut,
    SessionPageOut,
    SessionPatch,
    SessionSummaryOut,
    UsageOut,
)

#: Largest request body the routes accept (413 beyond), unless create_router is told otherwise.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024

#: Most items one GET .../items returns.
MAX_ITEMS = 10_000

CurrentUser = Callable[..., Any]


def problem_responses(codes: dict[Any, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error responses: a problem document, its schema inline (a
    ``model`` would also be listed as application/json, which these responses never are)."""
    return {
        code: {
            "description": description,
            "content": {"application/problem+json": {"schema": ProblemOut.model_json_schema()}},
        }
        for code, description in codes.items()
    }


#: The error responses every route documents.
_PROBLEMS = problem_responses(
    {
        400: "bad input (nothing was written)",
        404: "no such session for the caller (missing, or another user's)",
        409: "stale (If-Match) or conflicting write",
        413: "request body too large",
        503: "database unavailable; Retry-After when retrying may succeed",
        # Any other error is a problem document too (500: the server's side, summed up).
        # Declaring it also keeps FastAPI from listing a 422 the API never sends (bad
        # input is a 400).
        "default": "another error (500: the server failed; its log says why)",
    }
)


def _missing(session_id: uuid.UUID) -> SessionNotFoundError:
    return SessionNotFoundError(
        f"session {session_id} does not exist; check the id (GET /sessions lists yours)"
    )


def create_router(
    ledger: Ledger,
    *,
    current_user: CurrentUser,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    sse_poll_interval: float = 0.5,
) -> APIRouter:
    """The API's routes (mount them under a prefix such as ``/api/v1``). ``current_user`` is
    a FastAPI dependency returning the caller's user id; it is the only source of identity.
    ``max_body_bytes`` bounds a request body (413 beyond); ``sse_poll_interval`` is how often
    the event stream looks for new messages on SQLite (PostgreSQL is notified instead)."""
    feeds = events.Feeds(ledger, poll_interval=sse_poll_interval)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await feeds.close()  # the LISTEN connection, if a stream opened it

    router = APIRouter(
        route_class=problem_route(max_body_bytes), responses=_PROBLEMS, lifespan=lifespan
    )
    User = Annotated[str, Depends(current_user)]

    def service(user: str) -> SessionService:
        return ledger.service_for(user)

    async def described(user: str, session_id: uuid.UUID) -> SessionState:
        state = await service(user).describe_session(session_id, user_id=user)
        if state is None:
            raise _missing(session_id)
        return state

    @router.get("/sessions", response_model=SessionPageOut, tags=["sessions"])
    async def list_sessions(
        user: User,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
        cursor: str | None = None,
        agent_name: str | None = None,
        metadata: Annotated[
            str | None, Query(description='a JSON object, e.g. {"project": "x"}')
        ] = None,
        title: Annotated[str | None, Query(description="titles containing this text")] = None,
        include_archived: bool = False,
    ) -> SessionPageOut:
        page = await service(user).list_user_sessions(
            user,
            limit,
            cursor=cursor,
            agent_name=agent_name,
            metadata=_json_object(metadata, "metadata"),
            title=title,
            include_archived=include_archived,
        )
        return SessionPageOut(
            sessions=[SessionSummaryOut.of(summary) for summary in page.sessions],
            next_cursor=page.next_cursor,
        )

    @router.post(
        "/sessions",
        response_model=SessionOut,
        status_code=status.HTTP_201_CREATED,
        tags=["sessions"],
    )
    async def create_session(user: User, body: SessionCreate) -> SessionOut:
        title = None if body.title is None else check_title(body.title)
        created = await service(user).create_session(user, body.agent_name, body.metadata)
        if title is not None:
            await service(user).set_title(created.id, title, user_id=user)
        return SessionOut.of(await described(user, created.id))

    @router.get("/sessions/{session_id}", response_model=SessionOut, tags=["sessions"])
    async def get_session(user: User, session_id: uuid.UUID, response: Response) -> SessionOut:
        state = await described(user, session_id)
        response.headers["ETag"] = f'"{state.last_seq}"'  # for If-Match on the next append
        return SessionOut.of(state)

    @router.patch("/sessions/{session_id}", response_model=SessionOut, tags=["sessions"])
    async def update_session(user: User, session_id: uuid.UUID, body: SessionPatch) -> SessionOut:
        changes = None if body.metadata is None else check_metadata_changes(body.metadata)
        title = None if body.title is None else check_title(body.title)
        if title is not None and body.clear_title:
            raise InvalidInputError("give title or clear_title, not both")
        chat = service(user)
        if changes:
            await chat.update_metadata(session_id, changes, user_id=user)
        if title is not None or body.clear_title:
            await chat.set_title(session_id, title, user_id=user)
        return SessionOut.of(await described(user, session_id))

    @router.delete(
        "/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["sessions"]
    )
    async def delete_session(user: User, session_id: uuid.UUID) -> Response:
        if not await service(user).delete_session(session_id, user_id=user):
            raise _missing(session_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.post(
        "/sessions/{session_id}/fork",
        response_model=SessionOut,
        status_code=status.HTTP_201_CREATED,
        tags=["sessions"],
    )
    async def fork_session(user: User, session_id: uuid.UUID, body: ForkRequest) -> SessionOut:
        fork = await service(user).fork_session(
            session_id, body.at_seq, user_id=user, title=body.title
        )
        return SessionOut.of(await described(user, fork.id))

    @router.post("/sessions/{session_id}/rewind", response_model=RewindOut, tags=["sessions"])
    async def rewind_session(user: User, session_id: uuid.UUID, body: RewindRequest) -> RewindOut:
        removed = await service(user).rewind_session(session_id, body.to_seq, user_id=user)
        return RewindOut(removed=removed)

    @router.get("/sessions/{session_id}/messages", response_model=MessagePageOut, tags=["messages"])
    async def get_messages(
        user: User,
        session_id: uuid.UUID,
        after_seq: Annotated[int | None, Query(ge=0)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
    ) -> MessagePageOut:
        page = await service(user).get_messages(
            session_id, after_seq=after_seq, limit=limit, user_id=user
        )
        if not page.items:
            await described(user, session_id)  # an empty page, or nobody's session: 404
        return MessagePageOut(
            messages=[MessageOut.of(record) for record in page.items],
            next_after_seq=page.next_after_seq,
        )

    @router.post(
        "/sessions/{session_id}/messages",
        response_model=AppendOut,
        status_code=status.HTTP_201_CREATED,
        tags=["messages"],
    )
    async def append_messages(
        user: User,
        session_id: uuid.UUID,
        body: MessagesAppend,
        idempotency_key: Annotated[
            str | None, Header(description="the batch is stored once, however often it is sent")
        ] = None,
        if_match: Annotated[
            str | None, Header(description="the last seq read: append only if still the last")
        ] = None,
    ) -> AppendOut:
        result = await service(user).add_messages(
            session_id,
            [message.model_dump() for message in body.messages],
            idempotency_key,
            user_id=user,
            expected_last_seq=_seq_precondition(if_match),
        )
        return AppendOut.of(result)

    @router.get("/sessions/{session_id}/items", response_model=ItemsOut, tags=["messages"])
    async def get_items(
        user: User,
        session_id: uuid.UUID,
        limit: Annotated[int, Query(ge=1, le=MAX_ITEMS, description="the latest this many")] = 100,
    ) -> ItemsOut:
        items = await service(user).get_items(session_id, limit, user_id=user)
        if not items:
            await described(user, session_id)
        return ItemsOut(items=items)

    @router.get(
        "/sessions/{session_id}/export",
        response_class=StreamingResponse,
        tags=["sessions"],
        responses={
            200: {
                "description": "the transcript, streamed",
                "content": {"application/x-ndjson": {}, "text/markdown": {}},
            }
        },
    )
    async def export_session(
        user: User,
        session_id: uuid.UUID,
        format: Annotated[export.Format, Query()] = "jsonl",
    ) -> StreamingResponse:
        state = await described(user, session_id)
        return export.response(service(user), state, format, user)

    @router.get("/sessions/{session_id}/usage", response_model=UsageOut, tags=["usage"])
    async def session_usage(user: User, session_id: uuid.UUID) -> UsageOut:
        await described(user, session_id)
        return UsageOut.of(await service(user).get_usage(session_id, user_id=user))

    @router.get("/usage", response_model=UsageOut, tags=["usage"])
    async def user_usage(user: User) -> UsageOut:
        return UsageOut.of(await service(user).get_user_usage(user))

    @router.get("/search", response_model=SearchPageOut, tags=["search"])
    async def search(
        user: User,
        q: Annotated[str, Query(description='words, "a phrase", -excluded, or')],
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
        cursor: str | None = None,
        agent_name: str | None = None,
    ) -> SearchPageOut:
        page = await service(user).search(
            user, q, limit=limit, cursor=cursor, agent_name=agent_name
        )
        return SearchPageOut(
            hits=[SearchHitOut.of(hit) for hit in page.items], next_cursor=page.next_cursor
        )

    @router.get(
        "/sessions/{session_id}/events",
        response_class=StreamingResponse,
        tags=["messages"],
        responses={
            200: {"description": "Server-Sent Events", "content": {"text/event-stream": {}}}
        },
    )
    async def session_events(
        request: Request,
        user: User,
        session_id: uuid.UUID,
        after_seq: Annotated[int | None, Query(ge=0, description="start after this seq")] = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        state = await described(user, session_id)
        start = _resume_point(last_event_id, after_seq, state)
        return await feeds.response(request, service(user), user, session_id, start)

    return router


def _json_object(text: str | None, what: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidInputError(f'{what} must be a JSON object, e.g. {{"project": "x"}}') from None
    if not isinstance(value, dict):
        raise InvalidInputError(f'{what} must be a JSON object, e.g. {{"project": "x"}}')
    return value


def _seq_precondition(if_match: str | None) -> int | None:
    """``If-Match: 5`` (or the entity tag ``"5"``): the seq the caller read last."""
    if if_match is None:
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise InvalidInputError(
            f"If-Match must be the last seq read (a whole number, 0 for an empty session), "
            f"got {if_match[:40]!r}"
        )
    return int(text)


def _resume_point(last_event_id: str | None, after_seq: int | None, state: SessionState) -> int:
    """Where a stream starts: after ``Last-Event-ID`` (a reconnect), else ``after_seq``, else
    after the session's current end (only new messages)."""
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise InvalidInputError("Last-Event-ID must be a seq this stream sent")
        start = int(last_event_id.strip())
        what = "Last-Event-ID"
    elif after_seq is not None:
        start, what = after_seq, "after_seq"
    else:
        return state.last_seq
    # Checked before the stream starts (a 400, not a stream that breaks off), and never past
    # the end: a later seq would silently skip the messages up to it once they come.
    if start > state.last_seq:
        raise InvalidInputError(
            f"{what} {start} is past the session's last message ({state.last_seq}); the "
            "session was rewound since, or the value is not one this stream sent: reconnect "
            "without it"
        )
    return start


__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_router", "problem_responses"]
