"""Transcript export/import and CLI output safety (both backends): the deepest items travel,
files are written atomically and never replaced without --force, '-' is stdin/stdout, bad
JSONL names its line, impossible transcripts write nothing, Markdown cannot be forged, future
times are clamped, terminal output is escaped, and a closed pipe ends the CLI quietly."""

from __future__ import annotations

import html
import io
import json
import os
import re
import stat
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import markdown
import pytest
from sqlalchemy import text

from agentledger import InvalidInputError, Ledger, SessionService
from agentledger.cli import main
from agentledger.domain.encoding import MAX_JSON_DEPTH
from agentledger.domain.transcripts import (
    SessionTranscript,
    TranscriptMessage,
    dumps_jsonl,
    loads_jsonl,
    read_jsonl,
    render_markdown,
)
from tests.conftest import run_sync
from tests.support.lifecycle import snapshot

MAX_SEQ = 2**63 - 1
USER = "alice"


# -- helpers -------------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    code = main(["--database-url", url, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(err: str, *fragments: str) -> None:
    """A failed command prints exactly one stderr line, agentledger's, without a traceback."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("agentledger: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)


def deep_item(depth: int) -> dict[str, Any]:
    """An SDK item nested exactly ``depth`` levels, the item dict itself counted as one."""
    value: Any = []
    for _ in range(depth - 2):
        value = [value]
    return {"type": "x", "data": value}


def item_depth(value: Any) -> int:
    depth = 0
    while isinstance(value, (dict, list)):
        depth += 1
        value = value["data"] if isinstance(value, dict) else (value[0] if value else None)
    return depth


async def url_snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    async with Ledger.from_url(url) as ledger:
        return await snapshot(ledger)


async def url_items(url: str, session_id: uuid.UUID) -> list[Any]:
    async with Ledger.from_url(url) as ledger:
        return await ledger.service.get_items(session_id)


async def url_export(url: str, session_id: uuid.UUID) -> SessionTranscript:
    async with Ledger.from_url(url) as ledger:
        return await ledger.service.export_session(session_id)


async def damage(ledger: Ledger, session_id: uuid.UUID, seq: int) -> None:
    """Make one message's stored JSON unreadable, the way each backend allows."""
    if ledger.engine.dialect.name == "sqlite":
        statement = (
            "UPDATE conversation_messages SET item = :bad WHERE session_id = :sid AND seq = :seq"
        )
        params: dict[str, Any] = {"bad": "{", "sid": session_id.hex, "seq": seq}
    else:
        # Valid for PostgreSQL's json type, too deep for Python's decoder.
        statement = (
            "UPDATE conversation_messages SET item = CAST(:bad AS json) "
            "WHERE session_id = :sid AND seq = :seq"
        )
        params = {"bad": "[" * 3000 + "]" * 3000, "sid": session_id, "seq": seq}
    async with ledger.engine.begin() as connection:
        result = await connection.execute(text(statement), params)
        assert result.rowcount == 1


def plain_transcript(
    session_id: uuid.UUID | None = None, count: int = 2, *, trimmed_seq: int = 0
) -> SessionTranscript:
    now = datetime.now(UTC).replace(microsecond=0)
    return SessionTranscript(
        id=session_id or uuid.uuid4(),
        user_id=USER,
        agent_name="helper",
        metadata={"k": "v"},
        created_at=now,
        updated_at=now,
        messages=tuple(
            TranscriptMessage(
                seq=trimmed_seq + index,
                item={"role": "user", "content": f"message {index}"},
                created_at=now,
            )
            for index in range(1, count + 1)
        ),
        trimmed_seq=trimmed_seq,
    )


# -- 1. the deepest item agentledger stores travels through every path ------------------------


