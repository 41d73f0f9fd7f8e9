"""What a framework adapter needs of agentledger: two small protocols, no framework imports.

An adapter (the Agents SDK's today; Google ADK's and LangChain's next) keeps a conversation
through a :class:`HistoryStore` (what :class:`~agentledger.SessionService` offers for one
conversation's items) and gets the store for a user from a :class:`StoreProvider` (what
:class:`~agentledger.Ledger` offers). Depending on these instead of the concrete classes keeps
the adapters out of the composition root, and lets a test hand them a fake that mypy checks
against the same protocol.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

from agentledger.domain.records import (
    AppendResult,
    Checkpoint,
    ModelContext,
    ScopedSession,
    ScopedSessionPage,
    ScopedStates,
    SessionRecord,
    SessionSpec,
    Usage,
)

#: A session id as callers pass it: a UUID or its string form.
SessionRef = uuid.UUID | str


@runtime_checkable
class HistoryStore(Protocol):
    """One user's conversations as an adapter reads and writes them. Another user's session
    behaves as a missing one: reads find nothing, writes raise ``SessionNotFoundError``. Each
    method returns an awaitable (declared so, rather than ``async def``, so that decorated
    service methods match)."""

    def get_items(
        self, session_id: SessionRef, limit: int | None = None, *, user_id: str | None = None
    ) -> Awaitable[list[Any]]: ...

    def add_items(
        self,
        session_id: SessionRef,
        items: Sequence[Any],
        *,
        user_id: str | None = None,
        create_as: SessionSpec | None = None,
        idempotency_key: str | None = None,
    ) -> Awaitable[AppendResult]: ...

    def pop_item(self, session_id: SessionRef, *, user_id: str | None = None) -> Awaitable[Any]: ...

    def clear_session(
        self, session_id: SessionRef, *, user_id: str | None = None
    ) -> Awaitable[None]: ...

    def can_write(self, session_id: SessionRef, *, user_id: str) -> Awaitable[bool]: ...

    def resolve_name(
        self,
        name: str,
        *,
        user_id: str,
        create_as: SessionSpec | None = None,
        new_id: uuid.UUID | None = None,
    ) -> Awaitable[uuid.UUID | None]: ...

    def create_session(
        self,
        user_id: str,
        agent_name: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        session_id: SessionRef | None = None,
        framework: str = ...,
        name: str | None = None,
    ) -> Awaitable[SessionRecord]: ...

    def record_usage(
        self, session_id: SessionRef, usage: Usage, *, user_id: str | None = None
    ) -> Awaitable[None]: ...

    def get_context_items(
        self, session_id: SessionRef, limit: int | None = None, *, user_id: str | None = None
    ) -> Awaitable[list[Any]]: ...

    def get_context(
        self, session_id: SessionRef, *, user_id: str | None = None
    ) -> Awaitable[ModelContext]: ...

    def add_checkpoint(
        self,
        session_id: SessionRef,
        items: Sequence[Any],
        *,
        upto_seq: int,
        model: str | None = None,
        usage: Usage | None = None,
        user_id: str | None = None,
        upto_message_id: uuid.UUID | None = None,
    ) -> Awaitable[Checkpoint]: ...

    def replace_context(
        self,
        session_id: SessionRef,
        items: Sequence[Any],
        *,
        model: str | None = None,
        user_id: str | None = None,
    ) -> Awaitable[Checkpoint | None]: ...

    def turn(
        self,
        session_id: SessionRef,
        *,
        user_id: str | None = None,
        lease: timedelta = ...,
        wait: timedelta = ...,
    ) -> AbstractAsyncContextManager[str]: ...


@runtime_checkable
class StoreProvider(Protocol):
    """Hands an adapter the store to use on a user's behalf, and names the owner of a session
    opened without one (or refuses: sessions are never filed under a shared default)."""

    def service_for(self, user_id: str | None) -> HistoryStore: ...

    def owner(self, user_id: str | None) -> str: ...


@runtime_checkable
class ScopedSessionStore(Protocol):
    """What an adapter of a framework with scoped state (Google ADK's app, user and session
    state) needs: sessions found by their user's name for them, read with their state,
    appended to with a state change in one transaction (compare-and-append), listed per app,
    deleted. :class:`~agentledger.SessionService` satisfies it."""

    def create_scoped_session(
        self,
        user_id: str,
        agent_name: str,
        name: str,
        *,
        framework: str,
        states: ScopedStates,
        update_time: float,
    ) -> Awaitable[ScopedSession]: ...

    def get_scoped_session(
        self,
        name: str,
        *,
        user_id: str,
        agent_name: str,
        framework: str,
        recent: int | None = None,
    ) -> Awaitable[ScopedSession | None]: ...

    def append_scoped(
        self,
        session_id: SessionRef,
        items: Sequence[Any],
        *,
        user_id: str,
        expected_last_seq: int,
        changes: ScopedStates,
        update_time: float,
    ) -> Awaitable[AppendResult]: ...

    def get_scoped_state(
        self, *, user_id: str, agent_name: str, framework: str
    ) -> Awaitable[ScopedStates]: ...

    def list_scoped_sessions(
        self,
        *,
        agent_name: str,
        framework: str,
        user_id: str | None = None,
        limit: int = ...,
        after: uuid.UUID | None = None,
    ) -> Awaitable[ScopedSessionPage]: ...

    def delete_session(
        self, session_id: SessionRef, *, user_id: str | None = None
    ) -> Awaitable[bool]: ...


@runtime_checkable
class ScopedStoreProvider(Protocol):
    """Hands an adapter the scoped store to use on a user's behalf (``None``: every user's,
    for listings across users). :class:`~agentledger.Ledger` satisfies it."""

    def service_for(self, user_id: str | None) -> ScopedSessionStore: ...
