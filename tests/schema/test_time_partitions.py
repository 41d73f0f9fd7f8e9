"""Retiring old history by dropping a month: ``conversation_messages`` partitioned by time.

The schema comes from agentledger's migrations; the SQL of docs/scaling.md (read from the page,
run as written) partitions the messages by ``created_at``, one partition per month. Messages
are dated by the service's clock, so a service whose clock stands in January 2025 writes into
that month. ``retire_message_partition`` then drops a month: every history it held rows of
starts after the newest of them, with pairs kept whole, in one short transaction; the page's
own Python block does the first retirement.
"""

from __future__ import annotations

import ast
import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from agentledger import Ledger, SessionService
from agentledger.domain.records import PartitionRetirement
from agentledger.errors import (
    InvalidInputError,
    LedgerTimeoutError,
    PermissionDeniedError,
    UnsupportedBackendError,
)
from agentledger.testing import create_pg_database, drop_pg_database, pg_url
from tests.support.docs import run_sql_script, time_partitioning_python, time_partitioning_sql
from tests.support.processes import SUBPROCESS_TIMEOUT

JANUARY = datetime(2025, 1, 10, 12, tzinfo=UTC)
FEBRUARY = datetime(2025, 2, 10, 12, tzinfo=UTC)
JAN = "conversation_messages_2025_01"


def user(text_: str) -> dict[str, Any]:
    return {"role": "user", "content": text_}


def assistant(text_: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text_}


def call(call_id: str) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": "lookup", "arguments": "{}"}


