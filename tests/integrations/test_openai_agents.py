"""The OpenAI Agents SDK integration on SQLite and PostgreSQL: LedgerSession as the SDK's session
memory, SessionAgent, history windows and the demo.

Models are the SDK's own ``agents.testing.ScriptedModel``: no network, and every model call is
recorded, so the tests assert on what the model really received rather than on what was stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from typing import TYPE_CHECKING, Any, cast

import pytest
from agents import (
    Agent,
    MaxTurnsExceeded,
    Runner,
    SQLiteSession,
    function_tool,
    set_tracing_disabled,
)
from agents.items import TResponseInputItem
from agents.memory import Session, SessionSettings
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from agents.usage import Usage as SdkUsage
from openai.types.responses import ResponseOutputMessageParam, ResponseReasoningItem
from openai.types.responses.response_reasoning_item import Summary

from agentledger import (
    InvalidInputError,
    Ledger,
    SessionNotFoundError,
    Usage,
)
from agentledger.cli.demo import DEMO_SESSION, DEMO_USER, run_chat, run_demo
from agentledger.domain.windows import HistoryWindow, approx_tokens, history_window
from agentledger.integrations.openai_agents import resolve_session_uuid
from tests.support.items import as_items, fields

if TYPE_CHECKING:
    # agentledger exports these lazily (its module __getattr__, typed ``object``); mypy reads
    # them from where they are defined, the tests import them the way the docs do.
    from agentledger.integrations.openai_agents import AgentRunResult, LedgerSession, SessionAgent
else:
    from agentledger import AgentRunResult, LedgerSession, SessionAgent


@pytest.fixture(autouse=True, scope="module")
def _no_tracing() -> None:
    """Tracing would try to export spans over the network; the tests are offline."""
    set_tracing_disabled(True)


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city (its output contains U+0000, as real tool outputs can)."""
    return f"sunny in {city}\x00 (22°C)"


def user_item(text: str) -> TResponseInputItem:
    """The item the SDK stores for a plain string input."""
    return {"content": text, "role": "user"}


def reply_item(text: str, item_id: str = "scripted-message") -> TResponseInputItem:
    """The item the SDK stores for ``assistant_message(text)``."""
    # The SDK turns an output message into an input item the same way (model_dump + cast).
    dumped = assistant_message(text, item_id=item_id).model_dump(exclude_unset=True)
    return cast("ResponseOutputMessageParam", dumped)


def texts_of(items: Any) -> list[str]:
    """The readable text of each message item, in order (tool items skipped)."""
    found: list[str] = []
    for item in items:
        content = item.get("content")
        if isinstance(content, str):
            found.append(content)
        elif isinstance(content, list):
            found.append("".join(part.get("text", "") for part in content))
    return found


def weather_turn_script() -> list[Any]:
    """A model that calls get_weather, then answers; then answers a follow-up."""
    return [
        [function_call("get_weather", {"city": "Paris"}, call_id="call_paris")],
        [assistant_message("It is sunny in Paris.", item_id="msg_1")],
        [assistant_message("You're welcome!", item_id="msg_2")],
    ]


# -- the Session protocol ------------------------------------------------------------------------


async def test_ledger_session_satisfies_the_sdk_protocol(ledger: Ledger) -> None:
    session = ledger.agent_session("support-chat", user_id="u1", agent_name="Helper")
    assert isinstance(session, Session)
    assert session.session_id == "support-chat"
    assert isinstance(session.session_settings, SessionSettings)
    assert session.session_settings.limit is None
    assert isinstance(session.ledger_session_id, uuid.UUID)
    # The name maps to the same UUID every time (and in every process).
    again = ledger.agent_session("support-chat", user_id="u1", agent_name="Helper")
    assert again.ledger_session_id == session.ledger_session_id
    assert resolve_session_uuid("support-chat", "u1") == session.ledger_session_id


async def test_session_row_is_created_on_first_write_with_owner_and_agent(ledger: Ledger) -> None:
    session = ledger.agent_session("first-write", user_id="u1", agent_name="Helper")
    assert await session.get_items() == []
    assert await ledger.service.get_session(session.ledger_session_id) is None

    await session.add_items([user_item("hello")])

    record = await ledger.service.get_session(session.ledger_session_id)
    assert record is not None
    assert (record.user_id, record.agent_name) == ("u1", "Helper")
    assert [m.content for m in record.messages] == ["hello"]


