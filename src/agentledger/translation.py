"""The one place database errors are translated, and the retry policy composed on top.

Database errors are classified by SQLSTATE (PostgreSQL) or the SQLite error name, never by
driver exception class, so the mapping survives driver changes.

* :func:`translated` is the one error-wrapping context manager: database and driver errors
  raised inside it leave as the :class:`~agentledger.errors.LedgerError`
  :func:`translate_db_error` makes of them; anything else (a ``TypeError`` for a wrong
  argument) passes unchanged.
* :func:`run_translated` composes :data:`CONFLICT_RETRY` on top: an operation the database
  aborted to resolve a conflict runs again, whole, a bounded number of times.

Like :mod:`agentledger.errors` it imports no SQLAlchemy (database exceptions are recognised by
what they carry), so every layer may use it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from agentledger.errors import (
    AlreadyExistsError,
    ConfigurationError,
    ConflictError,
    ConnectionLostError,
    DatabaseUnavailableError,
    InvalidInputError,
    LedgerDatabaseError,
    LedgerError,
    LedgerTimeoutError,
    PermissionDeniedError,
    ReadReplicaUnavailableError,
    SchemaNotReadyError,
    SessionNotFoundError,
    SessionReferencedError,
    referenced_error,
)

T = TypeVar("T")

logger = logging.getLogger("agentledger")


_UPGRADE_HINT = "run `agentledger db upgrade` (or `await ledger.upgrade()`) against this database"


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what it wraps: SQLAlchemy's ``orig``, then each ``__cause__``."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__


def sqlstate_of(error: BaseException) -> str | None:
    """Return the SQLSTATE (PostgreSQL) or SQLite error name carried by ``error``, if any."""
    for current in _causes(error):
        for attribute in ("sqlstate", "pgcode", "sqlite_errorname"):
            value: Any = getattr(current, attribute, None)
            if isinstance(value, str) and value:
                return value
    return None


@dataclass(frozen=True, slots=True)
class ServerReport:
    """What the database server (or SQLite) said about a failure, for error messages: never
    bound parameters, which may hold message content or secrets."""

    message: str | None = None
    detail: str | None = None
    hint: str | None = None
    table: str | None = None
    constraint: str | None = None

    def describe(self) -> str:
        """``message (detail; hint)``, or an empty string when the server said nothing."""
        parts = [part for part in (self.detail, self.hint) if part]
        if not self.message:
            return "; ".join(parts)
        return f"{self.message} ({'; '.join(parts)})" if parts else self.message


def server_report(error: BaseException) -> ServerReport:
    """The server's own words about ``error``: asyncpg's message, detail, hint and the table
    and constraint it names; sqlite3's message."""
    for cause in _causes(error):
        if type(cause).__module__.startswith("asyncpg") and hasattr(cause, "sqlstate"):
            return ServerReport(
                message=getattr(cause, "message", None) or str(cause) or None,
                detail=getattr(cause, "detail", None),
                hint=getattr(cause, "hint", None),
                table=getattr(cause, "table_name", None),
                constraint=getattr(cause, "constraint_name", None),
            )
        if type(cause).__module__ == "sqlite3":
            return ServerReport(message=str(cause) or None)
    return ServerReport()


_UNEXPECTED_KEYWORD = re.compile(r"unexpected keyword argument '([^']+)'")


def _configuration_problem(error: BaseException) -> ConfigurationError | None:
    """A connection argument the driver refused before talking to any server (unknown name,
    malformed value): a configuration mistake, not a lost connection."""
    for cause in _causes(error):
        name = type(cause).__name__
        text = str(cause)
        if name == "ClientConfigurationError":
            return ConfigurationError(
                f"the database driver refused a connection setting: {text}; fix it in the URL "
                "or in connect_args"
            )
        if isinstance(cause, TypeError) and "connect()" in text:
            match = _UNEXPECTED_KEYWORD.search(text)
            what = f"{match.group(1)!r}" if match else "a connection argument"
            return ConfigurationError(
                f"the database driver does not know the connection parameter {what}; remove "
                "it from the URL or connect_args (server settings such as statement_timeout "
                "go in connect_args={'server_settings': {...}})"
            )
        if isinstance(cause, UnicodeError) and "idna" in text:
            return ConfigurationError(
                f"the database URL's host name cannot be used ({text}); fix the host"
            )
        if isinstance(cause, ValueError) and text.startswith("invalid ") and "value" in text:
            return ConfigurationError(
                f"the database driver refused a connection setting: {text}; fix it in the URL "
                "or in connect_args"
            )
    return None


