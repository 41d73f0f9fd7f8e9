"""PostgreSQL row-level security (revision agentledger_0003, opt-in), from a non-superuser role.

Each test gets a database at head and its own application role, created with the GRANT block of
``docs/security.md`` (the role name made unique: roles are cluster-wide). The tables' owner
(``postgres``, a superuser) switches row-level security on; the application connects as the
role, so the policies bind it. Rows are checked with raw SQL from the role as well as through
the API, so a policy that forgot a table cannot hide behind the service's own ownership checks.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from agents import Agent, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from agentledger import (
    Ledger,
    LedgerSettings,
    PermissionDeniedError,
    SessionNotFoundError,
    UnsupportedBackendError,
    Usage,
)
from agentledger.db.fastpath import DriverStatements
from agentledger.db.statements import items_query
from agentledger.domain.records import SessionSpec
from agentledger.schema.row_security import PROTECTED_TABLES
from agentledger.testing import create_pg_database, drop_pg_database, pg_url
from tests.conftest import run_sync
from tests.support.docs import blocks, run_doc_shell, run_sql_script

if TYPE_CHECKING:
    # agentledger exports it lazily (its module __getattr__, typed ``object``); mypy reads it
    # from where it is defined, the test imports it the way the docs do.
    from agentledger.integrations.openai_agents import SessionAgent
else:
    from agentledger import SessionAgent

DOC = "docs/security.md"
DOC_ROLE = "agentledger_app"


@dataclass(frozen=True)
class RlsDatabase:
    owner_url: str
    app_url: str
    role: str


def _doc_blocks(kind: str) -> list[str]:
    return [block.body for block in blocks(DOC) if block.kind == kind]


@pytest.fixture
async def rls_db(request: pytest.FixtureRequest) -> AsyncIterator[RlsDatabase]:
    """A database at head plus an application role holding the documented grants."""
    name = await create_pg_database(template=request.getfixturevalue("pg_template"))
    role = f"agentledger_app_{uuid.uuid4().hex[:10]}"
    owner_url = pg_url(name)
    try:
        (grants,) = _doc_blocks("sql")
        await run_sql_script(owner_url, re.sub(rf"\b{DOC_ROLE}\b", role, grants))
        app_url = make_url(owner_url).set(username=role).render_as_string(hide_password=False)
        yield RlsDatabase(owner_url, app_url, role)
    finally:
        await drop_pg_database(name)
        await run_sql_script(pg_url("postgres"), f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture
async def enabled(rls_db: RlsDatabase) -> RlsDatabase:
    async with Ledger.from_url(rls_db.owner_url) as owner:
        status = await owner.set_row_level_security(True)
    assert status.enabled
    assert not status.protects_role
    return rls_db


async def _counts(url: str, tenant: str | None) -> dict[str, int]:
    """Rows of every agentledger table visible to ``url``'s role under ``tenant``."""
    connection = await asyncpg.connect(url)
    try:
        async with connection.transaction():
            if tenant is not None:
                await connection.execute(
                    "SELECT set_config('agentledger.user_id', $1, true)", tenant
                )
            return {
                table: await connection.fetchval(f"SELECT count(*) FROM {table}")
                for table in PROTECTED_TABLES
            }
    finally:
        await connection.close()


async def _alice_everywhere(ledger: Ledger) -> uuid.UUID:
    """Alice's session with a row in every table (messages, an idempotent batch, usage, a
    compaction checkpoint)."""
    alice = ledger.service.for_user("alice")
    chat = await alice.create_session(user_id="alice", agent_name="support", metadata={"k": 1})
    await alice.add_messages(
        chat.id,
        [{"role": "user", "content": "secret plan"}, {"role": "assistant", "content": "ok"}],
        idempotency_key="turn-1",
    )
    await alice.record_usage(chat.id, _usage())
    await alice.add_checkpoint(chat.id, [{"role": "user", "content": "summary"}], upto_seq=1)
    return chat.id


def _usage() -> Usage:
    return Usage(requests=1, input_tokens=3, output_tokens=4, total_tokens=7)


# -- the policies bind the application role ----------------------------------------------------


