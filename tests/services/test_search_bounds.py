"""Storage never depends on the search index.

On PostgreSQL a message's search document is ``to_tsvector('simple', left(content, 100000))``
(:data:`agentledger.db.types.SEARCHED_CHARACTERS`). Before it covered the whole content, and one
tool output of about 1.4 MB of distinct words made the whole batch fail with sqlstate 54000
("string is too long for tsvector"): a turn could not be stored because it could not be indexed.
SQLite searches with ``LIKE`` over all of the content and has no such document.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import pytest
from agents.items import TResponseInputItem

from agentledger import Ledger
from agentledger.db.types import SEARCHED_CHARACTERS

#: A word is 9 characters plus a space: word ``i`` starts at character ``10 * i``.
WORD_WIDTH = 10
BIG_WORDS = 140_000


def word(index: int) -> str:
    return f"w{index:07d}x"


#: ~1.4 MB of distinct words: 140,000 lexemes of 9 bytes, more than a tsvector's 1 MB.
BIG_OUTPUT = " ".join(word(i) for i in range(BIG_WORDS))
#: The last word wholly inside the searched prefix, and the first one after it.
LAST_SEARCHED = SEARCHED_CHARACTERS // WORD_WIDTH - 1
FIRST_UNSEARCHED = SEARCHED_CHARACTERS // WORD_WIDTH


def tool_turn(output: str, call_id: str = "call_big") -> list[TResponseInputItem]:
    """A user message, a function call, its (large) output and the assistant's answer."""
    return [
        {"role": "user", "content": "read the whole log file"},
        {
            "type": "function_call",
            "id": f"fc_{call_id}",
            "call_id": call_id,
            "name": "read_file",
            "arguments": '{"path": "/var/log/big.log"}',
            "status": "completed",
        },
        {"type": "function_call_output", "call_id": call_id, "output": output},
        {
            "type": "message",
            "id": f"msg_{call_id}",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "The log is long.", "annotations": []}],
        },
    ]


async def store_turn(ledger: Ledger, output: str, user: str = "alice") -> Any:
    """The turn stored through an SDK session; returns that session."""
    session = ledger.agent_session("big-tool-output", user_id=user, agent_name="reader")
    turn = tool_turn(output)
    await session.add_items(turn)
    assert await session.get_items() == turn
    return session


async def found_seqs(ledger: Ledger, query: str) -> set[int]:
    page = await ledger.service.search("alice", query)
    return {hit.seq for hit in page}


def test_the_test_words_straddle_the_searched_prefix() -> None:
    assert SEARCHED_CHARACTERS == 100_000
    assert len(BIG_OUTPUT) == BIG_WORDS * WORD_WIDTH - 1 > 1_000_000
    start = BIG_OUTPUT.index(word(LAST_SEARCHED))
    assert start + len(word(LAST_SEARCHED)) <= SEARCHED_CHARACTERS
    assert BIG_OUTPUT.index(word(FIRST_UNSEARCHED)) == SEARCHED_CHARACTERS
    assert word(FIRST_UNSEARCHED) not in BIG_OUTPUT[:SEARCHED_CHARACTERS]


# -- (1) a 1.4 MB tool output of distinct words is stored --------------------------------------


async def test_a_batch_with_a_huge_distinct_word_tool_output_is_stored(ledger: Ledger) -> None:
    session = await store_turn(ledger, BIG_OUTPUT)
    turn = tool_turn(BIG_OUTPUT)
    assert await session.get_items() == turn
    assert await session.get_items(2) == turn[2:]
    record = await ledger.service.get_session(session.ledger_session_id, user_id="alice")
    assert record is not None
    assert [(m.seq, m.role) for m in record.messages] == [
        (1, "user"),
        (2, "assistant"),
        (3, "tool"),
        (4, "assistant"),
    ]
    assert record.messages[2].content == BIG_OUTPUT
    assert record.messages[2].tool_call_id == "call_big"
    # The same through the service directly, as a second batch in another session.
    other = await ledger.service.create_session("alice", "reader")
    result = await ledger.service.add_items(other.id, turn)
    assert (result.first_seq, result.count) == (1, 4)
    assert await ledger.service.get_items(other.id, user_id="alice") == turn


async def test_postgresql_could_not_index_that_output_whole(pg_database_url: str) -> None:
    """The output really is beyond what one tsvector holds (sqlstate 54000), so the previous
    test exercises the bound rather than passing by luck."""
    connection = await asyncpg.connect(pg_database_url)  # a plain postgresql:// URL
    try:
        with pytest.raises(asyncpg.ProgramLimitExceededError, match="too long for tsvector"):
            await connection.fetchval("SELECT to_tsvector('simple', $1::text)", BIG_OUTPUT)
        bounded = await connection.fetchval(
            "SELECT length(to_tsvector('simple', left($1::text, $2::int)))",
            BIG_OUTPUT,
            SEARCHED_CHARACTERS,
        )
        assert bounded == SEARCHED_CHARACTERS // WORD_WIDTH
    finally:
        await connection.close()