async def test_uuid_string_opens_that_session(ledger: Ledger) -> None:
    created = await ledger.service.create_session("u1", "Helper")
    await ledger.service.add_message(created.id, role="user", content="stored via the service")
    for spelling in (str(created.id), created.id.hex, str(created.id).upper()):
        session = ledger.agent_session(spelling, user_id="u1", agent_name="Helper")
        assert session.ledger_session_id == created.id
        assert session.session_id == spelling
        assert texts_of(await session.get_items()) == ["stored via the service"]


async def test_runner_sends_the_stored_history_to_the_model(ledger: Ledger) -> None:
    model = ScriptedModel(
        [[assistant_message("Hello Alice!", item_id="m1")], [assistant_message("Alice.")]]
    )
    agent = Agent(name="Memory", model=model)
    session = ledger.agent_session("two-turns", user_id="u1", agent_name="Memory")

    first = await Runner.run(agent, "My name is Alice", session=session)
    second = await Runner.run(agent, "What's my name?", session=session)

    assert (first.final_output, second.final_output) == ("Hello Alice!", "Alice.")
    assert model.calls[0].input == [user_item("My name is Alice")]
    assert model.calls[1].input == [
        user_item("My name is Alice"),
        reply_item("Hello Alice!", "m1"),
        user_item("What's my name?"),
    ]
    assert await session.get_items() == [*model.calls[1].input, reply_item("Alice.")]


async def test_tool_call_turn_is_stored_exactly_and_shown_as_chat(ledger: Ledger) -> None:
    model = ScriptedModel(weather_turn_script())
    agent = Agent(name="Weather", model=model, tools=[get_weather])
    session = ledger.agent_session("weather", user_id="u1", agent_name="Weather")

    result = await Runner.run(agent, "Weather in Paris?", session=session)
    assert result.final_output == "It is sunny in Paris."

    items = await session.get_items()
    assert [item.get("type", "message") for item in items] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    call = fields(items[1])
    assert (call["call_id"], call["name"], json.loads(call["arguments"])) == (
        "call_paris",
        "get_weather",
        {"city": "Paris"},
    )
    assert items[2] == {
        "call_id": "call_paris",
        "output": "sunny in Paris\x00 (22°C)",
        "type": "function_call_output",
    }
    # The model's second call (after the tool ran) got exactly the stored items.
    assert model.calls[1].input == items[:3]

    record = await ledger.service.get_session(session.ledger_session_id, user_id="u1")
    assert record is not None
    chat = [(m.role, m.content, m.tool_call_id) for m in record.messages]
    assert chat == [
        ("user", "Weather in Paris?", None),
        ("assistant", "", None),
        ("tool", "sunny in Paris\x00 (22°C)", "call_paris"),
        ("assistant", "It is sunny in Paris.", None),
    ]
    tool_calls = record.messages[1].tool_calls
    assert tool_calls is not None
    assert tool_calls[0]["id"] == "call_paris"
    assert tool_calls[0]["function"]["name"] == "get_weather"

    await Runner.run(agent, "Thanks!", session=session)
    assert model.calls[2].input == [*items, user_item("Thanks!")]


async def test_streamed_runs_store_and_replay_history(ledger: Ledger) -> None:
    model = ScriptedModel(weather_turn_script())
    agent = Agent(name="Weather", model=model, tools=[get_weather])
    session = ledger.agent_session("streamed", user_id="u1", agent_name="Weather")

    streamed = Runner.run_streamed(agent, "Weather in Paris?", session=session)
    events = [event async for event in streamed.stream_events()]
    assert events
    assert streamed.final_output == "It is sunny in Paris."
    stored = await session.get_items()
    assert [item.get("type", "message") for item in stored] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]

    follow_up = Runner.run_streamed(agent, "Thanks!", session=session)
    async for _event in follow_up.stream_events():
        pass
    assert model.calls[2].streamed
    assert model.calls[2].input == [*stored, user_item("Thanks!")]


