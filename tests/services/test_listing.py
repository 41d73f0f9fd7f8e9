"""list_user_sessions: order, keyset pagination, a bounded number of statements, bad cursors."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from agentledger import InvalidInputError, Ledger, LedgerError, SessionService, SessionSummary


def stepping_clock(start: datetime, step: timedelta, repeat: int = 1) -> Callable[[], datetime]:
    """A clock that returns each instant ``repeat`` times, then moves on by ``step``."""
    ticks = itertools.count()

    def now() -> datetime:
        return start + step * (next(ticks) // repeat)

    return now


@contextmanager
def counting_statements(ledger: Ledger) -> Iterator[list[str]]:
    """Collect every statement sent to the database while the block runs."""
    statements: list[str] = []

    def before_cursor_execute(
        _conn: Any, _cursor: Any, statement: str, *_args: Any, **_kwargs: Any
    ) -> None:
        statements.append(statement)

    engine = ledger.engine.sync_engine
    event.listen(engine, "before_cursor_execute", before_cursor_execute)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before_cursor_execute)


def encode_cursor(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


async def test_most_recently_updated_first(ledger: Ledger) -> None:
    svc = ledger.service
    first = await svc.create_session("u1", "A")
    second = await svc.create_session("u1", "A")
    third = await svc.create_session("u1", "A")
    await svc.create_session("someone-else", "A")

    page = await svc.list_user_sessions("u1")
    assert [s.id for s in page] == [third.id, second.id, first.id]

    # A new message makes a session the most recently updated one.
    await svc.add_message(first.id, "user", "bump")
    await svc.add_messages(first.id, [{"role": "assistant", "content": "ok"}])
    page = await svc.list_user_sessions("u1")
    assert [s.id for s in page] == [first.id, third.id, second.id]
    assert page.next_cursor is None
    summary = page.sessions[0]
    assert isinstance(summary, SessionSummary)
    assert summary.message_count == 2
    assert summary.user_id == "u1"
    assert summary.updated_at > summary.created_at
    assert [s.message_count for s in page.sessions[1:]] == [0, 0]


async def test_list_of_unknown_user_is_empty(ledger: Ledger) -> None:
    await ledger.service.create_session("u1", "A")
    page = await ledger.service.list_user_sessions("nobody")
    assert list(page) == []
    assert page.next_cursor is None


async def test_pagination_through_25_sessions(ledger: Ledger) -> None:
    # Three sessions share each timestamp, so the keyset must break ties by id.
    clock = stepping_clock(datetime(2024, 5, 1, 12, tzinfo=UTC), timedelta(seconds=1), repeat=3)
    svc = SessionService(ledger.unit_of_work, clock=clock)
    created = [await svc.create_session("u1", "A", {"i": i}) for i in range(25)]
    await svc.create_session("u2", "A")

    pages: list[list[SessionSummary]] = []
    cursor: str | None = None
    while True:
        page = await ledger.service.list_user_sessions("u1", limit=10, cursor=cursor)
        pages.append(list(page))
        cursor = page.next_cursor
        if cursor is None:
            break
        assert len(pages) < 10, "pagination does not terminate"

    assert [len(p) for p in pages] == [10, 10, 5]
    listed = [s for p in pages for s in p]
    ids = [s.id for s in listed]
    assert len(set(ids)) == 25, "duplicates across pages"
    assert set(ids) == {s.id for s in created}, "sessions missing"
    keys = [(s.updated_at, s.id) for s in listed]
    assert keys == sorted(keys, reverse=True)
    assert all(s.user_id == "u1" for s in listed)


async def test_last_page_exactly_full_has_no_cursor(ledger: Ledger) -> None:
    svc = ledger.service
    for _ in range(4):
        await svc.create_session("u1", "A")
    first = await svc.list_user_sessions("u1", limit=2)
    assert first.next_cursor is not None
    second = await svc.list_user_sessions("u1", limit=2, cursor=first.next_cursor)
    assert len(second) == 2
    assert second.next_cursor is None


async def test_bad_limit_is_refused(ledger: Ledger) -> None:
    for limit in (0, -1, 1001):
        with pytest.raises(ValueError, match="limit"):
            await ledger.service.list_user_sessions("u1", limit=limit)
    with pytest.raises(TypeError, match="limit"):
        await ledger.service.list_user_sessions("u1", limit="10")  # type: ignore[arg-type]


async def test_listing_issues_a_bounded_number_of_statements(ledger: Ledger) -> None:
    svc = ledger.service

    async def statements_for_listing() -> list[str]:
        with counting_statements(ledger) as statements:
            page = await svc.list_user_sessions("u1", limit=100)
        assert page.next_cursor is None
        return statements

    for _ in range(3):
        await svc.add_message((await svc.create_session("u1", "A")).id, "user", "hi")
    await statements_for_listing()  # warm up: the one-time schema check is not listing's cost
    with_three = await statements_for_listing()

    for _ in range(27):
        await svc.add_message((await svc.create_session("u1", "A")).id, "user", "hi")
    with_thirty = await statements_for_listing()

    assert len(await svc.list_user_sessions("u1", limit=100)) == 30
    assert len(with_thirty) == len(with_three), (with_three, with_thirty)
    selects = [s for s in with_thirty if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1, with_thirty
    assert len(with_thirty) <= 2, with_thirty  # the SELECT, plus BEGIN where it is explicit


SOME_ID = "0b0e7c9e-9d1f-4c43-9b2e-8f7d6a5c4b3a"
SOME_STAMP = "2024-01-01T00:00:00+00:00"


MALFORMED_CURSORS: list[tuple[str, str]] = [
    ("empty", ""),
    ("not base64", "not a cursor!"),
    ("symbols", "%%%%"),
    ("not UTF-8", base64.urlsafe_b64encode(b"\xff\xfe\x00junk").decode()),
    ("object", encode_cursor({"updated_at": 1})),
    ("empty list", encode_cursor([])),
    ("numbers", encode_cursor([1, 2])),
    ("bad stamp", encode_cursor(["yesterday", SOME_ID])),
    ("bad id", encode_cursor([SOME_STAMP, "not-a-uuid"])),
    ("three parts", encode_cursor([SOME_STAMP, SOME_ID, "extra"])),
    # Regression: a naive timestamp used to reach the database and fail there with a
    # misleading "the database refused the operation".
    ("naive stamp", encode_cursor(["2024-01-01T00:00:00", SOME_ID])),
]


async def test_malformed_cursor_raises_ledger_error(ledger: Ledger) -> None:
    svc = ledger.service
    await svc.create_session("u1", "A")
    problems: list[str] = []
    for case, cursor in MALFORMED_CURSORS:
        try:
            await svc.list_user_sessions("u1", cursor=cursor)
        except InvalidInputError as raised:
            if "cursor" not in str(raised):
                problems.append(f"{case}: message {str(raised)!r} does not mention the cursor")
        except LedgerError as raised:
            problems.append(f"{case}: {type(raised).__name__}: {raised}")
        else:
            problems.append(f"{case}: accepted")
    assert problems == []
    # The service still works afterwards.
    assert len(await svc.list_user_sessions("u1")) == 1
