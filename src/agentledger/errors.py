"""The exceptions that leave agentledger.

Callers catch :class:`LedgerError` (or one of its subclasses) and never see a raw SQLAlchemy,
asyncpg or sqlite3 exception: a driver error reaching a caller is a bug. Every message says what
to do next. :mod:`agentledger.translation` turns database errors into these.

This module is the foundation: it imports nothing else of agentledger, nor SQLAlchemy, so every
layer may use it.
"""

from __future__ import annotations

import uuid


class LedgerError(Exception):
    """Base class of every error agentledger raises on purpose."""

    #: True when repeating the whole operation may succeed (connection loss, deadlock, ...).
    retryable: bool = False


class InvalidInputError(LedgerError, ValueError):
    """Input the database cannot store faithfully; nothing of the call was written."""


class PayloadTooLargeError(InvalidInputError):
    """The input is larger than a limit allows (e.g. an HTTP request body over the server's
    ``max_body_bytes``); nothing was written. Send it in smaller parts."""


class SessionNotFoundError(LedgerError, LookupError):
    """The session does not exist, or is not visible to the given ``user_id``."""


class SchemaNotReadyError(LedgerError):
    """The database schema is missing or not at the revision this library needs."""


class LedgerDatabaseError(LedgerError):
    """The database refused an operation for a reason not covered by a narrower class."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class RetryableError(LedgerDatabaseError):
    """A transient failure; the operation left nothing behind and can be retried as a whole."""

    retryable = True


class ConflictError(RetryableError):
    """A serialization failure or deadlock (SQLSTATE 40001 / 40P01)."""


class StaleSessionError(ConflictError):
    """A compare-and-append (``expected_last_seq=N``) found the session ending at another seq:
    someone appended (or popped, cleared, rewound) since the caller read it. Nothing was
    written. Retrying the same call fails the same way, so it is not ``retryable`` (although,
    as a ConflictError, it is a RetryableError: check ``retryable``): read the history again,
    decide again, and append with ``expected_last_seq=error.last_seq``. The check compares
    seqs, not contents: a history popped, rewound or cleared and refilled to the same last seq
    passes it."""

    retryable = False

    def __init__(self, message: str, *, last_seq: int, expected_last_seq: int) -> None:
        super().__init__(message)
        #: The session's last seq now (0: empty).
        self.last_seq = last_seq
        #: The last seq the caller expected.
        self.expected_last_seq = expected_last_seq


class InvalidItemTypeError(InvalidInputError, TypeError):
    """Input refused for its Python type (a value JSON cannot encode, such as a ``set`` or an
    arbitrary object): an :class:`InvalidInputError`, and also a :class:`TypeError` as the
    Agents SDK's own sessions raise for it."""


class ConnectionLostError(RetryableError):
    """The connection to the database failed or was closed during the operation."""


class ReadReplicaUnavailableError(ConnectionLostError):
    """A read on the read replica (``read_url``) could not reach it. agentledger runs the read
    again on the primary, so this only leaves the library when that was not possible."""


class DatabaseUnavailableError(LedgerDatabaseError):
    """The database cannot be used as configured (unknown database, bad credentials, ...)."""


class AlreadyExistsError(LedgerDatabaseError):
    """A row with the same key exists already (e.g. ``create_session`` with a taken id)."""


class LedgerTimeoutError(LedgerDatabaseError):
    """A lock, statement or pool timeout expired before the operation could finish."""


class PermissionDeniedError(LedgerDatabaseError):
    """The connected role may not do this (SQLSTATE 42501): a row-level security policy refused
    a row, or the role lacks a privilege (e.g. it does not own the tables it tries to alter)."""


class UnsupportedBackendError(LedgerError):
    """The feature needs a database backend other than the one in use (e.g. PostgreSQL)."""


class ConfigurationError(LedgerError):
    """The configuration (usually the database URL or a connection argument) cannot be used as
    given. Never retryable: the same call fails the same way until the configuration changes."""


class SessionReferencedError(LedgerDatabaseError):
    """The session cannot be deleted: a row of another table (one of the host application's)
    refers to it, or to one of its messages, through a foreign key without ``ON DELETE``.

    ``table`` and ``constraint`` name that foreign key (``None`` when the database did not
    say); ``session_ids`` are the sessions it kept.
    """

    def __init__(
        self,
        message: str,
        *,
        table: str | None = None,
        constraint: str | None = None,
        session_ids: tuple[uuid.UUID, ...] = (),
        messages: bool = False,
        sqlstate: str | None = None,
    ) -> None:
        super().__init__(message, sqlstate=sqlstate)
        self.table = table
        self.constraint = constraint
        self.session_ids = session_ids
        #: What could not be deleted was some of the sessions' messages (not the sessions).
        self.messages = messages


def referenced_error(
    table: str | None,
    constraint: str | None,
    session_ids: tuple[uuid.UUID, ...],
    *,
    messages: bool = False,
    sqlstate: str | None = None,
) -> SessionReferencedError:
    """The error for a delete that a foreign key of another table blocked, with the fix."""
    which = f"table {table!r}" if table else "another table"
    named = f" {constraint!r}" if constraint else ""
    shown = ", ".join(str(session_id) for session_id in session_ids[:3])
    more = f" and {len(session_ids) - 3} more" if len(session_ids) > 3 else ""
    subject = f"session {shown}{more}" if session_ids else "the session"
    what = f"messages of {subject}" if messages else subject
    return SessionReferencedError(
        f"cannot delete {what}: {which} refers to {'them' if messages else 'it'} through the "
        f"foreign key{named}, which has no ON DELETE; delete or re-point those rows first, or "
        'declare that foreign key with ondelete="CASCADE" (or "SET NULL")',
        table=table,
        constraint=constraint,
        session_ids=session_ids,
        messages=messages,
        sqlstate=sqlstate,
    )
