"""The contenders: agentledger (SDK session and service), the asyncpg floor, the SDK peer.

Each does the same work per call: a *turn append* stores a user and an assistant item in order
and durably; a *tail read* returns the latest 50 items in order as Python objects; a *full
read* returns the whole history; a *listing* returns the 20 most recently updated sessions of
a user. Handles are plain strings so the driver loop can treat all contenders alike.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
from agents.extensions.memory import SQLAlchemySession
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agentledger import Ledger
from agentledger.integrations.openai_agents import LedgerSession

from . import data

AGENT = "bench"


class Contender(Protocol):
    name: str
    #: Which database its tables live in ("ledger" or "peer").
    database: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def new_session(self, user_id: str) -> str: ...
    async def fill(self, admin: asyncpg.Connection, user_id: str, count: int) -> str: ...
    async def append(self, handle: str, items: list[dict[str, Any]]) -> None: ...
    async def tail(self, handle: str, limit: int) -> list[Any]: ...
    async def read_all(self, handle: str) -> list[Any]: ...
    async def truncate(self, admin: asyncpg.Connection, handle: str, count: int) -> None:
        """Cut the history back to its first ``count`` items (benchmark bookkeeping)."""
        ...


async def truncate_ledger_session(
    admin: asyncpg.Connection, session_id: uuid.UUID, count: int
) -> None:
    """Cut an agentledger session back to ``count`` messages, keeping its sequence gap-free."""
    await admin.execute(
        "DELETE FROM conversation_messages WHERE session_id = $1 AND seq > $2", session_id, count
    )
    await admin.execute("UPDATE agent_sessions SET last_seq = $2 WHERE id = $1", session_id, count)


class Lister(Protocol):
    name: str

    async def list_recent(self, user_id: str, limit: int) -> list[Any]: ...


# -- agentledger ---------------------------------------------------------------------------------


class LedgerSdk:
    """agentledger through its Agents SDK session: ``ledger.agent_session(name, user_id=...)``."""

    database = "ledger"

    def __init__(self, ledger: Ledger, name: str = "agentledger-sdk") -> None:
        self.name = name
        self._ledger = ledger
        self._sessions: dict[str, LedgerSession] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _session(self, handle: str) -> LedgerSession:
        session = self._sessions.get(handle)
        if session is None:
            user_id, _, name = handle.partition("/")
            session = self._ledger.agent_session(name, user_id=user_id, agent_name=AGENT)
            self._sessions[handle] = session
        return session

    async def new_session(self, user_id: str) -> str:
        # Created by its first write, as an agent run does.
        return f"{user_id}/conversation-{uuid.uuid4().hex[:12]}"

    async def fill(self, admin: asyncpg.Connection, user_id: str, count: int) -> str:
        handle = await self.new_session(user_id)
        sid = self._session(handle).ledger_session_id
        await data.fill_ledger_sessions(admin, [(sid, user_id, count)])
        return handle

    async def append(self, handle: str, items: list[dict[str, Any]]) -> None:
        await self._session(handle).add_items(items)  # type: ignore[arg-type]

    async def tail(self, handle: str, limit: int) -> list[Any]:
        return await self._session(handle).get_items(limit)

    async def read_all(self, handle: str) -> list[Any]:
        return await self._session(handle).get_items()

    async def truncate(self, admin: asyncpg.Connection, handle: str, count: int) -> None:
        await truncate_ledger_session(admin, self._session(handle).ledger_session_id, count)


class LedgerService:
    """agentledger through ``ledger.service`` (a session created first, ``user_id`` passed)."""

    database = "ledger"

    def __init__(self, ledger: Ledger, name: str = "agentledger-service") -> None:
        self.name = name
        self._service = ledger.service

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def new_session(self, user_id: str) -> str:
        record = await self._service.create_session(user_id, AGENT)
        return f"{user_id}/{record.id}"

    async def fill(self, admin: asyncpg.Connection, user_id: str, count: int) -> str:
        sid = uuid.uuid4()
        await data.fill_ledger_sessions(admin, [(sid, user_id, count)])
        return f"{user_id}/{sid}"

    async def append(self, handle: str, items: list[dict[str, Any]]) -> None:
        user_id, _, sid = handle.partition("/")
        await self._service.add_items(sid, items, user_id=user_id)

    async def tail(self, handle: str, limit: int) -> list[Any]:
        user_id, _, sid = handle.partition("/")
        return await self._service.get_items(sid, limit, user_id=user_id)

    async def read_all(self, handle: str) -> list[Any]:
        user_id, _, sid = handle.partition("/")
        return await self._service.get_items(sid, user_id=user_id)

    async def truncate(self, admin: asyncpg.Connection, handle: str, count: int) -> None:
        await truncate_ledger_session(admin, uuid.UUID(handle.partition("/")[2]), count)

    async def list_recent(self, user_id: str, limit: int) -> list[Any]:
        page = await self._service.list_user_sessions(user_id, limit)
        return list(page.sessions)


# -- the floor: hand-written asyncpg -------------------------------------------------------------

# The statement agentledger's SDK session issues for an append, written for asyncpg: create the
# session or lock it (checking the owner), allocate the sequence range and insert every row
# from arrays, in one round trip.
FLOOR_APPEND = """
WITH s AS (
    INSERT INTO agent_sessions (id, user_id, agent_name, metadata, created_at, updated_at, last_seq)
    VALUES ($1, $2, $3, '{}', $4, $4, $5)
    ON CONFLICT (id) DO UPDATE
        SET last_seq = agent_sessions.last_seq + $5, updated_at = $4
        WHERE agent_sessions.user_id = $2
    RETURNING last_seq - $5 AS base
), ins AS (
    INSERT INTO conversation_messages
        (session_id, seq, id, role, content, tool_calls, tool_call_id, item_type, item, created_at)
    SELECT $1, s.base + r.ord, r.id, r.role, r.content, NULL, NULL, r.item_type,
           CAST(r.item AS json), $4
    FROM s, unnest($6::uuid[], $7::text[], $8::text[], $9::text[], $10::text[])
         WITH ORDINALITY AS r(id, role, content, item_type, item, ord)
)
SELECT s.base FROM s
"""

FLOOR_TAIL = """
SELECT item FROM conversation_messages
WHERE session_id = $1
  AND EXISTS (SELECT 1 FROM agent_sessions WHERE id = $1 AND user_id = $2)