async def test_another_tenant_and_no_tenant_see_no_row_of_any_table(
    enabled: RlsDatabase,
) -> None:
    async with Ledger.from_url(enabled.app_url) as app:
        status = await app.row_level_security()
        assert status.protects_role
        assert status.role == enabled.role
        await _alice_everywhere(app)

    assert await _counts(enabled.app_url, "alice") == {
        "agent_sessions": 1,
        "conversation_batches": 1,
        "conversation_messages": 2,
        "session_checkpoints": 1,
        "session_usage": 1,
        # Framework state (Google ADK's app:, user: and session state): none written here.
        "ledger_app_state": 0,
        "ledger_session_state": 0,
        "ledger_user_state": 0,
    }
    nothing = dict.fromkeys(PROTECTED_TABLES, 0)
    assert await _counts(enabled.app_url, "mallory") == nothing
    assert await _counts(enabled.app_url, None) == nothing
    # The owner is exempt: the rows are really there.
    assert (await _counts(enabled.owner_url, None))["conversation_messages"] == 2


async def test_another_tenants_scope_reads_nothing_and_changes_nothing(
    enabled: RlsDatabase,
) -> None:
    async with Ledger.from_url(enabled.app_url) as app:
        sid = await _alice_everywhere(app)
        mallory = app.service.for_user("mallory")
        before = await _counts(enabled.owner_url, None)

        # Not even the service's own user_id checks are in play here: no user_id= anywhere.
        assert await mallory.get_session(sid) is None
        assert (await mallory.list_user_sessions("alice")).sessions == ()
        assert (await mallory.search("alice", "secret")).hits == ()
        assert await mallory.get_items(sid) == []
        assert await mallory.get_usage(sid) == Usage()  # as for a session without usage
        assert not await mallory.delete_session(sid)
        for attempt in (
            mallory.add_message(sid, role="user", content="injected"),
            mallory.fork_session(sid),
            mallory.rewind_session(sid, 1),
            mallory.update_metadata(sid, {"k": 2}),
            mallory.set_title(sid, "pwned"),
            mallory.export_session(sid),
            mallory.record_usage(sid, _usage()),
        ):
            with pytest.raises(SessionNotFoundError):
                await attempt
        assert await mallory.pop_item(sid) is None
        await mallory.clear_session(sid)
        with pytest.raises(PermissionDeniedError, match="acts for 'mallory'"):
            await mallory.erase_user("alice")
        # Creating rows owned by someone else is refused by the policy's WITH CHECK.
        with pytest.raises(PermissionDeniedError, match="for_user"):
            await mallory.create_session(user_id="alice", agent_name="support")

        assert await _counts(enabled.owner_url, None) == before
        record = await app.service.for_user("alice").get_session(sid)
        assert record is not None
        assert [m.content for m in record.messages] == ["secret plan", "ok"]
        assert record.metadata == {"k": 1}
        assert record.title != "pwned"


async def test_an_unscoped_service_sees_nothing_and_may_write_nothing(
    enabled: RlsDatabase,
) -> None:
    async with Ledger.from_url(enabled.app_url) as app:
        sid = await _alice_everywhere(app)
        assert await app.service.get_session(sid) is None
        assert (await app.service.list_user_sessions("alice")).sessions == ()
        # Writes say what is wrong (no tenant named), as docs/security.md promises.
        for write in (
            app.service.add_message(sid, role="user", content="hi"),
            app.service.add_items(sid, [{"role": "user", "content": "hi"}]),
            app.service.record_usage(sid, Usage(1, 1, 1, 2)),
            app.service.rewind_session(sid, 0),
            app.service.update_metadata(sid, {"k": "v"}),
            app.service.create_session(user_id="alice", agent_name="support"),
        ):
            with pytest.raises(PermissionDeniedError, match="for_user"):
                await write


async def test_the_owner_scope_runs_every_operation_under_the_policies(
    enabled: RlsDatabase,
) -> None:
    async with Ledger.from_url(enabled.app_url) as app:
        alice = app.service.for_user("alice")
        sid = await _alice_everywhere(app)
        await alice.add_message(sid, role="user", content="second question")
        fork = await alice.fork_session(sid, 2, title="branch")
        assert [m.content for m in fork.messages] == ["secret plan", "ok"]
        assert await alice.rewind_session(sid, 2) == 1
        await alice.update_metadata(sid, {"plan": "pro"})
        await alice.set_title(sid, "Card question")
        hits = (await alice.search("alice", "secret")).hits
        assert {hit.session_id for hit in hits} == {sid, fork.id}
        assert len((await alice.export_session(sid)).messages) == 2
        assert (await alice.get_usage(sid)).total_tokens == 7
        assert await alice.pop_item(sid) == {"role": "assistant", "content": "ok"}
        await alice.clear_session(fork.id)
        page = await alice.list_user_sessions("alice")
        assert {summary.id for summary in page.sessions} == {sid, fork.id}
        assert await alice.delete_session(fork.id)
        report = await alice.erase_user("alice")
        assert report.sessions == 1
    assert await _counts(enabled.owner_url, None) == dict.fromkeys(PROTECTED_TABLES, 0)


