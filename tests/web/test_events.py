"""Server-Sent Events of new messages, over a real server on a free loopback port: PostgreSQL
streams are woken by LISTEN/NOTIFY (one listening connection per process, no polling),
SQLite's poll; a reconnect with Last-Event-ID misses and repeats nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from agentledger import Ledger
from tests.support.server import served
from tests.web.conftest import as_user, host_app

ALICE = as_user("alice")

#: Bound for anything a test waits for.
WAIT = 30.0


async def sse(response: httpx.Response) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """The ``(id, data)`` of each message event of a stream."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
            continue
        if fields.get("event") == "message":
            yield int(fields["id"]), json.loads(fields["data"])
        fields = {}


def poll_interval(backend: str) -> float:
    """SQLite polls; on PostgreSQL an interval of an hour proves nothing polls there."""
    return 3600.0 if backend == "postgresql" else 0.05


async def test_new_messages_arrive_as_they_are_appended(ledger: Ledger, backend: str) -> None:
    session = await ledger.service.create_session("alice", "A")
    await ledger.service.add_message(session.id, "user", "before the stream")
    app = host_app(ledger, sse_poll_interval=poll_interval(backend))
    async with (
        served(app) as base,
        httpx.AsyncClient(base_url=base, timeout=WAIT) as client,
        client.stream("GET", f"/api/v1/sessions/{session.id}/events", headers=ALICE) as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")

        async def write() -> None:
            await asyncio.sleep(0.2)
            await ledger.service.add_message(session.id, "user", "one")
            await ledger.service.add_messages(
                session.id,
                [{"role": "assistant", "content": "two"}, {"role": "user", "content": "three"}],
            )

        writer = asyncio.create_task(write())
        got: list[tuple[int, str]] = []
        async with asyncio.timeout(WAIT):
            async for seq, data in sse(stream):
                got.append((seq, data["content"]))
                if len(got) == 3:
                    break
        await writer
    assert got == [(2, "one"), (3, "two"), (4, "three")]  # only what came after it opened


async def test_reconnecting_with_last_event_id_misses_and_repeats_nothing(
    ledger: Ledger, backend: str
) -> None:
    session = await ledger.service.create_session("alice", "A")
    total = 120
    app = host_app(ledger, sse_poll_interval=poll_interval(backend))
    seen: list[int] = []

    async def write() -> None:
        for number in range(1, total + 1):
            await ledger.service.add_message(session.id, "user", f"m{number}")
            if number % 10 == 0:
                await asyncio.sleep(0.01)

    async with served(app) as base, httpx.AsyncClient(base_url=base, timeout=WAIT) as client:
        writer = asyncio.create_task(write())
        try:
            headers = {**ALICE}
            params = {"after_seq": "0"}
            async with asyncio.timeout(WAIT * 2):
                for _connection in range(4):  # three reconnects while the writer appends
                    url = f"/api/v1/sessions/{session.id}/events"
                    async with client.stream("GET", url, params=params, headers=headers) as stream:
                        async for seq, data in sse(stream):
                            assert data["content"] == f"m{seq}"
                            seen.append(seq)
                            if len(seen) % 30 == 0 or seq == total:
                                break
                    headers = {**ALICE, "Last-Event-ID": str(seen[-1])}
                    if seen and seen[-1] == total:
                        break
        finally:
            await writer
    assert seen == list(range(1, total + 1))


async def test_one_listening_connection_serves_every_stream(pg_database_url: str) -> None:
    async with Ledger.from_url(pg_database_url) as ledger:
        sessions = [await ledger.service.create_session("alice", "A") for _ in range(3)]
        app = host_app(ledger, sse_poll_interval=3600.0)
        async with served(app) as base, httpx.AsyncClient(base_url=base, timeout=WAIT) as client:
            streams = [
                await client.send(
                    client.build_request("GET", f"/api/v1/sessions/{s.id}/events", headers=ALICE),
                    stream=True,
                )
                for s in sessions
            ]
            try:
                readers = [sse(stream) for stream in streams]
                for session in sessions:
                    await ledger.service.add_message(session.id, "user", f"to {session.id}")
                async with asyncio.timeout(WAIT):
                    for session, reader in zip(sessions, readers, strict=True):
                        seq, data = await anext(reader)
                        assert (seq, data["content"]) == (1, f"to {session.id}")
                assert await _listening_connections(pg_database_url) == 1
            finally:
                for stream in streams:
                    await stream.aclose()


async def _listening_connections(url: str) -> int:
    name = url.rsplit("/", 1)[1]
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
            name,
        )
        return count
    finally:
        await connection.close()


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_notification_carries_no_content(ledger: Ledger, database_url: str) -> None:
    session = await ledger.service.create_session("alice", "A")
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    received: asyncio.Queue[str] = asyncio.Queue()
    try:
        await connection.add_listener(
            "agentledger_appended", lambda *args: received.put_nowait(args[3])
        )
        await ledger.service.add_message(session.id, "user", "a secret")
        await ledger.service.add_messages(
            session.id, [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]
        )
        await ledger.service.rewind_session(session.id, 1)  # lowers last_seq: no notification
        await ledger.service.update_metadata(session.id, {"k": "v"})  # no append: none either
        await ledger.service.add_message(session.id, "user", "z")
        async with asyncio.timeout(WAIT):
            payloads = [await received.get() for _ in range(3)]
        await asyncio.sleep(0.2)
        assert received.empty()
    finally:
        await connection.close()
    assert payloads == [f"{session.id} 1", f"{session.id} 3", f"{session.id} 2"]


async def test_a_lost_listening_connection_is_reopened_and_nothing_is_missed(
    pg_database_url: str,
) -> None:
    async with Ledger.from_url(pg_database_url) as ledger:
        session = await ledger.service.create_session("alice", "A")
        app = host_app(ledger, sse_poll_interval=3600.0)
        async with (
            served(app) as base,
            httpx.AsyncClient(base_url=base, timeout=WAIT) as client,
            client.stream("GET", f"/api/v1/sessions/{session.id}/events", headers=ALICE) as stream,
        ):
            reader = sse(stream)
            await ledger.service.add_message(session.id, "user", "before")
            async with asyncio.timeout(WAIT):
                assert (await anext(reader))[0] == 1
                await _terminate_listeners(pg_database_url)
                await ledger.service.add_message(session.id, "user", "while reconnecting")
                assert (await anext(reader))[0] == 2
                await ledger.service.add_message(session.id, "user", "after")
                assert (await anext(reader))[0] == 3
            assert await _listening_connections(pg_database_url) == 1


async def _terminate_listeners(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        terminated = await connection.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND query LIKE 'LISTEN%'",
            name,
        )
        assert terminated == 1
    finally:
        await connection.close()