ORDER BY seq DESC LIMIT $3
"""

FLOOR_ALL = """
SELECT item FROM conversation_messages
WHERE session_id = $1
  AND EXISTS (SELECT 1 FROM agent_sessions WHERE id = $1 AND user_id = $2)
ORDER BY seq
"""

# The same page agentledger lists: every column, the message count and the picker title (the
# first user message's start, for an untitled session), unarchived sessions only.
FLOOR_LIST = """
SELECT s.id, s.user_id, s.agent_name, s.metadata, s.created_at, s.updated_at,
       s.last_seq - s.trimmed_seq AS message_count, s.title, s.archived_at, s.name,
       s.framework,
       (SELECT substr(m.content, 1, 161) FROM conversation_messages m
        WHERE m.session_id = s.id AND m.role = 'user' ORDER BY m.seq LIMIT 1) AS first_user_text
FROM agent_sessions s WHERE s.user_id = $1 AND s.archived_at IS NULL
ORDER BY s.updated_at DESC, s.id DESC LIMIT $2
"""


def _text_of(item: dict[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and "text" in p)
    return ""


def floor_append_arguments(
    session_id: uuid.UUID, user_id: str, items: list[dict[str, Any]]
) -> list[Any]:
    """The arguments of :data:`FLOOR_APPEND` for a turn: what the floor sends per append."""
    return [
        session_id,
        user_id,
        AGENT,
        datetime.now(UTC),
        len(items),
        [uuid.uuid4() for _ in items],
        [str(item.get("role", "assistant")) for item in items],
        [_text_of(item) for item in items],
        [str(item.get("type", "message")) for item in items],
        [json.dumps(item, separators=(",", ":"), ensure_ascii=False) for item in items],
    ]


async def _no_reset(connection: asyncpg.Connection) -> None:
    """The floor's connections carry no session state, so the pool need not reset them."""