async def test_a_second_ledger_on_the_same_database_sees_the_history(database_url: str) -> None:
    first_model = ScriptedModel([[assistant_message("Noted, Alice.", item_id="m1")]])
    async with Ledger.from_url(database_url) as first:
        session = first.agent_session("shared", user_id="u1", agent_name="Memory")
        await Runner.run(Agent(name="Memory", model=first_model), "I am Alice", session=session)
        written = await session.get_items()

    second_model = ScriptedModel([[assistant_message("You are Alice.")]])
    async with Ledger.from_url(database_url) as second:
        session = second.agent_session("shared", user_id="u1", agent_name="Memory")
        assert await session.get_items() == written
        await Runner.run(Agent(name="Memory", model=second_model), "Who am I?", session=session)

    assert written == [user_item("I am Alice"), reply_item("Noted, Alice.", "m1")]
    assert second_model.calls[0].input == [*written, user_item("Who am I?")]


# -- lossless storage --------------------------------------------------------------------------

ARBITRARY_ITEMS: list[dict[str, Any]] = [
    {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "Grüße, 日本語, emoji 🎉, RTL שלום"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0K", "detail": "low"},
            {"type": "input_file", "file_id": "file-123", "filename": "ünïcode.pdf"},
        ],
    },
    {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "Thinking about\nthe user…"}],
        "encrypted_content": "gAAAAB" + "x" * 300,
    },
    {
        "type": "web_search_call",
        "id": "ws_1",
        "status": "completed",
        "action": {"type": "search", "query": "weather paris", "sources": None},
    },
    {
        "type": "file_search_call",
        "id": "fs_1",
        "queries": ["q"],
        "status": "completed",
        "results": [{"file_id": "f", "score": 0.8125, "attributes": {"page": 3, "ok": True}}],
    },
    {
        "type": "computer_call",
        "id": "cu_1",
        "call_id": "cc_1",
        "action": {"type": "click", "x": 10, "y": -20, "button": "left"},
        "pending_safety_checks": [],
        "status": "completed",
    },
    {
        "type": "computer_call_output",
        "call_id": "cc_1",
        "output": {"type": "computer_screenshot", "image_url": "data:image/png;base64,AAAA"},
    },
    {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "read_file",
        "arguments": '{"path": "C:\\\\temp\\\\a.bin"}',
    },
    {
        "type": "function_call_output",
        "call_id": "call_1",
        "output": "binary\x00data\x00\x00 with the escape char \ue000 and \ue000\ue0000 too",
    },
    {
        "type": "hologram_call",  # an item type from a future SDK
        "id": "ho_1",
        "payload": {"nested": [1, 2.5, -3e-7, None, True, {"deep": ["x", {"y": []}]}]},
        "big": 2**62,
        "empty": "",
    },
    {"role": "assistant", "content": "plain easy message\r\nwith CRLF\ttab"},
    {"role": "system", "content": "You are terse."},
]


async def test_items_round_trip_exactly(ledger: Ledger) -> None:
    session = ledger.agent_session("lossless", user_id="u1", agent_name="A")
    await session.add_items(as_items(ARBITRARY_ITEMS[:4]))
    await session.add_items(as_items(ARBITRARY_ITEMS[4:]))

    got = await session.get_items()
    assert got == ARBITRARY_ITEMS
    # Key order and number spelling survive too: the JSON is byte-for-byte the same.
    assert json.dumps(got, ensure_ascii=False) == json.dumps(ARBITRARY_ITEMS, ensure_ascii=False)
    assert await session.pop_item() == ARBITRARY_ITEMS[-1]
    assert await session.get_items(2) == ARBITRARY_ITEMS[-3:-1]


async def test_unstorable_items_are_refused_before_anything_is_written(ledger: Ledger) -> None:
    session = ledger.agent_session("refused", user_id="u1", agent_name="A")
    await session.add_items([user_item("kept")])
    with pytest.raises(InvalidInputError, match="NaN"):
        await session.add_items(as_items([user_item("lost"), {"type": "x", "score": float("nan")}]))
    with pytest.raises(InvalidInputError, match="surrogate"):
        await session.add_items([user_item("bad \ud800 text")])
    assert await session.get_items() == [user_item("kept")]


# -- limits, pop, clear ----------------------------------------------------------------------


