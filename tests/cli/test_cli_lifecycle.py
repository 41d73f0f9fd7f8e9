"""The lifecycle commands of the CLI: fork, rewind, meta, list filters/titles, erase-user."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from agentledger import Ledger, SessionRecord, Usage
from agentledger.cli import main, parse_meta_pair
from tests.conftest import run_sync


def cli(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    code = main(["--database-url", url, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def _seed(url: str) -> uuid.UUID:
    async with Ledger.from_url(url) as ledger:
        svc = ledger.service
        s = await svc.create_session("alice", "Helper", {"tier": "gold"})
        await svc.add_messages(
            s.id,
            [
                {"role": "user", "content": "Plan a trip\nto Lisbon"},
                {"role": "assistant", "content": "Sure. How many days?"},
                {"role": "user", "content": "Three"},
                {"role": "assistant", "content": "Here is a plan."},
            ],
        )
        await svc.record_usage(s.id, Usage(1, 10, 20, 30))
        other = await svc.create_session("alice", "Sales", {"tier": "free"})
        await svc.add_message(other.id, "user", "Pricing?")
        await svc.create_session("bob", "Helper", {"tier": "gold"})
        return s.id


async def _get(url: str, session_id: uuid.UUID | str) -> SessionRecord | None:
    async with Ledger.from_url(url) as ledger:
        return await ledger.service.get_session(session_id)


async def _list(url: str, user: str) -> list[Any]:
    async with Ledger.from_url(url) as ledger:
        return list(await ledger.service.list_user_sessions(user, 100))


def test_meta_pairs_parse_as_text_or_json() -> None:
    assert parse_meta_pair("tier=gold") == ("tier", "gold")
    assert parse_meta_pair("n=3") == ("n", "3")
    assert parse_meta_pair("n:=3") == ("n", 3)
    assert parse_meta_pair("vip:=true") == ("vip", True)
    assert parse_meta_pair("gone:=null") == ("gone", None)
    assert parse_meta_pair("tags:=[1, 2]") == ("tags", [1, 2])
    assert parse_meta_pair("eq=a=b") == ("eq", "a=b")
    assert parse_meta_pair("empty=") == ("empty", "")


@pytest.mark.parametrize("bad", ["novalue", "=x", ":=1", "n:=NaN", "n:=Infinity", "n:={bad"])
def test_bad_meta_pairs_are_usage_errors(capsys: pytest.CaptureFixture[str], bad: str) -> None:
    assert main(["sessions", "meta", str(uuid.uuid4()), bad]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_list_filters_and_titles(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    session_id = run_sync(_seed(database_url))

    code, out, _ = cli(capsys, database_url, "sessions", "list", "--user", "alice")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert any(line.endswith("Helper  Plan a trip to Lisbon") for line in lines), lines
    assert any(line.endswith("Sales  Pricing?") for line in lines), lines

    code, out, _ = cli(
        capsys, database_url, "sessions", "list", "--user", "alice", "--meta", "tier=gold", "--json"
    )
    assert code == 0
    listed = json.loads(out)["sessions"]
    assert [(s["id"], s["title"]) for s in listed] == [(str(session_id), "Plan a trip to Lisbon")]

    code, out, _ = cli(
        capsys, database_url, "sessions", "list", "--user", "alice", "--agent", "Sales", "--json"
    )
    assert [s["agent_name"] for s in json.loads(out)["sessions"]] == ["Sales"]

    code, out, _ = cli(
        capsys,
        database_url,
        "sessions",
        "list",
        "--user",
        "alice",
        "--meta",
        "tier=gold",
        "--meta",
        "a') OR 1=1 --=x",
    )
    assert code == 0
    assert out.strip() == "no sessions for user 'alice'"

    code, out, err = cli(
        capsys, database_url, "sessions", "list", "--user", "alice", "--meta", "tier:=[1]"
    )
    assert code == 1
    assert out == ""
    assert err.startswith("agentledger: error: metadata filter value of 'tier'")
    assert err.count("\n") == 1


def test_fork_and_rewind(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    session_id = run_sync(_seed(database_url))
    sid = str(session_id)

    code, out, _ = cli(capsys, database_url, "sessions", "fork", sid, "--at", "2", "--json")
    assert code == 0
    forked = json.loads(out)
    assert forked["message_count"] == 2
    assert forked["user_id"] == "alice"
    assert forked["metadata"] == {"tier": "gold"}
    fork = run_sync(_get(database_url, forked["id"]))
    assert fork is not None
    assert [(m.seq, m.content) for m in fork.messages] == [
        (1, "Plan a trip\nto Lisbon"),
        (2, "Sure. How many days?"),
    ]

    code, out, _ = cli(
        capsys, database_url, "sessions", "fork", sid, "--user", "alice", "--title", "Copy"
    )
    assert code == 0
    assert out.startswith(f"forked {sid} into ")
    assert out.strip().endswith("(4 messages)")
    copy_id = out.split(" into ")[1].split()[0]
    copy = run_sync(_get(database_url, copy_id))
    assert copy is not None
    assert copy.title == "Copy"

    code, out, _ = cli(capsys, database_url, "sessions", "rewind", sid, "--to", "1")
    assert code == 0
    assert out.strip() == f"removed 3 messages; {sid} now ends at seq 1"
    code, out, _ = cli(capsys, database_url, "sessions", "rewind", sid, "--to", "1", "--json")
    assert json.loads(out) == {"session_id": sid, "to_seq": 1, "removed": 0}
    record = run_sync(_get(database_url, session_id))
    assert record is not None
    assert [m.seq for m in record.messages] == [1]
    # The fork kept its own copy.
    fork = run_sync(_get(database_url, forked["id"]))
    assert fork is not None
    assert len(fork.messages) == 2


def test_fork_and_rewind_refuse_in_one_line_and_write_nothing(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    session_id = run_sync(_seed(database_url))
    sid = str(session_id)
    before = run_sync(_list(database_url, "alice"))

    for args, message in [
        (("sessions", "fork", sid, "--user", "mallory"), "does not exist for user 'mallory'"),
        (("sessions", "fork", sid, "--at", "9"), "at_seq 9 is outside the history"),
        (("sessions", "fork", sid, "--title", " "), "title must be"),
        (("sessions", "rewind", sid, "--to", "5"), "to_seq 5 is outside the history"),
        (("sessions", "rewind", sid, "--to", "-1"), "to_seq must be zero or positive"),
        (("sessions", "rewind", sid, "--to", "0", "--user", "bob"), "for user 'bob'"),
        (("sessions", "meta", sid, "x=1", "--user", "bob"), "for user 'bob'"),
        (("sessions", "meta", sid, "--user", "bob"), f"no session {sid} for user 'bob'"),
    ]:
        code, out, err = cli(capsys, database_url, *args)
        assert code == 1, args
        assert out == "", args
        assert err.startswith("agentledger: error: "), args
        assert message in err, (args, err)
        assert err.count("\n") == 1, args
        assert "Traceback" not in err

    assert run_sync(_list(database_url, "alice")) == before
    assert main(["--database-url", database_url, "sessions", "rewind", sid]) == 2
    assert "--to" in capsys.readouterr().err


def test_meta_and_title(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    session_id = run_sync(_seed(database_url))
    sid = str(session_id)

    code, out, _ = cli(capsys, database_url, "sessions", "meta", sid)
    assert code == 0
    assert out.splitlines() == ["title (none)", 'metadata {"tier": "gold"}']

    code, out, _ = cli(
        capsys, database_url, "sessions", "meta", sid, "tier:=null", "n:=3", "lang=pt", "--json"
    )
    assert code == 0
    assert json.loads(out) == {"id": sid, "title": None, "metadata": {"n": 3, "lang": "pt"}}

    code, out, _ = cli(
        capsys, database_url, "sessions", "meta", sid, "--title", "Lisbon trip", "--user", "alice"
    )
    assert code == 0
    assert out.splitlines()[0] == "title Lisbon trip"
    code, out, _ = cli(capsys, database_url, "sessions", "list", "--user", "alice", "--json")
    titles = {s["id"]: s["title"] for s in json.loads(out)["sessions"]}
    assert titles[sid] == "Lisbon trip"
    code, out, _ = cli(capsys, database_url, "sessions", "show", sid)
    assert "title Lisbon trip" in out.splitlines()

    code, out, _ = cli(capsys, database_url, "sessions", "meta", sid, "--clear-title", "--json")
    assert json.loads(out)["title"] is None

    assert (
        main(["--database-url", database_url, "sessions", "meta", sid, "a=1", "--title", "T"]) == 2
    )
    assert "not allowed" in capsys.readouterr().err
    record = run_sync(_get(database_url, session_id))
    assert record is not None
    assert (record.title, record.metadata) == (None, {"n": 3, "lang": "pt"})


def test_session_names_work_with_user(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def seed_named() -> None:
        async with Ledger.from_url(database_url) as ledger:
            sdk = ledger.agent_session("support", user_id="carol", agent_name="Helper")
            await sdk.add_items(
                [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"}]
            )

    run_sync(seed_named())
    code, out, _ = cli(
        capsys, database_url, "sessions", "rewind", "support", "--to", "1", "--user", "carol"
    )
    assert code == 0
    assert out.startswith("removed 1 messages; support now ends at seq 1")
    code, out, _ = cli(capsys, database_url, "sessions", "meta", "support", "--user", "carol")
    assert code == 0
    code, _, err = cli(capsys, database_url, "sessions", "meta", "support", "--user", "dave")
    assert code == 1
    assert "no session support for user 'dave'" in err


def test_erase_user_needs_yes(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_sync(_seed(database_url))

    code, out, err = cli(capsys, database_url, "erase-user", "alice")
    assert code == 1
    assert out.strip() == "would erase 2 sessions, 5 messages and 1 usage records of user 'alice'"
    assert err.strip() == "agentledger: error: erasing cannot be undone; rerun with --yes to erase"
    assert len(run_sync(_list(database_url, "alice"))) == 2

    code, out, _ = cli(capsys, database_url, "erase-user", "alice", "--json")
    assert code == 1
    assert json.loads(out) == {
        "user_id": "alice",
        "erased": False,
        "sessions": 2,
        "messages": 5,
        "usage_records": 1,
        "blocked": [],
    }

    code, out, _ = cli(capsys, database_url, "erase-user", "alice", "--yes", "--batch-size", "1")
    assert code == 0
    assert out.strip() == "erased 2 sessions, 5 messages and 1 usage records of user 'alice'"
    assert run_sync(_list(database_url, "alice")) == []
    assert len(run_sync(_list(database_url, "bob"))) == 1

    code, out, _ = cli(capsys, database_url, "erase-user", "alice", "--yes", "--json")
    assert json.loads(out)["sessions"] == 0

    code, _, err = cli(capsys, database_url, "erase-user", "bob", "--yes", "--batch-size", "0")
    assert code == 2
    assert "from 1 to 10000" in err
    assert len(run_sync(_list(database_url, "bob"))) == 1
