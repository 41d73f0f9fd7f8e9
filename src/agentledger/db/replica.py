"""Reads on a read replica (``read_url``), with read-your-writes.

A :class:`ReadRouter` decides, for one Ledger, where each history read or listing runs: on the
read engine when that cannot miss a write this Ledger committed, else on the primary.

**The rule.** Every unit of work on the primary that commits counts a write
(:meth:`ReadRouter.wrote`: a counter, no round trip). A read asks :meth:`ReadRouter.use_replica`:

* no write since the replica was last seen caught up: the replica, with no extra statement
  (the steady state of listings, dashboards, and of an agent loop between its writes);
* writes not yet positioned: the primary's WAL insert position is taken once
  (``pg_current_wal_insert_lsn()``, one round trip on the primary). It is at least the end of
  every commit record written so far, hence of every write this Ledger has committed, and
  unlike ``pg_current_wal_lsn()`` it also covers commits still in the WAL buffers
  (``synchronous_commit = off``). One position covers every write before it, so a burst of
  writes costs one look-up, taken by the first read that follows them; writes that no read
  follows cost nothing;
* then the replica's replay position (``pg_last_wal_replay_lsn()``, one round trip on the
  replica) is compared with it: passed, the read runs on the replica and the fact is cached
  (the next reads cost nothing extra until the next write); not passed, the read runs on the
  primary, and the next read asks the replica again.

The check is its own statement, *before* the read: a query's snapshot is taken when it starts,
so a replay position read inside the same statement could have moved past the write after the
snapshot was taken without it, and the read would miss the write after all.

**Scope.** The writes are this Ledger's (process-wide: every task using it, every service and
SDK session it hands out). Writes by other processes, or inside a host's transaction
(``service.using(...)``, which this Ledger cannot see commit), are not tracked.

**What cannot be checked goes to the primary.** A read database that is not a streaming
standby (``pg_last_wal_replay_lsn()`` is NULL: a copy, a logical replica, a promoted standby)
or a pair that is not PostgreSQL on both sides has no comparable position: once this Ledger
has written, its reads go to the primary (a read-only Ledger keeps reading the read database).

**A replica that is down** (it cannot be reached or the connection is lost) makes the read
run on the primary instead, with no error for the caller: the router logs a WARNING (the URL
without its password) and sends reads to the primary for ``retry_after`` seconds before it
tries the replica again, so not every read pays a connect timeout. A read already on its way
to the replica when it went down fails with :class:`ReadReplicaUnavailableError`, which
:func:`~agentledger.translation.run_translated` answers by running the operation once more
(only read operations use these units, so that repeats nothing). The replica's schema check
runs at its first use, not at the Ledger's start, so a replica that is down then fails
nothing; a standby still replaying a fresh migration leaves reads to the primary until it
has it. Whenever the replica
engine opens a new connection to another server process than before (a restarted server may
resume from an older replay position, or the URL may lead to another server), the cached
"caught up" is forgotten and asked again; more connections to the same process (the pool
growing) change nothing.
``read_url`` must name one server, not a balancer across several: the replay position asked
for must be the one of the server that serves the read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

from agentledger.db.fastpath import StatementSpans
from agentledger.db.uow import EngineUnits
from agentledger.db.urls import safe_url
from agentledger.errors import (
    ConnectionLostError,
    DatabaseUnavailableError,
    ReadReplicaUnavailableError,
    SchemaNotReadyError,
)
from agentledger.translation import translate_db_error

logger = logging.getLogger("agentledger")

#: Positions as integers (bytes into the WAL), whatever the driver makes of ``pg_lsn``.
_PRIMARY_POSITION = text("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint")
_REPLAY_POSITION = text("SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint")
#: When the server process started: the same value, the same process (see
#: ``ReadRouter._new_replica_connection``).
_SERVER_STARTED = "SELECT pg_postmaster_start_time()::text"

#: Seconds reads stay on the primary after the replica failed, before it is tried again.
DEFAULT_RETRY_AFTER = 5.0


class ReadRouter:
    """Where the reads of one Ledger run: the read engine or the primary (see the module)."""

    def __init__(
        self,
        primary: AsyncEngine,
        replica: AsyncEngine,
        *,
        prepare: Callable[[], Awaitable[None]],
        schema_head: Callable[[AsyncEngine], Awaitable[tuple[str, tuple[str, ...]]]],
        retry_after: float = DEFAULT_RETRY_AFTER,
        clock: Callable[[], float] = time.monotonic,
        primary_spans: StatementSpans | None = None,
        replica_spans: StatementSpans | None = None,
    ) -> None:
        """``prepare`` runs before every unit of work (the Ledger's schema check);
        ``schema_head(engine)``: agentledger's head revision and the revisions applied on
        ``engine`` (the replica must be at head before it serves a read); ``*_spans``: the
        telemetry of each engine's fast-path statements (see :class:`EngineUnits`)."""
        self._primary = primary
        self._replica = replica
        #: The units of work on the primary (they count writes) and on the replica.
        self.primary_units = EngineUnits(
            primary, prepare, statement_spans=primary_spans, wrote=self.wrote
        )
        self.replica_units = EngineUnits(replica, prepare, statement_spans=replica_spans)
        self._primary_spans, self._replica_spans = primary_spans, replica_spans
        self._schema_head = schema_head
        self._retry_after = retry_after
        self._clock = clock
        self._positions = primary.dialect.name == "postgresql" == replica.dialect.name
        #: Commits counted (a generation), and the newest generation :attr:`_mark` covers.
        self._writes = 0
        self._positioned = 0
        #: The primary's WAL position at or after every positioned write (monotonic max).
        self._mark = 0
        #: The newest replay position the replica was seen at since its last new connection.
        self._replayed = 0
        #: False once the read database was seen not to be a standby.
        self._standby = True
        self._schema_checked = False
        self._down_until: float | None = None
        #: New connections the replica engine opened (each may lead to a server that resumed
        #: from an older replay position).
        self._connections = 0
        #: The server process the last counted connection reached (see _server).
        self._server_seen: str | None = None
        #: Whether the current outage was logged (one WARNING per outage, not per retry).
        self._outage_logged = False
        event.listen(replica.sync_engine, "connect", self._new_replica_connection)

    # -- what the Ledger's units of work report --------------------------------------------

    def wrote(self) -> None:
        """A unit of work on the primary committed (or ran single statements that may have)."""
        self._writes += 1

    # -- the Route of the Ledger's read units of work ---------------------------------------

    async def choose(self) -> EngineUnits | None:
        """The replica's units when :meth:`use_replica` says so (else the primary's stay)."""
        replica = await self.use_replica()
        spans = self._replica_spans if replica else self._primary_spans
        if spans is not None:
            spans.serving()  # the operation's telemetry names the database that served it
        return self.replica_units if replica else None

    def ticket(self) -> int:
        """The replica engine's count of new connections, when a read starts on it."""
        return self._connections

    def ended(self, ticket: int, error: BaseException | None) -> BaseException | None:
        """A read on the replica ended. Failed: see :meth:`replica_failed`. Succeeded while
        the replica engine opened a new connection (the pool replaced a dead one, say): that
        server may have resumed from an older replay position than the one the read was
        trusted with, so the read is run again, once the replica was asked where it is."""
        if error is not None:
            return self._instead(error)
        self._reachable()
        if self._connections != ticket:
            return ReadReplicaUnavailableError(
                f"the read replica at {safe_url(self._replica.url)} was reconnected during a "
                "read, so the read could not be trusted to hold this ledger's writes; "
                "agentledger runs it again (this error only leaves the library when that "
                "happened twice in a row)"
            )
        return None

    def replica_failed(self, error: BaseException) -> ReadReplicaUnavailableError | None:
        """A read on the replica failed with ``error``. When the replica is out of reach (the
        connection failed or was lost): reads go to the primary for ``retry_after`` seconds,
        and the returned error tells :func:`~agentledger.translation.run_translated` to run
        the read again (there). Any other error (``None``) is the caller's."""
        if not isinstance(error, Exception) or not isinstance(
            translate_db_error(error), ConnectionLostError
        ):
            return None
        self._down(error)
        return ReadReplicaUnavailableError(
            f"the read replica at {safe_url(self._replica.url)} cannot be reached; agentledger "
            "reads from the primary instead (this error only leaves the library when the read "
            "could not be run again there: check that the replica is running and reachable)"
        )

    # -- the decision ------------------------------------------------------------------------

    async def use_replica(self) -> bool:
        """Whether the next read may run on the replica without missing this Ledger's writes."""
        if self._down_until is not None:
            if self._clock() < self._down_until:
                return False
            self._down_until = None
            self._replayed = 0  # back from a failure: ask where it is
        if self._writes != self._positioned and not await self._position_writes():
            return False
        if self._mark <= self._replayed:
            return await self._schema_ready()
        if not self._standby:
            return False
        try:
            replayed = await self._replay_position()
        except Exception as error:
            self._reraise_unless_unreachable(error)
            return False
        if replayed is None:
            self._standby = False
            logger.info(
                "agentledger: the read database at %s is not a streaming standby "
                "(pg_last_wal_replay_lsn() is NULL), so it cannot show whether it has this "
                "ledger's writes; after a write, this ledger reads from the primary",
                safe_url(self._replica.url),
            )
            return False
        self._reachable()
        self._replayed = max(self._replayed, replayed)
        return self._mark <= self._replayed and await self._schema_ready()

    async def _position_writes(self) -> bool:
        """Take the primary's position for the writes counted so far; False when positions
        cannot be compared (not PostgreSQL on both sides, or not a standby)."""
        if not self._positions or not self._standby:
            return False
        generation = self._writes
        position = await self._scalar(self.primary_units, _PRIMARY_POSITION)
        self._mark = max(self._mark, int(position))
        self._positioned = max(self._positioned, generation)
        return True

    async def _replay_position(self) -> int | None:
        position = await self._scalar(self.replica_units, _REPLAY_POSITION)
        return None if position is None else int(position)

    async def _schema_ready(self) -> bool:
        """The replica's schema check, passed once (it follows the primary's migrations). A
        streaming standby not at head yet is still replaying them: reads stay on the primary
        until it is. Any other read database off head is a mistake to report."""
        if self._schema_checked:
            return True
        try:
            head, current = await self._schema_head(self._replica)
            replaying = (
                head not in current
                and self._positions
                and await self._replay_position() is not None
            )
        except Exception as error:
            self._reraise_unless_unreachable(error)
            return False
        if replaying:
            return False
        if head not in current:
            found = ", ".join(current) if current else "no agentledger tables"
            raise SchemaNotReadyError(
                f"the read database at {safe_url(self._replica.url)} is not at agentledger's "
                f"schema revision {head} (found: {found}); read_url must point at a replica of "
                "the primary database (which follows its migrations), or be left unset"
            )
        self._schema_checked = True
        return True

    @staticmethod
    async def _scalar(units: EngineUnits, statement: Executable) -> Any:
        """One value, in a single-statement unit of work (the asyncpg fast path where it
        runs, which that unit decides): one round trip."""
        async with units(autocommit=True) as uow:
            return await uow.statements.scalar(statement, {})

    def _down(self, error: BaseException) -> None:
        first = not self._outage_logged
        self._outage_logged = True
        self._down_until = self._clock() + self._retry_after
        self._replayed = 0
        if first:
            logger.warning(
                "agentledger: the read replica at %s cannot be reached (%s); reads go to the "
                "primary, and the replica is tried again in %.1f s",
                safe_url(self._replica.url),
                type(translate_db_error(error)).__name__,
                self._retry_after,
            )

    def _reachable(self) -> None:
        """The replica answered: an outage (if any) is over, and the next one is logged."""
        if self._outage_logged:
            self._outage_logged = False
            logger.info(
                "agentledger: the read replica at %s is reachable again; reads go there",
                safe_url(self._replica.url),
            )

    def _instead(self, error: BaseException) -> BaseException | None:
        """What a failure on the replica raises: the rerun on the primary when the replica
        is out of reach, the error naming read_url when it is the read database's
        configuration, else ``None`` (the error itself)."""
        return self.replica_failed(error) or self._named(error)

    def _reraise_unless_unreachable(self, error: Exception) -> None:
        """After a check on the replica failed: return when the replica is out of reach (the
        read goes to the primary); raise anything else, as :meth:`_instead` says."""
        instead = self._instead(error)
        if isinstance(instead, ReadReplicaUnavailableError):
            return
        if instead is None:
            raise error
        raise instead from error

    def _named(self, error: BaseException) -> BaseException | None:
        """A configuration error of the read database (credentials, database name) names
        the read URL, or the caller would look for it in the primary's."""
        if not isinstance(error, Exception):
            return None
        translated = translate_db_error(error)
        if not isinstance(translated, DatabaseUnavailableError):
            return None
        return DatabaseUnavailableError(
            f"the read database at {safe_url(self._replica.url)} (read_url): {translated}",
            sqlstate=translated.sqlstate,
        )

    def _new_replica_connection(self, dbapi_connection: Any, _record: Any) -> None:
        """A new connection to the read database. Only one to another server process (a
        restarted standby, or another server behind the URL) may have an older replay
        position: one to the same process, such as the pool growing under concurrent reads,
        changes nothing (a process's replay position only moves forward), and counting it
        made every read in flight run again until one failed for good."""
        server = self._server(dbapi_connection) if self._positions else None
        if server is not None and server == self._server_seen:
            return
        self._server_seen = server
        self._replayed = 0
        self._connections += 1

    @staticmethod
    def _server(dbapi_connection: Any) -> str | None:
        """Which server process the connection reached (its start time), or ``None`` when
        that cannot be told (then every new connection counts as another server)."""
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(_SERVER_STARTED)
                row = cursor.fetchone()
            finally:
                cursor.close()
        except Exception:  # unknown is the safe answer: the read is checked again
            return None
        return None if row is None or row[0] is None else str(row[0])

    def close(self) -> None:
        """Stop listening to the replica engine's connections."""
        if event.contains(self._replica.sync_engine, "connect", self._new_replica_connection):
            event.remove(self._replica.sync_engine, "connect", self._new_replica_connection)