async def test_get_items_limit_and_session_settings_limit(ledger: Ledger) -> None:
    items = [user_item(f"m{index}") for index in range(5)]
    plain = ledger.agent_session("limits", user_id="u1", agent_name="A")
    await plain.add_items(items)

    assert await plain.get_items() == items
    assert await plain.get_items(2) == items[-2:]
    assert await plain.get_items(limit=10) == items
    assert await plain.get_items(0) == []

    limited = ledger.agent_session(
        "limits", user_id="u1", agent_name="A", settings=SessionSettings(limit=3)
    )
    assert await limited.get_items() == items[-3:]
    assert await limited.get_items(limit=1) == items[-1:]

    # The SDK honours the session's limit when it builds the model input.
    model = ScriptedModel([[assistant_message("ok")]])
    await Runner.run(Agent(name="A", model=model), "next", session=limited)
    assert model.calls[0].input == [*items[-3:], user_item("next")]


async def test_pop_item_returns_newest_first_and_none_when_empty(ledger: Ledger) -> None:
    session = ledger.agent_session("pop", user_id="u1", agent_name="A")
    assert await session.pop_item() is None
    await session.add_items([user_item("a"), user_item("b")])
    assert await session.pop_item() == user_item("b")
    await session.add_items([user_item("c")])
    assert await session.get_items() == [user_item("a"), user_item("c")]
    assert await session.pop_item() == user_item("c")
    assert await session.pop_item() == user_item("a")
    assert await session.pop_item() is None


async def test_concurrent_pops_from_many_tasks_return_each_item_once(ledger: Ledger) -> None:
    items = [user_item(f"item {index}") for index in range(60)]
    await ledger.agent_session("contended", user_id="u1", agent_name="A").add_items(items)

    async def pop_all() -> list[Any]:
        session = ledger.agent_session("contended", user_id="u1", agent_name="A")
        popped = []
        while (item := await session.pop_item()) is not None:
            popped.append(item)
        return popped

    results = await asyncio.gather(*(pop_all() for _ in range(12)))
    popped = [item for result in results for item in result]
    assert sorted(popped, key=json.dumps) == sorted(items, key=json.dumps)
    for result in results:  # each task saw the history newest-first
        assert [items.index(item) for item in result] == sorted(
            (items.index(item) for item in result), reverse=True
        )
    assert await ledger.agent_session("contended", user_id="u1", agent_name="A").get_items() == []


POP_WORKER = """
import asyncio, json, sys
from agentledger import Ledger

async def main(url):
    async with Ledger.from_url(url) as ledger:
        session = ledger.agent_session("contended", user_id="u1", agent_name="A")
        await session.get_items(1)  # connect and check the schema before the start signal
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        popped = []
        while (item := await session.pop_item()) is not None:
            popped.append(item)
        print(json.dumps(popped), flush=True)

asyncio.run(main(sys.argv[1]))
"""


async def test_concurrent_pops_from_several_processes_return_each_item_once(
    ledger: Ledger, database_url: str
) -> None:
    items = [user_item(f"item {index}") for index in range(200)]
    await ledger.agent_session("contended", user_id="u1", agent_name="A").add_items(items)

    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            POP_WORKER,
            database_url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    for worker in workers:  # all connected: start them together
        assert worker.stdout is not None
        assert (await worker.stdout.readline()).strip() == b"ready"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write(b"go\n")
        await worker.stdin.drain()
    outputs = await asyncio.gather(*(worker.communicate() for worker in workers))
    assert [worker.returncode for worker in workers] == [0, 0, 0, 0]

    per_process = [json.loads(stdout) for stdout, _stderr in outputs]
    popped = [item for result in per_process for item in result]
    assert len(popped) == len(items)
    assert sorted(popped, key=json.dumps) == sorted(items, key=json.dumps)


async def test_clear_session_empties_the_history_but_keeps_the_session(ledger: Ledger) -> None:
    session = ledger.agent_session("clear", user_id="u1", agent_name="A")
    await session.add_items([user_item("a"), user_item("b")])
    await session.clear_session()

    assert await session.get_items() == []
    assert await session.pop_item() is None
    record = await ledger.service.get_session(session.ledger_session_id)
    assert record is not None
    assert record.user_id == "u1"
    await session.add_items([user_item("fresh")])
    assert await session.get_items() == [user_item("fresh")]
    await ledger.agent_session("never-written", user_id="u1", agent_name="A").clear_session()


# -- ownership ----------------------------------------------------------------------------------