def translate_db_error(error: BaseException) -> LedgerError:
    """Map a database exception to the :class:`LedgerError` a caller should see.

    The original exception is kept as ``__cause__`` by the caller (``raise ... from error``);
    the message never contains bound parameters (they may hold message content or secrets).
    """
    if isinstance(error, LedgerError):
        return error
    configuration = _configuration_problem(error)
    if configuration is not None:
        return configuration
    if type(error).__name__ == "PendingRollbackError":
        return LedgerDatabaseError(
            "the session's transaction was rolled back by an earlier failure (inside "
            "service.using(...): your session's); roll it back (`await session.rollback()`) "
            "and run your unit of work again"
        )
    if _is_pool_timeout(error):
        return LedgerTimeoutError(
            "timed out waiting for a pooled connection; raise pool_size/max_overflow or "
            "pool_timeout, or lower the concurrency"
        )
    code = sqlstate_of(error)
    if code in ("26000", "42P05"):
        return ConfigurationError(
            "PostgreSQL does not know a prepared statement this connection created, or already "
            "has one of the same name: a transaction pooler (PgBouncer in transaction mode) "
            "sits between agentledger and PostgreSQL and hands each transaction another "
            "server connection. Open the Ledger with pgbouncer=True "
            "(Ledger.from_url(url, pgbouncer=True) or AGENTLEDGER_PGBOUNCER=true); see "
            "docs/operations.md"
        )
    for classify in (
        _contention,
        _schema_or_duplicate,
        _access,
        _pooler_refusal,
        _storage_limit,
        _foreign_key,
    ):
        translated_error = classify(error, code)
        if translated_error is not None:
            return translated_error
    if (code is not None and code.startswith(("08", "57P"))) or _is_disconnect(error):
        return ConnectionLostError(
            "could not reach the database, or the connection was lost; check that the server "
            "is running and reachable at the URL's host and port, then retry",
            sqlstate=code,
        )
    summary = type(getattr(error, "orig", None) or error).__name__
    said = server_report(error).describe()
    return LedgerDatabaseError(
        f"the database refused the operation ({summary}, sqlstate {code or 'unknown'})"
        + (f": {said}" if said else "; check the server log for details"),
        sqlstate=code,
    )


def _contention(error: BaseException, code: str | None) -> LedgerError | None:
    """Conflicts (retry the operation), lock or statement timeouts, and a transaction an
    earlier failure already aborted."""
    if code == "25P02":
        return LedgerDatabaseError(
            "the transaction was already aborted by an earlier failed statement, so the "
            "database ignores everything until it is rolled back; nothing of agentledger's was "
            "written. Inside service.using(...) that is your transaction: roll it back and run "
            "your unit of work again",
            sqlstate=code,
        )
    if code in ("40001", "40P01"):
        return ConflictError(
            "the database aborted the transaction to resolve a conflict; retry the operation",
            sqlstate=code,
        )
    if code in ("55P03", "57014", "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_BUSY_SNAPSHOT"):
        return LedgerTimeoutError(
            "the database gave up waiting for a lock or for the statement to finish; retry, "
            "or raise lock_timeout/statement_timeout (SQLite: the busy timeout)",
            sqlstate=code,
        )
    return None


def _schema_or_duplicate(error: BaseException, code: str | None) -> LedgerError | None:
    """Missing tables or columns (not migrated) and duplicate keys."""
    if code in ("42P01", "42703") or (
        code == "SQLITE_ERROR" and "no such" in str(getattr(error, "orig", error))
    ):
        return SchemaNotReadyError(f"agentledger's tables are missing or outdated; {_UPGRADE_HINT}")
    if code in ("23505", "SQLITE_CONSTRAINT_UNIQUE") and _names_a_session(error):
        return AlreadyExistsError(
            "the user already has a session of that name under another id; open it by its "
            "name (ledger.agent_session(name, ...), service.resolve_name) instead of creating "
            "another",
            sqlstate=code,
        )
    if code in ("23505", "SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"):
        return AlreadyExistsError(
            "a record with the same key already exists (create_session: that session id is "
            "taken; omit session_id to get a fresh one)",
            sqlstate=code,
        )
    return None


def _names_a_session(error: BaseException) -> bool:
    """The unique key of session names refused the row (PostgreSQL names the constraint,
    SQLite the columns)."""
    report = server_report(error)
    said = f"{report.constraint or ''} {report.message or ''}"
    return "uq_agent_sessions_user_id_name" in said or "agent_sessions.name" in said


