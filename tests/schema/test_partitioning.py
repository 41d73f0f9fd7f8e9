"""Beyond one machine: agentledger on a hash-partitioned ``conversation_messages``.

Every key of the message table contains ``session_id`` (docs/schema.md), so the table
can be hash-partitioned (or distributed, Citus-style) by session without changing the library.
This test proves it on PostgreSQL: the schema comes from agentledger's own migrations, then
the SQL of docs/scaling.md (read from the page, run as written) replaces
``conversation_messages`` by a table with identical columns, constraints, indexes and policies,
``PARTITION BY HASH (session_id)`` in 16 partitions. The library runs on it unchanged, and
EXPLAIN shows that each per-session statement it issues (append, tail read, pop, clearing the
history, deleting the session) touches exactly one partition. The statements are captured as
they are sent (``before_cursor_execute``) and explained with the same parameters; the capture
switches the asyncpg fast path off, so the test also checks that the fast path sends the very
same SQL text.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection

from agentledger import Ledger
from agentledger.db.fastpath import DriverStatements
from agentledger.db.statements import items_query, pg_append_statement
from agentledger.testing import create_pg_database, drop_pg_database, pg_url
from tests.support.docs import partitioning_sql, run_sql_script

PARTITIONS = 16
TABLE = "conversation_messages"
PARTITION_NAME = re.compile(rf"^{TABLE}_p\d+$")


# -- the table's shape, before and after partitioning ------------------------------------------


async def table_shape(connection: AsyncConnection, table: str) -> dict[str, Any]:
    """Columns (name, type, nullability, default), constraints (name, definition), the other
    indexes, the row-level security policies and whether row-level security is on."""
    columns = await connection.execute(
        text(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull, "
            "pg_get_expr(d.adbin, d.adrelid) "
            "FROM pg_attribute a LEFT JOIN pg_attrdef d "
            "  ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = CAST(:table AS regclass) AND a.attnum > 0 "
            "  AND NOT a.attisdropped ORDER BY a.attnum"
        ),
        {"table": table},
    )
    constraints = await connection.execute(
        text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = CAST(:table AS regclass) AND conparentid = 0 ORDER BY conname"
        ),
        {"table": table},
    )
    indexes = await connection.execute(
        text(
            "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid "
            "WHERE x.indrelid = CAST(:table AS regclass) "
            "  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid) "
            "ORDER BY i.relname"
        ),
        {"table": table},
    )
    policies = await connection.execute(
        text(
            "SELECT policyname, permissive, roles::text, cmd, qual, with_check FROM pg_policies "
            "WHERE schemaname = current_schema() AND tablename = :table ORDER BY policyname"
        ),
        {"table": table},
    )
    security = await connection.execute(
        text(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class "
            "WHERE oid = CAST(:table AS regclass)"
        ),
        {"table": table},
    )
    return {
        "columns": [tuple(row) for row in columns],
        "constraints": [tuple(row) for row in constraints],
        "indexes": [tuple(row) for row in indexes],
        "policies": [tuple(row) for row in policies],
        "row_security": tuple(security.one()),
    }


def comparable(shape: dict[str, Any]) -> dict[str, Any]:
    """``shape`` with what only the spelling changes normalized: PostgreSQL deparses a
    re-created CHECK with its casts placed differently (``ARRAY[('a'::varchar)::text]`` vs
    ``(ARRAY['a'::varchar])::text[]``), which means the same."""

    def normalized(definition: str) -> str:
        if not definition.startswith("CHECK"):
            return definition
        return re.sub(r"::[a-z ]+(\[\])?|[()\s]", "", definition)

    return {
        **shape,
        "constraints": [(name, normalized(d)) for name, d in shape["constraints"]],
        # A partitioned table's own index is defined "ON ONLY" it (partitions get theirs).
        "indexes": [(name, d.replace(" ON ONLY ", " ON ")) for name, d in shape["indexes"]],
    }


@pytest.fixture
async def partitioned() -> AsyncIterator[Ledger]:
    """A Ledger on a fresh database whose conversation_messages is hash-partitioned."""
    name = await create_pg_database()
    try:
        ledger = Ledger.from_url(pg_url(name))
        try:
            await ledger.upgrade()
            async with ledger.engine.connect() as connection:
                original = await table_shape(connection, TABLE)
            # docs/scaling.md's SQL, as a reader runs it (psql -f): the page is the one source.
            await run_sql_script(pg_url(name), partitioning_sql())
            async with ledger.engine.connect() as connection:
                assert comparable(await table_shape(connection, TABLE)) == comparable(original)
                strategy = await connection.scalar(
                    text(
                        "SELECT partstrat::text FROM pg_partitioned_table "
                        "WHERE partrelid = CAST(:t AS regclass)"
                    ),
                    {"t": TABLE},
                )
                assert strategy == "h"
                partitions = await connection.scalar(
                    text("SELECT count(*) FROM pg_inherits WHERE inhparent = CAST(:t AS regclass)"),
                    {"t": TABLE},
                )
                assert partitions == PARTITIONS
            yield ledger
        finally:
            await ledger.dispose()
    finally:
        await drop_pg_database(name)


# -- capturing and explaining what the library sends ----------------------------------------------


async def captured(ledger: Ledger, call: Callable[[], Awaitable[Any]]) -> list[tuple[str, Any]]:
    """The statements (SQL text, driver parameters) ``call`` sends through the ledger's engine."""
    seen: list[tuple[str, Any]] = []

    def record(_c: Any, _cur: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        seen.append((statement, parameters))

    engine = ledger.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        await call()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


def the_statement(seen: list[tuple[str, Any]], marker: str) -> tuple[str, Any]:
    matches = [entry for entry in seen if marker in entry[0]]
    assert len(matches) == 1, [entry[0][:80] for entry in seen]
    return matches[0]


def relations(plan: Any) -> list[str]:
    """Every relation the scan nodes of a JSON plan read (after partition pruning).

    A generic DELETE plan also lists every partition as a possible target of its ModifyTable
    node ("Target Tables"); the rows it deletes are the ones its (pruned) scans return.
    """
    found: list[str] = []
    if isinstance(plan, dict):
        if "Relation Name" in plan and str(plan.get("Node Type", "")).endswith("Scan"):
            found.append(plan["Relation Name"])
        for key, value in plan.items():
            if key != "Target Tables":
                found.extend(relations(value))
    elif isinstance(plan, list):
        for value in plan:
            found.extend(relations(value))
    return found


def pruned_at_start(plan: Any) -> int:
    """How many partitions the executor pruned at start-up ("Subplans Removed")."""
    if isinstance(plan, dict):
        own = int(plan.get("Subplans Removed", 0))
        return own + sum(pruned_at_start(value) for value in plan.values())
    if isinstance(plan, list):
        return sum(pruned_at_start(value) for value in plan)
    return 0


async def explain(ledger: Ledger, sql: str, parameters: Any, *, generic: bool) -> dict[str, Any]:
    """EXPLAIN ANALYZE the statement with its parameters, in a transaction rolled back after.

    The statement is PREPAREd and explained as ``EXECUTE`` with the same parameter values, so
    ``generic`` can force the generic plan that a prepared statement (asyncpg caches them)
    switches to after five runs, where partitions are pruned when the executor starts rather
    than while planning. Returns the partitions of conversation_messages the plan touches and
    those whose rows the statement inserted or deleted (tuple routing and cascades happen
    below the plan), from this backend's ``pg_stat_xact_user_tables``.
    """
    async with ledger.engine.connect() as connection:
        transaction = await connection.begin()
        await connection.exec_driver_sql(f"PREPARE explained AS {sql}")
        try:
            mode = "force_generic_plan" if generic else "force_custom_plan"
            await connection.exec_driver_sql(f"SET LOCAL plan_cache_mode = {mode}")
            arguments = await as_literals(connection, parameters)
            before = await row_changes(connection)
            result = await connection.exec_driver_sql(
                f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE explained({', '.join(arguments)})"
            )
            document = result.scalar_one()
            plan = json.loads(document) if isinstance(document, str) else document
            after = await row_changes(connection)
            locks = await connection.execute(
                text(
                    "SELECT DISTINCT relation::regclass::text FROM pg_locks "
                    "WHERE pid = pg_backend_pid() AND relation IN "
                    "(SELECT inhrelid FROM pg_inherits WHERE inhparent = CAST(:t AS regclass))"
                ),
                {"t": TABLE},
            )
            return {
                "generic": generic,
                "locked": sorted(row[0] for row in locks),
                "scanned": sorted({r for r in relations(plan) if PARTITION_NAME.match(r)}),
                "written": sorted(name for name, count in after.items() if count != before[name]),
                "plan": plan,
            }
        finally:
            await transaction.rollback()
            await connection.exec_driver_sql("DEALLOCATE explained")


async def as_literals(connection: AsyncConnection, parameters: Any) -> list[str]:
    """The parameters of the prepared statement ``explained`` as SQL literals (quoted by the
    server, through each parameter's own type)."""
    result = await connection.exec_driver_sql(
        "SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = 'explained'"
    )
    types = result.scalar_one()
    assert len(types) == len(parameters)
    literals = []
    for value, type_name in zip(parameters, types, strict=True):
        quoted = await connection.exec_driver_sql(
            f"SELECT quote_nullable(CAST(CAST($1 AS {type_name}) AS text))", (value,)
        )
        literals.append(f"CAST({quoted.scalar_one()} AS {type_name})")
    return literals


def one_partition(result: dict[str, Any], home: str, *, scans: bool, writes: bool) -> None:
    """The explained statement read (``scans``) and changed (``writes``) rows of the session's
    partition only. Locks: a custom plan locks that partition alone; a generic plan prunes
    when the executor starts, after PostgreSQL (15, at least) has locked every partition the
    plan names, so there only the home partition's presence is checked."""
    assert result["scanned"] == ([home] if scans else [])
    assert result["written"] == ([home] if writes else [])
    if result["generic"]:
        assert home in result["locked"]
    else:
        assert result["locked"] == [home]


async def row_changes(connection: AsyncConnection) -> dict[str, int]:
    """Rows inserted, updated or deleted per partition as counted by this backend so far
    (``pg_stat_xact_user_tables`` also holds counts not yet flushed from earlier work on the
    same connection, hence before/after differences)."""
    rows = await connection.execute(
        text(
            "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_xact_user_tables "
            "WHERE relname LIKE :pattern"
        ),
        {"pattern": f"{TABLE}_p%"},
    )
    counts = {str(name): int(count) for name, count in rows}
    assert len(counts) == PARTITIONS
    return counts


async def partition_of(ledger: Ledger, session_id: uuid.UUID) -> str:
    """The partition holding the session's messages (they are all in one)."""
    async with ledger.engine.connect() as connection:
        rows = await connection.execute(
            text(f"SELECT DISTINCT tableoid::regclass::text FROM {TABLE} WHERE session_id = :s"),
            {"s": session_id},
        )
        names = [row[0] for row in rows]
    assert len(names) == 1, names
    return str(names[0])


def turn(n: int) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": f"question {n}"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": f"answer {n}", "annotations": []}],
        },
    ]