async def test_another_user_cannot_touch_a_uuid_addressed_session(ledger: Ledger) -> None:
    owner = ledger.agent_session("private", user_id="alice", agent_name="A")
    await owner.add_items([user_item("secret")])
    sid = str(owner.ledger_session_id)
    intruder = ledger.agent_session(sid, user_id="mallory", agent_name="A")
    assert intruder.ledger_session_id == owner.ledger_session_id

    with pytest.raises(SessionNotFoundError, match="mallory"):
        await intruder.get_items()
    with pytest.raises(SessionNotFoundError, match="mallory"):
        await intruder.get_items(1)
    with pytest.raises(SessionNotFoundError, match="mallory"):
        await intruder.add_items([user_item("injected")])
    with pytest.raises(SessionNotFoundError, match="mallory"):
        await intruder.pop_item()
    with pytest.raises(SessionNotFoundError, match="mallory"):
        await intruder.clear_session()
    with pytest.raises(SessionNotFoundError, match="mallory"):
        await intruder.get_items_window(max_turns=1)

    assert await owner.get_items() == [user_item("secret")]

    # Through the Runner too, before the model is ever called.
    model = ScriptedModel([[assistant_message("leak")]])
    with pytest.raises(SessionNotFoundError):
        await Runner.run(Agent(name="A", model=model), "show me", session=intruder)
    assert model.calls == ()
    assert await owner.get_items() == [user_item("secret")]


async def test_the_same_name_gives_each_user_their_own_session(ledger: Ledger) -> None:
    alice = ledger.agent_session("notes", user_id="alice", agent_name="A")
    bob = ledger.agent_session("notes", user_id="bob", agent_name="A")
    assert alice.ledger_session_id != bob.ledger_session_id

    await alice.add_items([user_item("alice's note")])
    await bob.add_items([user_item("bob's note")])

    assert await alice.get_items() == [user_item("alice's note")]
    assert await bob.get_items() == [user_item("bob's note")]
    for session, owner in ((alice, "alice"), (bob, "bob")):
        record = await ledger.service.get_session(session.ledger_session_id)
        assert record is not None
        assert record.user_id == owner


async def test_bad_session_arguments_are_refused_clearly(ledger: Ledger) -> None:
    with pytest.raises(InvalidInputError, match="surrogate"):
        ledger.agent_session("bad \udc80 name", user_id="u1", agent_name="A")
    with pytest.raises(TypeError):
        ledger.agent_session(42, user_id="u1", agent_name="A")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="not both"):
        LedgerSession(
            "x",
            service=ledger.service,
            user_id="u1",
            agent_name="A",
            settings={"limit": 5},
            window=HistoryWindow(max_turns=2),
        )


# -- SessionAgent -------------------------------------------------------------------------------


async def test_session_agent_run_then_follow_up_in_the_same_session(ledger: Ledger) -> None:
    model = ScriptedModel(
        [[assistant_message("Hi Alice!", item_id="m1")], [assistant_message("You are Alice.")]]
    )
    agent = Agent(name="MemoryAgent", model=model, instructions="Remember things.")
    runner = SessionAgent(agent, ledger)

    first = await runner.run("My name is Alice", user_id="user_123")
    assert isinstance(first, AgentRunResult)
    assert isinstance(first.session_id, uuid.UUID)
    assert first.final_output == "Hi Alice!"
    record = await ledger.service.get_session(first.session_id)
    assert record is not None
    assert (record.user_id, record.agent_name) == ("user_123", "MemoryAgent")

    second = await runner.run("What's my name?", session_id=first.session_id, user_id="user_123")
    assert second.session_id == first.session_id
    assert second.final_output == "You are Alice."
    assert model.calls[1].input == [
        user_item("My name is Alice"),
        reply_item("Hi Alice!", "m1"),
        user_item("What's my name?"),
    ]
    assert second.raw.final_output == "You are Alice."


async def test_session_agent_accepts_names_and_uuid_strings(ledger: Ledger) -> None:
    model = ScriptedModel([[assistant_message("one")], [assistant_message("two")]])
    runner = SessionAgent(Agent(name="A", model=model), ledger)
    named = await runner.run("hi", session_id="my-chat", user_id="u1")
    assert named.session_id == resolve_session_uuid("my-chat", "u1")
    again = await runner.run("again", session_id=str(named.session_id), user_id="u1")
    assert again.session_id == named.session_id
    assert texts_of(model.calls[1].input) == ["hi", "one", "again"]