async def test_the_tenant_setting_never_survives_in_a_pooled_connection(
    enabled: RlsDatabase,
) -> None:
    async with Ledger.from_url(enabled.app_url, pool_size=1, max_overflow=0) as app:
        sid = await _alice_everywhere(app)
        # The one pooled connection just ran alice's transactions; the next caller gets it.
        async with app.engine.connect() as connection:
            leftover = await connection.scalar(
                text("SELECT current_setting('agentledger.user_id', true)")
            )
            visible = await connection.scalar(text("SELECT count(*) FROM agent_sessions"))
        assert leftover in (None, "")
        assert visible == 0
        assert await app.service.get_session(sid) is None


async def test_the_setting_scopes_sdk_sessions_and_session_agent(enabled: RlsDatabase) -> None:
    set_tracing_disabled(True)
    settings = LedgerSettings(database_url=enabled.app_url, row_level_security=True)
    async with Ledger.from_settings(settings) as app:
        memory = app.agent_session("chat", user_id="alice", agent_name="support")
        await memory.add_items([{"role": "user", "content": "hello"}])
        assert await memory.get_items() == [{"role": "user", "content": "hello"}]
        assert await memory.pop_item() == {"role": "user", "content": "hello"}

        model = ScriptedModel([[assistant_message("Noted, Alice.")]])
        runner = SessionAgent(Agent(name="support", model=model), app)
        result = await runner.run("My name is Alice", user_id="alice")
        alice = app.service.for_user("alice")
        record = await alice.get_session(result.session_id)
        assert record is not None
        assert len(record.messages) == 2
        assert (await alice.get_usage(result.session_id)).requests == 1
        with pytest.raises(SessionNotFoundError):
            await runner.run("Who am I?", session_id=result.session_id, user_id="mallory")

    # Without the setting the SDK session runs unscoped, and the policies hide everything.
    async with Ledger.from_url(enabled.app_url) as unscoped:
        memory = unscoped.agent_session("chat", user_id="alice", agent_name="support")
        with pytest.raises(PermissionDeniedError):
            await memory.add_items([{"role": "user", "content": "hello"}])


async def test_the_setting_scopes_adk_sessions_and_their_state(enabled: RlsDatabase) -> None:
    """Google ADK sessions under the policies: each call acts as the session's user; a user's
    state is theirs, the app's state is shared by the app's users."""
    from google.adk.events.event import Event
    from google.adk.events.event_actions import EventActions

    from agentledger.integrations.adk import LedgerSessionService

    settings = LedgerSettings(database_url=enabled.app_url, row_level_security=True)
    async with Ledger.from_settings(settings) as app:
        adk = LedgerSessionService(app)
        session = await adk.create_session(
            app_name="a", user_id="alice", session_id="s", state={"user:pin": 1, "app:v": 2}
        )
        delta = {"user:pin": 3, "app:v": 4, "own": 5}
        await adk.append_event(
            session,
            Event(author="user", invocation_id="i", actions=EventActions(state_delta=delta)),
        )
        assert await adk.get_user_state(app_name="a", user_id="alice") == {"pin": 3}
        mallory = await adk.create_session(app_name="a", user_id="mallory", session_id="s")
        assert mallory.state == {"app:v": 4}
        assert [
            s.user_id for s in (await adk.list_sessions(app_name="a", user_id="alice")).sessions
        ] == ["alice"]
        alice = await adk.get_session(app_name="a", user_id="alice", session_id="s")
        assert alice is not None
        assert alice.state == {"own": 5, "user:pin": 3, "app:v": 4}
    counts = await _counts(enabled.app_url, "mallory")
    assert (counts["ledger_user_state"], counts["ledger_session_state"]) == (0, 1)
    assert counts["ledger_app_state"] == 1