def _access(error: BaseException, code: str | None) -> LedgerError | None:
    """The database, its file or the role's privileges are out of reach."""
    if code == "3D000":
        return DatabaseUnavailableError(
            "the database named in the URL does not exist; create it (e.g. `createdb NAME`) "
            "or fix the database name in the URL",
            sqlstate=code,
        )
    if code is not None and code.startswith("28"):
        return DatabaseUnavailableError(
            "the database rejected the credentials; check the user and password in the URL "
            "and the server's pg_hba.conf",
            sqlstate=code,
        )
    if code == "55000" and "accepting connections" in _chain_text(error):
        return DatabaseUnavailableError(
            "the database does not accept connections now (ALTER DATABASE ... "
            "ALLOW_CONNECTIONS false, or a maintenance window); let an administrator allow "
            "them again",
            sqlstate=code,
        )
    if code in ("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM"):
        return DatabaseUnavailableError(
            "SQLite cannot open or write the database file; check that its folder exists and "
            "is writable",
            sqlstate=code,
        )
    if code == "42501":
        return PermissionDeniedError(
            "the database refused this role (insufficient privilege). With row-level security "
            "on, run tenant work through `ledger.service.for_user(owner_id)` (the policies see "
            "only the owner's rows); schema changes (`agentledger db upgrade`, `db rls`) need "
            "the tables' owner; an application role needs SELECT, INSERT, UPDATE and DELETE on "
            "agentledger's tables (docs/security.md)",
            sqlstate=code,
        )
    return None


def _pooler_refusal(error: BaseException, code: str | None) -> LedgerError | None:
    """PgBouncer answers its own refusals with SQLSTATE 08P01 (protocol violation), which
    otherwise means a lost connection worth retrying; these are configuration mistakes that
    fail the same way every time, so they say what to fix instead."""
    if "statement pooling mode" in _chain_text(error):
        # The pooler ends the connection after its refusal, so the driver reports a lost
        # connection whose message quotes it.
        return ConfigurationError(
            "the connection pooler runs in statement mode, which refuses transactions; "
            "agentledger needs pool_mode = transaction (or session) for its database "
            "(docs/operations.md)"
        )
    if code != "08P01":
        return None
    said = (server_report(error).message or "").lower()
    if "authentication failed" in said or "no such user" in said or "password" in said:
        return DatabaseUnavailableError(
            "the connection pooler (PgBouncer) rejected the credentials; check the user and "
            "password in the URL and the pooler's auth_file/auth_type",
            sqlstate=code,
        )
    if "no such database" in said or ("database" in said and "does not exist" in said):
        return DatabaseUnavailableError(
            "the connection pooler (PgBouncer) does not know the database named in the URL; "
            "add it to the pooler's [databases] section or fix the database name in the URL",
            sqlstate=code,
        )
    return None


def _chain_text(error: BaseException) -> str:
    """The messages of ``error`` and of what it wraps (:func:`_causes`), lowercased."""
    return " ".join(str(cause) for cause in _causes(error)).lower()


def _storage_limit(error: BaseException, code: str | None) -> LedgerError | None:
    if code != "SQLITE_TOOBIG":
        return None
    # SQLite's own ceiling (SQLITE_MAX_LENGTH, 1,000,000,000 bytes by default) is for one
    # value and for a whole row, a little under PostgreSQL's, which the input checks use.
    return InvalidInputError(
        "the message is larger than this SQLite build stores in one value or row "
        "(SQLITE_MAX_LENGTH, 1,000,000,000 bytes by default); nothing was written. Store "
        "large payloads elsewhere (e.g. object storage) and keep a reference in the message"
    )


def _foreign_key(error: BaseException, code: str | None) -> LedgerError | None:
    """A delete another table's key refuses, or a row whose session is gone."""
    if code not in ("23503", "SQLITE_CONSTRAINT_FOREIGNKEY"):
        return None
    report = server_report(error)
    statement = getattr(error, "statement", None)
    deleting = isinstance(statement, str) and statement.lstrip().upper().startswith("DELETE")
    if deleting or (report.table is not None and report.table not in OWN_TABLE_NAMES):
        # Deleting a row that another table's foreign key still refers to (PostgreSQL
        # names the table; SQLite does not).
        return referenced_error(report.table, report.constraint, (), sqlstate=code)
    return SessionNotFoundError(
        "the session does not exist (it may have been deleted); create it first"
    )