async def test_session_agent_refuses_another_users_session(ledger: Ledger) -> None:
    model = ScriptedModel([[assistant_message("mine")]])
    runner = SessionAgent(Agent(name="A", model=model), ledger)
    mine = await runner.run("private", user_id="alice")

    with pytest.raises(SessionNotFoundError):
        await runner.run("let me in", session_id=mine.session_id, user_id="mallory")
    with pytest.raises(SessionNotFoundError):
        await runner.run_streamed("let me in", session_id=mine.session_id, user_id="mallory")
    assert len(model.calls) == 1
    with pytest.raises(TypeError, match="session_id"):
        await runner.run("x", user_id="alice", session=object())


async def test_usage_is_recorded_per_run_and_totalled(ledger: Ledger) -> None:
    model = ScriptedModel(
        [
            ModelStep(
                output=[assistant_message("first")],
                usage=SdkUsage(requests=1, input_tokens=10, output_tokens=3, total_tokens=13),
            ),
            [assistant_message("second")],  # uses the model's default usage below
        ]
    )
    model.set_default_usage(SdkUsage(requests=1, input_tokens=20, output_tokens=5, total_tokens=25))
    runner = SessionAgent(Agent(name="A", model=model), ledger)

    first = await runner.run("one", user_id="u1")
    second = await runner.run("two", session_id=first.session_id, user_id="u1")
    model.enqueue([assistant_message("elsewhere")])
    other = await runner.run("elsewhere", user_id="u2")

    assert first.usage == Usage(requests=1, input_tokens=10, output_tokens=3, total_tokens=13)
    assert second.usage == Usage(requests=1, input_tokens=20, output_tokens=5, total_tokens=25)
    assert await ledger.service.get_usage(first.session_id) == Usage(2, 30, 8, 38)
    assert await ledger.service.get_user_usage("u1") == Usage(2, 30, 8, 38)
    assert await ledger.service.get_user_usage("u2") == other.usage


async def test_usage_of_a_tool_turn_counts_every_model_request(ledger: Ledger) -> None:
    model = ScriptedModel(weather_turn_script()[:2])
    model.set_default_usage(SdkUsage(requests=1, input_tokens=7, output_tokens=2, total_tokens=9))
    runner = SessionAgent(Agent(name="W", model=model, tools=[get_weather]), ledger)
    result = await runner.run("Weather in Paris?", user_id="u1")
    assert result.usage == Usage(requests=2, input_tokens=14, output_tokens=4, total_tokens=18)
    assert await ledger.service.get_usage(result.session_id) == result.usage


async def test_session_agent_streamed_run(ledger: Ledger) -> None:
    model = ScriptedModel(weather_turn_script())
    model.set_default_usage(SdkUsage(requests=1, input_tokens=4, output_tokens=1, total_tokens=5))
    runner = SessionAgent(Agent(name="W", model=model, tools=[get_weather]), ledger)

    stream = await runner.run_streamed("Weather in Paris?", user_id="u1")
    with pytest.raises(RuntimeError, match="streaming"):
        _ = stream.usage
    events = [event async for event in stream.stream_events()]
    assert {event.type for event in events} >= {"raw_response_event", "run_item_stream_event"}
    assert stream.final_output == "It is sunny in Paris."
    assert stream.usage == Usage(2, 8, 2, 10)
    assert await ledger.service.get_usage(stream.session_id) == Usage(2, 8, 2, 10)

    follow_up = await runner.run_streamed("Thanks!", session_id=stream.session_id, user_id="u1")
    summary = await follow_up.result()
    assert summary.session_id == stream.session_id
    assert summary.final_output == "You're welcome!"
    assert texts_of(model.calls[2].input)[0] == "Weather in Paris?"
    assert model.calls[2].input[-1] == user_item("Thanks!")
    assert await ledger.service.get_usage(stream.session_id) == Usage(3, 12, 3, 15)


# -- windows ---------------------------------------------------------------------------------


def tool_turns(count: int) -> list[TResponseInputItem]:
    """``count`` turns of user / function_call / function_call_output / assistant."""
    items: list[TResponseInputItem] = []
    for turn in range(count):
        items += [
            user_item(f"question {turn}"),
            {
                "type": "function_call",
                "id": f"fc_{turn}",
                "call_id": f"call_{turn}",
                "name": "lookup",
                "arguments": json.dumps({"turn": turn}),
            },
            {"type": "function_call_output", "call_id": f"call_{turn}", "output": "x" * 40},
            reply_item(f"answer {turn}", f"msg_{turn}"),
        ]
    return items