async def test_a_scoped_service_inside_the_hosts_transaction(enabled: RlsDatabase) -> None:
    async with Ledger.from_url(enabled.app_url) as app:
        async with AsyncSession(app.engine) as host:
            alice = app.service.for_user("alice").using(host)
            chat = await alice.create_session(user_id="alice", agent_name="support")
            await alice.add_message(chat.id, role="user", content="inside the host")
            await host.commit()
        assert await _counts(enabled.app_url, "alice") == {
            "agent_sessions": 1,
            "conversation_batches": 0,
            "conversation_messages": 1,
            "session_checkpoints": 0,
            "session_usage": 0,
            "ledger_app_state": 0,
            "ledger_session_state": 0,
            "ledger_user_state": 0,
        }
        async with AsyncSession(app.engine) as host:
            assert await app.service.using(host).for_user("mallory").get_session(chat.id) is None


# -- switching, reporting, migrating ------------------------------------------------------------


async def test_switching_off_lifts_the_policies(enabled: RlsDatabase) -> None:
    async with Ledger.from_url(enabled.app_url) as app:
        await _alice_everywhere(app)
    async with Ledger.from_url(enabled.owner_url) as owner:
        status = await owner.set_row_level_security(False)
        assert status.tables == dict.fromkeys(PROTECTED_TABLES, False)
        assert status.exempt_because is not None
        assert "superuser" in status.exempt_because
    assert (await _counts(enabled.app_url, None))["conversation_messages"] == 2


async def test_only_the_owner_can_switch_it(rls_db: RlsDatabase) -> None:
    async with Ledger.from_url(rls_db.app_url) as app:
        with pytest.raises(PermissionDeniedError, match="owner"):
            await app.set_row_level_security(True)
        assert not (await app.row_level_security()).enabled


async def test_status_names_the_tables_the_role_owns(rls_db: RlsDatabase) -> None:
    await run_sql_script(rls_db.owner_url, f'ALTER TABLE session_usage OWNER TO "{rls_db.role}"')
    async with Ledger.from_url(rls_db.app_url) as app:
        status = await app.row_level_security()
    assert status.exempt_because == (
        f"role {rls_db.role} owns (or is a member of the owner of) session_usage"
    )
    assert not status.protects_role


async def test_downgrading_past_0003_drops_the_policies_and_switches_it_off(
    enabled: RlsDatabase,
) -> None:
    async with Ledger.from_url(enabled.owner_url) as owner:
        await owner.downgrade("agentledger_0002")
        async with owner.engine.connect() as connection:
            policies = await connection.scalar(text("SELECT count(*) FROM pg_policies"))
            switched = await connection.scalar(
                text("SELECT count(*) FROM pg_class WHERE relrowsecurity")
            )
        assert (policies, switched) == (0, 0)
        await owner.upgrade()
        status = await owner.row_level_security()
    assert not any(status.tables.values())  # back at head: policies again, still opt-in


def test_the_cli_switches_it_and_reports_it(enabled: RlsDatabase) -> None:
    """The doc's commands, as the owner; status is read back as JSON."""
    (commands,) = _doc_blocks("bash")
    done = run_doc_shell(commands, enabled.owner_url)
    assert '"enabled": true' in done.stdout
    assert '"protects_role": false' in done.stdout
    off = run_doc_shell("agentledger db rls disable", enabled.owner_url)
    assert "off" in off.stdout


def test_cli_user_commands_scope_themselves(enabled: RlsDatabase) -> None:
    """As the application role, `--user` names the tenant (with or without the setting), so
    erase-user and export --all really act; without --user nothing is visible."""

    async def seed() -> uuid.UUID:
        async with Ledger.from_url(enabled.app_url) as app:
            return await _alice_everywhere(app)

    sid = run_sync(seed())
    show = f"agentledger sessions show {sid} --user alice --json"
    for setting in ("false", "true"):
        scoped = run_doc_shell(show, enabled.app_url, AGENTLEDGER_ROW_LEVEL_SECURITY=setting)
        assert "secret plan" in scoped.stdout
    unscoped = run_doc_shell(f"agentledger sessions show {sid} || echo refused", enabled.app_url)
    assert "refused" in unscoped.stdout
    exported = run_doc_shell(
        'agentledger sessions export --all --user alice -o "$(mktemp -d)"', enabled.app_url
    )
    assert "exported 1 sessions" in exported.stdout
    erased = run_doc_shell("agentledger erase-user alice --yes", enabled.app_url)
    assert "erased 1 sessions" in erased.stdout
    assert run_sync(_counts(enabled.owner_url, None))["agent_sessions"] == 0
    other = run_doc_shell(
        f"agentledger sessions show {sid} --user mallory || echo refused",
        enabled.app_url,
        AGENTLEDGER_ROW_LEVEL_SECURITY="true",
    )
    assert "refused" in other.stdout
    assert "secret plan" not in other.stdout + other.stderr