# -- (2) and (3) what search finds in it -------------------------------------------------------


async def test_search_finds_words_of_the_searched_prefix(ledger: Ledger) -> None:
    await store_turn(ledger, BIG_OUTPUT)
    for index in (0, 1234, LAST_SEARCHED):
        page = await ledger.service.search("alice", word(index))
        assert [(hit.seq, hit.role, hit.item_type) for hit in page] == [
            (3, "tool", "function_call_output")
        ]
        assert word(index) in page[0].snippet
        assert page[0].content == BIG_OUTPUT
    # The other messages of the batch are indexed as usual.
    assert await found_seqs(ledger, "whole") == {1}
    assert await found_seqs(ledger, "long") == {4}


async def test_words_past_the_searched_prefix(ledger: Ledger, backend: str) -> None:
    await store_turn(ledger, BIG_OUTPUT)
    past = [word(FIRST_UNSEARCHED), word(FIRST_UNSEARCHED + 1), word(BIG_WORDS - 1)]
    if backend == "postgresql":
        # The documented boundary: only the first SEARCHED_CHARACTERS characters are indexed.
        for term in past:
            assert await found_seqs(ledger, term) == set(), term
        assert await found_seqs(ledger, f"{word(LAST_SEARCHED)} or {past[0]}") == {3}
    else:
        assert backend == "sqlite"
        # SQLite matches LIKE over the whole content: no boundary.
        for term in past:
            assert await found_seqs(ledger, term) == {3}, term


# -- (4) text built to maximise lexemes --------------------------------------------------------


def adversarial_text(length: int = 300_000) -> str:
    """Hyphenated words of 4-byte characters (each part and the whole compound are lexemes)
    after long URLs (each gives url, host and path lexemes)."""
    urls = " ".join(
        f"http://h{n}.example.com/" + "/".join(f"seg{n}x{k}" for k in range(40)) for n in range(200)
    )
    parts: list[str] = [urls]
    size = len(urls)
    i = 0
    while size < length:
        compound = "-".join(
            chr(0x20000 + (i * 13 + j) % 40000) + chr(0x20000 + (i + j) % 40000) for j in range(10)
        )
        parts.append(compound)
        size += len(compound) + 1
        i += 1
    return " ".join(parts)


ADVERSARIAL = adversarial_text()


async def test_text_built_to_maximise_lexemes_is_stored(ledger: Ledger) -> None:
    assert len(ADVERSARIAL) >= 300_000
    assert sum(ord(c) > 0xFFFF for c in ADVERSARIAL) > 140_000  # 4 bytes each in UTF-8
    session = await store_turn(ledger, ADVERSARIAL)
    assert await session.get_items() == tool_turn(ADVERSARIAL)
    # As a plain chat message too, in a batch of several.
    chat = await ledger.service.create_session("alice", "reader")
    messages = [
        {"role": "user", "content": ADVERSARIAL},
        {"role": "assistant", "content": ADVERSARIAL[::-1]},
    ]
    await ledger.service.add_messages(chat.id, messages)
    record = await ledger.service.get_session(chat.id, user_id="alice")
    assert record is not None
    assert [m.content for m in record.messages] == [ADVERSARIAL, ADVERSARIAL[::-1]]
    # A host of the URLs at the start is searchable on both backends.
    page = await ledger.service.search("alice", "h7.example.com")
    assert {(hit.session_id, hit.seq) for hit in page} == {
        (session.ledger_session_id, 3),
        (chat.id, 1),
    }


async def test_adversarial_prefix_fits_a_tsvector(pg_database_url: str) -> None:
    """What the bound relies on: even this text's first SEARCHED_CHARACTERS characters make a
    valid tsvector, while its whole would not."""
    connection = await asyncpg.connect(pg_database_url)  # a plain postgresql:// URL
    try:
        lexemes = await connection.fetchval(
            "SELECT length(to_tsvector('simple', left($1::text, $2::int)))",
            ADVERSARIAL,
            SEARCHED_CHARACTERS,
        )
        assert lexemes > 0
        with pytest.raises(asyncpg.ProgramLimitExceededError, match="too long for tsvector"):
            await connection.fetchval("SELECT to_tsvector('simple', $1::text)", ADVERSARIAL)
    finally:
        await connection.close()


# -- (5) a very large, repetitive output ---------------------------------------------------------


@pytest.mark.slow
async def test_a_50_mb_tool_output_is_stored_and_read_back(ledger: Ledger) -> None:
    output = "START-MARKER " + "lorem ipsum dolor sit amet " * (50 * 1024 * 1024 // 27)
    assert len(output) >= 50 * 1024 * 1024 - 27
    started = time.monotonic()
    session = await store_turn(ledger, output)
    items = await session.get_items()
    assert items[2]["output"] == output
    assert await found_seqs(ledger, "START-MARKER") == {3}
    assert time.monotonic() - started < 300