def test_item_at_max_depth_exports_and_imports_exactly(
    database_url: str,
    empty_database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert MAX_JSON_DEPTH == 512
    deepest = deep_item(MAX_JSON_DEPTH)
    assert item_depth(deepest) == 512
    assert item_depth(deep_item(MAX_JSON_DEPTH + 1)) == 513
    plain = {"role": "user", "content": "hi"}

    async def seed() -> tuple[uuid.UUID, uuid.UUID, SessionTranscript]:
        async with Ledger.from_url(database_url) as ledger:
            service = ledger.service
            session = await service.create_session(USER, "helper")
            await service.add_items(session.id, [plain, deepest])
            before = await snapshot(ledger)
            with pytest.raises(InvalidInputError):
                await service.add_items(session.id, [deep_item(MAX_JSON_DEPTH + 1)])
            assert await snapshot(ledger) == before
            assert await service.get_items(session.id) == [plain, deepest]
            other = await service.create_session(USER, "helper")
            await service.add_message(other.id, "user", "another one")
            return session.id, other.id, await service.export_session(session.id)

    sid, other_id, transcript = run_sync(seed())
    assert transcript.items == [plain, deepest]
    dumped = dumps_jsonl(transcript)
    assert loads_jsonl(dumped) == transcript

    # CLI: stdout and -o FILE.
    code, out, err = cli(capsys, database_url, "sessions", "export", str(sid))
    assert (code, err) == (0, "")
    assert loads_jsonl(out) == transcript
    one = tmp_path / "deep.jsonl"
    code, out, err = cli(capsys, database_url, "sessions", "export", str(sid), "-o", str(one))
    assert code == 0, err
    assert loads_jsonl(one.read_text(encoding="utf-8")) == transcript

    # --all writes every session, the deep one included.
    folder = tmp_path / "all"
    code, out, err = cli(
        capsys, database_url, "sessions", "export", "--all", "--user", USER, "-o", str(folder)
    )
    assert code == 0, err
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        [f"{sid}.jsonl", f"{other_id}.jsonl"]
    )
    from_all = loads_jsonl((folder / f"{sid}.jsonl").read_text(encoding="utf-8"))
    assert from_all == transcript

    # Into another, empty database (library), and under a new id (CLI).
    async def import_elsewhere() -> None:
        async with Ledger.from_url(empty_database_url) as other:
            await other.upgrade()
            result = await other.service.import_session(from_all, user_id=USER)
            assert (result.session_id, result.items_added, result.created) == (sid, 2, True)
            assert await other.service.get_items(sid) == [plain, deepest]
            assert await other.service.export_session(sid) == transcript

    run_sync(import_elsewhere())
    new_id = uuid.uuid4()
    code, out, err = cli(
        capsys,
        database_url,
        "sessions",
        "import",
        str(one),
        "--user",
        USER,
        "--session-id",
        str(new_id),
    )
    assert code == 0, err
    assert run_sync(url_items(database_url, new_id)) == [plain, deepest]


# -- 2. atomic files: a failed export leaves nothing behind ------------------------------------