def test_cleanup_refuses_a_role_the_policies_confine(enabled: RlsDatabase) -> None:
    """Cleanup spans tenants: from the application role it would find nothing and report
    success, so it refuses; the owner runs it."""

    async def seed() -> None:
        async with Ledger.from_url(enabled.app_url) as app:
            await _alice_everywhere(app)

    run_sync(seed())
    for command in ("cleanup --older-than 0d", "cleanup --older-than 0d --dry-run", "cleanup"):
        refused = run_doc_shell(
            f"agentledger {command} || echo refused",
            enabled.app_url,
            AGENTLEDGER_RETENTION='{"*": {"days": 0}}',
        )
        assert "refused" in refused.stdout
        assert "BYPASSRLS" in refused.stderr
    assert run_sync(_counts(enabled.owner_url, None))["agent_sessions"] == 1
    done = run_doc_shell("agentledger cleanup --older-than 0d", enabled.owner_url)
    assert "deleted 1 sessions" in done.stdout


def test_the_python_block_runs_as_the_application_role(enabled: RlsDatabase) -> None:
    (block,) = _doc_blocks("python")
    namespace: dict[str, Any] = {"app_url": enabled.app_url}
    code = compile(f"async def _block():\n{_indent(block)}", DOC, "exec")
    exec(code, namespace)
    run_sync(namespace["_block"]())


def _indent(block: str) -> str:
    return "".join(f"    {line}\n" for line in block.splitlines())


# -- regressions found in review ---------------------------------------------------------------


async def test_for_user_on_a_scoped_service_acts_for_the_new_user(
    enabled: RlsDatabase,
) -> None:
    """``for_user`` wraps the scoped factory, which ignores the tenant it is given: re-scoping
    keeps the first tenant while ``.tenant`` reports the second, so "bob" reads alice's rows."""
    async with Ledger.from_url(enabled.app_url) as app:
        alice = app.service.for_user("alice")
        chat = await alice.create_session(user_id="alice", agent_name="support")
        await alice.add_message(chat.id, role="user", content="alice's secret")

        bob = alice.for_user("bob")
        assert bob.tenant == "bob"
        assert await bob.get_session(chat.id) is None
        assert (await bob.list_user_sessions("alice")).sessions == ()

        async with AsyncSession(app.engine) as host:
            borrowed_bob = alice.using(host).for_user("bob")
            assert borrowed_bob.tenant == "bob"
            assert await borrowed_bob.get_session(chat.id) is None


async def test_status_sees_a_role_that_inherits_the_tables_owner(
    rls_db: RlsDatabase,
) -> None:
    """A member of the owning role has the owner's rights, so the policies do not bind it;
    ``row_level_security()`` compares ``relowner = current_user`` only and reports it bound."""
    owner_role = f"agentledger_owner_{uuid.uuid4().hex[:10]}"
    await run_sql_script(
        rls_db.owner_url,
        f'CREATE ROLE "{owner_role}" NOLOGIN; '
        + "".join(f'ALTER TABLE {table} OWNER TO "{owner_role}"; ' for table in PROTECTED_TABLES)
        + f'GRANT "{owner_role}" TO "{rls_db.role}";',
    )
    try:
        async with Ledger.from_url(rls_db.owner_url) as owner:
            await owner.set_row_level_security(True)
            chat = await owner.service.create_session(user_id="alice", agent_name="support")
        async with Ledger.from_url(rls_db.app_url) as app:
            status = await app.row_level_security()
            # The policies really do not bind this role: mallory's scope reads alice's session.
            leaked = await app.service.for_user("mallory").get_session(chat.id)
            assert leaked is not None
            assert not status.protects_role, "status claims the policies bind this role"
            assert status.exempt_because is not None
    finally:
        await run_sql_script(
            rls_db.owner_url,
            "".join(f"ALTER TABLE {table} OWNER TO postgres; " for table in PROTECTED_TABLES)
            + f'DROP ROLE IF EXISTS "{owner_role}";',
        )


async def test_an_idempotent_first_write_into_another_tenants_session_reads_as_missing(
    enabled: RlsDatabase,
) -> None:
    """``add_items(create_as=..., idempotency_key=...)`` (the importer's call) into another
    user's session raises SessionNotFoundError without row-level security; with it, the
    hidden row makes ``_append_once`` try to create the session and fail on the primary key
    with AlreadyExistsError ("that session id is taken")."""
    async with Ledger.from_url(enabled.app_url) as app:
        chat = await app.service.for_user("alice").create_session("alice", "support")
        mallory = app.service.for_user("mallory")
        with pytest.raises(SessionNotFoundError):
            await mallory.add_items(
                chat.id,
                [{"role": "user", "content": "x"}],
                user_id="mallory",
                create_as=SessionSpec("mallory", "support"),
                idempotency_key="turn-1",
            )


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", ()):
        found += _nodes(child)
    return found


