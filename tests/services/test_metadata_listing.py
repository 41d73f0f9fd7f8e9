"""update_metadata / set_title, and listing for a session picker: filters and titles."""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

import pytest

from agentledger import InvalidInputError, Ledger, SessionNotFoundError, SessionSummary
from tests.services.test_listing import counting_statements
from tests.support.lifecycle import snapshot


async def listed(ledger: Ledger, user_id: str = "u1", **filters: Any) -> list[SessionSummary]:
    return list(await ledger.service.list_user_sessions(user_id, 100, **filters))


# -- update_metadata ----------------------------------------------------------------------------


async def test_update_metadata_merges_and_removes_keys(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A", {"tier": "free", "lang": "pt", "n": 1})

    record = await svc.update_metadata(
        session.id, {"tier": "gold", "lang": None, "tags": ["a", {"b": [1, 2.5, None]}]}
    )

    expected = {"tier": "gold", "n": 1, "tags": ["a", {"b": [1, 2.5, None]}]}
    assert record.metadata == expected
    assert record.updated_at > session.updated_at
    stored = await svc.get_session(session.id)
    assert stored == record
    assert stored is not None
    assert stored.metadata == expected

    # Removing an absent key or setting the same values changes nothing, not even updated_at.
    again = await svc.update_metadata(session.id, {"missing": None, "n": 1}, user_id="u1")
    assert again == record
    # 1 and True are different JSON values: this is a change.
    changed = await svc.update_metadata(session.id, {"n": True})
    assert changed.metadata["n"] is True
    cleared = await svc.update_metadata(session.id, dict.fromkeys(expected))
    assert cleared.metadata == {}


async def test_concurrent_updates_of_different_keys_all_survive(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A", {"keep": "me"})

    await asyncio.wait_for(
        asyncio.gather(*(svc.update_metadata(session.id, {f"k{i}": i}) for i in range(20))),
        timeout=60,
    )

    record = await svc.get_session(session.id)
    assert record is not None
    assert record.metadata == {"keep": "me", **{f"k{i}": i for i in range(20)}}


class Opaque:
    pass


BAD_CHANGES: list[tuple[str, Any, type[Exception]]] = [
    ("list", [("a", 1)], InvalidInputError),
    ("string", "a=1", InvalidInputError),
    ("int key", {1: "x"}, InvalidInputError),
    ("nested int key", {"a": {"b": {2: "x"}}}, InvalidInputError),
    ("NaN", {"a": math.nan}, InvalidInputError),
    ("infinity", {"a": [math.inf]}, InvalidInputError),
    ("lone surrogate value", {"a": "\ud800"}, InvalidInputError),
    ("lone surrogate key", {"\udfff": 1}, InvalidInputError),
    ("object", {"a": Opaque()}, InvalidInputError),
]


@pytest.mark.parametrize(
    ("changes", "error"), [(c, e) for _, c, e in BAD_CHANGES], ids=[n for n, _, _ in BAD_CHANGES]
)
async def test_bad_metadata_changes_write_nothing(
    ledger: Ledger, changes: Any, error: type[Exception]
) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A", {"tier": "free"})
    before = await snapshot(ledger)
    with pytest.raises(error, match="metadata"):
        await svc.update_metadata(session.id, changes)
    assert await snapshot(ledger) == before


async def test_metadata_and_title_of_another_user_read_as_missing(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A", {"tier": "free"})
    before = await snapshot(ledger)
    with pytest.raises(SessionNotFoundError, match="mallory"):
        await svc.update_metadata(session.id, {"tier": "gold"}, user_id="mallory")
    with pytest.raises(SessionNotFoundError, match="mallory"):
        await svc.set_title(session.id, "Mine now", user_id="mallory")
    with pytest.raises(SessionNotFoundError):
        await svc.update_metadata(uuid.uuid4(), {"tier": "gold"})
    with pytest.raises(SessionNotFoundError):
        await svc.set_title(uuid.uuid4(), "x")
    assert await snapshot(ledger) == before


# -- set_title ----------------------------------------------------------------------------------


async def test_set_title_and_clear_it(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    await svc.add_message(session.id, "user", "Plan a trip to Lisbon")

    titled = await svc.set_title(session.id, "Lisbon trip", user_id="u1")
    assert titled.title == "Lisbon trip"
    stored = await svc.get_session(session.id)
    assert stored is not None
    assert stored.title == "Lisbon trip"
    assert [s.title for s in await listed(ledger)] == ["Lisbon trip"]

    cleared = await svc.set_title(session.id, None)
    assert cleared.title is None
    assert [s.title for s in await listed(ledger)] == ["Plan a trip to Lisbon"]

    before = await snapshot(ledger)
    for bad in ("", "  \n", "x" * 256, "\ud800"):
        with pytest.raises(InvalidInputError, match="title"):
            await svc.set_title(session.id, bad)
    with pytest.raises(InvalidInputError, match="title"):
        await svc.set_title(session.id, 42)  # type: ignore[arg-type]
    assert await snapshot(ledger) == before
    # Exactly 255 characters fit, U+0000 included.
    long_title = "t\x00" + "x" * 252
    assert (await svc.set_title(session.id, long_title)).title == long_title
    assert [s.title for s in await listed(ledger)] == [long_title]


# -- picker titles ------------------------------------------------------------------------------


async def test_untitled_sessions_show_their_first_user_message(ledger: Ledger) -> None:
    svc = ledger.service
    long_text = "Please   help me\nplan " + "a very long trip " * 10
    sessions = {}
    for name, messages in {
        "system first": [
            {"role": "system", "content": "You are helpful."},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "  What's\tthe weather?\n"},
            {"role": "user", "content": "second question"},
        ],
        "long": [{"role": "user", "content": long_text}],
        "exactly 80": [{"role": "user", "content": "y" * 80}],
        "no user message": [{"role": "assistant", "content": "Hello, how can I help?"}],
        "empty": [],
    }.items():
        session = await svc.create_session("u1", name)
        if messages:
            await svc.add_messages(session.id, messages)
        sessions[name] = session.id

    titles = {s.agent_name: s.title for s in await listed(ledger)}

    assert titles["system first"] == "What's the weather?"
    collapsed = " ".join(long_text.split())
    assert titles["long"] == collapsed[:79].rstrip() + "…"
    assert len(titles["long"] or "") <= 80
    assert titles["exactly 80"] == "y" * 80
    assert titles["no user message"] is None
    assert titles["empty"] is None

    # An explicit title wins, and a rewind past the first user message drops the preview.
    await svc.set_title(sessions["long"], "Trip")
    await svc.rewind_session(sessions["system first"], 2)
    titles = {s.agent_name: s.title for s in await listed(ledger)}
    assert titles["long"] == "Trip"
    assert titles["system first"] is None


async def test_title_preview_is_one_line_without_control_characters(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    await svc.add_message(session.id, "user", "tab\there\r\nnew line\x07 bell")
    [summary] = await listed(ledger)
    assert summary.title == "tab here new line bell"


# -- filters ------------------------------------------------------------------------------------

HOSTILE_KEYS = [
    "a') OR 1=1 --",
    "a' OR '1'='1",
    'x" OR 1=1 --',
    "$.tier",
    "tier.nested",
    "a[0]",
    "*",
    "%",
    "k\x00",
]


async def test_filters_by_agent_and_metadata_values(ledger: Ledger) -> None:
    svc = ledger.service
    made = {
        "gold-pt": await svc.create_session("u1", "Support", {"tier": "gold", "lang": "pt"}),
        "gold-en": await svc.create_session("u1", "Sales", {"tier": "gold", "lang": "en"}),
        "free": await svc.create_session("u1", "Support", {"tier": "free", "n": 3, "vip": True}),
        "numbers": await svc.create_session("u1", "Support", {"n": 3.0, "vip": 1, "z": 0}),
        "nested": await svc.create_session("u1", "Support", {"tier": {"gold": True}}),
        "other user": await svc.create_session("u2", "Support", {"tier": "gold"}),
    }
    names = {session.id: name for name, session in made.items()}

    async def names_for(**filters: Any) -> set[str]:
        return {names[s.id] for s in await listed(ledger, **filters)}

    assert await names_for(agent_name="Support") == {"gold-pt", "free", "numbers", "nested"}
    assert await names_for(metadata={"tier": "gold"}) == {"gold-pt", "gold-en"}
    assert await names_for(metadata={"tier": "gold", "lang": "pt"}) == {"gold-pt"}
    assert await names_for(agent_name="Sales", metadata={"tier": "gold"}) == {"gold-en"}
    assert await names_for(agent_name="Sales", metadata={"lang": "pt"}) == set()
    # Numbers compare as numbers; booleans are not numbers.
    assert await names_for(metadata={"n": 3}) == {"free", "numbers"}
    assert await names_for(metadata={"n": 3.0}) == {"free", "numbers"}
    assert await names_for(metadata={"n": "3"}) == set()
    assert await names_for(metadata={"vip": True}) == {"free"}
    assert await names_for(metadata={"vip": 1}) == {"numbers"}
    assert await names_for(metadata={"z": False}) == set()
    assert await names_for(metadata={"z": 0}) == {"numbers"}
    assert await names_for(metadata={}) == set(names.values()) - {"other user"}
    assert await names_for(metadata={"tier": "gold"}, user_id="u2") == {"other user"}


async def test_hostile_metadata_keys_and_values_are_only_data(ledger: Ledger) -> None:
    svc = ledger.service
    plain = await svc.create_session("u1", "A", {"tier": "gold", "a": "1"})
    hostile = {key: f"value of {key}" for key in HOSTILE_KEYS}
    tricky = await svc.create_session("u1", "A", hostile)
    await svc.create_session("u2", "A", hostile)
    before = await snapshot(ledger)

    for key in HOSTILE_KEYS:
        if "\x00" in key and ledger.engine.dialect.name == "sqlite":
            # SQLite's JSON functions end text at U+0000: refused, rather than never matching.
            with pytest.raises(InvalidInputError, match="U\\+0000"):
                await listed(ledger, metadata={key: f"value of {key}"})
            continue
        found = await listed(ledger, metadata={key: f"value of {key}"})
        assert [s.id for s in found] == [tricky.id], key
        assert await listed(ledger, metadata={key: "1"}) == [], key
        assert await listed(ledger, metadata={key: "gold"}) == [], key
    for value in ("gold' OR '1'='1", "1 OR 1=1", '"gold"', "%", "*"):
        assert await listed(ledger, metadata={"tier": value}) == [], value
        assert await listed(ledger, agent_name=value) == [], value
    assert [s.id for s in await listed(ledger, metadata={"tier": "gold"})] == [plain.id]

    assert await snapshot(ledger) == before


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ({"tier": None}, InvalidInputError),
        ({"tier": ["gold"]}, InvalidInputError),
        ({"tier": {"a": 1}}, InvalidInputError),
        ({"n": math.nan}, InvalidInputError),
        ({"n": 2**64}, InvalidInputError),
        ({"tier": "\ud800"}, InvalidInputError),
        ({1: "x"}, InvalidInputError),
        ([("tier", "gold")], InvalidInputError),
    ],
)
async def test_bad_filters_are_refused(
    ledger: Ledger, metadata: Any, error: type[Exception]
) -> None:
    await ledger.service.create_session("u1", "A", {"tier": "gold"})
    with pytest.raises(error, match="metadata filter"):
        await ledger.service.list_user_sessions("u1", metadata=metadata)
    with pytest.raises(InvalidInputError, match="agent_name"):
        await ledger.service.list_user_sessions("u1", agent_name="")


async def test_filtered_pages_cover_every_match_once(ledger: Ledger) -> None:
    svc = ledger.service
    wanted = set()
    for i in range(23):
        tier = "gold" if i % 2 else "free"
        session = await svc.create_session("u1", "A", {"tier": tier, "i": i})
        if tier == "gold":
            wanted.add(session.id)
    seen: list[uuid.UUID] = []
    cursor: str | None = None
    for _ in range(10):
        page = await svc.list_user_sessions("u1", limit=4, cursor=cursor, metadata={"tier": "gold"})
        seen.extend(s.id for s in page)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 11
    assert set(seen) == wanted


async def test_filtered_listing_with_titles_is_still_one_statement(ledger: Ledger) -> None:
    svc = ledger.service

    async def statements(**filters: Any) -> list[str]:
        with counting_statements(ledger) as sent:
            page = await svc.list_user_sessions("u1", limit=100, **filters)
        assert page.next_cursor is None
        return sent

    for i in range(3):
        session = await svc.create_session("u1", "A", {"tier": "gold", "i": i})
        await svc.add_message(session.id, "user", f"question {i}")
    await statements()  # warm up: the one-time schema check is not listing's cost
    few = await statements(agent_name="A", metadata={"tier": "gold", "i": 1})
    for i in range(3, 30):
        session = await svc.create_session("u1", "A", {"tier": "gold", "i": i})
        await svc.add_message(session.id, "user", f"question {i}")
    many = await statements(agent_name="A", metadata={"tier": "gold"})

    assert len(few) == len(many) <= 2, many
    assert len([s for s in many if s.lstrip().upper().startswith("SELECT")]) == 1
    page = await svc.list_user_sessions("u1", limit=100, metadata={"tier": "gold"})
    assert len(page) == 30
    assert {s.title for s in page} == {f"question {i}" for i in range(30)}


async def test_a_filter_matches_only_equal_values_when_stored_ones_hold_nul(
    ledger: Ledger,
) -> None:
    # SQLite's JSON functions end text at U+0000: "pro\x00-trial" must still not equal "pro".
    svc = ledger.service
    exact = await svc.create_session("u", "a", {"plan": "pro"})
    await svc.create_session("u", "a", {"plan": "pro\x00-trial"})
    free = await svc.create_session("u", "a", {"plan": "free"})
    await svc.create_session("u", "a", {"plan\x00x": "free"})
    backslash = await svc.create_session("u", "a", {"plan": "a\\u0000"})  # no NUL: 7 chars

    async def matching(value: str) -> set[uuid.UUID]:
        page = await svc.list_user_sessions("u", 50, metadata={"plan": value})
        return {summary.id for summary in page.sessions}

    assert await matching("pro") == {exact.id}
    assert await matching("free") == {free.id}
    assert await matching("a\\u0000") == {backslash.id}


@pytest.mark.parametrize(
    "metadata",
    [
        {"k\x00": "v"},
        {"k": "v\ue000"},
        {"outer": [{"inner\x00": ["deep \ue000\x00 value"]}]},
        {"list": ["plain", ["nested", "\x00"]]},
        {"flat": "no escape at all", "n": 1, "f": 2.5, "none": None, "yes": True},
    ],
)
async def test_metadata_with_nul_and_escape_characters_reads_back_exactly_everywhere(
    ledger: Ledger, metadata: dict[str, Any]
) -> None:
    # The listing and the record read metadata through the same unescape, which checks keys and
    # strings at every depth; any one of them holding U+0000 or the escape character must
    # come back exactly.
    svc = ledger.service
    session = await svc.create_session("u", "a", metadata)

    assert [summary.metadata for summary in await listed(ledger, "u")] == [metadata]
    record = await svc.get_session(session.id, "u")
    assert record is not None
    assert record.metadata == metadata
