"""Checkpoints: compaction that keeps every original.

A checkpoint is summary items standing for a session's history up to and including a seq.
What a model receives (:meth:`Checkpoints.get_context_items`, which the Agents SDK session
reads) is the newest checkpoint's items followed by every message after it; the history
itself is untouched, so exports, search, forks and ``get_session`` keep seeing every original.
A rewind, pop or clear that removes summarized messages drops the checkpoints covering them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from agentledger.domain.records import Checkpoint, ModelContext, NewRow, Usage
from agentledger.domain.validation import (
    check_count,
    check_limit,
    check_name,
    check_owner,
    check_usage,
    parse_session_id,
    prepare_item,
)
from agentledger.domain.windows import has_unanchored_outputs
from agentledger.errors import InvalidInputError, StaleSessionError
from agentledger.services.base import ServiceBase, SessionId, operation


class Checkpoints(ServiceBase):
    """Checkpoint use cases (see the module docstring)."""

    @operation()
    async def add_checkpoint(
        self,
        session_id: SessionId,
        items: Sequence[Any],
        *,
        upto_seq: int,
        model: str | None = None,
        usage: Usage | None = None,
        user_id: str | None = None,
        upto_message_id: uuid.UUID | None = None,
    ) -> Checkpoint:
        """Store ``items`` as the summary of the history up to and including ``upto_seq``,
        with what produced them and its token usage, in one transaction (the usage also
        counts in the session's totals, as a record of its own). From then on a model
        receives these items followed by the messages after ``upto_seq``. ``items`` are
        validated like appended items (nothing is written otherwise).

        ``upto_message_id``: the id of the message at ``upto_seq`` when the summary was made
        (``MessageRecord.id``). If that message is gone (a rewind, pop or clear, perhaps
        followed by new messages at the same seqs), the summary no longer describes the
        history: :class:`~agentledger.StaleSessionError` is raised and nothing is written."""
        sid = parse_session_id(session_id)
        user = check_owner(user_id)
        _rows, stored = _model_items(items, "summary items")
        upto = check_count(upto_seq, "upto_seq")
        name = None if model is None else check_name(model, "model")
        spent = Usage() if usage is None else check_usage(usage)
        now = self._now()
        async with self._uow() as uow:
            session = await self._lock(uow, sid, user)
            if upto > session.last_seq and upto_message_id is None:
                raise InvalidInputError(
                    f"upto_seq {upto} is past the end of session {sid} (last seq "
                    f"{session.last_seq}); a checkpoint summarizes stored messages"
                )
            # The message at upto_seq and the ones after it, in one read.
            around = await uow.messages.history(
                sid, after_seq=upto - 1, upto_seq=max(upto, session.last_seq)
            )
            if upto_message_id is not None:
                first = around[0] if around else None
                if first is None or first.seq != upto or first.id != upto_message_id:
                    raise StaleSessionError(
                        f"session {sid} changed while its summary was made: message {upto} "
                        "is no longer the one summarized (a rewind, pop or clear); nothing was "
                        "written, compact again",
                        last_seq=session.last_seq,
                        expected_last_seq=upto,
                    )
            if has_unanchored_outputs([m.item for m in around if m.seq > upto]):
                raise InvalidInputError(
                    f"upto_seq {upto} would separate a tool call from its output (the output "
                    "comes after it): a model would receive the output without its call; "
                    "end the checkpoint where a turn ends"
                )
            checkpoint = await uow.checkpoints.add(
                sid, upto_seq=upto, items=stored, model=name, usage=spent, now=now
            )
            if spent != Usage():
                # The session's usage totals count the compaction too, as a run of its own.
                await uow.usage.add(sid, spent, now)
            await uow.commit()
        return checkpoint

    @operation()
    async def replace_context(
        self,
        session_id: SessionId,
        items: Sequence[Any],
        *,
        model: str | None = None,
        user_id: str | None = None,
    ) -> Checkpoint | None:
        """Make what a model receives from the session exactly ``items``, in one transaction,
        keeping every original: a checkpoint covering the whole history (``None``, and the
        items appended as the history, when it is empty). How a wrapper that replaces the
        history wholesale (the SDK's ``OpenAIResponsesCompactionSession``) replaces it here,
        with no moment at which a reader sees it empty or half written."""
        sid = parse_session_id(session_id)
        user = check_owner(user_id)
        rows, stored = _model_items(items, "replacement items")
        name = None if model is None else check_name(model, "model")
        now = self._now()
        async with self._uow() as uow:
            session = await self._lock(uow, sid, user)
            if session.last_seq == session.trimmed_seq == 0:
                await uow.messages.append(sid, rows, user_id=user, now=now)
                await uow.commit()
                return None
            checkpoint = await uow.checkpoints.add(
                sid, upto_seq=session.last_seq, items=stored, model=name, usage=Usage(), now=now
            )
            await uow.commit()
        return checkpoint

    @operation()
    async def get_checkpoints(
        self, session_id: SessionId, *, user_id: str | None = None
    ) -> list[Checkpoint]:
        """Every checkpoint of the session, by the history they cover (a missing or another
        user's session has none)."""
        sid = parse_session_id(session_id)
        user = check_owner(user_id)
        async with self._read_uow(autocommit=True) as uow:
            if not await self._readable(uow, sid, user):
                return []
            return await uow.checkpoints.all(sid)

    @operation()
    async def get_context(
        self, session_id: SessionId, *, user_id: str | None = None
    ) -> ModelContext:
        """What a model receives from the session: its newest checkpoint (``None`` without
        one) and the message records after it, in order."""
        sid = parse_session_id(session_id)
        user = check_owner(user_id)
        async with self._read_uow(autocommit=True) as uow:
            state = await uow.sessions.read(sid, user)
            if state is None:
                return ModelContext(None, ())
            checkpoint = await uow.checkpoints.latest(sid)
            after = max(state.trimmed_seq, checkpoint.upto_seq if checkpoint else 0)
            messages = await uow.messages.history(sid, after_seq=after, upto_seq=state.last_seq)
        return ModelContext(checkpoint, tuple(messages))

    @operation()
    async def get_context_items(
        self, session_id: SessionId, limit: int | None = None, *, user_id: str | None = None
    ) -> list[Any]:
        """The items a model receives, in order: the newest checkpoint's summary items, then
        the items of every message after it (all of ``get_items`` without a checkpoint);
        with ``limit`` the latest ``limit`` of those. One statement for a session without
        checkpoints, two with."""
        sid = parse_session_id(session_id)
        user = check_owner(user_id)
        checked = check_limit(limit)
        if checked == 0:
            return []
        async with self._read_uow(autocommit=True) as uow:
            tail, upto = await uow.messages.context_items(sid, checked, user)
            if upto == 0 or (checked is not None and len(tail) >= checked):
                return tail
            # A checkpoint applies (or no message was read, which does not tell).
            if user is not None and not tail and not await self._readable(uow, sid, user):
                return []
            checkpoint = await uow.checkpoints.latest(sid)
        if checkpoint is None:
            return tail
        view = [*checkpoint.items, *tail]
        return view if checked is None else view[-checked:]


def _model_items(items: Sequence[Any], what: str) -> tuple[list[NewRow], list[Any]]:
    """Items a model is to receive instead of stored messages (a summary, a replacement),
    checked like appended items and for tool outputs without their call; their rows and
    their stored form."""
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, Sequence):
        raise TypeError(f"{what} must be a list of items")
    if not items:
        raise InvalidInputError(f"{what} need at least one item")
    rows = [prepare_item(item, index) for index, item in enumerate(items)]
    stored = [json.loads(row.item_json) for row in rows]
    if has_unanchored_outputs(stored):
        raise InvalidInputError(
            f"the {what} hold a tool output without its call; a model refuses such input, so "
            "keep calls and their outputs together (or summarize them as text)"
        )
    return rows, stored


__all__ = ["Checkpoints"]
