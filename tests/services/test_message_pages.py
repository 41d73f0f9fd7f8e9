"""Pages of history: service.get_messages returns keyset pages of message records, forwards
from the start or backwards from the end, one indexed query each, whatever the session's
size."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import event

from agentledger import InvalidInputError, Ledger, MessagePage
from tests.support.damage import damage_row

TOTAL = 250


async def filled(ledger: Ledger, count: int = TOTAL) -> uuid.UUID:
    session = await ledger.service.create_session("u", "a")
    await ledger.service.add_messages(
        session.id, [{"role": "user", "content": f"m{n}"} for n in range(1, count + 1)]
    )
    return session.id


async def test_forward_pages_cover_the_history_once(ledger: Ledger) -> None:
    sid = await filled(ledger)
    seen: list[int] = []
    page = await ledger.service.get_messages(sid, limit=100)
    pages = 1
    while True:
        assert isinstance(page, MessagePage)
        seen += [message.seq for message in page]
        if page.next_after_seq is None:
            break
        assert page.next_after_seq == page[-1].seq
        page = await ledger.service.get_messages(sid, after_seq=page.next_after_seq, limit=100)
        pages += 1
    assert seen == list(range(1, TOTAL + 1))
    assert pages == 3
    assert page.next_before_seq is None
    assert [m.content for m in (await ledger.service.get_messages(sid, limit=2))] == ["m1", "m2"]


async def test_backward_pages_walk_from_the_end(ledger: Ledger) -> None:
    sid = await filled(ledger)
    page = await ledger.service.get_messages(sid, before_seq=TOTAL + 1, limit=100)
    assert [m.seq for m in page] == list(range(151, TOTAL + 1))
    assert page.next_before_seq == 151
    assert page.next_after_seq is None
    page = await ledger.service.get_messages(sid, before_seq=page.next_before_seq, limit=100)
    assert [m.seq for m in page] == list(range(51, 151))
    page = await ledger.service.get_messages(sid, before_seq=page.next_before_seq, limit=100)
    assert [m.seq for m in page] == list(range(1, 51))
    assert page.next_before_seq is None


async def test_both_bounds_give_the_range_between_them(ledger: Ledger) -> None:
    sid = await filled(ledger)
    page = await ledger.service.get_messages(sid, after_seq=10, before_seq=20)
    assert [m.seq for m in page] == list(range(11, 20))
    assert page.next_after_seq is None
    page = await ledger.service.get_messages(sid, after_seq=10, before_seq=20, limit=5)
    assert [m.seq for m in page] == list(range(11, 16))
    assert page.next_after_seq == 15


async def test_each_page_is_one_statement_whatever_the_size(ledger: Ledger) -> None:
    sid = await filled(ledger, 3_000)
    statements: list[str] = []

    def count(*args: object) -> None:
        statement = args[2]
        assert isinstance(statement, str)
        if "conversation_messages" in statement:
            statements.append(statement)

    event.listen(ledger.engine.sync_engine, "before_cursor_execute", count)
    try:
        page = await ledger.service.get_messages(sid, after_seq=2_500, limit=10)
    finally:
        event.remove(ledger.engine.sync_engine, "before_cursor_execute", count)
    assert [m.seq for m in page] == list(range(2_501, 2_511))
    assert len(statements) == 1
    assert "LIMIT" in statements[0].upper()


async def test_other_users_and_missing_sessions_give_empty_pages(ledger: Ledger) -> None:
    sid = await filled(ledger, 3)
    assert len(await ledger.service.get_messages(sid, user_id="intruder")) == 0
    assert len(await ledger.service.get_messages(sid, user_id="u")) == 3
    assert len(await ledger.service.get_messages(uuid.uuid4())) == 0


async def test_bad_page_arguments_are_refused(ledger: Ledger) -> None:
    sid = await filled(ledger, 3)
    for bad in ({"limit": 0}, {"limit": 10_001}, {"after_seq": -1}, {"before_seq": -5}):
        with pytest.raises(InvalidInputError, match=next(iter(bad))):
            await ledger.service.get_messages(sid, **bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await ledger.service.get_messages(sid, limit="10")  # type: ignore[arg-type]


async def test_a_damaged_row_is_left_out_but_paging_moves_past_it(
    ledger: Ledger, backend: str
) -> None:
    sid = await filled(ledger, 6)
    await damage_row(ledger, sid, 3, backend)
    first = await ledger.service.get_messages(sid, limit=3)
    assert [m.seq for m in first] == [1, 2]
    assert first.next_after_seq == 3
    rest = await ledger.service.get_messages(sid, after_seq=first.next_after_seq, limit=3)
    assert [m.seq for m in rest] == [4, 5, 6]
    assert rest.next_after_seq is None