#: agentledger's tables (kept here, not imported from the models: errors sit below them).
OWN_TABLE_NAMES = frozenset(
    {"agent_sessions", "conversation_messages", "conversation_batches", "session_usage"}
)


def referenced_error_from(
    error: BaseException, session_ids: tuple[uuid.UUID, ...], *, messages: bool = False
) -> SessionReferencedError | None:
    """The :class:`SessionReferencedError` a delete's foreign-key violation means (``None``
    for any other error): what the server said about the table and key, and the sessions
    (``messages``: what was deleted was some of their messages)."""
    code = sqlstate_of(error)
    if code not in ("23503", "SQLITE_CONSTRAINT_FOREIGNKEY"):
        return None
    report = server_report(error)
    return referenced_error(
        report.table, report.constraint, session_ids, messages=messages, sqlstate=code
    )


@contextmanager
def translated() -> Iterator[None]:
    """The one error-wrapping context manager: a database or driver error raised inside the
    block leaves as the :class:`LedgerError` :func:`translate_db_error` makes of it (the
    original kept as ``__cause__``); a :class:`LedgerError` and any other exception (a
    programming or argument error) pass unchanged."""
    try:
        yield
    except LedgerError:
        raise
    except Exception as error:
        if not is_database_error(error) and _configuration_problem(error) is None:
            raise
        raise translate_db_error(error) from error


_DATABASE_MODULES = ("sqlalchemy", "asyncpg", "sqlite3", "aiosqlite")


def is_database_error(error: BaseException) -> bool:
    """Whether ``error`` comes from the database, its driver, or the network to it."""
    if isinstance(error, (OSError, asyncio.TimeoutError)):
        return True
    return any(
        type(cause).__module__.split(".", 1)[0] in _DATABASE_MODULES for cause in _causes(error)
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often, and how long apart, an operation the database aborted to resolve a conflict
    (serialization failure or deadlock, SQLSTATE 40001 / 40P01) runs again: at most
    ``attempts`` runs, waiting ``backoff`` seconds doubled after each attempt, jittered by
    x0.5-1.5. Sound only for work that owns its transactions: a failed attempt left nothing."""

    attempts: int = 3
    backoff: float = 0.02

    def delay(self, attempt: int) -> float:
        return float(self.backoff * 2 ** (attempt - 1) * (0.5 + random.random()))


#: The policy the services apply (replace it, e.g. in a test, with another RetryPolicy).
CONFLICT_RETRY = RetryPolicy()


async def run_translated(
    operation: Callable[[], Awaitable[T]], *, retry: RetryPolicy | None, name: str
) -> T:
    """Run ``operation`` inside :func:`translated`, again under ``retry`` (``None``: once)
    while it fails with :class:`ConflictError`; and once more, at once, when a read on the
    read replica could not reach it (:class:`ReadReplicaUnavailableError`: the replica's
    router sends the rerun to the primary; only reads are routed, so rerunning is safe)."""
    attempt = 1
    replica_failed = False
    while True:
        try:
            with translated():
                return await operation()
        except ReadReplicaUnavailableError:
            if replica_failed:
                raise
            replica_failed = True
        except ConflictError as error:
            if not error.retryable or retry is None or attempt >= retry.attempts:
                raise
            logger.info(
                "agentledger: %s hit a database conflict; retrying (attempt %d of %d)",
                name,
                attempt + 1,
                retry.attempts,
            )
            await asyncio.sleep(retry.delay(attempt))
            attempt += 1


def _is_pool_timeout(error: BaseException) -> bool:
    """SQLAlchemy's pool timeout (``sqlalchemy.exc.TimeoutError``), by what it is."""
    kind = type(error)
    return kind.__name__ == "TimeoutError" and kind.__module__.startswith("sqlalchemy")


def _is_disconnect(error: BaseException) -> bool:
    if getattr(error, "connection_invalidated", False) is True:
        return True
    if isinstance(error, (ConnectionError, OSError, asyncio.TimeoutError)):
        return True
    # The driver's own class (agentledger's asyncpg fast path) or the one SQLAlchemy wrapped.
    for candidate in (error, error.__cause__):
        if candidate is not None and type(candidate).__name__ in _DISCONNECT_CLASS_NAMES:
            return True
    return False


_DISCONNECT_CLASS_NAMES = frozenset(
    {
        "ConnectionDoesNotExistError",
        "InterfaceError",
        "ConnectionResetError",
        # asyncpg: the protocol is in a state no statement can follow; only a new connection
        # helps (the fast path invalidates it).
        "InternalClientError",
        "ProtocolError",
    }
)
