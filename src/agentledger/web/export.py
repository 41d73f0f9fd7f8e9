"""``GET /sessions/{id}/export``: a transcript streamed page by page, memory flat.

The header is written from the session's row (its ``last_seq`` then), the messages follow in
pages of :data:`PAGE` up to that seq, so the server never holds more than one page whatever the
session's size. The formats are the library's (:mod:`agentledger.transcripts`): JSONL imports
back losslessly, Markdown is for reading.

Unlike ``export_session`` (one transaction, a snapshot), the pages are separate reads: a
session rewound or trimmed while it streams makes the JSONL stream stop early (the header's
``message_count`` then tells the importer the file is incomplete; export again). Messages
appended meanwhile are simply not part of this export.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

from fastapi.responses import StreamingResponse

from agentledger.domain.records import Checkpoint, SessionState
from agentledger.domain.transcripts.jsonl import jsonl_checkpoint, jsonl_header, jsonl_message
from agentledger.domain.transcripts.markdown import checkpoint_marks, markdown_head, markdown_seq
from agentledger.domain.transcripts.model import SessionTranscript, TranscriptMessage
from agentledger.errors import LedgerDatabaseError
from agentledger.services.facade import SessionService

Format = Literal["jsonl", "markdown"]

#: Messages read per query.
PAGE = 500

_MEDIA = {"jsonl": "application/x-ndjson", "markdown": "text/markdown; charset=utf-8"}
_SUFFIX = {"jsonl": "jsonl", "markdown": "md"}


def response(
    chat: SessionService, state: SessionState, format: Format, user: str
) -> StreamingResponse:
    """The streamed export of ``state``'s session (its owner checked by the caller)."""
    body = _jsonl(chat, state, user) if format == "jsonl" else _markdown(chat, state, user)
    filename = f"{state.id}.{_SUFFIX[format]}"
    return StreamingResponse(
        body,
        media_type=_MEDIA[format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _head(state: SessionState, checkpoints: tuple[Checkpoint, ...]) -> SessionTranscript:
    return SessionTranscript(
        id=state.id,
        user_id=state.user_id,
        agent_name=state.agent_name,
        metadata=state.metadata,
        created_at=state.created_at,
        updated_at=state.updated_at,
        title=state.title,
        archived_at=state.archived_at,
        trimmed_seq=state.trimmed_seq,
        name=state.name,
        checkpoints=checkpoints,
    )


async def _pages(
    chat: SessionService, state: SessionState, user: str
) -> AsyncIterator[list[TranscriptMessage]]:
    after = state.trimmed_seq
    while after < state.last_seq:
        page = await chat.get_messages(
            state.id, after_seq=after, before_seq=state.last_seq + 1, limit=PAGE, user_id=user
        )
        yield [TranscriptMessage(m.seq, m.item, m.created_at) for m in page.items]
        if page.next_after_seq is None:
            return
        after = page.next_after_seq


async def _jsonl(chat: SessionService, state: SessionState, user: str) -> AsyncIterator[str]:
    checkpoints = tuple(await chat.get_checkpoints(state.id, user_id=user))
    yield jsonl_header(_head(state, checkpoints), state.message_count) + "\n"
    expected = state.trimmed_seq + 1
    async for page in _pages(chat, state, user):
        for message in page:
            if message.seq != expected:
                raise LedgerDatabaseError(
                    f"session {state.id}: message {expected} is damaged or was removed during "
                    "the export; the transcript is incomplete (export again, or as Markdown)"
                )
            expected += 1
        yield "".join(jsonl_message(message) + "\n" for message in page)
    for checkpoint in checkpoints:
        yield jsonl_checkpoint(checkpoint) + "\n"


async def _markdown(chat: SessionService, state: SessionState, user: str) -> AsyncIterator[str]:
    head = _head(state, tuple(await chat.get_checkpoints(state.id, user_id=user)))
    marks = checkpoint_marks(head)
    yield "\n".join(markdown_head(head, marks)) + "\n"
    expected = state.trimmed_seq + 1
    async for page in _pages(chat, state, user):
        lines: list[str] = []
        for message in page:
            for missing in range(expected, message.seq):  # damaged rows are paged past
                lines.extend(markdown_seq(missing, None, True, marks))
            lines.extend(markdown_seq(message.seq, message, False, marks))
            expected = message.seq + 1
        yield "\n".join(lines) + "\n"
