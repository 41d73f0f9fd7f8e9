"""Compaction that keeps every original: checkpoints stand for the history up to a seq, the
model receives the newest one's summary plus the turns after it, and exports, forks, search
and get_session still see every original. Summarizers run offline (ScriptedModel)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

import pytest
from agents import Agent, Runner, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call

from agentledger import (
    CompactionPolicy,
    InvalidInputError,
    Ledger,
    SessionAgent,
    SessionNotFoundError,
    Usage,
)
from agentledger.integrations.openai_agents.compaction import SUMMARY_PREFIX
from tests.support.items import fields, texts


def summarizer(*answers: str) -> Agent[Any]:
    return Agent(name="Summarizer", model=ScriptedModel([[assistant_message(a)] for a in answers]))


async def remember(items: list[Any]) -> list[Any]:
    """A summarizer of our own: one user message naming how many items it stands for."""
    return [{"role": "user", "content": f"summary of {len(items)} items"}]


@function_tool
def lookup(topic: str) -> str:
    """Look a topic up."""
    return f"notes on {topic}"


async def test_a_long_conversation_compacts_and_keeps_every_original(ledger: Ledger) -> None:
    policy = CompactionPolicy(
        summarizer=summarizer("Alice likes tea.", "Alice likes tea and lives in Oslo."),
        max_items=6,
        keep_turns=1,
    )
    model = ScriptedModel([[assistant_message(f"reply {n}")] for n in range(6)])
    agent = SessionAgent(Agent(name="Chat", model=model), ledger, compaction=policy)
    first = await agent.run("I am Alice and I like tea", user_id="u1")
    sid = first.session_id
    checkpoints = []
    for n in range(1, 6):
        result = await agent.run(f"message {n}", session_id=sid, user_id="u1")
        if result.checkpoint is not None:
            checkpoints.append(result.checkpoint)

    assert len(checkpoints) == 2
    latest = checkpoints[-1]
    assert latest.model == "Summarizer (default model)" or latest.model
    assert texts(latest.items) == [SUMMARY_PREFIX + "Alice likes tea and lives in Oslo."]
    # The model's last input: the newest summary, the turns after it, the new message.
    last_input = texts(model.calls[-1].input)
    assert last_input[0].startswith(SUMMARY_PREFIX)
    assert last_input[-1] == "message 5"
    assert len(last_input) <= 6
    # Every original is still there, in order, for exports, get_session and search.
    record = await ledger.service.get_session(sid)
    assert record is not None
    assert len(record.messages) == 12
    assert texts(m.item for m in record.messages)[0] == "I am Alice and I like tea"
    transcript = await ledger.service.export_session(sid)
    assert transcript is not None
    assert len(transcript.messages) == 12
    hits = await ledger.service.search("u1", "Alice")
    assert any(hit.session_id == sid for hit in hits)
    # What the SDK session reads is the model's view; the service's get_items the originals.
    sdk = ledger.agent_session(str(sid), user_id="u1")
    view = await sdk.get_items()
    assert texts(view)[0].startswith(SUMMARY_PREFIX)
    assert view[1:] == (await ledger.service.get_items(sid))[latest.upto_seq :]
    assert len(await ledger.service.get_items(sid)) == 12
    # The compactions' usage is recorded apart from the turns' and counts in the totals.
    stored = await ledger.service.get_checkpoints(sid)
    assert [c.upto_seq for c in stored] == [c.upto_seq for c in checkpoints]


async def test_the_cut_never_splits_a_tool_call_from_its_output(ledger: Ledger) -> None:
    steps: list[Any] = []
    for n in range(4):
        steps.append([function_call("lookup", {"topic": f"t{n}"}, call_id=f"call_{n}")])
        steps.append([assistant_message(f"answer {n}")])
    agent = Agent(name="Tools", model=ScriptedModel(steps), tools=[lookup])
    # A trigger never met during the runs: the compaction below is the forced one.
    session = ledger.agent_session(
        "tools", user_id="u1", compaction=CompactionPolicy(summarizer=remember, max_items=100)
    )
    for n in range(3):
        await Runner.run(agent, f"question {n}", session=session)
    checkpoint = await session.run_compaction()  # forced; keeps the last 2 turns
    assert checkpoint is not None
    assert checkpoint.upto_seq == 4  # exactly the first turn: user, call, output, answer
    assert texts(checkpoint.items) == ["summary of 4 items"]
    view = await session.get_items()
    kinds = [fields(item).get("type") or fields(item).get("role") for item in view]
    assert kinds == [
        "user",
        "user",
        "function_call",
        "function_call_output",
        "message",
        "user",
        "function_call",
        "function_call_output",
        "message",
    ]
    # Only the two kept turns follow the checkpoint: nothing more to summarize.
    assert await session.run_compaction() is None
    # After one more turn, the newest summary rolls up the one before it.
    await Runner.run(agent, "question 3", session=session)
    again = await session.run_compaction()
    assert again is not None
    assert again.upto_seq == 8
    assert texts(again.items) == ["summary of 5 items"]  # old summary + one turn of 4
    # The latest-N read is over the model's view too.
    assert len(await session.get_items(limit=3)) == 3
    assert texts((await session.get_items(limit=9))[:1]) == ["summary of 5 items"]


async def test_rewind_and_fork_across_a_checkpoint(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u1", "A")
    await svc.add_messages(session.id, [{"role": "user", "content": f"m{n}"} for n in range(1, 9)])
    await svc.add_checkpoint(session.id, [{"role": "user", "content": "S"}], upto_seq=5)
    assert texts(await svc.get_context_items(session.id)) == ["S", "m6", "m7", "m8"]

    # A fork after the checkpoint shares it; one before it does not.
    after = await svc.fork_session(session.id, at_seq=6)
    assert texts(await svc.get_context_items(after.id)) == ["S", "m6"]
    before = await svc.fork_session(session.id, at_seq=4)
    assert texts(await svc.get_context_items(before.id)) == ["m1", "m2", "m3", "m4"]
    assert await svc.get_checkpoints(before.id) == []

    # Rewinding into what the checkpoint summarizes makes it no longer apply.
    await svc.rewind_session(session.id, 6)
    assert texts(await svc.get_context_items(session.id)) == ["S", "m6"]
    await svc.rewind_session(session.id, 4)
    assert texts(await svc.get_context_items(session.id)) == ["m1", "m2", "m3", "m4"]
    assert await svc.get_checkpoints(session.id) == []
    # So does a pop of a summarized message, and a clear.
    await svc.add_checkpoint(session.id, [{"role": "user", "content": "T"}], upto_seq=4)
    await svc.pop_item(session.id)
    assert await svc.get_checkpoints(session.id) == []
    await svc.add_checkpoint(session.id, [{"role": "user", "content": "U"}], upto_seq=2)
    await svc.clear_session(session.id)
    assert await svc.get_context_items(session.id) == []
    assert await svc.get_checkpoints(session.id) == []


async def test_checkpoints_are_validated_and_owned(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("owner", "A")
    await svc.add_messages(session.id, [{"role": "user", "content": "x"}] * 3)
    item = [{"role": "user", "content": "S"}]
    with pytest.raises(InvalidInputError, match="past the end"):
        await svc.add_checkpoint(session.id, item, upto_seq=4)
    with pytest.raises(InvalidInputError, match="at least one"):
        await svc.add_checkpoint(session.id, [], upto_seq=2)
    with pytest.raises(InvalidInputError, match="upto_seq"):
        await svc.add_checkpoint(session.id, item, upto_seq=0)
    with pytest.raises(TypeError):
        await svc.add_checkpoint(session.id, [{"role": "user", "content": {1, 2}}], upto_seq=2)
    with pytest.raises(SessionNotFoundError):
        await svc.add_checkpoint(session.id, item, upto_seq=2, user_id="intruder")
    with pytest.raises(SessionNotFoundError):
        await svc.add_checkpoint(uuid.uuid4(), item, upto_seq=1)
    assert await svc.get_checkpoints(session.id) == []
    # Another user sees none, and reads the model's view of nothing.
    await svc.add_checkpoint(session.id, item, upto_seq=2, usage=Usage(1, 10, 5, 15))
    assert await svc.get_checkpoints(session.id, user_id="intruder") == []
    assert await svc.get_context_items(session.id, user_id="intruder") == []
    assert (await svc.get_context(session.id, user_id="intruder")).checkpoint is None
    # Its usage counts in the session's totals.
    assert (await svc.get_usage(session.id)).total_tokens == 15


async def test_policy_triggers_and_forced_runs(ledger: Ledger) -> None:
    with pytest.raises(InvalidInputError, match="trigger"):
        CompactionPolicy(summarizer=remember)
    with pytest.raises(InvalidInputError, match="max_items"):
        CompactionPolicy(summarizer=remember, max_items=0)
    with pytest.raises(TypeError, match="summarizer"):
        CompactionPolicy(summarizer="summarize please", max_items=3)  # type: ignore[arg-type]
    by_tokens = CompactionPolicy(summarizer=remember, max_tokens=10, keep_turns=0)
    assert by_tokens.triggered([{"role": "user", "content": "x" * 100}])
    assert not by_tokens.triggered([{"role": "user", "content": "hi"}])

    plain = ledger.agent_session("plain", user_id="u1")
    await plain.add_items([{"role": "user", "content": "hi"}])
    with pytest.raises(TypeError, match="no compaction policy"):
        await plain.run_compaction()
    assert await plain.run_compaction({"response_id": "r1"}) is None  # how Runner calls it

    session = ledger.agent_session("triggered", user_id="u1", compaction=by_tokens)
    await session.add_items([{"role": "user", "content": "short"}])
    assert await session.run_compaction({"force": False}) is None
    await session.add_items([{"role": "assistant", "content": "y" * 200}])
    checkpoint = await session.run_compaction({"force": False})
    assert checkpoint is not None
    assert checkpoint.upto_seq == 2
    assert texts(await session.get_items()) == ["summary of 2 items"]
    # Nothing new since: a forced run has nothing left to summarize but the summary itself.
    assert await session.run_compaction() is None


async def test_runner_drives_the_compaction_hook_itself(ledger: Ledger) -> None:
    """Runner.run calls a compaction-aware session's run_compaction after model responses: a
    plain LedgerSession with a policy compacts without SessionAgent."""
    session = ledger.agent_session(
        "driven",
        user_id="u1",
        compaction=CompactionPolicy(summarizer=remember, max_items=4, keep_turns=1),
    )
    model = ScriptedModel([[assistant_message(f"reply {n}")] for n in range(4)])
    agent = Agent(name="Driven", model=model)
    for n in range(4):
        await Runner.run(agent, f"turn {n}", session=session)
    sid = await session.resolve()
    assert sid is not None
    assert await ledger.service.get_checkpoints(sid)
    assert session.last_checkpoint is not None
    assert texts(model.calls[-1].input)[0].startswith("summary of")
    assert len(await ledger.service.get_items(sid)) == 8  # every original kept


async def test_transcripts_mark_checkpoints_and_import_restores_them(ledger: Ledger) -> None:
    from agentledger.transcripts import dumps_jsonl, loads_jsonl, render_markdown

    svc = ledger.service
    session = await svc.create_session("u1", "A")
    await svc.add_messages(session.id, [{"role": "user", "content": f"m{n}"} for n in range(1, 6)])
    await svc.add_checkpoint(
        session.id,
        [{"role": "user", "content": "S <b>bold</b> ``` fence"}],
        upto_seq=3,
        model="summarizer-1",
        usage=Usage(1, 100, 20, 120),
    )
    transcript = await svc.export_session(session.id)
    assert [c.upto_seq for c in transcript.checkpoints] == [3]
    assert len(transcript.messages) == 5  # every original

    markdown = render_markdown(transcript)
    mark = markdown.index("## Checkpoint after message 3")
    assert markdown.index("## 3 ·") < mark < markdown.index("## 4 ·")
    assert "<b>" not in markdown.split("```json")[0]  # the summary sits inside a fence

    text = dumps_jsonl(transcript)
    assert '"version":2' in text.splitlines()[0]
    again = loads_jsonl(text)
    assert again.checkpoints[0].items == transcript.checkpoints[0].items
    assert again.checkpoints[0].usage == Usage(1, 100, 20, 120)

    copy_id = uuid.uuid4()
    await svc.import_session(again, user_id="u1", session_id=copy_id)
    await svc.import_session(again, user_id="u1", session_id=copy_id)  # idempotent
    restored = await svc.get_checkpoints(copy_id)
    assert [(c.upto_seq, c.model) for c in restored] == [(3, "summarizer-1")]
    assert texts(await svc.get_context_items(copy_id)) == [
        "S <b>bold</b> ``` fence",
        "m4",
        "m5",
    ]

    # A transcript without checkpoints is still version 1, readable by older versions.
    plain = await svc.create_session("u1", "A")
    await svc.add_message(plain.id, "user", "hi")
    assert '"version":1' in dumps_jsonl(await svc.export_session(plain.id)).splitlines()[0]
    # A checkpoint line past the messages' end is refused with its line.
    bad = text.replace('"upto_seq":3', '"upto_seq":9')
    with pytest.raises(InvalidInputError, match="line 7"):
        loads_jsonl(bad)


# -- regressions from the hostile pass ------------------------------------------------------------


async def test_a_compaction_overlapping_a_clear_stores_nothing(ledger: Ledger) -> None:
    import asyncio

    started, gate = asyncio.Event(), asyncio.Event()

    async def slow(items: list[Any]) -> list[Any]:
        started.set()
        await gate.wait()
        return [{"role": "user", "content": "SUMMARY OF " + " | ".join(texts(items))}]

    session = ledger.agent_session(
        "overlap",
        user_id="u",
        compaction=CompactionPolicy(summarizer=slow, max_items=4, keep_turns=1),
    )
    await session.add_items(
        [{"role": r, "content": f"{r} {n}"} for n in range(4) for r in ("user", "assistant")]
    )
    running = asyncio.create_task(session.run_compaction())
    await started.wait()
    await session.clear_session()
    await session.add_items(
        [{"role": r, "content": f"other {r} {n}"} for n in range(4) for r in ("user", "assistant")]
    )
    gate.set()
    assert await running is None  # the summarized messages are gone: nothing stored
    assert await ledger.service.get_checkpoints(await session.resolve() or uuid.uuid4()) == []
    assert len(await session.get_items()) == 8
    assert not any("SUMMARY" in text for text in texts(await session.get_items()))


async def test_a_stale_message_id_refuses_the_checkpoint(ledger: Ledger) -> None:
    from agentledger import StaleSessionError

    svc = ledger.service
    session = await svc.create_session("u", "A")
    await svc.add_messages(session.id, [{"role": "user", "content": f"m{n}"} for n in range(4)])
    seen = (await svc.get_context(session.id)).messages[1]
    await svc.rewind_session(session.id, 1)
    await svc.add_message(session.id, "user", "replacement")
    with pytest.raises(StaleSessionError):
        await svc.add_checkpoint(
            session.id, [{"role": "user", "content": "S"}], upto_seq=2, upto_message_id=seen.id
        )
    assert await svc.get_checkpoints(session.id) == []


async def test_a_failing_summarizer_never_fails_a_stored_turn(ledger: Ledger) -> None:
    async def broken(items: list[Any]) -> list[Any]:
        raise ConnectionError("summarizer unavailable")

    model = ScriptedModel([[assistant_message(f"answer {n}")] for n in range(3)])
    agent = SessionAgent(
        Agent(name="A", model=model),
        ledger,
        compaction=CompactionPolicy(summarizer=broken, max_items=3, keep_turns=1),
    )
    first = await agent.run("q0", user_id="u")
    second = await agent.run("q1", session_id=first.session_id, user_id="u")
    assert second.final_output == "answer 1"
    assert second.checkpoint is None
    assert len(await ledger.service.get_items(first.session_id)) == 4
    assert (await ledger.service.get_usage(first.session_id)).requests == 2
    # A forced compaction says what went wrong.
    forced = ledger.agent_session(
        str(first.session_id),
        user_id="u",
        compaction=CompactionPolicy(summarizer=broken, max_items=3, keep_turns=1),
    )
    with pytest.raises(ConnectionError):
        await forced.run_compaction()
    with pytest.raises(TypeError, match="count_tokens"):
        CompactionPolicy(summarizer=broken, max_tokens=5, count_tokens=5)  # type: ignore[arg-type]
    intruder = ledger.agent_session(
        str(first.session_id),
        user_id="mallory",
        compaction=CompactionPolicy(summarizer=remember, max_items=3),
    )
    with pytest.raises(SessionNotFoundError):
        await intruder.run_compaction()


async def test_a_shared_session_compacts_for_each_context_user(ledger: Ledger) -> None:
    shared = ledger.agent_session(
        "shared-compacted",
        user_from_context=lambda run: run.context["user"],
        compaction=CompactionPolicy(summarizer=remember, max_items=4, keep_turns=1),
    )
    model = ScriptedModel([[assistant_message(f"reply {n}")] for n in range(4)])
    agent = Agent(name="Shared", model=model)
    for n in range(4):
        await Runner.run(agent, f"q{n}", session=shared, context={"user": "ana"})
    ana = shared.for_user("ana")
    sid = await ana.resolve()
    assert sid is not None
    assert await ledger.service.get_checkpoints(sid)
    assert texts(model.calls[-1].input)[0].startswith("summary of")


async def test_a_fork_of_a_trimmed_session_copies_only_checkpoints_it_holds(
    ledger: Ledger,
) -> None:
    from agentledger import RetentionPolicy
    from agentledger.transcripts import dumps_jsonl, loads_jsonl

    svc = ledger.service
    session = await svc.create_session("u", "trimmed")
    await svc.add_messages(session.id, [{"role": "user", "content": f"m{n}"} for n in range(1, 19)])
    for upto in (6, 12, 16):
        await svc.add_checkpoint(
            session.id, [{"role": "user", "content": f"S{upto}"}], upto_seq=upto
        )
    await svc.apply_retention({"trimmed": RetentionPolicy(max_messages=4)})
    fork = await svc.fork_session(session.id)
    # The fork holds messages 15..18 as 1..4: only the checkpoint at 16 (now 2) is within.
    assert [c.upto_seq for c in await svc.get_checkpoints(fork.id)] == [2]
    assert texts(await svc.get_context_items(fork.id)) == ["S16", "m17", "m18"]
    assert (await svc.get_context(fork.id)).items == await svc.get_context_items(fork.id)
    copy = loads_jsonl(dumps_jsonl(await svc.export_session(fork.id)))
    assert [c.upto_seq for c in copy.checkpoints] == [2]


async def test_crafted_checkpoint_lines_are_refused_before_anything_is_written(
    ledger: Ledger,
) -> None:
    from agentledger.transcripts import dumps_jsonl, loads_jsonl

    svc = ledger.service
    session = await svc.create_session("u", "A")
    await svc.add_messages(session.id, [{"role": "user", "content": f"m{n}"} for n in range(3)])
    await svc.add_checkpoint(session.id, [{"role": "user", "content": "S"}], upto_seq=2)
    text = dumps_jsonl(await svc.export_session(session.id))
    with pytest.raises(InvalidInputError, match="usage"):
        loads_jsonl(text.replace('"requests":0', f'"requests":{10**30}'))
    with pytest.raises(InvalidInputError, match="usage"):
        await svc.add_checkpoint(
            session.id, [{"role": "user", "content": "S"}], upto_seq=2, usage=Usage(10**30)
        )
    # A checkpoint from the future is stored as now, so later ones still take over.
    future = text.replace(
        text.split('"created_at":"')[-1].split('"')[0], "9999-12-31T00:00:00+00:00"
    )
    target = uuid.uuid4()
    await svc.import_session(loads_jsonl(future), user_id="u", session_id=target)
    await svc.add_checkpoint(target, [{"role": "user", "content": "NEWER"}], upto_seq=2)
    assert texts(await svc.get_context_items(target))[0] == "NEWER"


async def test_a_checkpoint_never_separates_a_tool_call_from_its_output(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("u", "A")
    await svc.add_items(
        session.id,
        [
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ],
    )
    summary = [{"role": "user", "content": "S"}]
    with pytest.raises(InvalidInputError, match="separate a tool call"):
        await svc.add_checkpoint(session.id, summary, upto_seq=2)
    orphan = [{"type": "function_call_output", "call_id": "zz", "output": "x"}]
    with pytest.raises(InvalidInputError, match="tool output without its call"):
        await svc.add_checkpoint(session.id, orphan, upto_seq=4)
    assert await svc.get_checkpoints(session.id) == []
    assert (await svc.add_checkpoint(session.id, summary, upto_seq=3)).upto_seq == 3


class _FakeResponses:
    """The one call OpenAIResponsesCompactionSession makes: ``responses.compact``."""

    def __init__(self, output: list[dict[str, Any]]) -> None:
        self.output = output
        self.calls: list[dict[str, Any]] = []

    async def compact(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return _Compacted(self.output)


@dataclass
class _Compacted:
    output: list[dict[str, Any]]
    usage: None = None


class _FakeClient:
    def __init__(self, output: list[dict[str, Any]]) -> None:
        self.responses = _FakeResponses(output)


async def test_the_sdk_compaction_session_replaces_atomically_and_keeps_originals(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agents.memory import OpenAIResponsesCompactionSession

    from agentledger.integrations.openai_agents import LedgerSession

    inner = ledger.agent_session("responses-compaction", user_id="u")
    await inner.add_items(
        [
            {"role": "user", "content": f"q{n}"}
            if n % 2 == 0
            else {"role": "assistant", "content": f"a{n}"}
            for n in range(6)
        ]
    )

    async def never_cleared(self: LedgerSession, **kwargs: Any) -> None:
        raise AssertionError("the replacement must not clear the session first")

    monkeypatch.setattr(LedgerSession, "clear_session", never_cleared)
    compacted = [{"type": "message", "role": "user", "content": "COMPACTED"}]
    client = _FakeClient(compacted)
    wrapper = OpenAIResponsesCompactionSession(
        "responses-compaction", inner, client=cast(Any, client), model="gpt-4.1"
    )
    # A manual, forced compaction: whole-history replacement.
    await wrapper.run_compaction({"force": True, "compaction_mode": "input"})
    assert client.responses.calls  # the (fake) API was asked
    assert texts(await inner.get_items()) == ["COMPACTED"]
    sid = await inner.resolve()
    assert sid is not None
    assert len(await ledger.service.get_items(sid)) == 6  # every original kept
    await inner.add_items([{"role": "user", "content": "after"}])
    assert texts(await inner.get_items()) == ["COMPACTED", "after"]
