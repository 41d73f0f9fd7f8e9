"""Transcripts: export a session exactly, import one back losslessly and idempotently."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agentledger.db.uow import UnitOfWork
from agentledger.domain.encoding import dump_json
from agentledger.domain.records import Checkpoint, NewRow, SessionState, TranscriptImport
from agentledger.domain.transcripts import (
    SessionTranscript,
    TranscriptMessage,
    check_transcript,
    not_after,
)
from agentledger.domain.validation import (
    check_count,
    check_framework,
    check_metadata,
    check_name,
    check_owner,
    check_state,
    check_title,
    parse_session_id,
    prepare_item,
)
from agentledger.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidInputError,
    SessionNotFoundError,
    StaleSessionError,
)
from agentledger.services.base import MAX_BATCH_SIZE, SessionId, operation
from agentledger.services.history import History


class Transfer(History):
    """Export and import use cases."""

    @operation()
    async def export_session(
        self, session_id: SessionId, *, user_id: str | None = None
    ) -> SessionTranscript:
        """The session and its whole (untrimmed) history, exactly as stored, for
        :mod:`agentledger.transcripts` (JSONL or Markdown).

        Read in one transaction that holds appends and trims back (PostgreSQL ``FOR SHARE``),
        so the transcript is a consistent snapshot.
        """
        sid = parse_session_id(session_id)
        user = check_owner(user_id)
        damaged: list[int] = []
        async with self._uow() as uow:
            state = await uow.sessions.read(sid, user, share_lock=True)
            if state is None:
                suffix = "" if user is None else f" for user {user!r}"
                raise SessionNotFoundError(
                    f"session {sid} does not exist{suffix}; check the id (list them with "
                    "`agentledger sessions list --user USER`)"
                )
            messages = await uow.messages.history(
                sid, after_seq=state.trimmed_seq, upto_seq=state.last_seq, damaged=damaged
            )
            checkpoints = await uow.checkpoints.all(sid)
            framework_state = await uow.scoped_state.session_state(sid)
        return SessionTranscript(
            id=state.id,
            user_id=state.user_id,
            agent_name=state.agent_name,
            metadata=state.metadata,
            created_at=state.created_at,
            updated_at=state.updated_at,
            messages=tuple(TranscriptMessage(m.seq, m.item, m.created_at) for m in messages),
            title=state.title,
            archived_at=state.archived_at,
            trimmed_seq=state.trimmed_seq,
            damaged_seqs=tuple(damaged),
            name=state.name,
            checkpoints=tuple(checkpoints),
            framework=state.framework,
            framework_state=framework_state,
        )

    @operation()
    async def import_session(
        self,
        transcript: SessionTranscript,
        *,
        user_id: str,
        session_id: SessionId | None = None,
        chunk_size: int = 500,
    ) -> TranscriptImport:
        """Store an exported session for ``user_id``, losslessly and idempotently.

        The session keeps its id (or takes ``session_id``), agent, title, metadata, creation
        and archive times, and each message keeps its ``seq``. Importing again adds nothing:
        messages the session already holds are compared, not copied, and the rest is appended
        in chunks stored under idempotency keys (``transcript:FIRST-LAST``), so an interrupted
        import resumes where it stopped. Everything is validated before anything is written,
        and a new session is created in the same transaction as its first chunk, so a failed
        import leaves no empty session behind. Times from the future (beyond this clock) are
        stored as now.
        """
        plan = self._import_plan(transcript, user_id, session_id, chunk_size)
        target, user, rows, now = plan.target, plan.user, plan.rows, plan.now
        added = 0
        async with self._uow() as uow:
            state = await uow.sessions.read(target)
            if state is None:
                await self._create_imported(uow, plan)
                last = plan.start
            else:
                last = await self._check_import_target(uow, state, user, plan.start, rows)
            pending = [seq for seq in sorted(rows) if seq > last]
            if state is None and pending:
                # The first chunk in the creating transaction: nothing is left half-imported.
                first, pending = pending[:chunk_size], pending[chunk_size:]
                added += await self._import_chunk(uow, plan, first) or 0
            await uow.commit()
        for index in range(0, len(pending), chunk_size):
            async with self._uow() as uow:
                result = await self._import_chunk(uow, plan, pending[index : index + chunk_size])
                await uow.commit()
            if result is None:  # imported before, then removed (popped or rewound): keep it so
                break
            added += result
        if transcript.checkpoints:
            await self._import_checkpoints(target, transcript)
        if state is None or added:
            async with self._uow() as uow:
                # A restored session keeps its place in "most recently updated first".
                await uow.sessions.update(target, updated_at=not_after(transcript.updated_at, now))
                await uow.commit()
        return TranscriptImport(target, added, state is None)

    async def _import_checkpoints(self, target: uuid.UUID, transcript: SessionTranscript) -> None:
        """Restore the transcript's checkpoints the session does not hold yet (an import run
        again adds none), where its history reaches them."""
        async with self._uow() as uow:
            state = await self._lock(uow, target, None)
            held = {_checkpoint_key(c) for c in await uow.checkpoints.all(target)}
            for checkpoint in transcript.checkpoints:
                key = _checkpoint_key(checkpoint)
                if key in held or checkpoint.upto_seq > state.last_seq:
                    continue
                await uow.checkpoints.add(
                    target,
                    upto_seq=checkpoint.upto_seq,
                    items=list(checkpoint.items),
                    model=checkpoint.model,
                    usage=checkpoint.usage,
                    now=not_after(checkpoint.created_at, self._now()),
                )
                held.add(key)
            await uow.commit()

    def _import_plan(
        self,
        transcript: SessionTranscript,
        user_id: str,
        session_id: SessionId | None,
        chunk_size: int,
    ) -> _ImportPlan:
        """Everything an import writes, validated before anything is: bad input writes
        nothing."""
        check_transcript(transcript)
        check_count(chunk_size, "chunk_size", maximum=MAX_BATCH_SIZE)
        for checkpoint in transcript.checkpoints:
            for index, item in enumerate(checkpoint.items):
                prepare_item(item, index)  # stored as the summary: checked like any item
            if checkpoint.model is not None:
                check_name(checkpoint.model, "checkpoint model")
        now = self._now()
        return _ImportPlan(
            transcript=transcript,
            target=transcript.id if session_id is None else parse_session_id(session_id),
            user=check_name(user_id, "user_id"),
            agent=check_name(transcript.agent_name, "agent_name"),
            title=None if transcript.title is None else check_title(transcript.title),
            name=None if transcript.name is None else check_name(transcript.name, "name"),
            framework=check_framework(transcript.framework),
            metadata=check_metadata(transcript.metadata),
            rows={m.seq: prepare_item(m.item, m.seq) for m in transcript.messages},
            stamps={
                m.seq: not_after(m.created_at, now)
                for m in transcript.messages
                if m.created_at is not None
            },
            now=now,
        )

    async def _create_imported(self, uow: UnitOfWork, plan: _ImportPlan) -> None:
        """Create the session an import restores, with the transcript's start and times."""
        name = plan.name
        if name is not None and await uow.sessions.find_named(plan.user, name, plan.target):
            name = None  # the user has a session of that name already: it keeps it
        archived = plan.transcript.archived_at
        await uow.sessions.create(
            session_id=plan.target,
            user_id=plan.user,
            agent_name=plan.agent,
            metadata=plan.metadata,
            now=plan.now,
            title=plan.title,
            created_at=not_after(plan.transcript.created_at, plan.now),
            archived_at=None if archived is None else not_after(archived, plan.now),
            start_seq=plan.start,
            name=name,
            framework=plan.framework,
        )
        own = plan.transcript.framework_state
        if own is not None:
            state = check_state(own["state"], "the transcript's framework state")
            await uow.scoped_state.put_session(plan.target, state, float(own["update_time"]))

    async def _check_import_target(
        self,
        uow: UnitOfWork,
        state: SessionState,
        user: str,
        start: int,
        rows: Mapping[int, NewRow],
    ) -> int:
        """An existing session of the importing user: move an empty one's start to the
        transcript's, check that the messages it holds are the transcript's; its last seq."""
        if state.user_id != user:
            raise AlreadyExistsError(
                f"session id {state.id} is taken by another user; import the transcript "
                "under a new id with session_id= (CLI: --session-id NEW_UUID)"
            )
        last, trimmed = state.last_seq, state.trimmed_seq
        if last == trimmed and last < start:
            await uow.sessions.move_empty_start(state.id, start)
            last = trimmed = start
        if last < start:
            raise InvalidInputError(
                f"session {state.id} ends at seq {last} but the transcript starts at "
                f"seq {start + 1}; import it under a new id with session_id="
            )
        damaged: list[int] = []
        stored = await uow.messages.history(
            state.id, after_seq=max(trimmed, start), upto_seq=last, damaged=damaged
        )
        different = [seq for seq in damaged if seq in rows]
        different += [
            m.seq
            for m in stored
            if m.seq in rows and dump_json(m.item, "item") != rows[m.seq].item_json
        ]
        if different:
            raise InvalidInputError(
                f"session {state.id} holds a different message at seq {min(different)} than "
                "the transcript; import it under a new id with session_id="
            )
        return last

    async def _import_chunk(
        self, uow: UnitOfWork, plan: _ImportPlan, seqs: list[int]
    ) -> int | None:
        """Append the messages ``seqs`` (consecutive) so they land at those seqs; how many
        were added (``None`` when this chunk was imported before and has since been
        removed)."""
        sid, stamps, first = plan.target, plan.stamps, seqs[0]
        key = f"transcript:{first}-{seqs[-1]}"
        chunk = [plan.rows[seq] for seq in seqs]
        try:
            result, last = await self._append_chunk(
                uow, sid, chunk, plan.user, key, plan.now, expected_last_seq=first - 1
            )
        except StaleSessionError as stale:
            # Retryable as a whole: the operation plans the import again on what is stored now.
            raise ConflictError(
                f"session {sid} changed during the import (it now ends at seq {stale.last_seq}, "
                f"expected {first - 1}); run the import again"
            ) from None
        if not result.created:
            return None if last < seqs[-1] else 0
        await uow.messages.set_created_at(
            sid, [(seq, stamps[seq]) for seq in seqs if seq in stamps]
        )
        return len(chunk)


@dataclass(frozen=True, slots=True)
class _ImportPlan:
    """A validated import: the target session, its attributes and the rows by seq."""

    transcript: SessionTranscript
    target: uuid.UUID
    user: str
    agent: str
    title: str | None
    name: str | None
    framework: str
    metadata: dict[str, Any]
    rows: Mapping[int, NewRow]
    stamps: Mapping[int, datetime]
    now: datetime

    @property
    def start(self) -> int:
        """The seq before the transcript's first message (retention may have trimmed)."""
        return self.transcript.trimmed_seq


def _checkpoint_key(checkpoint: Checkpoint) -> tuple[int, str, str | None]:
    """What makes two checkpoints the same one (their ids differ between databases)."""
    items = json.dumps(list(checkpoint.items), sort_keys=True, ensure_ascii=False)
    return checkpoint.upto_seq, items, checkpoint.model
