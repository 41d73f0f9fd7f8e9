"""The ``agentledger`` command line, as an operator uses it, on both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentledger import Ledger, SessionService
from agentledger.cli import format_duration, main, parse_duration
from agentledger.schema.alembic import head_revision
from tests.conftest import run_sync

REPO_ROOT = Path(__file__).resolve().parents[2]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def _seed(url: str) -> uuid.UUID:
    async with Ledger.from_url(url) as ledger:
        s = await ledger.service.create_session(user_id="alice", agent_name="Helper")
        await ledger.service.add_messages(
            s.id,
            [
                {"role": "user", "content": "What's the weather?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "weather"}}
                    ],
                },
                {"role": "tool", "content": "sunny\x00", "tool_call_id": "c1"},
                {"role": "assistant", "content": "It is sunny."},
            ],
        )
        for n in range(3):
            await ledger.service.create_session(user_id="alice", agent_name=f"Other{n}")
        return s.id


def test_durations_parse_and_print() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("1d12h") == timedelta(days=1, hours=12)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(weeks=2)
    assert format_duration(timedelta(days=1, hours=12)) == "1d12h"
    assert format_duration(timedelta(0)) == "0s"


def test_bad_duration_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cleanup", "--older-than", "3x"]) == 2
    assert "invalid duration" in capsys.readouterr().err


def test_sessions_list_show_and_json(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    session_id = run_sync(_seed(database_url))

    code, out, _ = cli(
        capsys,
        "--database-url",
        database_url,
        "sessions",
        "list",
        "--user",
        "alice",
        "--limit",
        "2",
    )
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 3
    assert lines[-1].startswith("more: --cursor ")
    cursor = lines[-1].split()[-1]
    code, out, _ = cli(
        capsys,
        "--database-url",
        database_url,
        "sessions",
        "list",
        "--user",
        "alice",
        "--limit",
        "2",
        "--cursor",
        cursor,
        "--json",
    )
    payload = json.loads(out)
    assert code == 0
    assert len(payload["sessions"]) == 2
    assert payload["next_cursor"] is None

    code, out, _ = cli(capsys, "--database-url", database_url, "sessions", "show", str(session_id))
    assert code == 0
    assert "weather(c1)" in out
    assert "[result of c1] sunny\\0" in out
    assert out.index("What's the weather?") < out.index("It is sunny.")

    code, out, _ = cli(
        capsys, "--database-url", database_url, "sessions", "show", str(session_id), "--json"
    )
    shown = json.loads(out)
    assert [m["seq"] for m in shown["messages"]] == [1, 2, 3, 4]
    assert shown["messages"][2]["content"] == "sunny\x00"


def test_show_respects_owner_and_reports_errors_in_one_line(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    session_id = run_sync(_seed(database_url))
    code, out, err = cli(
        capsys,
        "--database-url",
        database_url,
        "sessions",
        "show",
        str(session_id),
        "--user",
        "mallory",
    )
    assert code == 1
    assert out == ""
    assert err.startswith("agentledger: error: no session")
    assert err.count("\n") == 1
    code, _, err = cli(capsys, "--database-url", database_url, "sessions", "show", "nope")
    assert code == 2
    assert "not a session UUID" in err
    assert "Traceback" not in err


def test_cleanup_dry_run_then_delete(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    async def seed_old() -> None:
        async with Ledger.from_url(database_url) as ledger:
            past = datetime.now(UTC) - timedelta(days=40)
            old = SessionService(ledger.unit_of_work, clock=lambda: past)
            for _ in range(3):
                s = await old.create_session(user_id="bob", agent_name="A")
                await old.add_message(s.id, role="user", content="old")
            await ledger.service.create_session(user_id="bob", agent_name="fresh")

    run_sync(seed_old())
    code, out, _ = cli(
        capsys, "--database-url", database_url, "cleanup", "--older-than", "30d", "--dry-run"
    )
    assert code == 0
    assert out.strip() == ("would delete 3 sessions (3 messages) idle for more than 30d")
    code, out, _ = cli(
        capsys,
        "--database-url",
        database_url,
        "cleanup",
        "--older-than",
        "30d",
        "--batch-size",
        "2",
    )
    assert code == 0
    assert out.strip() == "deleted 3 sessions idle for more than 30d"
    code, out, _ = cli(
        capsys, "--database-url", database_url, "sessions", "list", "--user", "bob", "--json"
    )
    assert [s["agent_name"] for s in json.loads(out)["sessions"]] == ["fresh"]


def test_db_commands_on_an_empty_database(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = empty_database_url
    code, out, _ = cli(capsys, "--database-url", url, "db", "current")
    assert code == 0
    assert out.startswith("base (head is agentledger_")
    code, _, err = cli(capsys, "--database-url", url, "sessions", "list", "--user", "u")
    assert code == 1
    assert "agentledger db upgrade" in err
    code, out, _ = cli(capsys, "--database-url", url, "db", "upgrade")
    assert code == 0
    assert "is at agentledger_" in out
    code, out, _ = cli(capsys, "--database-url", url, "db", "current")
    assert code == 0
    assert out.strip().endswith("(head)")
    code, out, _ = cli(capsys, "--database-url", url, "db", "downgrade", "base")
    assert code == 0
    assert out.strip().endswith("is at base")
    code, _, err = cli(capsys, "--database-url", url, "db", "downgrade", "nosuchrev")
    assert code == 1
    assert "nosuchrev" in err


def test_password_never_printed(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://postgres:s3cr3t-pw@127.0.0.1:5432/agentledger_no_such_db"
    code, out, err = cli(capsys, "--database-url", url, "db", "current")
    assert code == 1
    assert "does not exist" in err
    assert "s3cr3t-pw" not in out + err
    code, out, err = cli(capsys, "--database-url", "mysql://u:s3cr3t-pw@h/db", "db", "current")
    assert code == 1
    assert "unsupported database backend" in err
    assert "s3cr3t-pw" not in err


def test_installed_script_reads_database_url_from_environment(tmp_path: Path) -> None:
    """The console script as cron would run it: URL only in the environment."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'cron.db'}"}
    env.pop("AGENTLEDGER_DATABASE_URL", None)
    upgrade = subprocess.run(
        [sys.executable, "-m", "agentledger", "db", "upgrade"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"sqlite+aiosqlite:///{tmp_path / 'cron.db'} is at agentledger_" in upgrade.stdout
    cleanup = subprocess.run(
        [sys.executable, "-m", "agentledger", "cleanup", "--older-than", "30d"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert cleanup.returncode == 0
    assert "deleted 0 sessions" in cleanup.stdout


def test_show_by_session_name_with_user(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def seed() -> None:
        async with Ledger.from_url(database_url) as ledger:
            session = ledger.agent_session("support-chat", user_id="carol", agent_name="Desk")
            await session.add_items([{"role": "user", "content": "named hello"}])

    run_sync(seed())
    code, out, _ = cli(
        capsys,
        "--database-url",
        database_url,
        "sessions",
        "show",
        "support-chat",
        "--user",
        "carol",
    )
    assert code == 0
    assert "named hello" in out
    code, _, err = cli(
        capsys, "--database-url", database_url, "sessions", "show", "support-chat", "--user", "dave"
    )
    assert code == 1
    assert "no session support-chat for user 'dave'" in err


def test_json_output_for_scripts(
    empty_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = empty_database_url
    code, out, _ = cli(capsys, "--database-url", url, "db", "current", "--json")
    assert code == 0
    state = json.loads(out)
    assert {key: state[key] for key in ("current", "head", "at_head")} == {
        "current": [],
        "head": head_revision(),
        "at_head": False,
    }
    assert "agentledger db upgrade" in state["advice"]
    code, out, _ = cli(capsys, "--database-url", url, "db", "upgrade", "--json")
    assert json.loads(out)["current"] == [head_revision()]
    code, out, _ = cli(
        capsys, "--database-url", url, "cleanup", "--older-than", "30d", "--dry-run", "--json"
    )
    assert json.loads(out) == {"dry_run": True, "sessions": 0, "messages": 0, "older_than": "30d"}
    code, out, _ = cli(capsys, "--database-url", url, "cleanup", "--older-than", "30d", "--json")
    assert json.loads(out) == {
        "dry_run": False,
        "sessions": 0,
        "older_than": "30d",
        "blocked": [],
    }
    policy = tmp_path / "policy.json"
    policy.write_text('{"*": {"days": 30}}')
    code, out, _ = cli(capsys, "--database-url", url, "cleanup", "--policy", str(policy), "--json")
    assert code == 0
    assert json.loads(out)["dry_run"] is False
    code, out, _ = cli(capsys, "--database-url", url, "db", "downgrade", "base", "--json")
    assert json.loads(out)["current"] == []


SOME_ID = "00000000-0000-4000-8000-000000000001"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("cleanup", "--older-than", "30d", "--policy", "p.json"), "not allowed with"),
        (("cleanup", "--batch-size", "0"), "from 1 to 10000"),
        (("erase-user", "u", "--batch-size", "-1"), "from 1 to 10000"),
        (("sessions", "list", "--user", "u", "--limit", "0"), "from 1 to 1000"),
        (("search", "x", "--user", "u", "--limit", "1e20"), "from 1 to 1000"),
        (("sessions", "import", "a.jsonl", "--user", "u", "--session-id", "nope"), "UUID"),
        (("sessions", "show", "not-a-uuid"), "not a session UUID"),
        (("sessions", "export", "--all", "--user", "u"), "--all needs --user USER and -o DIR"),
        (("sessions", "export", "--all", "--user", "u", "-o", "-"), "pass -o DIR"),
        (("sessions", "export"), "name the session to export"),
        (
            ("sessions", "import", "a.jsonl", "b.jsonl", "--user", "u", "--session-id", SOME_ID),
            "single transcript file",
        ),
    ],
)
def test_command_line_mistakes_exit_2_and_name_the_rule(
    database_url: str, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], said: str
) -> None:
    code, out, err = cli(capsys, "--database-url", database_url, *args)
    assert code == 2, (out, err)
    assert said in err
    assert "Traceback" not in err