async def test_windows_by_turns_and_tokens_keep_calls_with_outputs(ledger: Ledger) -> None:
    items = tool_turns(120)
    session = ledger.agent_session("long", user_id="u1", agent_name="A")
    await session.add_items(items)

    last_two = await session.get_items_window(max_turns=2)
    assert last_two == items[-8:]

    for budget in (1, 30, 45, 100, 250, 1000):
        window = await session.get_items_window(max_tokens=budget)
        assert window == history_window(items, max_tokens=budget)
        assert sum(approx_tokens(item) for item in window) <= budget
        call_ids = [fields(item)["call_id"] for item in window if "call_id" in item]
        for call_id in set(call_ids):
            assert call_ids.count(call_id) == 2, f"call {call_id} split at budget {budget}"

    both = await session.get_items_window(max_turns=3, max_tokens=150)
    assert both == history_window(items, max_turns=3, max_tokens=150)
    assert await session.get_items_window() == items


async def test_windowed_session_sends_only_the_window_to_the_model(ledger: Ledger) -> None:
    items = tool_turns(10)
    base = ledger.agent_session("windowed", user_id="u1", agent_name="A")
    await base.add_items(items)
    session = base.windowed(max_turns=2)
    assert session.ledger_session_id == base.ledger_session_id
    assert session.window == HistoryWindow(max_turns=2)

    model = ScriptedModel([[assistant_message("ok")]])
    await Runner.run(Agent(name="A", model=model), "next", session=session)

    assert model.calls[0].input == [*items[-8:], user_item("next")]
    # The window only shapes what the model sees; nothing was dropped from storage, and an
    # explicit limit still means "the latest N" as the SDK expects.
    assert await base.get_items() == [*items, user_item("next"), reply_item("ok")]
    assert await session.get_items(limit=1) == [reply_item("ok")]


async def test_session_agent_with_a_token_window(ledger: Ledger) -> None:
    model = ScriptedModel([[assistant_message("short")]])
    runner = SessionAgent(
        Agent(name="A", model=model), ledger, window=HistoryWindow(max_tokens=120)
    )
    sdk_session = runner.session("budget", "u1")
    history = tool_turns(6)
    await sdk_session.add_items(history)

    await runner.run("next", session_id="budget", user_id="u1")

    sent = model.calls[0].input
    assert sent[:-1] == history_window(history, max_tokens=120)
    assert sum(approx_tokens(item) for item in sent[:-1]) <= 120
    assert sent[-1] == user_item("next")


# -- conformance with the SDK's own SQLiteSession ---------------------------------------------


def conformance_script() -> list[Any]:
    reasoning = ResponseReasoningItem(
        id="rs_1",
        type="reasoning",
        summary=[Summary(text="The user wants the weather.", type="summary_text")],
    )
    return [
        [reasoning, function_call("get_weather", {"city": "Oslo"}, call_id="call_oslo")],
        [assistant_message("Sunny in Oslo.", item_id="msg_1")],
        [assistant_message("Bye, Ørjan!", item_id="msg_2")],
    ]


async def test_same_conversation_as_the_sdk_sqlite_session(ledger: Ledger) -> None:
    async def converse(session: Any) -> tuple[ScriptedModel, list[Any]]:
        model = ScriptedModel(conformance_script())
        agent = Agent(name="Weather", model=model, tools=[get_weather])
        await Runner.run(agent, "Weather in Oslo?", session=session)
        await Runner.run(agent, [user_item("Thanks — I'm Ørjan")], session=session)
        return model, await session.get_items()

    reference = SQLiteSession("conformance")
    ours = ledger.agent_session("conformance", user_id="u1", agent_name="Weather")
    try:
        reference_model, reference_items = await converse(reference)
        our_model, our_items = await converse(ours)

        assert our_items == reference_items
        assert len(our_items) == 7
        assert [call.input for call in our_model.calls] == [
            call.input for call in reference_model.calls
        ]
        for limit in (1, 3, 100):
            assert await ours.get_items(limit) == await reference.get_items(limit)
        assert await ours.pop_item() == await reference.pop_item()
        assert await ours.get_items() == await reference.get_items()
        await ours.clear_session()
        await reference.clear_session()
        assert await ours.get_items() == await reference.get_items() == []
        assert await ours.pop_item() is await reference.pop_item() is None
    finally:
        reference.close()