def output(call_id: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": "found"}


class Clock:
    """The time the services below write at (moved by the test)."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
async def months() -> AsyncIterator[tuple[Ledger, str]]:
    """A Ledger on a fresh database whose messages are partitioned by month (the page's SQL),
    with the months of the first half of 2025 created."""
    name = await create_pg_database()
    url = pg_url(name)
    try:
        ledger = Ledger.from_url(url)
        try:
            await ledger.upgrade()
            await run_sql_script(url, time_partitioning_sql())
            await run_sql_script(url, "SELECT agentledger_month_partitions('2025-01-01', 6)")
            yield ledger, url
        finally:
            await ledger.dispose()
    finally:
        await drop_pg_database(name)


async def partitions(ledger: Ledger) -> list[str]:
    async with ledger.engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = CAST('conversation_messages' AS regclass) ORDER BY 1"
            )
        )
        return [row[0] for row in rows]


async def history(svc: SessionService, sid: uuid.UUID) -> list[tuple[int, Any]]:
    """``(seq, item)`` of the whole history, checking that it is gap-free from its start."""
    record = await svc.get_session(sid)
    assert record is not None
    seqs = [message.seq for message in record.messages]
    first = seqs[0] if seqs else 1
    assert seqs == list(range(first, first + len(seqs)))
    return [(message.seq, message.item) for message in record.messages]


async def test_the_recipe_changes_only_the_keys(months: tuple[Ledger, str]) -> None:
    ledger, _url = months
    async with ledger.engine.connect() as connection:
        keys: dict[str, str] = dict(
            (
                await connection.execute(
                    text(
                        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                        "WHERE conrelid = CAST('conversation_messages' AS regclass) "
                        "AND contype IN ('p', 'u')"
                    )
                )
            ).all()
        )
        strategy = await connection.scalar(
            text(
                "SELECT partstrat::text FROM pg_partitioned_table "
                "WHERE partrelid = CAST('conversation_messages' AS regclass)"
            )
        )
    assert keys == {
        "pk_conversation_messages": "PRIMARY KEY (session_id, seq, created_at)",
        "uq_conversation_messages_session_id_id": "UNIQUE (session_id, id, created_at)",
    }
    assert strategy == "r"
    found = await partitions(ledger)
    assert "conversation_messages_default" in found
    assert {f"conversation_messages_2025_0{month}" for month in range(1, 7)} <= set(found)
    now = datetime.now(UTC)
    assert f"conversation_messages_{now:%Y_%m}" in found  # the page's own call: this month on


async def test_retiring_a_month_cuts_each_history_after_it(months: tuple[Ledger, str]) -> None:
    ledger, _url = months
    clock = Clock(JANUARY)
    svc = SessionService(ledger.unit_of_work, clock=clock)
    sids = {}
    for key in "ABCDEF":
        if key != "F":
            sids[key] = (await svc.create_session(user_id="u1", agent_name="bot")).id
    # January.
    await svc.add_items(sids["A"], [user("a1"), assistant("a2"), user("a3"), assistant("a4")])
    await svc.add_items(sids["B"], [user("b1"), call("call_b")])
    await svc.add_items(sids["C"], [user("c1"), assistant("c2")])
    await svc.add_items(sids["E"], [user("e1")])
    # February (E's second message comes from a writer whose clock is already in February,
    # its third from one still in January: rows numbered below a January row, dated later).
    clock.at = FEBRUARY
    await svc.add_items(sids["A"], [user("a5"), assistant("a6")])
    await svc.add_items(sids["B"], [output("call_b"), assistant("b4"), user("b5")])
    await svc.add_items(sids["D"], [user("d1")])
    await svc.add_items(sids["E"], [assistant("e2")])
    clock.at = datetime(2025, 1, 31, 23, 59, tzinfo=UTC)
    await svc.add_items(sids["E"], [user("e3")])
    clock.at = FEBRUARY
    await svc.add_items(sids["E"], [assistant("e4")])
    # A fork copies its source's messages with their dates: its January rows go too.
    sids["F"] = (await svc.fork_session(sids["A"])).id

    before = {key: await history(svc, sid) for key, sid in sids.items()}
    dry = await svc.retire_message_partition(JAN, dry_run=True)
    assert JAN in await partitions(ledger)
    assert {key: await history(svc, sid) for key, sid in sids.items()} == before

    # The page's own block retires the month (it names conversation_messages_2025_01).
    namespace: dict[str, Any] = {"ledger": ledger}
    code = compile(
        time_partitioning_python(), "scaling.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )
    result = eval(code, namespace)
    if asyncio.iscoroutine(result):
        await result
    report: PartitionRetirement = namespace["report"]

    # A, B, C, E and the fork had January rows; D had none.
    assert (report.sessions, report.messages) == (5, 4 + 2 + 2 + 2 + 4)
    # Beyond the month: B's output (its call went) and E's February row numbered 2.
    assert report.beyond == 2
    assert (dry.sessions, dry.messages, dry.beyond, dry.dry_run) == (5, 14, 2, True)
    assert JAN not in await partitions(ledger)

    after = {key: await history(svc, sid) for key, sid in sids.items()}
    assert after["A"] == before["A"][4:]
    assert after["B"] == before["B"][3:]  # starts at b4: never at an output without its call
    assert after["C"] == []
    assert after["D"] == before["D"]
    assert after["E"] == before["E"][3:]
    assert after["F"] == before["F"][4:]
    assert [item for _seq, item in after["A"]] == [user("a5"), assistant("a6")]
    # Counts follow the cut, and the histories go on where they were.
    listing = {s.id: s.message_count for s in await svc.list_user_sessions("u1", limit=10)}
    assert [listing[sids[key]] for key in "ABC"] == [2, 2, 0]
    appended = await svc.add_items(sids["A"], [user("a7")])
    assert appended.first_seq == 7
    assert await svc.get_items(sids["C"]) == []
    assert (await svc.add_items(sids["C"], [user("c3")])).first_seq == 3


async def test_writers_keep_going_while_a_month_is_retired(months: tuple[Ledger, str]) -> None:
    """Appends and reads run on the touched sessions while the month goes: nothing appended is
    lost, every history stays gap-free, and each read is a history before or after the cut."""
    ledger, _url = months
    clock = Clock(JANUARY)
    january = SessionService(ledger.unit_of_work, clock=clock)
    sids = [(await january.create_session(user_id="u1", agent_name="bot")).id for _ in range(8)]
    for sid in sids:
        await january.add_items(sid, [user(f"old {n}") for n in range(5)])
    svc = ledger.service  # writes now, into this month's partition
    stop = asyncio.Event()
    appended: dict[uuid.UUID, list[str]] = {sid: [] for sid in sids}
    seen_lengths: list[int] = []

    async def writer(sid: uuid.UUID) -> None:
        n = 0
        while not stop.is_set():
            await svc.add_items(sid, [user(f"new {n}")])
            appended[sid].append(f"new {n}")
            n += 1

    async def reader(sid: uuid.UUID) -> None:
        while not stop.is_set():
            items = await svc.get_items(sid)
            old = [item for item in items if item["content"].startswith("old")]
            assert len(old) in (0, 5)  # all of January, or none: never part of it
            seen_lengths.append(len(old))
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(writer(sid)) for sid in sids]
    tasks += [asyncio.create_task(reader(sid)) for sid in sids[:2]]
    await asyncio.sleep(0.3)
    report = await svc.retire_message_partition(JAN)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*tasks)
    assert (report.sessions, report.messages) == (8, 40)
    assert {0, 5} <= set(seen_lengths)
    for sid in sids:
        items = [item for _seq, item in await history(svc, sid)]
        assert [item["content"] for item in items] == appended[sid]


async def test_pops_and_rewinds_meanwhile_do_not_deadlock_it(months: tuple[Ledger, str]) -> None:
    """Pop and rewind lock a session's row and then its messages; retiring takes the tables
    in that order too (regression: the other order deadlocked, every time)."""
    ledger, _url = months
    january = SessionService(ledger.unit_of_work, clock=Clock(JANUARY))
    sids = [(await january.create_session(user_id="u1", agent_name="bot")).id for _ in range(4)]
    for sid in sids:
        await january.add_items(sid, [user(f"old {n}") for n in range(3)])
    svc = ledger.service
    stop = asyncio.Event()

    async def churn(sid: uuid.UUID) -> None:
        while not stop.is_set():
            await svc.add_items(sid, [user("a"), assistant("b")])
            await svc.pop_item(sid)
            state = await svc.get_session(sid)
            assert state is not None
            await svc.rewind_session(sid, state.messages[-1].seq - 1 if state.messages else 0)

    tasks = [asyncio.create_task(churn(sid)) for sid in sids]
    try:
        await asyncio.sleep(0.2)
        for month in ("01", "02", "03"):
            report = await svc.retire_message_partition(f"conversation_messages_2025_{month}")
            assert report.partition.endswith(month)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    for sid in sids:
        assert [item["content"] for item in await svc.get_items(sid)] in ([], ["a"])


async def test_mistakes_are_refused_and_drop_nothing(months: tuple[Ledger, str]) -> None:
    ledger, _url = months
    svc = ledger.service
    before = await partitions(ledger)
    with pytest.raises(InvalidInputError, match="not a partition of conversation_messages"):
        await svc.retire_message_partition("agent_sessions")
    with pytest.raises(InvalidInputError, match=r"conversation_messages_2025_01 \(FOR VALUES"):
        await svc.retire_message_partition('x"; DROP TABLE agent_sessions; --')
    with pytest.raises(PermissionDeniedError, match="for_user"):
        await svc.for_user("u1").retire_message_partition(JAN)
    with pytest.raises(InvalidInputError, match="lock_timeout must be positive"):
        await svc.retire_message_partition(JAN, lock_timeout=timedelta(0))
    with pytest.raises(InvalidInputError, match="default partition"):
        await svc.retire_message_partition("conversation_messages_default")
    async with ledger.engine.connect() as connection:
        await svc.using(connection).get_session(uuid.uuid4())  # a borrowed transaction works
        with pytest.raises(InvalidInputError, match=r"not inside service\.using"):
            await svc.using(connection).retire_message_partition(JAN)
        await connection.rollback()
    assert await partitions(ledger) == before


async def test_a_long_transaction_makes_it_wait_and_try_again_then_fail(
    months: tuple[Ledger, str],
) -> None:
    ledger, _url = months
    wait = timedelta(milliseconds=50)
    async with ledger.engine.connect() as holder:
        await holder.execute(text("SELECT count(*) FROM conversation_messages"))  # holds a lock
        with pytest.raises(LedgerTimeoutError):
            await ledger.service.retire_message_partition(JAN, lock_timeout=wait)
        assert JAN in await partitions(ledger)
        # Released while it waits between tries: the next try gets the lock.
        retiring = asyncio.create_task(
            ledger.service.retire_message_partition(JAN, lock_timeout=wait)
        )
        await asyncio.sleep(0.12)
        assert not retiring.done()
        await holder.rollback()
    assert (await retiring).partition == JAN
    assert JAN not in await partitions(ledger)


async def test_a_history_changed_while_it_waited_is_planned_again(
    months: tuple[Ledger, str],
) -> None:
    """Rewound and refilled to the same length at the same time, after the plan and before
    the lock (regression: the stale plan's cut took the refill's first message)."""
    ledger, _url = months
    clock = Clock(JANUARY)
    svc = SessionService(ledger.unit_of_work, clock=clock)
    held = (await svc.create_session(user_id="u1", agent_name="bot")).id
    sid = (await svc.create_session(user_id="u1", agent_name="bot")).id
    await svc.add_items(sid, [user("q"), call("c1")])
    clock.at = FEBRUARY
    await svc.add_items(sid, [output("c1"), assistant("a")])  # planned cut: through the output
    async with ledger.engine.connect() as holder:
        host = SessionService(ledger.unit_of_work, clock=clock).using(holder)
        await host.add_items(held, [user("holds the lock")])
        retiring = asyncio.create_task(ledger.service.retire_message_partition(JAN))
        await asyncio.sleep(1.0)  # planned, now waiting for the tables
        assert not retiring.done()
        await host.rewind_session(sid, 2)
        await host.add_items(sid, [user("new"), assistant("new2")])  # same length, same time
        await holder.commit()
    await retiring
    assert await ledger.service.get_items(sid) == [user("new"), assistant("new2")]


async def test_outputs_far_from_their_dropped_calls_go_with_them(
    months: tuple[Ledger, str],
) -> None:
    ledger, _url = months
    clock = Clock(JANUARY)
    svc = SessionService(ledger.unit_of_work, clock=clock)
    sid = (await svc.create_session(user_id="u1", agent_name="bot")).id
    chatter = [user(f"while waiting {n}") for n in range(10)]
    await svc.add_items(sid, [user("go"), call("slow"), *chatter])
    clock.at = FEBRUARY
    await svc.add_items(sid, [*chatter, output("slow"), assistant("done"), user("next")])
    await ledger.service.retire_message_partition(JAN)
    assert await svc.get_items(sid) == [assistant("done"), user("next")]


async def test_a_partition_in_another_schema_is_the_one_dropped(
    months: tuple[Ledger, str],
) -> None:
    """A plain table of the same name elsewhere (a backup, say) is neither read nor dropped
    (regression: it was both)."""
    ledger, url = months
    await run_sql_script(
        url,
        "CREATE SCHEMA archive; "
        "CREATE TABLE archive.conversation_messages_2025_07 PARTITION OF conversation_messages "
        "FOR VALUES FROM ('2025-07-01 00:00:00+00') TO ('2025-08-01 00:00:00+00'); "
        "CREATE TABLE public.conversation_messages_2025_08_copy (LIKE conversation_messages);",
    )
    clock = Clock(datetime(2025, 7, 10, tzinfo=UTC))
    svc = SessionService(ledger.unit_of_work, clock=clock)
    sid = (await svc.create_session(user_id="u1", agent_name="bot")).id
    await svc.add_items(sid, [user("july")])
    await run_sql_script(
        url,
        "ALTER TABLE public.conversation_messages_2025_08_copy "
        "RENAME TO conversation_messages_2025_07",
    )
    report = await ledger.service.retire_message_partition("conversation_messages_2025_07")
    assert (report.sessions, report.messages) == (1, 1)
    assert "conversation_messages_2025_07" not in await partitions(ledger)
    async with ledger.engine.connect() as connection:
        kept = await connection.scalar(
            text("SELECT to_regclass('public.conversation_messages_2025_07') IS NOT NULL")
        )
    assert kept
    assert await svc.get_items(sid) == []


async def test_the_command_line_retires_a_month(months: tuple[Ledger, str]) -> None:
    ledger, url = months
    svc = SessionService(ledger.unit_of_work, clock=Clock(JANUARY))
    sid = (await svc.create_session(user_id="u1", agent_name="bot")).id
    await svc.add_items(sid, [user("q"), assistant("a")])

    async def command(*args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentledger",
            "--database-url",
            url,
            "retire-partition",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), SUBPROCESS_TIMEOUT)
        assert process.returncode is not None
        return process.returncode, (out + err).decode()

    code, shown = await command(JAN, "--dry-run", "--json")
    assert code == 0, shown
    assert json.loads(shown) == {
        "partition": JAN,
        "sessions": 1,
        "messages": 2,
        "beyond": 0,
        "dry_run": True,
    }
    code, shown = await command(JAN)
    assert code == 0, shown
    assert shown.strip() == f"{JAN}: dropped 2 messages of 1 sessions"
    code, shown = await command(JAN)
    assert code == 1
    assert "is not a partition of conversation_messages" in shown


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_sqlite_has_no_time_partitions(ledger: Ledger) -> None:
    with pytest.raises(UnsupportedBackendError, match="apply_retention"):
        await ledger.service.retire_message_partition(JAN)


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_an_unpartitioned_table_is_named_as_such(ledger: Ledger) -> None:
    with pytest.raises(InvalidInputError, match="is not partitioned here"):
        await ledger.service.retire_message_partition(JAN)