class Floor:
    """Hand-written asyncpg on a pool: the fewest round trips the same work can take."""

    database = "ledger"

    def __init__(
        self,
        url: str,
        pool_size: int,
        name: str = "asyncpg-floor",
        *,
        statement_cache_size: int | None = None,
    ) -> None:
        """``statement_cache_size=0``: what asyncpg needs behind PgBouncer in transaction
        mode (unnamed statements, parsed again with each execution)."""
        self.name = name
        self._url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._cache: dict[str, int] = (
            {} if statement_cache_size is None else {"statement_cache_size": statement_cache_size}
        )

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "open() first"
        return self._pool

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._url,
            min_size=self._pool_size,
            max_size=self._pool_size,
            reset=_no_reset,
            **self._cache,
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def new_session(self, user_id: str) -> str:
        return f"{user_id}/{uuid.uuid4()}"

    async def fill(self, admin: asyncpg.Connection, user_id: str, count: int) -> str:
        sid = uuid.uuid4()
        await data.fill_ledger_sessions(admin, [(sid, user_id, count)])
        return f"{user_id}/{sid}"

    async def append(self, handle: str, items: list[dict[str, Any]]) -> None:
        user_id, _, sid = handle.partition("/")
        arguments = floor_append_arguments(uuid.UUID(sid), user_id, items)
        async with self.pool.acquire() as connection:
            await connection.fetchval(FLOOR_APPEND, *arguments)

    async def tail(self, handle: str, limit: int) -> list[Any]:
        user_id, _, sid = handle.partition("/")
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(FLOOR_TAIL, uuid.UUID(sid), user_id, limit)
        return [json.loads(row[0]) for row in reversed(rows)]

    async def read_all(self, handle: str) -> list[Any]:
        user_id, _, sid = handle.partition("/")
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(FLOOR_ALL, uuid.UUID(sid), user_id)
        return [json.loads(row[0]) for row in rows]

    async def truncate(self, admin: asyncpg.Connection, handle: str, count: int) -> None:
        await truncate_ledger_session(admin, uuid.UUID(handle.partition("/")[2]), count)

    async def list_recent(self, user_id: str, limit: int) -> list[Any]:
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(FLOOR_LIST, user_id, limit + 1)
        return [
            {
                **dict(row),
                "metadata": json.loads(row["metadata"]),
                "title": row["title"] or " ".join((row["first_user_text"] or "").split())[:80],
            }
            for row in rows[:limit]
        ]


# -- the peer: the Agents SDK's own SQLAlchemySession ---------------------------------------------


class Peer:
    """``agents.extensions.memory.SQLAlchemySession`` on its own database of the same server."""

    database = "peer"

    def __init__(self, url: str, pool_size: int, name: str = "sdk-sqlalchemy") -> None:
        self.name = name
        self._url = url
        self._pool_size = pool_size
        self._engine: AsyncEngine | None = None
        self._sessions: dict[str, SQLAlchemySession] = {}
        #: handle -> (items made by fill(), created_at of the last of them)
        self._filled: dict[str, tuple[int, datetime]] = {}

    @property
    def engine(self) -> AsyncEngine:
        assert self._engine is not None, "open() first"
        return self._engine

    async def open(self) -> None:
        # The same pool as agentledger's (size, LIFO), so the comparison is about the library.
        self._engine = create_async_engine(
            self._url, pool_size=self._pool_size, max_overflow=0, pool_use_lifo=True
        )
        # Creates the SDK's tables (agent_sessions, agent_messages) once.
        await SQLAlchemySession("setup", engine=self._engine, create_tables=True).get_items()

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()

    def _session(self, handle: str) -> SQLAlchemySession:
        session = self._sessions.get(handle)
        if session is None:
            session = SQLAlchemySession(handle, engine=self.engine)
            self._sessions[handle] = session
        return session

    async def new_session(self, user_id: str) -> str:
        return f"{user_id}/conversation-{uuid.uuid4().hex[:12]}"

    async def fill(self, admin: asyncpg.Connection, user_id: str, count: int) -> str:
        handle = await self.new_session(user_id)
        await data.fill_peer_session(admin, handle, count)
        last = await admin.fetchval(
            "SELECT max(created_at) FROM agent_messages WHERE session_id = $1", handle
        )
        self._filled[handle] = (count, last)
        return handle

    async def append(self, handle: str, items: list[dict[str, Any]]) -> None:
        await self._session(handle).add_items(items)  # type: ignore[arg-type]

    async def tail(self, handle: str, limit: int) -> list[Any]:
        return await self._session(handle).get_items(limit)

    async def read_all(self, handle: str) -> list[Any]:
        return await self._session(handle).get_items()

    async def truncate(self, admin: asyncpg.Connection, handle: str, count: int) -> None:
        filled = self._filled.get(handle)
        if filled is not None and filled[0] == count:
            # The rows added after fill(), found through the SDK's (session_id, created_at)
            # index: cheap, so it does not slow down whatever the benchmark times next.
            await admin.execute(
                "DELETE FROM agent_messages WHERE session_id = $1 AND created_at > $2",
                handle,
                filled[1],
            )
            return
        await admin.execute(
            "DELETE FROM agent_messages WHERE id IN (SELECT id FROM agent_messages "
            "WHERE session_id = $1 ORDER BY id OFFSET $2)",
            handle,
            count,
        )
