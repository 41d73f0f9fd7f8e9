"""Input that would come back different, or that the database cannot take, is refused with a
typed error before anything is written; numbers past what a BIGINT holds are refused, and ages
past the first representable date mean "nothing is that old", never an OverflowError."""

from __future__ import annotations

import base64
import json
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agentledger import InvalidInputError, Ledger, LedgerError, SessionService, Usage
from agentledger.services.sdk_import import import_sdk_store
from tests.support.lifecycle import snapshot

Call = Callable[[SessionService, uuid.UUID], Awaitable[object]]


def _cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {"type": "message", "role": "user", "content": "x"}
    loop["self"] = loop
    return loop


NOT_ROUND_TRIPPABLE: dict[str, Any] = {
    "non-string keys": {"type": "x", "data": {1: "a", "1": "b", None: "c"}},
    "a bool key": {"type": "x", "data": {True: 1}},
    "a float key deep down": {"type": "x", "data": [[{"ok": {2.5: "no"}}]]},
    "a tuple": {"type": "x", "data": ("a", "b")},
    "a cycle": _cyclic(),
    "a type longer than the chat view's column": {"type": "t" * 65},
    "a type with NUL": {"type": "function\x00call"},
    "an integer of more than 4300 digits": {"type": "x", "data": 10**5000},
}


@pytest.mark.parametrize("case", sorted(NOT_ROUND_TRIPPABLE))
async def test_items_that_would_come_back_different_are_refused(ledger: Ledger, case: str) -> None:
    svc = ledger.service
    session = await svc.create_session("u", "a")
    await svc.add_items(session.id, [{"role": "user", "content": "kept"}])
    before = await snapshot(ledger)
    with pytest.raises(InvalidInputError):
        await svc.add_items(
            session.id, [{"role": "user", "content": "x"}, NOT_ROUND_TRIPPABLE[case]]
        )
    assert await snapshot(ledger) == before
    assert await svc.get_items(session.id) == [{"role": "user", "content": "kept"}]


async def test_chat_tool_calls_and_metadata_with_non_string_keys_are_refused(
    ledger: Ledger,
) -> None:
    svc = ledger.service
    session = await svc.create_session("u", "a", {"ok": True})
    before = await snapshot(ledger)
    bad_calls = [{"id": "c1", "type": "function", "function": {"name": "f", 7: "x"}}]
    calls: list[Awaitable[object]] = [
        svc.add_message(session.id, "assistant", "", tool_calls=bad_calls),
        svc.create_session("u", "a", {"nested": {1: "a"}}),
        svc.update_metadata(session.id, {"nested": {None: "c"}}),
        svc.update_metadata(session.id, {"pair": (1, 2)}),
    ]
    for call in calls:
        with pytest.raises(InvalidInputError):
            await call
    assert await snapshot(ledger) == before


