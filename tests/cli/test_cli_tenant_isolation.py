"""Tenant isolation on the command line (issue #6), on both backends.

Every command that reads or changes a session or its messages takes ``--user U`` (``erase-user``
takes the user as its argument). For a user other than the owner it reads nothing and changes
nothing: an ID-addressed command fails with exit code 1 and exactly the output a missing session
gives; a per-user query (list, search, export --all) finds nothing of another user's; a command
that would create a session under a given id (``sessions import``, ``import``, ``chat``) refuses
an id another user owns. Each case also runs as the owner, so the test proves it can tell.

:data:`CASES` covers every session-touching command and :data:`ADMIN_WIDE` names the rest; a new
subcommand fails :func:`test_every_command_is_classified` until it is put in one of them.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from agents import SQLiteSession
from sqlalchemy import text

from agentledger import Ledger, Usage
from agentledger.cli import build_parser, main
from agentledger.db.models import metadata
from agentledger.domain.transcripts import write_jsonl
from tests.conftest import run_sync

OWNER = "alice"
#: Users that are not the owner: one with sessions of their own, one differing only in case.
INTRUDERS = ("bob", "Alice")
#: Text only the owner's sessions hold; an intruder's output must never contain it.
SECRET = "Lisbon"
NAMED_SECRET = "Porto"
NAME = "support"

Kind = Literal["owned", "scoped", "claim", "erase"]


@dataclass(frozen=True)
class Case:
    """One command line, run as an intruder and as the owner.

    ``kind``: ``owned`` addresses one session by ID (intruder: exit 1, same output as a missing
    session); ``scoped`` is a per-user query (intruder: exit 0, finds nothing of the owner's);
    ``claim`` creates or appends under an id (intruder: exit 1, refused); ``erase`` removes a
    user's rows (intruder: the owner's rows survive). ``writes``: the owner's run changes the
    database. ``shows``: text the owner's output (stdout or files) contains.

    Placeholders: ``{sid}`` the owner's session UUID, ``{name}`` a session name of the owner's,
    ``{user}`` who runs it, ``{out}`` a fresh output path, ``{transcript}`` a JSONL export of
    ``{sid}``, ``{sdk}`` / ``{sdk_more}`` SDK SQLite stores whose session is ``{sid}`` (the first
    already imported by the owner, the second with one item more).
    """

    id: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    kind: Kind
    writes: bool
    shows: str | None = None
    stdin: str = ""


CASES: tuple[Case, ...] = (
    Case("show", ("sessions", "show"), ("{sid}", "--user", "{user}"), "owned", False, SECRET),
    Case(
        "show-json",
        ("sessions", "show"),
        ("{sid}", "--user", "{user}", "--json"),
        "owned",
        False,
        SECRET,
    ),
    Case(
        "show-name",
        ("sessions", "show"),
        ("{name}", "--user", "{user}"),
        "owned",
        False,
        NAMED_SECRET,
    ),
    Case("fork", ("sessions", "fork"), ("{sid}", "--user", "{user}"), "owned", True),
    Case(
        "fork-at-json",
        ("sessions", "fork"),
        ("{sid}", "--at", "2", "--title", "Copy", "--user", "{user}", "--json"),
        "owned",
        True,
    ),
    Case(
        "rewind", ("sessions", "rewind"), ("{sid}", "--to", "1", "--user", "{user}"), "owned", True
    ),
    Case(
        "rewind-name",
        ("sessions", "rewind"),
        ("{name}", "--to", "0", "--user", "{user}", "--json"),
        "owned",
        True,
    ),
    Case("meta-show", ("sessions", "meta"), ("{sid}", "--user", "{user}"), "owned", False, SECRET),
    Case(
        "meta-update",
        ("sessions", "meta"),
        ("{sid}", "tier=platinum", "gone:=null", "--user", "{user}", "--json"),
        "owned",
        True,
    ),
    Case(
        "meta-title",
        ("sessions", "meta"),
        ("{sid}", "--title", "Mine", "--user", "{user}"),
        "owned",
        True,
    ),
    Case(
        "meta-clear-title",
        ("sessions", "meta"),
        ("{sid}", "--clear-title", "--user", "{user}"),
        "owned",
        True,
    ),
    Case("export", ("sessions", "export"), ("{sid}", "--user", "{user}"), "owned", False, SECRET),
    Case(
        "export-markdown-file",
        ("sessions", "export"),
        ("{sid}", "--user", "{user}", "--format", "markdown", "-o", "{out}"),
        "owned",
        False,
        SECRET,
    ),
    Case(
        "export-all",
        ("sessions", "export"),
        ("--all", "--user", "{user}", "-o", "{out}"),
        "scoped",
        False,
        SECRET,
    ),
    Case(
        "list",
        ("sessions", "list"),
        ("--user", "{user}", "--archived", "--limit", "100", "--json"),
        "scoped",
        False,
        SECRET,
    ),
    Case(
        "search",
        ("search",),
        (SECRET, "--user", "{user}", "--archived", "--json"),
        "scoped",
        False,
        SECRET,
    ),
    Case(
        "search-name",
        ("search",),
        (NAMED_SECRET, "--user", "{user}"),
        "scoped",
        False,
        NAMED_SECRET,
    ),
    Case(
        "sessions-import",
        ("sessions", "import"),
        ("{transcript}", "--user", "{user}"),
        "claim",
        False,
    ),
    Case(
        "sessions-import-as",
        ("sessions", "import"),
        ("{transcript}", "--session-id", "{sid}", "--user", "{user}", "--json"),
        "claim",
        False,
    ),
    Case("sdk-import-done", ("import",), ("{sdk}", "--user", "{user}"), "claim", False),
    Case("sdk-import-more", ("import",), ("{sdk_more}", "--user", "{user}"), "claim", True),
    Case("chat", ("chat",), ("--session", "{sid}", "--user", "{user}"), "claim", False),
    Case(
        "chat-turn",
        ("chat",),
        ("--session", "{sid}", "--user", "{user}"),
        "claim",
        True,
        stdin="And in Madrid?\n",
    ),
    Case("erase-user", ("erase-user",), ("{user}", "--yes", "--batch-size", "1"), "erase", True),
    Case("erase-user-dry-run", ("erase-user",), ("{user}", "--json"), "erase", False),
)

#: Commands that act on the whole database by design; docs/cli.md says so.
ADMIN_WIDE = {
    ("db", "upgrade"),
    ("db", "downgrade"),
    ("db", "current"),
    ("db", "adopt"),
    ("db", "rls"),
    ("cleanup",),
    ("demo",),
    ("serve",),
    ("retire-partition",),
}

#: Commands that read or write no session at all: their ``--user`` names whom an API token acts
#: for (the token's owner), not a tenant whose sessions they could reach.
NO_SESSIONS: set[tuple[str, ...]] = {("tokens", "create"), ("tokens", "list"), ("tokens", "revoke")}


# -- the command tree ------------------------------------------------------------------------


def _leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subcommands:
        yield path, parser
        return
    for action in subcommands:
        for name, child in action.choices.items():
            yield from _leaves(child, (*path, name))


def _dests(parser: argparse.ArgumentParser) -> set[str]:
    return {action.dest for action in parser._actions}


def test_every_command_is_classified() -> None:
    leaves = dict(_leaves(build_parser()))
    covered = {case.command for case in CASES}
    unclassified = set(leaves) - covered - ADMIN_WIDE - NO_SESSIONS
    assert not unclassified, (
        f"new command(s) {sorted(unclassified)}: add tenant-isolation cases to CASES (it "
        "touches sessions) or list it in ADMIN_WIDE and document it in docs/cli.md"
    )
    assert covered.isdisjoint(ADMIN_WIDE | NO_SESSIONS)
    assert ADMIN_WIDE.isdisjoint(NO_SESSIONS)
    assert covered | ADMIN_WIDE | NO_SESSIONS == set(leaves), "a classified command is gone"
    for command in NO_SESSIONS:
        assert not {"session_id", "session"} & _dests(leaves[command]), command
    for command in covered:
        assert "user" in _dests(leaves[command]), f"{command} has no --user (or USER)"
    for command in ADMIN_WIDE:
        # A command that grows an ID or --user is user-scoped and needs cases instead.
        assert not {"user", "session_id", "session"} & _dests(leaves[command]), command
    # Each command that addresses a session by an ID argument is proven against a missing
    # session too.
    for command, parser in leaves.items():
        if any(a.dest == "session_id" and not a.option_strings for a in parser._actions):
            assert any(c.command == command and c.kind == "owned" for c in CASES), command


def test_docs_state_the_rule() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    assert "## Tenant isolation" in doc
    section = doc.split("## Tenant isolation", 1)[1]
    for command in ADMIN_WIDE:
        assert f"`{' '.join(command)}" in section, command


# -- fixtures ---------------------------------------------------------------------------------


@dataclass
class World:
    url: str
    sid: uuid.UUID
    files: dict[str, Path]
    tmp: Path


async def _seed(url: str, tmp: Path) -> World:
    async with Ledger.from_url(url) as ledger:
        svc = ledger.service
        owned = await svc.create_session(OWNER, "Helper", {"tier": "gold", "gone": 1})
        await svc.add_messages(
            owned.id,
            [
                {"role": "user", "content": f"Plan a trip to {SECRET}"},
                {"role": "assistant", "content": "How many days?"},
                {"role": "user", "content": "Three"},
                {"role": "assistant", "content": f"Here is a {SECRET} plan."},
            ],
            idempotency_key="turn-1",
        )
        await svc.set_title(owned.id, f"{SECRET} trip")
        await svc.record_usage(owned.id, Usage(1, 10, 20, 30))
        named = ledger.agent_session(NAME, user_id=OWNER, agent_name="Desk")
        await named.add_items([{"role": "user", "content": f"Ticket from {NAMED_SECRET}"}])
        # Sessions of other users, including one whose id differs only in case.
        for user in ("bob", "Alice", "alice2"):
            other = await svc.create_session(user, "Helper", {"tier": "free"})
            await svc.add_message(other.id, "user", f"note of {user}")

        transcript = tmp / "transcript.jsonl"
        with transcript.open("w", encoding="utf-8", newline="\n") as stream:
            write_jsonl(await svc.export_session(owned.id), stream)

        # An SDK store whose session is the owner's UUID, already imported by the owner.
        sdk = tmp / "sdk.db"
        store = SQLiteSession(str(owned.id), str(sdk))
        try:
            await store.add_items([{"role": "user", "content": "from the SDK"}])
        finally:
            store.close()
        from agentledger.services.sdk_import import import_sdk_store

        await import_sdk_store(svc, str(sdk), user_id=OWNER, agent_name="Helper")
        sdk_more = tmp / "sdk_more.db"
        shutil.copyfile(sdk, sdk_more)
        grown = SQLiteSession(str(owned.id), str(sdk_more))
        try:
            await grown.add_items([{"role": "user", "content": "one more"}])
        finally:
            grown.close()
    files = {"transcript": transcript, "sdk": sdk, "sdk_more": sdk_more}
    return World(url, owned.id, files, tmp)


async def _dump(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every agentledger table, in primary-key order."""
    dump: dict[str, list[dict[str, Any]]] = {}
    async with Ledger.from_url(url) as ledger, ledger.engine.connect() as connection:
        for table in metadata.sorted_tables:
            order = ", ".join(column.name for column in table.primary_key.columns)
            result = await connection.execute(text(f"SELECT * FROM {table.name} ORDER BY {order}"))
            dump[table.name] = [dict(row) for row in result.mappings()]
    return dump