# -- the tests ----------------------------------------------------------------------------------


async def test_library_runs_unchanged_on_partitioned_messages(partitioned: Ledger) -> None:
    ledger = partitioned
    svc = ledger.service
    sessions = [ledger.agent_session(f"chat-{n}", user_id="u1") for n in range(24)]
    for n, session in enumerate(sessions):
        await session.add_items(turn(n))  # type: ignore[arg-type]
        await session.add_items(turn(n + 100))  # type: ignore[arg-type]
    # Sessions spread over the partitions, each session's rows in a single one.
    homes = {await partition_of(ledger, s.ledger_session_id) for s in sessions}
    assert len(homes) > 1
    first = sessions[0]
    assert await first.get_items(2) == turn(100)
    assert await first.get_items() == turn(0) + turn(100)
    assert await first.pop_item() == turn(100)[1]
    assert [m.content for m in (await svc.get_session(first.ledger_session_id)).messages] == [  # type: ignore[union-attr]
        "question 0",
        "answer 0",
        "question 100",
    ]
    await first.clear_session()
    assert await first.get_items() == []
    await first.add_items(turn(7))  # type: ignore[arg-type]
    assert await first.get_items() == turn(7)
    assert await svc.delete_session(sessions[1].ledger_session_id)
    assert await sessions[1].get_items() == []
    async with ledger.engine.connect() as connection:
        left = await connection.scalar(
            text(f"SELECT count(*) FROM {TABLE} WHERE session_id = :s"),
            {"s": sessions[1].ledger_session_id},
        )
    assert left == 0
    assert await sessions[2].get_items() == turn(2) + turn(102)


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
async def test_each_session_statement_touches_one_partition(
    partitioned: Ledger, generic: bool
) -> None:
    ledger = partitioned
    svc = ledger.service
    session = ledger.agent_session("explained", user_id="u1", agent_name="A")
    sid = session.ledger_session_id
    for n in range(3):
        await session.add_items(turn(n))  # type: ignore[arg-type]
    others = [ledger.agent_session(f"other-{n}", user_id="u1") for n in range(20)]
    for n, other in enumerate(others):
        await other.add_items(turn(n))  # type: ignore[arg-type]
    home = await partition_of(ledger, sid)
    driver = DriverStatements(ledger.engine)

    # Append (the single statement: create-or-lock, allocate, insert all rows).
    append_sql, append_params = the_statement(
        await captured(ledger, lambda: session.add_items(turn(3))),  # type: ignore[arg-type]
        "INSERT INTO conversation_messages",
    )
    append_statement = pg_append_statement(create=True, owned=True)
    assert append_sql == driver.sql(append_statement)
    # The captured append ran; explained again, its rows need ids of their own.
    append_params = list(append_params)
    position = driver.parameter_names(append_statement).index("ids")
    append_params[position] = [uuid.uuid4() for _ in append_params[position]]
    appended = await explain(ledger, append_sql, tuple(append_params), generic=generic)
    one_partition(appended, home, scans=False, writes=True)  # rows routed, nothing read

    # Tail read.
    tail_sql, tail_params = the_statement(
        await captured(ledger, lambda: session.get_items(3)), "FROM conversation_messages"
    )
    assert tail_sql == driver.sql(items_query(latest=True, owned=True, compacted=True))
    tail = await explain(ledger, tail_sql, tail_params, generic=generic)
    one_partition(tail, home, scans=True, writes=False)
    # A custom plan prunes while planning; a generic one when the executor starts.
    assert pruned_at_start(tail["plan"]) == (PARTITIONS - 1 if generic else 0)

    # Full read.
    full_sql, full_params = the_statement(
        await captured(ledger, lambda: session.get_items()), "FROM conversation_messages"
    )
    assert full_sql == driver.sql(items_query(latest=False, owned=True, compacted=True))
    full = await explain(ledger, full_sql, full_params, generic=generic)
    one_partition(full, home, scans=True, writes=False)

    # Pop (its DELETE; explained once the popped position holds an item again).
    pop_sql, pop_params = the_statement(
        await captured(ledger, session.pop_item), "DELETE FROM conversation_messages"
    )
    await session.add_items(turn(10))  # type: ignore[arg-type]
    popped = await explain(ledger, pop_sql, pop_params, generic=generic)
    one_partition(popped, home, scans=True, writes=True)

    # Clearing the history (explained once there is history again).
    clear_sql, clear_params = the_statement(
        await captured(ledger, session.clear_session), "DELETE FROM conversation_messages"
    )
    await session.add_items(turn(8))  # type: ignore[arg-type]
    cleared = await explain(ledger, clear_sql, clear_params, generic=generic)
    one_partition(cleared, home, scans=True, writes=True)

    # Deleting the session: its messages go by the foreign key's cascade, from one partition
    # (explained once the session, same id, exists again with history).
    delete_sql, delete_params = the_statement(
        await captured(ledger, lambda: svc.delete_session(sid)), "DELETE FROM agent_sessions"
    )
    await session.add_items(turn(9))  # type: ignore[arg-type]
    deleted = await explain(ledger, delete_sql, delete_params, generic=generic)
    one_partition(deleted, home, scans=False, writes=True)  # the cascade runs below the plan

    # Explaining ran each statement in a transaction that was rolled back: nothing changed.
    assert await session.get_items() == turn(9)
    for n, other in enumerate(others):
        assert await other.get_items() == turn(n)