# -- the demo -------------------------------------------------------------------------------------


async def test_demo_second_process_answers_from_the_first_runs_history(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    lines: list[str] = []
    await run_demo(database_url, out=lines.append)

    output = "\n".join(lines)
    assert "OFFLINE" in output
    step1 = [line for line in lines if line.startswith("[step 1")]
    step2 = [line for line in lines if line.startswith("[step 2")]
    assert step1
    assert step2
    assert all("offline model" in line for line in step1 + step2)
    assert all(f"process {os.getpid()} " in line for line in step1)
    assert not any(f"process {os.getpid()} " in line for line in step2)
    assert any(line.endswith("assistant: Your name is Alice.") for line in step2)
    received = lines.index(next(line for line in step2 if "the model received" in line))
    assert "3 item(s)" in lines[received]
    assert lines[received + 1].strip() == "user: My name is Alice"
    assert lines[received + 3].strip() == "user: What's my name?"

    # Running the demo again starts the conversation afresh rather than piling up.
    async with Ledger.from_url(database_url) as ledger:
        demo = ledger.agent_session(DEMO_SESSION, user_id=DEMO_USER, agent_name="MemoryAgent")
        assert len(await demo.get_items()) == 4
    lines.clear()
    await run_demo(database_url, out=lines.append)
    async with Ledger.from_url(database_url) as ledger:
        demo = ledger.agent_session(DEMO_SESSION, user_id=DEMO_USER, agent_name="MemoryAgent")
        assert len(await demo.get_items()) == 4


async def test_chat_continues_a_stored_session_offline(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    def scripted_input(*answers: str) -> Any:
        pending = list(answers)

        def read(_prompt: str) -> str:
            if not pending:
                raise EOFError
            return pending.pop(0)

        return read

    first: list[str] = []
    await run_chat(
        database_url,
        "kitchen",
        "bob",
        input_fn=scripted_input("My name is Bob", "", "/exit", "never read"),
        out=first.append,
    )
    assert any("Nice to meet you, Bob" in line for line in first)

    second: list[str] = []
    await run_chat(
        database_url,
        "kitchen",
        "bob",
        input_fn=scripted_input("What's my name?"),
        out=second.append,
    )
    assert any("OFFLINE" in line for line in second)
    assert any("2 earlier item(s)" in line for line in second)
    assert any(line.endswith("Your name is Bob.") for line in second)

    stranger: list[str] = []
    await run_chat(
        database_url,
        "kitchen",
        "eve",
        input_fn=scripted_input("What's my name?"),
        out=stranger.append,
    )
    assert any("don't know your name" in line for line in stranger)


async def test_usage_of_a_run_that_fails_after_spending_tokens_is_recorded(
    ledger: Ledger,
) -> None:
    model = ScriptedModel(weather_turn_script()[:1])
    model.set_default_usage(SdkUsage(requests=1, input_tokens=6, output_tokens=2, total_tokens=8))
    runner = SessionAgent(Agent(name="W", model=model, tools=[get_weather]), ledger)
    with pytest.raises(MaxTurnsExceeded):
        await runner.run("Weather in Paris?", session_id="loop", user_id="u1", max_turns=1)
    sid = resolve_session_uuid("loop", "u1")
    assert await ledger.service.get_usage(sid) == Usage(1, 6, 2, 8)


async def test_a_streamed_run_that_fails_reports_its_usage_once_ended(ledger: Ledger) -> None:
    model = ScriptedModel(weather_turn_script()[:1])
    model.set_default_usage(SdkUsage(requests=1, input_tokens=6, output_tokens=2, total_tokens=8))
    runner = SessionAgent(Agent(name="W", model=model, tools=[get_weather]), ledger)
    stream = await runner.run_streamed(
        "Weather in Paris?", session_id="loop", user_id="u1", max_turns=1
    )
    with pytest.raises(MaxTurnsExceeded):
        async for _event in stream.stream_events():
            pass
    assert stream.usage == Usage(1, 6, 2, 8)  # the stream has ended: no "still streaming"
    assert await ledger.service.get_usage(stream.session_id) == Usage(1, 6, 2, 8)
