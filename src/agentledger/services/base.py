"""What every use case shares: the unit-of-work factories, the clock, the tenant, the ownership
rule, and the one decorator that turns database errors into LedgerErrors and retries conflicts.

Use cases are mixins over :class:`ServiceBase`, one module per area (sessions, history, usage,
search, transfer, maintenance); :class:`~agentledger.SessionService` combines
them. A use case validates its input completely before it opens a unit of work, so bad input
writes nothing, runs in as few units of work as it can, and hands out immutable records.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from agentledger import translation
from agentledger.db.uow import UnitOfWork, UnitOfWorkFactory
from agentledger.domain.records import SessionState
from agentledger.domain.time import utcnow
from agentledger.errors import (
    PermissionDeniedError,
    SessionNotFoundError,
    SessionReferencedError,
    referenced_error,
)
from agentledger.translation import run_translated

if TYPE_CHECKING:
    from agentledger.services.telemetry import DatabaseTelemetry

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="ServiceBase")

SessionId = uuid.UUID | str

#: Upper bound for the ``batch_size`` of bulk operations (ids of one batch are bound parameters;
#: asyncpg allows 32,767 per statement).
MAX_BATCH_SIZE = 10_000

_UNSCOPED_UNDER_RLS = (
    "row-level security confines this database role, and this service names no tenant, so "
    "every session is hidden from it; run tenant work through ledger.service.for_user(user_id) "
    "(or set AGENTLEDGER_ROW_LEVEL_SECURITY=true for SDK sessions and SessionAgent)"
)


def operation(
    *, retry: bool = True
) -> Callable[
    [Callable[Concatenate[S, P], Awaitable[T]]],
    Callable[Concatenate[S, P], Coroutine[Any, Any, T]],
]:
    """A public use case: database errors leave as LedgerErrors
    (:func:`translation.translated`), and with ``retry`` a :class:`ConflictError` reruns the
    whole operation under :data:`translation.CONFLICT_RETRY` when the service owns its units of
    work (a failed attempt was rolled back entirely). Inside :meth:`SessionService.using` the
    host's transaction is at stake, so the conflict surfaces at once. Batched operations whose
    earlier batches stay committed take ``retry=False`` (they report totals; call them again
    to resume).

    With telemetry on (:mod:`agentledger.services.telemetry`) the operation, retries included,
    is one span ``agentledger.<name>``; off, that costs one attribute test."""

    def decorate(
        method: Callable[Concatenate[S, P], Awaitable[T]],
    ) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
        name = method.__name__
        # The span's session id: the argument of the parameter named session_id, if any.
        parameters = inspect.signature(method).parameters
        named = parameters.get("session_id")
        position = (
            list(parameters).index("session_id") - 1  # after self
            if named is not None
            and named.kind in (named.POSITIONAL_ONLY, named.POSITIONAL_OR_KEYWORD)
            else None
        )

        @functools.wraps(method)
        async def run(service: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
            policy = translation.CONFLICT_RETRY if retry and service._retry_conflicts else None
            telemetry = service._telemetry
            if telemetry is None:
                return await run_translated(
                    lambda: method(service, *args, **kwargs), retry=policy, name=name
                )
            return await telemetry.operation(
                name,
                lambda: run_translated(
                    lambda: method(service, *args, **kwargs), retry=policy, name=name
                ),
                (
                    args[position]
                    if position is not None and position < len(args)
                    else kwargs.get("session_id")
                )
                if named is not None
                else None,
            )

        return run

    return decorate


class ServiceBase:
    """The state every use case runs on."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        *,
        clock: Callable[[], datetime] = utcnow,
        read_uow_factory: UnitOfWorkFactory | None = None,
        retry_conflicts: bool = True,
        schema_check: Callable[[], Awaitable[None]] | None = None,
        telemetry: DatabaseTelemetry | None = None,
    ) -> None:
        """``read_uow_factory`` serves history reads and listings (``get_items``,
        ``get_session``, ``list_user_sessions``, ``get_usage``, ``get_user_usage``), e.g. on a
        read replica; writes, and the reads a write depends on, always use ``uow_factory``.
        ``retry_conflicts``: rerun an operation the database aborted with a serialization
        failure or deadlock (only sound when ``uow_factory`` opens its own transactions).
        ``schema_check`` runs before the units of work :meth:`using` makes (the Ledger's
        "at head" check; its own factories run it already). ``telemetry``: trace the
        operations and record the append metrics (see :mod:`agentledger.services.telemetry`).
        """
        self._telemetry = telemetry
        self._schema_check = schema_check
        self._retry_conflicts = retry_conflicts
        self._tenant: str | None = None
        self._uow = uow_factory
        self._read_uow = read_uow_factory or uow_factory
        #: The unscoped factories, which every for_user() scopes afresh (never a scoped one).
        self._unscoped = (self._uow, self._read_uow)
        self._clock = clock

    @property
    def tenant(self) -> str | None:
        """The user this service acts for (``for_user``), or ``None``."""
        return self._tenant

    def _now(self) -> datetime:
        """The clock's time in UTC: records hand out UTC whatever zone the clock uses."""
        now = self._clock()
        if not isinstance(now, datetime) or now.tzinfo is None:
            raise TypeError("the clock must return an aware datetime, e.g. datetime.now(UTC)")
        return now.astimezone(UTC)

    async def _check_owner(
        self, uow: UnitOfWork, sid: uuid.UUID, user_id: str | None, *, missing_ok: bool
    ) -> None:
        """Before a write: raise SessionNotFoundError unless the session exists (or,
        ``missing_ok``, does not exist yet) and belongs to ``user_id``. Another user's session
        raises exactly like a missing one, so a write never confirms it exists.

        A write that needs the session, from a service that names no tenant while PostgreSQL
        row-level security confines the role, raises PermissionDeniedError instead: every
        session is hidden from it, and "not found" would hide the real mistake."""
        owner = await uow.sessions.owner_of(sid)
        if owner is None and missing_ok:
            return
        if owner is None and self._tenant is None and await uow.sessions.confined():
            raise PermissionDeniedError(_UNSCOPED_UNDER_RLS)
        if owner is not None and missing_ok and user_id is not None and owner != user_id:
            # A write that would create the session: the id being in use cannot be hidden (as
            # with any create under a chosen id), but nothing of that session is shown.
            raise SessionNotFoundError(
                f"session {sid} does not exist for user {user_id!r} and cannot be created: "
                "the id is in use; write under another id (or a session name)"
            )
        if owner is None or (user_id is not None and owner != user_id):
            suffix = "" if user_id is None else f" for user {user_id!r}"
            raise SessionNotFoundError(
                f"session {sid} does not exist{suffix}; create it with "
                "create_session() or check the id and user_id"
            )

    async def _readable(self, uow: UnitOfWork, sid: uuid.UUID, user_id: str | None) -> bool:
        """Before a read: whether the session exists and is ``user_id``'s (any owner's without
        one). A read of a missing or another user's session finds nothing, never an error."""
        owner = await uow.sessions.owner_of(sid)
        return owner is not None and (user_id is None or owner == user_id)

    async def _lock(self, uow: UnitOfWork, sid: uuid.UUID, user_id: str | None) -> SessionState:
        """Lock the session row for this unit of work, or raise SessionNotFoundError."""
        session = await uow.sessions.lock(sid, user_id)
        if session is None:
            await self._check_owner(uow, sid, user_id, missing_ok=False)
            raise SessionNotFoundError(f"session {sid} does not exist")  # pragma: no cover
        return session

    async def _explained(
        self, error: SessionReferencedError, session_ids: tuple[uuid.UUID, ...]
    ) -> SessionReferencedError:
        """``error`` naming the foreign key even where the database did not (SQLite: the
        candidate tables are asked which one holds a row of the session), and saying whether
        that key refers to the sessions or to their messages."""
        table, constraint, messages = error.table, error.constraint, error.messages
        if session_ids:
            async with self._uow(autocommit=True) as uow:
                if table is None:
                    key = await uow.maintenance.referring_key(session_ids[0])
                else:
                    key = await uow.maintenance.foreign_key(table, constraint)
            if key is not None:
                table, constraint = key.table, key.constraint
                messages = messages or key.on_messages
        return referenced_error(
            table, constraint, session_ids, messages=messages, sqlstate=error.sqlstate
        )

    async def _require_every_tenant(self, operation: str) -> None:
        """Refuse maintenance across tenants from a role that row-level security confines: it
        would see no session at all and report success while doing nothing."""
        if self._tenant is not None:
            raise PermissionDeniedError(
                f"{operation} acts on every tenant's sessions; run it on the unscoped service "
                "(ledger.service), not one made with for_user()"
            )
        async with self._uow(autocommit=True) as uow:
            confined = await uow.sessions.confined()
        if confined:
            raise PermissionDeniedError(
                f"{operation} acts on every tenant's sessions, but row-level security confines "
                "this database role to one tenant's, so it would find none; run it as the "
                "tables' owner (the role that runs `agentledger db upgrade`) or a role with "
                "BYPASSRLS"
            )


__all__ = [
    "MAX_BATCH_SIZE",
    "ServiceBase",
    "SessionId",
    "operation",
]