async def test_owner_arguments_are_checked_on_every_call(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u", "a")
    await svc.add_message(session.id, "user", "hi")
    sid = session.id
    calls: dict[str, Callable[[Any], Awaitable[object]]] = {
        "get_session": lambda user: svc.get_session(sid, user_id=user),
        "delete_session": lambda user: svc.delete_session(sid, user_id=user),
        "get_items": lambda user: svc.get_items(sid, user_id=user),
        "pop_item": lambda user: svc.pop_item(sid, user_id=user),
        "clear_session": lambda user: svc.clear_session(sid, user_id=user),
        "get_usage": lambda user: svc.get_usage(sid, user_id=user),
        "record_usage": lambda user: svc.record_usage(sid, Usage(1, 1, 1, 2), user_id=user),
        "add_message": lambda user: svc.add_message(sid, "user", "x", user_id=user),
        "fork_session": lambda user: svc.fork_session(sid, user_id=user),
        "rewind_session": lambda user: svc.rewind_session(sid, 0, user_id=user),
        "export_session": lambda user: svc.export_session(sid, user_id=user),
        "batch_keys": lambda user: svc.batch_keys(sid, user_id=user),
        "list_user_sessions": lambda user: svc.list_user_sessions(user),
        "search": lambda user: svc.search(user, "hi"),
        "erase_user": lambda user: svc.erase_user(user, dry_run=True),
    }
    before = await snapshot(ledger)
    for name, call in calls.items():
        for bad in ("nul\x00user", "lone \ud800 surrogate", 42, ""):
            with pytest.raises((InvalidInputError, TypeError)) as raised:
                await call(bad)
            assert isinstance(raised.value, (LedgerError, TypeError)), name
    assert await snapshot(ledger) == before


async def test_numbers_past_a_bigint_are_refused_not_overflowing(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u", "a")
    await svc.add_message(session.id, "user", "hi")
    huge = 2**63
    for call in (
        svc.get_items(session.id, limit=huge),
        svc.fork_session(session.id, at_seq=huge),
        svc.rewind_session(session.id, huge),
        svc.record_usage(session.id, Usage(requests=huge)),
        svc.erase_user("u", batch_size=huge),
        svc.cleanup_sessions(timedelta(days=1), batch_size=huge),
    ):
        with pytest.raises(InvalidInputError):
            await call
    assert await svc.get_items(session.id, limit=2**63 - 1) == [{"role": "user", "content": "hi"}]


async def test_ages_past_the_first_date_keep_everything(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u", "a")
    report = await svc.apply_retention({"*": {"days": 1_000_000}})
    assert report.deleted_sessions == 0
    report = await svc.apply_retention({"*": {"days": 1e12, "max_messages": 5}})
    assert report.deleted_sessions == 0
    assert await svc.cleanup_sessions(timedelta(days=999_999_999)) == 0
    assert await svc.count_idle_sessions(timedelta.max) == (0, 0)
    assert await svc.get_session(session.id) is not None


def _cursor(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


MALFORMED_LISTING_CURSORS = [
    "!!!",
    _cursor(["0001-01-01T00:00:00+05:00", str(uuid.uuid4())]),
    _cursor(["9999-12-31T23:59:59-05:00", str(uuid.uuid4())]),
    _cursor(["2026-01-01T00:00:00", str(uuid.uuid4())]),
    _cursor(["2026-01-01T00:00:00+00:00", 12]),
    _cursor({"a": 1}),
    _cursor([[], []]),
    "A" * 5000,
]


async def test_malformed_cursors_are_invalid_input(ledger: Ledger) -> None:
    svc = ledger.service
    for cursor in MALFORMED_LISTING_CURSORS:
        with pytest.raises(InvalidInputError, match="cursor"):
            await svc.list_user_sessions("u", cursor=cursor)
    query_cursors = [
        _cursor([float("inf"), str(uuid.uuid4()), 1, "x"]),
        _cursor([1.0, str(uuid.uuid4()), 2**70, "x"]),
        _cursor([1.0, None, 1, "x"]),
        "not base64 at all ~~~",
    ]
    for cursor in query_cursors:
        with pytest.raises(InvalidInputError, match="cursor"):
            await svc.search("u", "hello", cursor=cursor)


async def test_one_bad_row_of_an_sdk_store_is_counted_not_fatal(
    ledger: Ledger, tmp_path: Path
) -> None:
    source = tmp_path / "sdk.db"
    with sqlite3.connect(source) as db:
        db.execute(
            "CREATE TABLE agent_messages "
            "(id INTEGER PRIMARY KEY, session_id TEXT, message_data TEXT)"
        )
        rows = [
            json.dumps({"role": "user", "content": "first"}),
            "[" * 5000,  # too deep to decode
            json.dumps("a bare string is not an item"),
            '{"role": "user", "content": NaN}',
            json.dumps({"role": "wizard", "content": "unknown role"}),
            json.dumps({"role": "assistant", "content": "last"}),
        ]
        db.executemany(
            "INSERT INTO agent_messages (session_id, message_data) VALUES ('chat', ?)",
            [(row,) for row in rows],
        )
    report = await import_sdk_store(ledger.service, str(source), user_id="u", agent_name="a")
    assert (report.sessions, report.items, report.unreadable) == (1, 2, 4)


async def test_importing_a_missing_or_foreign_sqlite_file_says_so(
    ledger: Ledger, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError, match="no SQLite file"):
        await import_sdk_store(
            ledger.service, str(tmp_path / "nope.db"), user_id="u", agent_name="a"
        )
    assert not (tmp_path / "nope.db").exists()
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    with pytest.raises(InvalidInputError, match="messages-table"):
        await import_sdk_store(ledger.service, str(other), user_id="u", agent_name="a")
