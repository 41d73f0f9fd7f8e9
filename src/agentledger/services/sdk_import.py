"""Copy history out of the OpenAI Agents SDK's own stores into agentledger, idempotently.

Both ``agents.SQLiteSession`` files and ``agents.extensions.memory.SQLAlchemySession`` tables
keep one row per item (``message_data`` JSON text, ordered by an integer ``id``) keyed by a
string ``session_id``. Each source session lands in the agentledger session that
``ledger.agent_session(session_id, user_id=...)`` opens, so an application switching stores
keeps its session names.

Items are copied in chunks, each stored with an idempotency key naming its source id range;
a rerun finds where the last one ended and copies only what is new, so running the import
twice (or again after the source grew) never duplicates an item.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection

from agentledger.db.engine import create_engine
from agentledger.domain.naming import resolve_session_uuid, session_name
from agentledger.domain.records import SessionSpec
from agentledger.domain.validation import prepare_item
from agentledger.errors import InvalidInputError, SessionNotFoundError
from agentledger.services.facade import SessionService
from agentledger.translation import translated

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_KEY_PREFIX = "sdk-import"


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import copied: sessions touched, items added, and source rows it could not read."""

    sessions: int
    items: int
    unreadable: int
    #: SDK sessions left out, with why: their name is a UUID that another user's session holds.
    refused: tuple[tuple[str, str], ...] = ()


def source_url(source: str) -> str:
    """A SQLAlchemy URL for ``source``: a URL as given, or a path to an SDK SQLite file, which
    must exist and is opened read-only (an import never changes its source)."""
    if "://" in source:
        return source
    path = Path(source)
    if not path.is_file():
        raise InvalidInputError(
            f"no SQLite file at {source!r}; pass the path of an Agents SDK SQLiteSession "
            "database, or a database URL"
        )
    return f"sqlite+aiosqlite:///file:{quote(str(path.resolve()))}?mode=ro&uri=true"


def _identifier(name: str, what: str) -> str:
    if not _IDENTIFIER.match(name):
        raise InvalidInputError(f"{what} {name!r} is not a plain SQL table name")
    return f'"{name}"'


def _prefix(source_session: str) -> str:
    digest = hashlib.sha256(source_session.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"{_KEY_PREFIX}:{digest}:"


def _last_imported_id(keys: list[str]) -> int:
    """The highest source id covered by earlier chunks (keys end in ``first-last``)."""
    return max((int(key.rsplit("-", 1)[1]) for key in keys), default=0)


async def import_sdk_store(
    service: SessionService,
    source: str,
    *,
    user_id: str,
    agent_name: str,
    messages_table: str = "agent_messages",
    chunk_size: int = 500,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Copy every session of an SDK store into ``user_id``'s agentledger sessions.

    ``on_progress(done, total)`` is called after every chunk, ``total`` being the number of
    source rows. Rows whose ``message_data`` is not valid JSON are counted in
    ``ImportReport.unreadable`` and left out (by the run that first reaches them; a rerun
    resumes after them); everything else is copied in source order. An SDK session whose name
    is a UUID that another user's session holds is left out and listed in
    ``ImportReport.refused``; the others are copied.
    """
    table = _identifier(messages_table, "messages table")
    engine = create_engine(source_url(source), foreign=True)
    sessions = items = unreadable = done = 0
    refused: list[tuple[str, str]] = []

    def progress(rows: int) -> None:
        if on_progress is not None:
            on_progress(done + rows, total)

    try:
        with translated():
            async with engine.connect() as connection:
                total = await _count_rows(connection, table, messages_table)
                names = await connection.scalars(
                    text(f"SELECT DISTINCT session_id FROM {table} ORDER BY session_id")
                )
                for name in names.all():
                    try:
                        added, bad, rows = await _import_one(
                            service, connection, table, str(name), (user_id, agent_name),
                            chunk_size, progress,
                        )  # fmt: skip
                    except SessionNotFoundError as error:  # the id is someone else's
                        refused.append((str(name), str(error)))
                        continue
                    sessions += 1
                    items, unreadable, done = items + added, unreadable + bad, done + rows
    finally:
        await engine.dispose()
    return ImportReport(sessions, items, unreadable, tuple(refused))


async def _count_rows(connection: AsyncConnection, table: str, name: str) -> int:
    """The source's row count, or a refusal naming the option when the table is missing."""
    if not await connection.run_sync(lambda sync: inspect(sync).has_table(name)):
        raise InvalidInputError(
            f"the source has no table {name!r}; pass the Agents SDK's messages table with "
            "--messages-table (messages_table=)"
        )
    return int(await connection.scalar(text(f"SELECT count(*) FROM {table}")) or 0)


async def _import_one(
    service: SessionService,
    connection: AsyncConnection,
    table: str,
    source_session: str,
    owner: tuple[str, str],
    chunk_size: int,
    progress: Callable[[int], None],
) -> tuple[int, int, int]:
    """Copy one SDK session where ``ledger.agent_session(name, user_id=...)`` finds it,
    resuming after the chunks an earlier run stored: ``(items added, unreadable rows, source
    rows read)``; ``progress(rows read so far)`` after every chunk. ``owner``: the user and
    agent name the sessions are created for."""
    user_id, agent_name = owner
    spec = SessionSpec(user_id, agent_name, session_name(source_session))
    target = (
        resolve_session_uuid(source_session, user_id)
        if spec.name is None
        else await service.resolve_name(spec.name, user_id=user_id, create_as=spec)
    )
    assert target is not None  # created when missing
    prefix = _prefix(source_session)
    after = _last_imported_id(await service.batch_keys(target, prefix=prefix, user_id=user_id))
    added = unreadable = read = 0
    async for first, last, chunk, bad in _chunks(
        connection, table, source_session, after, chunk_size
    ):
        result = await service.add_items(
            target,
            chunk,
            user_id=user_id,
            create_as=spec,
            idempotency_key=f"{prefix}{first}-{last}",
        )
        if result.created:
            added += result.count
        unreadable += bad
        read += len(chunk) + bad
        progress(read)
    return added, unreadable, read


_UNREADABLE = object()


def _readable_item(data: Any) -> Any:
    """The item a source row holds, or ``_UNREADABLE`` when agentledger could not store it
    (not JSON, too deep, NaN, not an item, ...): one bad row is counted, never fatal."""
    try:
        item = json.loads(data)
        prepare_item(item)
    except (TypeError, ValueError, RecursionError):  # InvalidInputError is a ValueError
        return _UNREADABLE
    return item


async def _chunks(
    connection: AsyncConnection, table: str, session: str, after: int, size: int
) -> AsyncIterator[tuple[int, int, list[Any], int]]:
    """``(first_id, last_id, items, unreadable_rows)`` chunks of a session after ``after``."""
    while True:
        rows = (
            await connection.execute(
                text(
                    f"SELECT id, message_data FROM {table} WHERE session_id = :session "
                    "AND id > :after ORDER BY id LIMIT :size"
                ),
                {"session": session, "after": after, "size": size},
            )
        ).all()
        if not rows:
            return
        chunk: list[Any] = []
        bad = 0
        for _row_id, data in rows:
            item = _readable_item(data)
            if item is _UNREADABLE:
                bad += 1
            else:
                chunk.append(item)
        first, last = int(rows[0][0]), int(rows[-1][0])
        yield first, last, chunk, bad
        after = last