async def test_a_cached_get_items_plan_does_not_read_every_session_of_the_tenant(
    enabled: RlsDatabase,
) -> None:
    """The messages policy's ``EXISTS`` is planned as a hashed subplan over *all* the
    tenant's sessions when the tenant planning the statement has few. Prepared statements
    (asyncpg caches them per pooled connection) switch to that generic plan after five runs
    and keep it for every later tenant: a tenant with many sessions then reads all of them on
    every ``get_items`` (200k sessions: ~250 ms instead of ~1 ms per call)."""
    big_sessions = 20_000
    await run_sql_script(
        enabled.owner_url,
        f"""
        INSERT INTO agent_sessions
            (id, user_id, agent_name, metadata, created_at, updated_at, last_seq, trimmed_seq)
        SELECT gen_random_uuid(), CASE WHEN g <= {big_sessions} THEN 'big' ELSE 'small' || g END,
               'a', '{{}}', now(), now(), 30, 0
        FROM generate_series(1, {big_sessions} + 2000) AS g;
        INSERT INTO conversation_messages
            (session_id, seq, id, role, content, item_type, item, created_at)
        SELECT s.id, q, gen_random_uuid(), 'user', 'hi', 'message', '{{}}', now()
        FROM (SELECT id FROM agent_sessions ORDER BY random() LIMIT 3000) AS s,
             generate_series(1, 30) AS q;
        ANALYZE;
        """,
    )
    owner = await asyncpg.connect(enabled.owner_url)
    try:
        pick = (
            "SELECT s.id, s.user_id FROM agent_sessions AS s WHERE {who} AND EXISTS "
            "(SELECT 1 FROM conversation_messages AS m WHERE m.session_id = s.id) LIMIT 1"
        )
        small_sid, small_user = await owner.fetchrow(pick.format(who="user_id <> 'big'"))
        big_sid, _ = await owner.fetchrow(pick.format(who="user_id = 'big'"))
    finally:
        await owner.close()

    async with Ledger.from_url(enabled.app_url) as app:
        sql = DriverStatements(app.engine).sql(items_query(latest=True, owned=True))
    sql = sql.replace("$1::UUID", "$1").replace("$2::VARCHAR", "$2")
    connection = await asyncpg.connect(enabled.app_url)
    try:
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        await connection.execute(f"PREPARE tail(uuid, varchar, int) AS {sql}")
        async with connection.transaction():
            await connection.execute(
                "SELECT set_config('agentledger.user_id', $1, true)", small_user
            )
            await connection.fetch(f"EXECUTE tail('{small_sid}', '{small_user}', 20)")
        async with connection.transaction():
            await connection.execute("SELECT set_config('agentledger.user_id', 'big', true)")
            (plan,) = await connection.fetchrow(
                f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE tail('{big_sid}', 'big', 20)",
            )
    finally:
        await connection.close()
    root = json.loads(plan)[0]["Plan"]
    session_rows = max(
        (
            node["Actual Rows"] * node.get("Actual Loops", 1)
            for node in _nodes(root)
            if node.get("Relation Name") == "agent_sessions"
        ),
        default=0,
    )
    assert session_rows <= 100, f"get_items(20) read {session_rows} agent_sessions rows"


# -- SQLite: nothing to switch, for_user is harmless --------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_sqlite_refuses_the_switch_and_for_user_changes_nothing(ledger: Ledger) -> None:
    with pytest.raises(UnsupportedBackendError, match="PostgreSQL"):
        await ledger.set_row_level_security(True)
    with pytest.raises(UnsupportedBackendError):
        await ledger.row_level_security()
    alice = ledger.service.for_user("alice")
    chat = await alice.create_session(user_id="alice", agent_name="support")
    await alice.add_message(chat.id, role="user", content="hi")
    record = await ledger.service.get_session(chat.id)
    assert record is not None
    assert [m.content for m in record.messages] == ["hi"]


async def test_for_user_checks_the_user_id(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="user_id"):
        ledger.service.for_user("")
    assert ledger.service.for_user("alice").tenant == "alice"
    assert ledger.service.tenant is None
