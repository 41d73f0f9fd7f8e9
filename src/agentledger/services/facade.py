"""SessionService: the facade over agentledger's use cases.

The use cases live one area per module (:mod:`.sessions`, :mod:`.history`, :mod:`.usage`,
:mod:`.search`, :mod:`.transfer`, :mod:`.maintenance`, :mod:`.partitions`, :mod:`.turns`,
:mod:`.checkpoints`, :mod:`.tokens`),
each a mixin over :class:`~agentledger.services.base.ServiceBase`; this class combines them
and adds the two ways to run the same service elsewhere: inside a host's transaction
(:meth:`SessionService.using`) and on behalf of one tenant (:meth:`SessionService.for_user`).
It depends only on a unit-of-work factory, so the same service runs on the Ledger's engine,
inside a host's transaction or on a fake for tests. The CLI and the framework adapters are
thin layers over it.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from agentledger.db.uow import UnitOfWork
from agentledger.domain.validation import check_name
from agentledger.services.checkpoints import Checkpoints
from agentledger.services.maintenance import Maintenance
from agentledger.services.partitions import Partitions
from agentledger.services.scoped_state import ScopedState
from agentledger.services.search import Search
from agentledger.services.sessions import Sessions
from agentledger.services.tokens import ApiTokens
from agentledger.services.transfer import Transfer
from agentledger.services.turns import Turns
from agentledger.services.usage import Usages


class SessionService(
    Sessions,
    Transfer,
    ScopedState,
    Usages,
    Search,
    Maintenance,
    Partitions,
    Turns,
    Checkpoints,
    ApiTokens,
):
    """Create, append to, read, list, search, export, delete and clean up agent sessions."""

    def using(self, connection: AsyncSession | AsyncConnection) -> SessionService:
        """The same service inside the caller's transaction; it never commits or closes it.

        Each operation runs in a SAVEPOINT of the caller's transaction: a failed operation
        leaves nothing behind, a successful one becomes durable when the caller commits. A
        connection without a transaction yet gets one begun, which stays the caller's.
        """
        if not isinstance(connection, (AsyncSession, AsyncConnection)):
            raise TypeError("using() takes an AsyncSession or an AsyncConnection")

        check = self._schema_check

        def borrowed(*, autocommit: bool = False, tenant: str | None = None) -> UnitOfWork:
            return UnitOfWork(borrow=connection, tenant=tenant, prepare=check)

        service = SessionService(
            borrowed,
            clock=self._clock,
            retry_conflicts=False,
            schema_check=check,
            telemetry=self._telemetry,
        )
        return service if self._tenant is None else service.for_user(self._tenant)

    def for_user(self, user_id: str) -> SessionService:
        """The same service acting for ``user_id``, for PostgreSQL row-level security.

        Every transaction it runs first names ``user_id`` in the transaction-local setting the
        policies read (``agentledger.user_id``), so with row-level security switched on
        (``agentledger db rls enable``) the database itself shows and accepts only that
        user's sessions, whatever the call. It costs the hot paths their single round trip
        (a transaction, plus one statement); without row-level security it changes nothing
        but that, and on SQLite it changes nothing at all. On a scoped service it replaces
        the tenant; it never stacks.
        """
        scope = check_name(user_id, "user_id")
        primary, reads = self._unscoped

        # A scoped service names its own tenant; the factories' argument is the protocol's.
        def scoped(*, autocommit: bool = False, tenant: str | None = None) -> UnitOfWork:
            return primary(autocommit=autocommit, tenant=scope)

        def scoped_reads(*, autocommit: bool = False, tenant: str | None = None) -> UnitOfWork:
            return reads(autocommit=autocommit, tenant=scope)

        service = SessionService(
            scoped,
            clock=self._clock,
            read_uow_factory=scoped_reads,
            retry_conflicts=self._retry_conflicts,
            schema_check=self._schema_check,
            telemetry=self._telemetry,
        )
        service._tenant = scope
        service._unscoped = self._unscoped
        return service
