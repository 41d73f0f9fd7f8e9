"""Conformance of LedgerSession to the Agents SDK's ``Session`` protocol, with the SDK's own
``SQLiteSession`` as the oracle: every test runs on LedgerSession (SQLite and PostgreSQL) and on
the oracle, so any difference in behaviour shows as a failure of one of them. Covered: reads
(all, latest N, 0, more than there are), appends in order, pop and clear, the settings' default
limit, the run context (``wrapper``), ``Runner.run`` over the session, the SDK's
``EncryptedSession`` on top, several event loops (``Runner.run_sync``, threads)."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from agents import Agent, RunContextWrapper, Runner, SQLiteSession
from agents.extensions.memory.encrypt_session import EncryptedSession
from agents.memory import Session, SessionSettings
from agents.testing import ScriptedModel, assistant_message
from cryptography.fernet import Fernet
from sqlalchemy.pool import NullPool

from agentledger import Ledger
from tests.conftest import create_pg_database, drop_pg_database, pg_url
from tests.support.items import as_items, contents, texts

KINDS = ("ledger-sqlite", "ledger-postgresql", "oracle")


@dataclass
class Store:
    """Makes sessions of one kind; ``ledger`` is ``None`` for the oracle."""

    kind: str
    make: Callable[[str, SessionSettings | None], Session]
    ledger: Ledger | None


@pytest.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    kind = str(request.param)
    if kind == "oracle":
        path = str(tmp_path / "oracle.db")

        def oracle(name: str, settings: SessionSettings | None) -> Session:
            return SQLiteSession(name, path, session_settings=settings)

        yield Store(kind, oracle, None)
        return
    if kind == "ledger-sqlite":
        target = tmp_path / "ledger.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        url, database = f"sqlite+aiosqlite:///{target}", None
    else:
        database = await create_pg_database(template=request.getfixturevalue("pg_template"))
        url = pg_url(database)
    ledger = Ledger.from_url(url, poolclass=NullPool)

    def ledger_session(name: str, settings: SessionSettings | None) -> Session:
        return ledger.agent_session(name, user_id="u1", settings=settings)

    try:
        yield Store(kind, ledger_session, ledger)
    finally:
        await ledger.dispose()
        if database is not None:
            await drop_pg_database(database)


def message(n: int) -> dict[str, Any]:
    return {"role": "user" if n % 2 == 0 else "assistant", "content": f"m{n}"}


async def test_reads_and_appends(store: Store) -> None:
    session = store.make("reads", None)
    assert await session.get_items() == []
    assert await session.get_items(limit=3) == []
    await session.add_items(as_items([message(0), message(1)]))
    await session.add_items(as_items([message(2)]))
    await session.add_items([])
    assert contents(await session.get_items()) == ["m0", "m1", "m2"]
    assert contents(await session.get_items(limit=2)) == ["m1", "m2"]
    assert contents(await session.get_items(limit=10)) == ["m0", "m1", "m2"]
    assert await session.get_items(limit=0) == []
    # Another session of the same store is separate.
    assert await store.make("other", None).get_items() == []


async def test_pop_and_clear(store: Store) -> None:
    session = store.make("pops", None)
    assert await session.pop_item() is None
    await session.add_items(as_items([message(0), message(1), message(2)]))
    popped = await session.pop_item()
    assert popped is not None
    assert contents([popped]) == ["m2"]
    assert contents(await session.get_items()) == ["m0", "m1"]
    await session.add_items(as_items([message(3)]))
    assert contents(await session.get_items()) == ["m0", "m1", "m3"]
    await session.clear_session()
    assert await session.get_items() == []
    assert await session.pop_item() is None
    await session.add_items(as_items([message(4)]))
    assert contents(await session.get_items()) == ["m4"]


async def test_settings_limit_is_the_default(store: Store) -> None:
    writer = store.make("limited", None)
    await writer.add_items(as_items([message(n) for n in range(5)]))
    capped = store.make("limited", SessionSettings(limit=2))
    assert contents(await capped.get_items()) == ["m3", "m4"]
    assert contents(await capped.get_items(limit=4)) == ["m1", "m2", "m3", "m4"]


async def test_runner_keeps_the_conversation(store: Store) -> None:
    session = store.make("runner", None)
    model = ScriptedModel([[assistant_message("Hi Ana")], [assistant_message("You are Ana")]])
    agent = Agent(name="A", model=model)
    await Runner.run(agent, "I am Ana", session=session)
    await Runner.run(agent, "Who am I?", session=session)
    assert texts(model.calls[1].input) == ["I am Ana", "Hi Ana", "Who am I?"]
    assert texts(await session.get_items()) == ["I am Ana", "Hi Ana", "Who am I?", "You are Ana"]


async def test_the_run_context_is_accepted_where_offered(store: Store) -> None:
    session = store.make("context", None)
    wrapper: RunContextWrapper[Any] = RunContextWrapper(context={"user": "u1"})
    method = cast(Any, session).get_items
    try:
        items = await method(wrapper=wrapper)
    except TypeError:
        assert store.kind == "oracle", "LedgerSession must take the run context"
        return
    assert items == []


async def test_encrypted_session_on_top(store: Store) -> None:
    key = Fernet.generate_key().decode("ascii")
    inner = store.make("secret", None)
    secret = EncryptedSession("secret", cast(Any, inner), encryption_key=key, ttl=3600)
    await secret.add_items(as_items([message(0), message(1)]))
    assert contents(await secret.get_items()) == ["m0", "m1"]
    stored = await inner.get_items()
    assert len(stored) == 2
    assert all(set(item) == {"__enc__", "kid", "payload", "v"} for item in stored)
    popped = await secret.pop_item()
    assert popped is not None
    assert contents([popped]) == ["m1"]
    assert contents(await secret.get_items()) == ["m0"]


def test_run_sync_on_new_event_loops(store: Store) -> None:
    session = store.make("sync", None)

    def program() -> list[Any]:
        for n in range(3):
            model = ScriptedModel([[assistant_message(f"reply {n}")]])
            Runner.run_sync(Agent(name="S", model=model), f"turn {n}", session=session)
        return asyncio.run(session.get_items())

    with ThreadPoolExecutor(1) as thread:  # a thread of its own: no pytest-asyncio loop
        items = thread.submit(program).result(timeout=120)
    assert len(items) == 6


def test_two_event_loops_at_once(store: Store) -> None:
    session = store.make("loops", None)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        async def turn() -> None:
            start.wait()
            await session.add_items(as_items([message(n)]))

        try:
            asyncio.run(turn())
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert errors == []
    with ThreadPoolExecutor(1) as reader:
        items = reader.submit(asyncio.run, session.get_items()).result(timeout=60)
    assert sorted(contents(items)) == ["m0", "m1"]
