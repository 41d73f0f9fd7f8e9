"""Maintenance at scale: cleanup of idle sessions, retention policies, user erasure.

One way to delete sessions in bulk (:meth:`Maintenance._delete_batches`): batches chosen by
keyset, each its own short transaction holding at most ``batch_size`` sessions and a message
budget, so a cleanup never holds locks for long; a session that another table's foreign key
keeps is skipped (tried alone in a SAVEPOINT), reported, and never chosen again in the run.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from agentledger.db.repositories.maintenance import AgentScope, Candidate
from agentledger.db.uow import UnitOfWork
from agentledger.domain.records import BlockedSession, ErasureReport
from agentledger.domain.retention import (
    DEFAULT_POLICY_KEY,
    RetentionCounts,
    RetentionPolicy,
    RetentionReport,
    parse_policies,
    trim_cut,
)
from agentledger.domain.time import cutoff_before
from agentledger.domain.validation import check_count, check_name
from agentledger.errors import PermissionDeniedError, SessionReferencedError
from agentledger.services.base import MAX_BATCH_SIZE, ServiceBase, operation

logger = logging.getLogger("agentledger")

#: Messages one delete batch may hold together (cleanup, retention): a batch of big sessions
#: is as short a transaction as a batch of small ones; a single bigger session goes alone.
MAX_BATCH_MESSAGES = 20_000

Progress = Callable[[RetentionCounts, list[BlockedSession]], None]
Deleted = list[tuple[uuid.UUID, int, int]]


class Maintenance(ServiceBase):
    """Cleanup, retention and erasure use cases."""

    @operation(retry=False)
    async def cleanup_sessions(
        self,
        older_than: timedelta,
        *,
        dry_run: bool = False,
        batch_size: int = 500,
        max_batch_messages: int = MAX_BATCH_MESSAGES,
        on_progress: Callable[[int], None] | None = None,
        on_blocked: Callable[[BlockedSession], None] | None = None,
    ) -> int:
        """Delete sessions not updated for ``older_than``, in batches; return how many.

        Each batch is its own short transaction of at most ``batch_size`` sessions holding at
        most ``max_batch_messages`` messages together (a single bigger session goes alone),
        so the cleanup never holds locks for long. ``dry_run`` only counts. ``on_progress``
        receives the running total. A session that a row of another table refers to (a
        foreign key without ``ON DELETE``) is skipped, logged as a warning and passed to
        ``on_blocked``; the rest are deleted.
        """
        cutoff = self._cutoff(older_than)
        check_count(batch_size, "batch_size", maximum=MAX_BATCH_SIZE)
        check_count(max_batch_messages, "max_batch_messages")
        await self._require_every_tenant("cleanup")
        if dry_run:
            sessions, _messages, kept = await self._count_idle(AgentScope(), cutoff)
            if on_blocked is not None:
                for session in kept:
                    on_blocked(session)
            return sessions
        total = 0

        def progress(counts: RetentionCounts, blocked: list[BlockedSession]) -> None:
            nonlocal total
            total += counts.deleted_sessions
            if on_progress is not None and counts.deleted_sessions:
                on_progress(total)
            if on_blocked is not None:
                for session in blocked:
                    on_blocked(session)

        await self._retire_idle(
            AgentScope(), cutoff, batch_size, progress, max_messages=max_batch_messages
        )
        return total

    @operation()
    async def count_idle_sessions(self, older_than: timedelta) -> tuple[int, int]:
        """``(sessions, messages)`` a cleanup with ``older_than`` would delete now."""
        cutoff = self._cutoff(older_than)
        await self._require_every_tenant("cleanup")
        sessions, messages, _kept = await self._count_idle(AgentScope(), cutoff)
        return sessions, messages

    async def _count_idle(
        self, scope: AgentScope, cutoff: datetime, *, unarchived_only: bool = False
    ) -> tuple[int, int, list[BlockedSession]]:
        """What deleting the scope's idle sessions would do: ``(sessions, messages)`` it
        would delete, and the sessions another table's foreign key would keep."""
        async with self._uow(autocommit=True) as uow:
            kept = [] if unarchived_only else await uow.maintenance.kept_idle(scope, cutoff)
            sessions, messages = await uow.maintenance.count_idle(
                scope,
                cutoff,
                unarchived_only=unarchived_only,
                excluding=[session.session_id for session in kept],
            )
        return sessions, messages, kept

    def _cutoff(self, older_than: object) -> datetime:
        if not isinstance(older_than, timedelta) or older_than < timedelta(0):
            raise ValueError("older_than must be a non-negative datetime.timedelta")
        return cutoff_before(self._now(), older_than)

    @operation(retry=False)
    async def erase_user(
        self,
        user_id: str,
        *,
        batch_size: int = 500,
        dry_run: bool = False,
        on_progress: Callable[[ErasureReport], None] | None = None,
    ) -> ErasureReport:
        """Remove every session, message and usage record of ``user_id``; report the counts.

        Works in batches of up to ``batch_size`` sessions, each its own short transaction, so
        a user with a large history never holds locks for long; an interrupted erasure is
        finished by calling it again. ``dry_run`` only counts. ``on_progress`` receives the
        running totals after each batch. Stop the user's traffic first: a session created
        while the erasure runs may survive it. Its transactions name ``user_id`` to PostgreSQL
        row-level security (as ``for_user`` does), so it erases from the application's role
        too, where an unscoped service would find nothing. Sessions that rows of another
        table refer to (foreign keys without ``ON DELETE``) stay, listed in ``blocked``.
        """
        user_id = check_name(user_id, "user_id")
        check_count(batch_size, "batch_size", maximum=MAX_BATCH_SIZE)
        if self._tenant is not None and self._tenant != user_id:
            raise PermissionDeniedError(
                f"this service acts for {self._tenant!r}, so it can neither see nor erase "
                f"{user_id!r}'s sessions; erase with ledger.service.erase_user({user_id!r})"
            )
        if dry_run:
            async with self._uow(autocommit=True, tenant=user_id) as uow:
                kept = await uow.maintenance.kept_of_user(user_id)
                counts = await uow.maintenance.count_for_user(
                    user_id, excluding=[session.session_id for session in kept]
                )
            return ErasureReport(*counts, tuple(kept))
        total = ErasureReport()
        after: uuid.UUID | None = None
        while True:
            try:
                async with self._uow(tenant=user_id) as uow:
                    batch = await uow.maintenance.user_sessions(
                        user_id, after=after, limit=batch_size
                    )
                    if not batch:
                        # The user's framework state (ADK's user: keys) goes with them.
                        await uow.scoped_state.erase_user(user_id)
                        await uow.commit()
                        return total
                    deleted, blocked = await self._delete_sessions(uow, [c.id for c in batch])
                    await uow.commit()
            except SessionReferencedError:  # refused at commit: each session on its own
                deleted, blocked = await self._delete_each([c.id for c in batch], tenant=user_id)
            after = batch[-1].id
            total += ErasureReport(
                len(deleted),
                sum(messages for _sid, messages, _usage in deleted),
                sum(usage for _sid, _messages, usage in deleted),
                tuple(blocked),
            )
            if on_progress is not None:
                on_progress(total)

    @operation(retry=False)
    async def apply_retention(
        self,
        policies: Mapping[str, RetentionPolicy | Mapping[str, Any]],
        *,
        dry_run: bool = False,
        batch_size: int = 500,
        on_progress: Callable[[RetentionReport], None] | None = None,
    ) -> RetentionReport:
        """Apply per-agent retention policies (see :mod:`agentledger.retention`).

        First idle sessions are deleted (or archived), then long histories are trimmed from
        the front, never splitting a tool call from its output. Every batch is its own short
        transaction: idle sessions ``batch_size`` at a time; trimming one session at a time,
        under its row lock, advancing ``trimmed_seq`` so the history stays gap-free.
        ``dry_run`` computes the same report without writing. ``on_progress`` receives the
        running report after every batch. Sessions that rows of another table refer to are
        left in place and listed in the report's ``blocked``.
        """
        checked = parse_policies(policies)
        check_count(batch_size, "batch_size", maximum=MAX_BATCH_SIZE)
        await self._require_every_tenant("retention")
        now = self._now()
        named = frozenset(name for name in checked if name != DEFAULT_POLICY_KEY)
        counts: dict[str, RetentionCounts] = {name: RetentionCounts() for name in checked}
        blocked: list[BlockedSession] = []

        def progress(name: str, done: RetentionCounts, kept: list[BlockedSession]) -> None:
            counts[name] = counts[name] + done
            blocked.extend(kept)
            if on_progress is not None:
                on_progress(RetentionReport(dry_run, dict(counts), tuple(blocked)))

        for name, policy in checked.items():
            scope = AgentScope(None, named) if name == DEFAULT_POLICY_KEY else AgentScope(name)
            report = functools.partial(progress, name)
            if policy.days is not None:
                await self._apply_days(scope, policy, now, dry_run, batch_size, report)
        for name, policy in checked.items():
            scope = AgentScope(None, named) if name == DEFAULT_POLICY_KEY else AgentScope(name)
            if policy.max_messages is not None:
                # Sessions this policy deletes are not trimmed (nor counted in a dry run).
                deleting = None
                if policy.days is not None and not policy.archive:
                    deleting = cutoff_before(now, policy.days)
                await self._trim_sessions(
                    scope,
                    policy.max_messages,
                    dry_run,
                    batch_size,
                    functools.partial(progress, name),
                    active_since=deleting,
                )
        return RetentionReport(dry_run, counts, tuple(blocked))

    async def _apply_days(
        self,
        scope: AgentScope,
        policy: RetentionPolicy,
        now: datetime,
        dry_run: bool,
        batch_size: int,
        progress: Progress,
    ) -> None:
        assert policy.days is not None
        cutoff = cutoff_before(now, policy.days)
        if not dry_run:
            max_messages = None if policy.archive else MAX_BATCH_MESSAGES
            await self._retire_idle(
                scope,
                cutoff,
                batch_size,
                progress,
                archive_at=now if policy.archive else None,
                max_messages=max_messages,
            )
            return
        sessions, messages, kept = await self._count_idle(
            scope, cutoff, unarchived_only=policy.archive
        )
        if policy.archive:
            progress(RetentionCounts(archived_sessions=sessions), [])
        else:
            counts = RetentionCounts(
                deleted_sessions=sessions, deleted_messages=messages, blocked_sessions=len(kept)
            )
            progress(counts, kept)

    async def _retire_idle(
        self,
        scope: AgentScope,
        cutoff: datetime,
        batch_size: int,
        progress: Progress,
        *,
        archive_at: datetime | None = None,
        max_messages: int | None = None,
    ) -> None:
        """Delete (or, with ``archive_at``, archive) the scope's sessions idle since
        ``cutoff``: batches chosen by keyset, so a session that cannot be deleted is passed,
        never chosen again."""
        after: tuple[datetime, uuid.UUID] | None = None
        while True:
            try:
                async with self._uow() as uow:
                    batch = await uow.maintenance.idle(
                        scope,
                        cutoff,
                        after=after,
                        limit=batch_size,
                        max_messages=max_messages,
                        unarchived_only=archive_at is not None,
                    )
                    if not batch:
                        return
                    counts, blocked = await self._retire_batch(uow, batch, cutoff, archive_at)
                    await uow.commit()
            except SessionReferencedError:  # refused at commit: each session on its own
                deleted, blocked = await self._delete_each(
                    [candidate.id for candidate in batch], idle_before=cutoff
                )
                counts = _deletion_counts(deleted, blocked)
            after = batch[-1].key
            progress(counts, blocked)

    async def _retire_batch(
        self,
        uow: UnitOfWork,
        batch: list[Candidate],
        cutoff: datetime,
        archive_at: datetime | None,
    ) -> tuple[RetentionCounts, list[BlockedSession]]:
        ids = [candidate.id for candidate in batch]
        if archive_at is not None:
            done = await uow.maintenance.archive(ids, idle_before=cutoff, now=archive_at)
            return RetentionCounts(archived_sessions=done), []
        deleted, blocked = await self._delete_sessions(uow, ids, idle_before=cutoff)
        return _deletion_counts(deleted, blocked), blocked

    async def _delete_sessions(
        self,
        uow: UnitOfWork,
        session_ids: list[uuid.UUID],
        *,
        idle_before: datetime | None = None,
    ) -> tuple[Deleted, list[BlockedSession]]:
        """Delete these sessions in ``uow``, skipping those another table's foreign key keeps
        (each tried alone in a SAVEPOINT once the batch was refused): ``(deleted, blocked)``."""
        try:
            async with uow.savepoint():
                return await uow.maintenance.delete(session_ids, idle_before=idle_before), []
        except SessionReferencedError:
            pass
        deleted: Deleted = []
        blocked: list[BlockedSession] = []
        for sid in session_ids:
            try:
                async with uow.savepoint():
                    deleted += await uow.maintenance.delete([sid], idle_before=idle_before)
            except SessionReferencedError as error:
                blocked.append(BlockedSession(sid, error.table, error.constraint))
        named: list[BlockedSession] = []
        for session in blocked:
            if session.table is None:  # SQLite does not name the foreign key: find its table
                key = await uow.maintenance.referring_key(session.session_id)
                if key is not None:
                    session = BlockedSession(session.session_id, key.table, key.constraint)
            named.append(session)
        _log_blocked(named)
        return deleted, named

    async def _delete_each(
        self,
        session_ids: list[uuid.UUID],
        *,
        idle_before: datetime | None = None,
        tenant: str | None = None,
    ) -> tuple[Deleted, list[BlockedSession]]:
        """Delete these sessions one transaction each: what a batch falls back to when a
        foreign key checked at commit (deferred) refused it as a whole."""
        deleted: Deleted = []
        blocked: list[BlockedSession] = []
        for sid in session_ids:
            try:
                async with self._uow(tenant=tenant) as uow:
                    gone = await uow.maintenance.delete([sid], idle_before=idle_before)
                    await uow.commit()
            except SessionReferencedError as error:
                explained = await self._explained(error, (sid,))
                blocked.append(BlockedSession(sid, explained.table, explained.constraint))
            else:
                deleted += gone
        _log_blocked(blocked)
        return deleted, blocked

    async def _trim_sessions(
        self,
        scope: AgentScope,
        max_messages: int,
        dry_run: bool,
        batch_size: int,
        progress: Progress,
        *,
        active_since: datetime | None,
    ) -> None:
        after: uuid.UUID | None = None
        while True:
            async with self._uow(autocommit=True) as uow:
                candidates = await uow.maintenance.trim_candidates(
                    scope, max_messages, after=after, limit=batch_size, active_since=active_since
                )
            sessions = trimmed = 0
            blocked: list[BlockedSession] = []
            for sid in candidates:
                try:
                    cut = await self._trim_session(sid, max_messages, dry_run)
                except SessionReferencedError as error:
                    explained = await self._explained(error, (sid,))
                    blocked.append(BlockedSession(sid, explained.table, explained.constraint))
                    continue
                if cut:
                    sessions += 1
                    trimmed += cut
            if sessions or blocked:
                counts = RetentionCounts(
                    trimmed_sessions=sessions,
                    trimmed_messages=trimmed,
                    blocked_sessions=len(blocked),
                )
                progress(counts, blocked)
            if len(candidates) < batch_size:
                return
            after = candidates[-1]

    async def _trim_session(self, sid: uuid.UUID, max_messages: int, dry_run: bool) -> int:
        """Trim one session to at most ``max_messages`` under its row lock; how many were
        trimmed (see :func:`agentledger.retention.trim_cut`)."""
        async with self._uow() as uow:
            state = await (uow.sessions.read(sid) if dry_run else uow.sessions.lock(sid))
            if state is None or state.message_count <= max_messages:
                return 0
            messages = await uow.messages.history(
                sid, after_seq=state.trimmed_seq, upto_seq=state.last_seq
            )
            cut = trim_cut([message.item for message in messages], max_messages)
            if cut and not dry_run:
                await uow.messages.trim_front(sid, state.trimmed_seq + cut)
                await uow.commit()
        return cut


def _deletion_counts(deleted: Deleted, blocked: list[BlockedSession]) -> RetentionCounts:
    return RetentionCounts(
        deleted_sessions=len(deleted),
        deleted_messages=sum(messages for _sid, messages, _usage in deleted),
        blocked_sessions=len(blocked),
    )


def _log_blocked(blocked: list[BlockedSession]) -> None:
    for session in blocked:
        logger.warning(
            "agentledger: session %s was not deleted: table %s refers to it (foreign key "
            "%s without ON DELETE)",
            session.session_id,
            session.table or "(unknown)",
            session.constraint or "(unnamed)",
        )
