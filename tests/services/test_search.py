"""SessionService.search: ranking, user scoping, safe queries, pagination, on both backends."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import func, select, text

from agentledger import InvalidInputError, Ledger
from agentledger.cli import main
from agentledger.db.models import ConversationMessage
from agentledger.domain.search import parse_query, snippet
from tests.conftest import run_sync


async def add_texts(ledger: Ledger, user: str, agent: str, texts: list[str]) -> uuid.UUID:
    session = await ledger.service.create_session(user, agent)
    await ledger.service.add_items(session.id, [{"role": "user", "content": t} for t in texts])
    return session.id


async def test_hits_are_ranked_best_first(ledger: Ledger) -> None:
    sid = await add_texts(
        ledger,
        "alice",
        "A",
        [
            "a trip to paris",
            "nothing to see here",
            "paris, paris and more paris: paris!",
            "Paris in spring",
        ],
    )
    page = await ledger.service.search("alice", "paris")
    assert next(hit.seq for hit in page) == 3
    assert {hit.seq for hit in page} == {1, 3, 4}
    ranks = [hit.rank for hit in page]
    assert ranks == sorted(ranks, reverse=True)
    assert ranks[0] > ranks[-1]
    best = page[0]
    assert best.session_id == sid
    assert best.role == "user"
    assert best.agent_name == "A"
    assert best.content == "paris, paris and more paris: paris!"
    assert "paris" in best.snippet
    assert best.created_at.tzinfo is not None
    assert page.next_cursor is None


async def test_search_is_scoped_to_the_user_and_agent(ledger: Ledger) -> None:
    mine = await add_texts(ledger, "alice", "A", ["the secret code is blue"])
    other_agent = await add_texts(ledger, "alice", "B", ["another secret"])
    await add_texts(ledger, "mallory", "A", ["secret secret secret", "my secret"])

    page = await ledger.service.search("alice", "secret")
    assert {hit.session_id for hit in page} == {mine, other_agent}
    only_a = await ledger.service.search("alice", "secret", agent_name="A")
    assert [hit.session_id for hit in only_a] == [mine]
    assert len(await ledger.service.search("nobody", "secret")) == 0


async def test_web_search_syntax(ledger: Ledger) -> None:
    await add_texts(
        ledger,
        "alice",
        "A",
        ["red apple pie", "green apple", "red car", "apple red sauce"],
    )

    async def seqs(query: str) -> set[int]:
        return {hit.seq for hit in await ledger.service.search("alice", query)}

    assert await seqs("apple red") == {1, 4}
    assert await seqs("apple -red") == {2}
    assert await seqs("car or pie") == {1, 3}
    assert await seqs('"red apple"') == {1}
    assert await seqs("APPLE") == {1, 2, 4}


@pytest.mark.parametrize(
    "query",
    [
        "'); DROP TABLE conversation_messages; --",
        "paris & !weather | (x:*)",
        "a <-> b <2> c",
        "\\",
        '"unclosed phrase',
        "-",
        "or or or",
        "x\x00y",
        "'",
        "%_%",
    ],
)
async def test_queries_cannot_inject(ledger: Ledger, query: str) -> None:
    sid = await add_texts(ledger, "alice", "A", ["harmless text", "50% off", "5000 off"])
    if not parse_query_or_none(query):
        with pytest.raises(InvalidInputError, match="search query"):
            await ledger.service.search("alice", query)
    else:
        page = await ledger.service.search("alice", query)
        assert all(hit.session_id == sid for hit in page)
    assert len(await ledger.service.get_items(sid)) == 3
    async with ledger.engine.connect() as connection:
        count = await connection.scalar(select(func.count()).select_from(ConversationMessage))
    assert count == 3


async def test_wildcards_in_terms_are_literal(ledger: Ledger) -> None:
    await add_texts(ledger, "alice", "A", ["see file_name here", "see filexname here", "filename"])
    page = await ledger.service.search("alice", "file_name")
    assert [hit.seq for hit in page] == [1]


async def test_unicode_and_nul_content_is_found_and_returned_exactly(ledger: Ledger) -> None:
    session = await ledger.service.create_session("alice", "A")
    output = "Zürich: sunny\x00 day \ue000 ☀"
    await ledger.service.add_items(
        session.id,
        [
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": output},
            {"role": "assistant", "content": "Café crème, naïve résumé"},
        ],
    )
    sunny = await ledger.service.search("alice", "sunny")
    assert [(hit.seq, hit.content, hit.role) for hit in sunny] == [(2, output, "tool")]
    assert sunny[0].item_type == "function_call_output"
    cafe = await ledger.service.search("alice", "café")
    assert [hit.seq for hit in cafe] == [3]
    assert [hit.seq for hit in await ledger.service.search("alice", "zürich")] == [2]
    after_nul = await ledger.service.search("alice", "day")
    # SQLite's string functions (LIKE included) stop at U+0000: the fallback does not search
    # past it. PostgreSQL indexes the whole text (U+0000 is stored escaped).
    expected = [2] if ledger.engine.dialect.name == "postgresql" else []
    assert [hit.seq for hit in after_nul] == expected


async def test_pages_cover_every_hit_once_even_while_messages_arrive(ledger: Ledger) -> None:
    sid = await add_texts(
        ledger, "alice", "A", [("needle " * (1 + n % 4)) + f"number {n}" for n in range(25)]
    )
    everything = await ledger.service.search("alice", "needle", limit=100)
    assert len(everything) == 25
    expected = [(hit.session_id, hit.seq) for hit in everything]

    seen: list[tuple[uuid.UUID, int]] = []
    cursor = None
    pages = 0
    while True:
        page = await ledger.service.search("alice", "needle", limit=10, cursor=cursor)
        seen.extend((hit.session_id, hit.seq) for hit in page)
        pages += 1
        if pages == 1:
            # A new, better match arrives while the user pages: it must not shift the pages.
            await ledger.service.add_items(sid, [{"role": "user", "content": "needle " * 9}])
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 3
    assert seen == expected
    assert len(set(seen)) == len(seen)


async def test_cursors_are_checked(ledger: Ledger) -> None:
    await add_texts(ledger, "alice", "A", ["needle"] * 3)
    page = await ledger.service.search("alice", "needle", limit=1)
    assert page.next_cursor is not None
    with pytest.raises(InvalidInputError, match="different search"):
        await ledger.service.search("alice", "haystack", limit=1, cursor=page.next_cursor)
    with pytest.raises(InvalidInputError, match="different search"):
        await ledger.service.search(
            "alice", "needle", limit=1, cursor=page.next_cursor, agent_name="B"
        )
    with pytest.raises(InvalidInputError, match="different search"):  # another user's search
        await ledger.service.search("bob", "needle", limit=1, cursor=page.next_cursor)
    with pytest.raises(InvalidInputError, match="malformed search cursor"):
        await ledger.service.search("alice", "needle", cursor="not-a-cursor")
    with pytest.raises(InvalidInputError, match="limit"):
        await ledger.service.search("alice", "needle", limit=0)


async def test_bad_arguments_are_refused(ledger: Ledger) -> None:
    service = ledger.service
    with pytest.raises(InvalidInputError, match="no words"):
        await service.search("alice", "   ")
    with pytest.raises(InvalidInputError, match="at most 1000"):
        await service.search("alice", "x" * 1001)
    with pytest.raises(InvalidInputError, match="must be a string"):
        await service.search("alice", 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        await service.search("alice", "x", limit=0)
    with pytest.raises(InvalidInputError, match="user_id"):
        await service.search("", "x")


async def test_archived_sessions_are_left_out_unless_asked(ledger: Ledger) -> None:
    active = await add_texts(ledger, "alice", "A", ["budget report"])
    archived = await add_texts(ledger, "alice", "A", ["budget draft"])
    async with ledger.engine.begin() as connection:
        await connection.execute(
            text("UPDATE agent_sessions SET archived_at = updated_at WHERE id = :id"),
            {"id": archived if ledger.engine.dialect.name == "postgresql" else archived.hex},
        )
    assert [hit.session_id for hit in await ledger.service.search("alice", "budget")] == [active]
    both = await ledger.service.search("alice", "budget", include_archived=True)
    assert {hit.session_id for hit in both} == {active, archived}


def parse_query_or_none(query: str) -> bool:
    try:
        parse_query(query)
    except InvalidInputError:
        return False
    return True


def test_query_parser_and_snippets() -> None:
    terms = parse_query('Red "big  apple" -worm or Pear')
    assert [(g.include, g.exclude) for g in terms.groups] == [
        (("Red", "big apple"), ("worm",)),
        (("Pear",), ()),
    ]
    assert terms.wanted == ("red", "big apple", "pear")
    long_text = "x" * 200 + " the Needle is here " + "y" * 200
    cut = snippet(long_text, ("needle",), context=10)
    assert cut.startswith("…")
    assert cut.endswith("…")
    assert "Needle" in cut
    assert snippet("short text", ("absent",)) == "short text"


def test_cli_search(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    async def seed() -> None:
        async with Ledger.from_url(database_url) as ledger:
            await add_texts(ledger, "alice", "A", ["invoice 42 is overdue", "hello"])

    run_sync(seed())
    code = main(["--database-url", database_url, "search", "--user", "alice", "invoice", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    payload = json.loads(out)
    assert [hit["content"] for hit in payload["hits"]] == ["invoice 42 is overdue"]
    assert payload["next_cursor"] is None
    code = main(["--database-url", database_url, "search", "--user", "alice", "overdue", "invoice"])
    out = capsys.readouterr().out
    assert code == 0
    assert "invoice 42 is overdue" in out
    code = main(["--database-url", database_url, "search", "--user", "alice", "!!!"])
    captured = capsys.readouterr()
    assert code == 1
    assert "no words" in captured.err