def _rows(
    dump: dict[str, list[dict[str, Any]]], *, of: str | None = None, not_of: str | None = None
) -> dict[str, list[Any]]:
    """The rows of the sessions (and their messages, batches, usage) of user ``of``, or of
    every user but ``not_of``, in a dump."""
    ids = {
        row["id"]
        for row in dump["agent_sessions"]
        if (of is None or row["user_id"] == of) and row["user_id"] != not_of
    }
    return {
        table: [row for row in rows if row.get("session_id", row.get("id")) in ids]
        for table, rows in dump.items()
    }


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _same_error(err: str, *names: str) -> str:
    """An error line with its session ids and names blanked, for comparison."""
    err = _UUID.sub("ID", err)
    for name in names:
        err = err.replace(name, "NAME")
    return err


@dataclass
class Run:
    code: int
    out: str
    err: str
    files: str

    @property
    def everything(self) -> str:
        return self.out + self.err + self.files


def _run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    world: World,
    case: Case,
    *,
    user: str,
    sid: str,
    name: str,
    label: str,
) -> Run:
    out_path = world.tmp / f"{label}-out"
    values = {
        "sid": sid,
        "name": name,
        "user": user,
        "out": str(out_path),
        **{key: str(path) for key, path in world.files.items()},
    }
    argv = [part.format(**values) for part in case.args]
    monkeypatch.setattr("sys.stdin", io.StringIO(case.stdin))
    capsys.readouterr()
    code = main(["--database-url", world.url, *case.command, *argv])
    captured = capsys.readouterr()
    written = ""
    if out_path.is_dir():
        written = "".join(f"{p.name}\n{p.read_text('utf-8')}" for p in sorted(out_path.iterdir()))
    elif out_path.exists():
        written = out_path.read_text("utf-8")
    return Run(code, captured.out, captured.err, written)