def test_failed_export_leaves_no_file_and_all_continues(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def seed() -> tuple[uuid.UUID, uuid.UUID]:
        async with Ledger.from_url(database_url) as ledger:
            service = ledger.service
            good = await service.create_session(USER, "helper")
            await service.add_messages(
                good.id,
                [{"role": "user", "content": "fine 1"}, {"role": "assistant", "content": "fine 2"}],
            )
            bad = await service.create_session(USER, "helper")
            await service.add_messages(
                bad.id, [{"role": "user", "content": f"kept {n}"} for n in (1, 2, 3)]
            )
            await damage(ledger, bad.id, 2)
            return good.id, bad.id

    good, bad = run_sync(seed())
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "out.jsonl"

    code, out, err = cli(capsys, database_url, "sessions", "export", str(bad), "-o", str(target))
    assert code == 1
    assert_one_error_line(err, str(bad))
    assert not target.exists()
    assert list(folder.iterdir()) == []  # no temporary file either

    # An existing file, even with --force, stays exactly as it was.
    original = b"previous export\n\x00\xff bytes"
    target.write_bytes(original)
    for force in ([], ["--force"]):
        code, out, err = cli(
            capsys, database_url, "sessions", "export", str(bad), "-o", str(target), *force
        )
        assert code == 1
        assert_one_error_line(err)
        assert target.read_bytes() == original
        assert list(folder.iterdir()) == [target]

    # JSONL to stdout: a complete copy or nothing.
    code, out, err = cli(capsys, database_url, "sessions", "export", str(bad))
    assert code == 1
    assert out == ""
    assert_one_error_line(err, str(bad))

    # Markdown still shows the rest.
    code, out, err = cli(
        capsys, database_url, "sessions", "export", str(bad), "--format", "markdown"
    )
    assert (code, err) == (0, "")
    assert "kept 1" in out
    assert "kept 3" in out
    assert "## 2 · (damaged)" in out
    markdown_file = folder / "bad.md"
    code, out, err = cli(
        capsys,
        database_url,
        "sessions",
        "export",
        str(bad),
        "--format",
        "markdown",
        "-o",
        str(markdown_file),
    )
    assert code == 0, err
    assert "kept 3" in markdown_file.read_text(encoding="utf-8")

    # --all goes past the damaged session and reports it.
    every = tmp_path / "every"
    code, out, err = cli(
        capsys, database_url, "sessions", "export", "--all", "--user", USER, "-o", str(every)
    )
    assert code == 1
    assert_one_error_line(err, str(bad))
    assert [path.name for path in every.iterdir()] == [f"{good}.jsonl"]
    written = loads_jsonl((every / f"{good}.jsonl").read_text(encoding="utf-8"))
    assert written == run_sync(url_export(database_url, good))


# -- 3. never over an existing file without --force --------------------------------------------


def test_existing_files_are_replaced_only_with_force(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def seed() -> tuple[uuid.UUID, uuid.UUID]:
        async with Ledger.from_url(database_url) as ledger:
            ids = []
            for n in (1, 2):
                session = await ledger.service.create_session(USER, "helper")
                await ledger.service.add_message(session.id, "user", f"hello {n}")
                ids.append(session.id)
            return ids[0], ids[1]

    first, second = run_sync(seed())
    exports = tmp_path / "exports"  # tmp_path also holds the SQLite database
    exports.mkdir()
    target = exports / "one.jsonl"
    original = b"do not lose me\n"
    target.write_bytes(original)

    for fmt in ("jsonl", "markdown"):
        code, out, err = cli(
            capsys,
            database_url,
            "sessions",
            "export",
            str(first),
            "--format",
            fmt,
            "-o",
            str(target),
        )
        assert code == 1
        assert_one_error_line(err, "--force")
        assert target.read_bytes() == original
    assert sorted(exports.iterdir()) == [target]

    target.chmod(0o640)  # shared with a group: replacing it keeps that
    code, out, err = cli(
        capsys, database_url, "sessions", "export", str(first), "-o", str(target), "--force"
    )
    assert code == 0, err
    assert loads_jsonl(target.read_text(encoding="utf-8")) == run_sync(
        url_export(database_url, first)
    )
    assert sorted(exports.iterdir()) == [target]
    assert stat.S_IMODE(target.stat().st_mode) == 0o640

    # A new file gets what the umask gives any new file, not the temporary file's 0600.
    fresh = exports / "fresh.jsonl"
    previous = os.umask(0o022)
    try:
        code, _, err = cli(capsys, database_url, "sessions", "export", str(first), "-o", str(fresh))
    finally:
        os.umask(previous)
    assert code == 0, err
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
    fresh.unlink()

    # --all: one existing target refuses the whole run before anything is written.
    folder = tmp_path / "all"
    folder.mkdir()
    existing = folder / f"{second}.jsonl"
    existing.write_bytes(original)
    args = ("sessions", "export", "--all", "--user", USER, "-o", str(folder))
    code, out, err = cli(capsys, database_url, *args)
    assert (code, out) == (1, "")
    assert_one_error_line(err, "--force")
    assert list(folder.iterdir()) == [existing]
    assert existing.read_bytes() == original

    code, _, err = cli(capsys, database_url, *args, "--force")
    assert code == 0, err
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        [f"{first}.jsonl", f"{second}.jsonl"]
    )
    for session_id in (first, second):
        written = (folder / f"{session_id}.jsonl").read_text(encoding="utf-8")
        assert loads_jsonl(written) == run_sync(url_export(database_url, session_id))


# -- 4. '-' is stdout for export, stdin for import ---------------------------------------------


def test_dash_means_stdout_and_stdin(
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # a file named '-' would land here, not in the checkout

    async def seed() -> tuple[uuid.UUID, SessionTranscript]:
        async with Ledger.from_url(database_url) as ledger:
            session = await ledger.service.create_session(USER, "helper")
            await ledger.service.add_messages(
                session.id,
                [{"role": "user", "content": "Zürich 🎉"}, {"role": "assistant", "content": "ok"}],
            )
            return session.id, await ledger.service.export_session(session.id)

    sid, transcript = run_sync(seed())
    code, out, err = cli(capsys, database_url, "sessions", "export", str(sid), "-o", "-")
    assert (code, err) == (0, "")
    assert loads_jsonl(out) == transcript
    assert list(workdir.iterdir()) == []
    code, out, err = cli(
        capsys, database_url, "sessions", "export", str(sid), "--format", "markdown", "-o", "-"
    )
    assert (code, err) == (0, "")
    assert out.startswith("# ")
    assert "## 1 · User" in out

    new_id = uuid.uuid4()
    env = {key: value for key, value in os.environ.items() if key != "AGENTLEDGER_DEBUG"}
    imported = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentledger",
            "--database-url",
            database_url,
            "sessions",
            "import",
            "-",
            "--user",
            USER,
            "--session-id",
            str(new_id),
        ],
        input=dumps_jsonl(transcript),
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        cwd=workdir,
        timeout=120,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    assert f"imported 2 new items into new session {new_id}" in imported.stdout
    assert run_sync(url_items(database_url, new_id)) == transcript.items
    assert list(workdir.iterdir()) == []


# -- 5. unreadable JSONL names the source and the line -----------------------------------------


def _bad_jsonl_cases() -> dict[str, tuple[str, int]]:
    """Name -> (JSONL text, the line number the error must name)."""
    now = datetime.now(UTC).replace(microsecond=0)
    good = dumps_jsonl(
        SessionTranscript(
            id=uuid.uuid4(),
            user_id=USER,
            agent_name="helper",
            metadata={},
            created_at=now,
            updated_at=now,
            messages=(
                TranscriptMessage(seq=1, item={"role": "user", "content": "a"}, created_at=now),
                TranscriptMessage(seq=2, item={"role": "user", "content": "b"}, created_at=now),
            ),
        )
    )
    header, first, second = good.splitlines()
    deep = "[" * 100_000 + "]" * 100_000

    def with_session(**changes: Any) -> str:
        value = json.loads(header)
        value["session"].update(changes)
        return json.dumps(value)

    def with_item(item: Any) -> str:
        return json.dumps({"seq": 2, "item": item, "created_at": now.isoformat()})

    def with_stamp(line: str, stamp: str) -> str:
        value = json.loads(line)
        value["created_at"] = stamp
        return json.dumps(value)

    return {
        "deep message line": (f"{header}\n{deep}\n{second}\n", 2),
        "deep unclosed line": (f"{header}\n{first}\n\n" + "[" * 100_000 + "\n", 4),
        "deep item": (f'{header}\n{first}\n{{"seq": 2, "item": {deep}}}\n', 3),
        "deep header": (f"{deep}\n{first}\n{second}\n", 1),
        "header created_at before year 1": (
            with_session(created_at="0001-01-01T00:00:00+05:00") + f"\n{first}\n{second}\n",
            1,
        ),
        "header updated_at after 9999": (
            with_session(updated_at="9999-12-31T23:59:59-05:00") + f"\n{first}\n{second}\n",
            1,
        ),
        "message created_at after 9999": (
            f"{header}\n{first}\n" + with_stamp(second, "9999-12-31T23:59:59-05:00") + "\n",
            3,
        ),
        "message created_at before year 1": (
            f"{header}\n" + with_stamp(first, "0001-01-01T00:00:00+05:00") + f"\n{second}\n",
            2,
        ),
        # What storing would refuse is refused while reading, with the line.
        "unknown role": (
            f"{header}\n{first}\n{with_item({'role': 'hacker', 'content': 'x'})}\n",
            3,
        ),
        "lone surrogate": (
            f"{header}\n{first}\n" + with_item({"role": "user", "content": "\ud800"}) + "\n",
            3,
        ),
        "NaN": (f'{header}\n{first}\n{{"seq": 2, "item": {{"type": "x", "v": NaN}}}}\n', 3),
        "item not an object": (f'{header}\n{first}\n{{"seq": 2, "item": "text"}}\n', 3),
        "title too long": (with_session(title="t" * 300) + f"\n{first}\n{second}\n", 1),
        "agent name too long": (with_session(agent_name="a" * 300) + f"\n{first}\n{second}\n", 1),
        "seq as a float": (
            f'{header}\n{{"seq": 1.0, "item": {{"role": "user", "content": "a"}}}}\n{second}\n',
            2,
        ),
        "more messages than announced": (f"{header}\n{first}\n{second}\n{second}\n", 4),
    }


BAD_JSONL = _bad_jsonl_cases()


@pytest.mark.parametrize("case", sorted(BAD_JSONL))
def test_unreadable_jsonl_names_source_and_line(case: str) -> None:
    content, line = BAD_JSONL[case]
    with pytest.raises(InvalidInputError) as loaded:
        loads_jsonl(content, source="broken.jsonl")
    assert "broken.jsonl" in str(loaded.value)
    assert f"line {line}" in str(loaded.value)
    with pytest.raises(InvalidInputError) as read:
        read_jsonl(io.StringIO(content, newline="\n"), source="stream.jsonl")
    assert "stream.jsonl" in str(read.value)
    assert f"line {line}" in str(read.value)


def test_cli_import_of_unreadable_jsonl_is_one_line_and_writes_nothing(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def seed() -> None:
        async with Ledger.from_url(database_url) as ledger:
            session = await ledger.service.create_session(USER, "helper")
            await ledger.service.add_message(session.id, "user", "already here")

    run_sync(seed())
    before = run_sync(url_snapshot(database_url))
    for index, (case, (content, line)) in enumerate(sorted(BAD_JSONL.items())):
        path = tmp_path / f"bad-{index}.jsonl"
        path.write_text(content, encoding="utf-8", newline="\n")
        code, _, err = cli(capsys, database_url, "sessions", "import", str(path), "--user", USER)
        assert code == 1, case
        assert_one_error_line(err, path.name, f"line {line}")
        assert "RecursionError" not in err
        assert run_sync(url_snapshot(database_url)) == before, case


def test_a_folder_import_checks_every_file_first_and_names_a_refused_one(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good_a, good_b = plain_transcript(count=2), plain_transcript(count=3)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text(dumps_jsonl(good_a), encoding="utf-8", newline="\n")
    (folder / "b.jsonl").write_text(dumps_jsonl(good_b), encoding="utf-8", newline="\n")
    bad = dumps_jsonl(plain_transcript(count=1)).replace("message 1", "\\ud800")
    (folder / "z.jsonl").write_text(bad, encoding="utf-8", newline="\n")
    before = run_sync(url_snapshot(database_url))

    code, _, err = cli(capsys, database_url, "sessions", "import", str(folder), "--user", USER)

    assert code == 1
    assert_one_error_line(err, "z.jsonl", "line 2", "surrogate")
    assert run_sync(url_snapshot(database_url)) == before  # a, b not stored either

    # An id that is another user's is found before anything is stored, too; a FIFO among the
    # files is no transcript and is left alone (reading it would block).
    (folder / "z.jsonl").write_text(dumps_jsonl(plain_transcript(count=1)), encoding="utf-8")
    os.mkfifo(folder / "pipe.jsonl")
    taken = json.loads((folder / "z.jsonl").read_text(encoding="utf-8").splitlines()[0])
    run_sync(claim(database_url, uuid.UUID(taken["session"]["id"]), "mallory"))
    before = run_sync(url_snapshot(database_url))
    code, _, err = cli(capsys, database_url, "sessions", "import", str(folder), "--user", USER)
    assert code == 1
    assert_one_error_line(err, "z.jsonl", "taken by another user")
    assert run_sync(url_snapshot(database_url)) == before

    # Without it, the folder imports (the FIFO skipped).
    (folder / "z.jsonl").unlink()
    code, _, err = cli(capsys, database_url, "sessions", "import", str(folder), "--user", USER)
    assert code == 0, err
    assert run_sync(url_items(database_url, good_a.id)) == good_a.items
    assert run_sync(url_items(database_url, good_b.id)) == good_b.items


async def claim(url: str, session_id: uuid.UUID, user: str) -> None:
    async with Ledger.from_url(url) as ledger:
        await ledger.service.create_session(user, "helper", session_id=session_id)


# -- 6. impossible transcripts are refused before anything is written --------------------------


async def test_trimmed_seq_at_the_limit_is_refused_then_a_valid_import_works(
    ledger: Ledger,
) -> None:
    sid = uuid.uuid4()
    at_limit = plain_transcript(sid, 1, trimmed_seq=MAX_SEQ)
    assert at_limit.messages[0].seq == MAX_SEQ + 1
    before = await snapshot(ledger)
    with pytest.raises(InvalidInputError):
        await ledger.service.import_session(at_limit, user_id=USER)
    assert await snapshot(ledger) == before
    assert await ledger.service.get_session(sid) is None

    # The same, read from JSONL: refused by the reader (header line), nothing to import.
    header = {
        "format": "agentledger.transcript",
        "version": 1,
        "session": {
            "id": str(sid),
            "user_id": USER,
            "agent_name": "helper",
            "title": None,
            "metadata": {},
            "created_at": "2024-01-01T00:00:00+00:00",
            "updated_at": "2024-01-01T00:00:00+00:00",
            "archived_at": None,
            "trimmed_seq": MAX_SEQ,
        },
        "message_count": 1,
    }
    message = {"seq": MAX_SEQ + 1, "created_at": None, "item": {"role": "user", "content": "x"}}
    content = json.dumps(header) + "\n" + json.dumps(message) + "\n"
    with pytest.raises(InvalidInputError, match="line 1"):
        loads_jsonl(content, source="limit.jsonl")
    assert await snapshot(ledger) == before

    valid = plain_transcript(sid, 2)
    result = await ledger.service.import_session(valid, user_id=USER)
    assert (result.session_id, result.created, result.items_added) == (sid, True, 2)
    assert await ledger.service.get_items(sid) == valid.items


def test_cli_import_of_trimmed_seq_at_the_limit_writes_nothing(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = uuid.uuid4()
    valid = plain_transcript(sid, 2)
    header, *messages = dumps_jsonl(valid).splitlines()
    parsed = json.loads(header)
    parsed["session"]["trimmed_seq"] = MAX_SEQ
    shifted = []
    for offset, line in enumerate(messages, start=1):
        value = json.loads(line)
        value["seq"] = MAX_SEQ + offset
        shifted.append(json.dumps(value))
    path = tmp_path / "limit.jsonl"
    path.write_text("\n".join([json.dumps(parsed), *shifted]) + "\n", encoding="utf-8")

    before = run_sync(url_snapshot(database_url))
    code, out, err = cli(capsys, database_url, "sessions", "import", str(path), "--user", USER)
    assert code == 1
    assert_one_error_line(err, path.name, "line 1")
    assert run_sync(url_snapshot(database_url)) == before

    good = tmp_path / "good.jsonl"
    good.write_text(dumps_jsonl(valid), encoding="utf-8")
    code, out, err = cli(capsys, database_url, "sessions", "import", str(good), "--user", USER)
    assert code == 0, err
    assert f"imported 2 new items into new session {sid}" in out
    assert run_sync(url_items(database_url, sid)) == valid.items


def _item(n: int) -> dict[str, Any]:
    return {"role": "user", "content": f"m{n}"}


def _bad_python_transcripts() -> dict[str, SessionTranscript]:
    now = datetime.now(UTC).replace(microsecond=0)
    naive = datetime(2024, 1, 1, 12, 0)
    east = timezone(timedelta(hours=5))
    west = timezone(timedelta(hours=-5))

    def build(seqs: tuple[int, ...], *, trimmed_seq: int = 0, **changes: Any) -> SessionTranscript:
        fields: dict[str, Any] = {
            "id": uuid.uuid4(),
            "user_id": USER,
            "agent_name": "helper",
            "metadata": {},
            "created_at": now,
            "updated_at": now,
            "messages": tuple(
                TranscriptMessage(seq=seq, item=_item(seq), created_at=now) for seq in seqs
            ),
            "trimmed_seq": trimmed_seq,
        }
        fields.update(changes)
        return SessionTranscript(**fields)

    def with_message_time(stamp: datetime) -> SessionTranscript:
        transcript = build((1, 2))
        first = transcript.messages[0]
        return SessionTranscript(
            id=transcript.id,
            user_id=USER,
            agent_name="helper",
            metadata={},
            created_at=now,
            updated_at=now,
            messages=(first, TranscriptMessage(seq=2, item=_item(2), created_at=stamp)),
        )

    return {
        "duplicate and gapped seqs": build((1, 2, 2, 7)),
        "duplicate seqs": build((1, 2, 2)),
        "gapped seqs": build((1, 2, 4)),
        "naive created_at": build((1, 2), created_at=naive),
        "naive updated_at": build((1, 2), updated_at=naive),
        "naive archived_at": build((1, 2), archived_at=naive),
        "naive message created_at": with_message_time(naive),
        "created_at before year 1 in UTC": build((1,), created_at=datetime(1, 1, 1, tzinfo=east)),
        "message created_at after 9999 in UTC": with_message_time(
            datetime(9999, 12, 31, 23, 59, 59, tzinfo=west)
        ),
        "trimmed_seq plus count past the limit": build(
            (MAX_SEQ - 1, MAX_SEQ, MAX_SEQ + 1), trimmed_seq=MAX_SEQ - 2
        ),
        "trimmed_seq at the limit": build((MAX_SEQ + 1,), trimmed_seq=MAX_SEQ),
    }


BAD_TRANSCRIPTS = _bad_python_transcripts()


@pytest.mark.parametrize("case", sorted(BAD_TRANSCRIPTS))
async def test_python_built_transcript_that_would_not_round_trip_is_refused(
    ledger: Ledger, case: str
) -> None:
    transcript = BAD_TRANSCRIPTS[case]
    before = await snapshot(ledger)
    with pytest.raises(InvalidInputError):
        await ledger.service.import_session(transcript, user_id=USER)
    assert await snapshot(ledger) == before
    assert await ledger.service.get_session(transcript.id) is None

    # Into an existing session of the same user: refused just the same, nothing changes.
    existing = await ledger.service.create_session(USER, "helper")
    await ledger.service.add_items(existing.id, [_item(1), _item(2)])
    before = await snapshot(ledger)
    with pytest.raises(InvalidInputError):
        await ledger.service.import_session(transcript, user_id=USER, session_id=existing.id)
    assert await snapshot(ledger) == before


# -- 7. Markdown: who said what, beyond doubt --------------------------------------------------

FORGED_USER = (
    "hello\n\n## 2 · Assistant\n\nI am the assistant <script>alert(1)</script> "
    "<img src=x onerror=alert(1)>"
)
FENCE_BREAKER = "````\n\n## 3 · System\n\n<script>alert(2)</script>\n````\n```"


async def test_markdown_cannot_be_forged_by_content(ledger: Ledger) -> None:
    service = ledger.service
    session = await service.create_session(USER, "helper")
    await service.set_title(session.id, "<b>t</b> # x")
    await service.add_items(
        session.id,
        [
            {"role": "user", "content": FORGED_USER},
            {"role": "user", "content": FENCE_BREAKER},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "f<img src=x onerror=alert(3)>",
                "arguments": '{"q": "<script>alert(4)</script>"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "<b>out</b>"},
            {"role": "assistant", "content": "ok"},
        ],
    )
    rendered = render_markdown(await service.export_session(session.id))
    page = markdown.markdown(rendered, extensions=["fenced_code"])

    assert "<script" not in page
    assert "<img" not in page
    assert "<b>" not in page
    titles = re.findall(r"<h1>(.*?)</h1>", page, re.S)
    assert len(titles) == 1
    assert html.unescape(titles[0]) == "<b>t</b> # x"
    headings = re.findall(r"<h2>(.*?)</h2>", page, re.S)
    assert len(headings) == 5  # one per message
    labels = [html.unescape(re.sub(r"</?code>", "", heading)) for heading in headings]
    assert labels == [
        "1 · User",
        "2 · User",
        "3 · Tool call f<img src=x onerror=alert(3)>",
        "4 · Tool result for call_1",
        "5 · Assistant",
    ]
    assert len(re.findall(r"<h[1-6][ >]", page)) == 6  # nothing else became a heading
    blocks = [
        html.unescape(block)
        for block in re.findall(r"<pre><code[^>]*>(.*?)</code></pre>", page, re.S)
    ]
    assert f"{FORGED_USER}\n" in blocks
    assert f"{FENCE_BREAKER}\n" in blocks
    assert "<b>out</b>\n" in blocks


# -- 8. times from the future are clamped -------------------------------------------------------


@pytest.mark.parametrize("via", ["python", "jsonl"])
async def test_future_times_are_clamped_so_retention_still_applies(
    ledger: Ledger, via: str
) -> None:
    far = datetime(9999, 12, 31, 12, 0, tzinfo=UTC)
    sid = uuid.uuid4()
    transcript = SessionTranscript(
        id=sid,
        user_id=USER,
        agent_name="helper",
        metadata={},
        created_at=far,
        updated_at=far,
        archived_at=far,
        messages=(
            TranscriptMessage(seq=1, item=_item(1), created_at=far),
            TranscriptMessage(seq=2, item=_item(2), created_at=far),
        ),
    )
    if via == "jsonl":
        transcript = loads_jsonl(dumps_jsonl(transcript))
    result = await ledger.service.import_session(transcript, user_id=USER)
    assert (result.created, result.items_added) == (True, 2)

    limit = datetime.now(UTC) + timedelta(minutes=1)
    record = await ledger.service.get_session(sid)
    assert record is not None
    assert record.updated_at <= limit
    assert record.created_at <= limit
    assert all(message.created_at <= limit for message in record.messages)
    stored = await ledger.service.export_session(sid)
    assert stored.updated_at <= limit
    assert stored.created_at <= limit
    assert stored.archived_at is not None
    assert stored.archived_at <= limit
    assert all(m.created_at is not None and m.created_at <= limit for m in stored.messages)

    later = datetime.now(UTC) + timedelta(days=2)
    future_service = SessionService(ledger.unit_of_work, clock=lambda: later)
    report = await future_service.apply_retention({"*": {"days": 1}})
    assert report.deleted_sessions == 1
    assert await ledger.service.get_session(sid) is None


# -- 9. no raw control characters reach the terminal -------------------------------------------

EVIL = "red \x1b[31mALERT\x1b[0m bell\x07 csi\x9b2J rtl\u202eevil"
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\u202e")


def _assert_escaped(out: str, what: str) -> None:
    for char in RAW_CONTROLS:
        assert char not in out, (what, repr(char), out)


def test_terminal_output_never_carries_raw_controls(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def seed() -> tuple[uuid.UUID, SessionTranscript]:
        async with Ledger.from_url(database_url) as ledger:
            session = await ledger.service.create_session(USER, "helper")
            await ledger.service.add_message(session.id, "user", EVIL)
            await ledger.service.add_message(session.id, "assistant", "noted")
            return session.id, await ledger.service.export_session(session.id)

    sid, transcript = run_sync(seed())

    code, out, err = cli(capsys, database_url, "sessions", "show", str(sid))
    assert (code, err) == (0, "")
    assert "ALERT" in out
    _assert_escaped(out, "show")

    code, out, err = cli(capsys, database_url, "sessions", "list", "--user", USER)
    assert (code, err) == (0, "")
    assert str(sid) in out
    assert "ALERT" in out  # the title: the first user message
    _assert_escaped(out, "list")

    # "bell" is a word on both backends (PostgreSQL's parser reads "31mALERT" as one token).
    for query in ("ALERT", "bell"):
        code, out, err = cli(capsys, database_url, "search", "--user", USER, query)
        assert (code, err) == (0, ""), query
        _assert_escaped(out, f"search {query}")
    assert str(sid) in out
    assert "ALERT" in out

    code, out, err = cli(
        capsys, database_url, "sessions", "export", str(sid), "--format", "markdown"
    )
    assert (code, err) == (0, "")
    assert "ALERT" in out
    _assert_escaped(out, "export markdown")

    code, out, err = cli(capsys, database_url, "sessions", "show", str(sid), "--json")
    assert (code, err) == (0, "")
    _assert_escaped(out, "show --json")
    assert json.loads(out)["messages"][0]["content"] == EVIL

    code, out, err = cli(capsys, database_url, "sessions", "list", "--user", USER, "--json")
    assert (code, err) == (0, "")
    _assert_escaped(out, "list --json")
    assert json.loads(out)["sessions"][0]["id"] == str(sid)

    code, out, err = cli(capsys, database_url, "search", "--user", USER, "bell", "--json")
    assert (code, err) == (0, "")
    _assert_escaped(out, "search --json")
    assert [hit["content"] for hit in json.loads(out)["hits"]] == [EVIL]

    code, out, err = cli(capsys, database_url, "sessions", "export", str(sid))
    assert (code, err) == (0, "")
    _assert_escaped(out, "export jsonl")
    assert loads_jsonl(out) == transcript
    assert loads_jsonl(out).messages[0].item["content"] == EVIL


# -- 10. a reader that goes away early ends the command quietly ---------------------------------


async def _seed_large_session(url: str) -> uuid.UUID:
    async with Ledger.from_url(url) as ledger:
        session = await ledger.service.create_session(USER, "helper")
        await ledger.service.add_message(session.id, "user", "x" * 2_000_000)
        await ledger.service.add_message(session.id, "assistant", "y" * 10)
        return session.id


def _run_with_early_closing_reader(url: str, args: list[str], workdir: Path) -> tuple[int, str]:
    """``agentledger ARGS | head -c 10``: read 10 bytes, close the pipe, wait for the exit.

    Returns (exit code, stderr)."""
    env = {key: value for key, value in os.environ.items() if key != "AGENTLEDGER_DEBUG"}
    err_path = workdir / f"stderr-{uuid.uuid4().hex}.txt"
    with err_path.open("wb") as err_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "agentledger", "--database-url", url, *args],
            stdout=subprocess.PIPE,
            stderr=err_file,
            env=env,
            cwd=workdir,
        )
        assert process.stdout is not None
        try:
            head = process.stdout.read(10)
            process.stdout.close()
            code = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert len(head) == 10
    return code, err_path.read_text(encoding="utf-8", errors="replace")


def _assert_quiet_broken_pipe(code: int, err: str, what: str) -> None:
    assert "Traceback" not in err, (what, err)
    assert "BrokenPipeError" not in err, (what, err)
    assert "Exception ignored" not in err, (what, err)
    assert err == "", (what, err)
    assert code == 141, (what, code, err)


def test_closed_pipe_ends_quietly(database_url: str, tmp_path: Path) -> None:
    sid = str(run_sync(_seed_large_session(database_url)))
    commands = {
        "show": ["sessions", "show", sid],
        "show --json": ["sessions", "show", sid, "--json"],
        "export jsonl": ["sessions", "export", sid],
    }
    for what, args in commands.items():
        code, err = _run_with_early_closing_reader(database_url, args, tmp_path)
        _assert_quiet_broken_pipe(code, err, what)


def test_closed_pipe_during_markdown_export_ends_quietly(database_url: str, tmp_path: Path) -> None:
    sid = str(run_sync(_seed_large_session(database_url)))
    args = ["sessions", "export", sid, "--format", "markdown"]
    code, err = _run_with_early_closing_reader(database_url, args, tmp_path)
    _assert_quiet_broken_pipe(code, err, "export --format markdown")


def test_force_writes_through_links_and_never_replaces_special_files(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def seed() -> uuid.UUID:
        async with Ledger.from_url(database_url) as ledger:
            session = await ledger.service.create_session(USER, "helper")
            await ledger.service.add_message(session.id, "user", "hello")
            return session.id

    sid = run_sync(seed())
    out = tmp_path / "out"
    out.mkdir()
    real = out / "real.jsonl"
    real.write_text("old\n", encoding="utf-8")
    link = out / "link.jsonl"
    link.symlink_to(real)
    export = ("sessions", "export", str(sid), "--force", "-o")

    code, _, err = cli(capsys, database_url, *export, str(link))
    assert code == 0, err
    assert link.is_symlink()  # still the link, and its target holds the export
    assert loads_jsonl(real.read_text(encoding="utf-8")).id == sid

    fifo = out / "pipe"
    os.mkfifo(fifo)
    for special in (fifo, out):
        code, _, err = cli(capsys, database_url, *export, str(special))
        assert code == 1
        assert_one_error_line(err, "not a regular file")
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert sorted(path.name for path in out.iterdir()) == ["link.jsonl", "pipe", "real.jsonl"]