@pytest.fixture
def world(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # chat: the offline model
    return run_sync(_seed(database_url, tmp_path))


# -- the table --------------------------------------------------------------------------------


@pytest.mark.parametrize("intruder", INTRUDERS)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_another_user_reads_nothing_and_changes_nothing(
    world: World,
    case: Case,
    intruder: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sid = str(world.sid)

    def run(user: str, label: str, *, ref: str = sid, name: str = NAME) -> Run:
        return _run(capsys, monkeypatch, world, case, user=user, sid=ref, name=name, label=label)

    before = run_sync(_dump(world.url))
    attempt = run(intruder, "intruder")
    after = run_sync(_dump(world.url))

    assert "Traceback" not in attempt.err
    assert SECRET not in attempt.everything
    assert NAMED_SECRET not in attempt.everything
    if case.kind == "erase":
        # The intruder erases (or counts) only their own rows: one session with one message.
        assert _rows(after, of=OWNER) == _rows(before, of=OWNER)
        assert _rows(after, not_of=intruder) == _rows(before, not_of=intruder)
        counts = json.loads(attempt.out) if "--json" in case.args else None
        if counts is None:
            assert "1 sessions, 1 messages and 0 usage records" in attempt.out
        else:
            assert (counts["sessions"], counts["messages"]) == (1, 1)
    else:
        assert after == before, f"{intruder} changed the database"
    if case.kind in ("owned", "claim"):
        assert attempt.code == 1
        if case.id.startswith("sdk-import"):
            # An SDK import goes on with the store's other sessions and reports the one
            # refused; here it is the only one.
            assert attempt.out.startswith("imported 0 new items into 0 sessions")
        else:
            assert attempt.out == ""
        assert attempt.files == ""
        assert attempt.err.startswith("agentledger: error: ")
        assert attempt.err.count("\n") == 1
    if case.kind == "scoped":
        assert attempt.code == 0
        assert sid not in attempt.everything
        assert world.sid.hex not in attempt.everything
    if case.kind == "owned":
        # Exactly what a session that does not exist at all gives.
        missing = str(uuid.uuid4())
        absent = run(intruder, "missing", ref=missing, name="no-such-name")
        assert absent.code == attempt.code
        assert (absent.out, absent.files) == ("", "")
        assert _same_error(absent.err, "no-such-name") == _same_error(attempt.err, NAME)
        assert run_sync(_dump(world.url)) == before

    # The owner, with the same command line, is served.
    served = run(OWNER, "owner")
    assert served.code == (1 if case.id == "erase-user-dry-run" else 0), served.err
    assert "Traceback" not in served.err
    final = run_sync(_dump(world.url))
    if case.writes:
        assert final != before
    else:
        assert final == before
    if case.shows:
        assert case.shows in served.out + served.files
    if case.kind == "erase" and case.writes:
        assert not any(row["user_id"] == OWNER for row in final["agent_sessions"])
        assert _rows(final, not_of=OWNER) == _rows(after, not_of=OWNER)


@pytest.mark.parametrize("lookalike", ["alice%", "_lice", "alic", "ALICE", "alice\\"])
def test_erase_user_matches_the_user_id_exactly(
    world: World, lookalike: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = run_sync(_dump(world.url))
    code = main(["--database-url", world.url, "erase-user", lookalike, "--yes", "--json"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["sessions"] == 0
    assert run_sync(_dump(world.url)) == before


async def test_batch_keys_of_another_users_session_read_like_a_missing_one(
    ledger: Ledger,
) -> None:
    svc = ledger.service
    session = await svc.create_session(OWNER, "Helper")
    await svc.add_messages(session.id, [{"role": "user", "content": "hi"}], idempotency_key="k1")
    assert await svc.batch_keys(session.id, user_id=OWNER) == ["k1"]
    assert await svc.batch_keys(uuid.uuid4(), user_id="bob") == []
    assert await svc.batch_keys(session.id, user_id="bob") == []  # exactly like a missing one
    assert await svc.batch_keys(session.id) == ["k1"]  # the operator, without a user
