"""LedgerChatMessageHistory against langchain-core's ``InMemoryChatMessageHistory`` (the oracle).

Every scenario runs the same calls on the oracle and on LedgerChatMessageHistory (the
``ledger`` fixture: SQLite and PostgreSQL) and compares what they return: exact messages of
every type, scripted sequences of adds, batch adds and clears (async, and sync where no event
loop runs), and ``RunnableWithMessageHistory`` with langchain-core's fake chat model over two
invocations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory
from sqlalchemy.pool import NullPool

from agentledger import Ledger, SyncCallInEventLoopError
from agentledger.integrations.langchain import LedgerChatMessageHistory
from tests.integrations.langchain.corpus import every_message, oracle

pytestmark = pytest.mark.filterwarnings(
    "ignore::langchain_core._api.deprecation.LangChainDeprecationWarning"
)

#: Makes the history of a session id (the same one each time for the same id, as stored).
Histories = Callable[[str], BaseChatMessageHistory]


def oracle_histories() -> Histories:
    made: dict[str, BaseChatMessageHistory] = {}

    def history(session_id: str) -> BaseChatMessageHistory:
        return made.setdefault(session_id, oracle())

    return history


def ledger_histories(ledger: Ledger, user_id: str = "u1") -> Histories:
    return LedgerChatMessageHistory.factory(ledger, user_id=user_id)


async def both(ledger: Ledger, scenario: Callable[[Histories], Awaitable[Any]]) -> tuple[Any, Any]:
    """What ``scenario`` returns on the oracle and on the ledger."""
    return await scenario(oracle_histories()), await scenario(ledger_histories(ledger))


def dumps(messages: list[BaseMessage]) -> list[tuple[type[BaseMessage], dict[str, Any]]]:
    """Each message's class and every field: equal only when the messages are exactly equal."""
    return [(type(message), message.model_dump()) for message in messages]


async def test_every_message_type_round_trips_exactly(ledger: Ledger) -> None:
    async def scenario(histories: Histories) -> Any:
        history = histories("corpus")
        await history.aadd_messages(every_message())
        return dumps(await histories("corpus").aget_messages())

    expected, got = await both(ledger, scenario)
    assert got == expected
    assert got == dumps(every_message())


async def test_scripted_adds_batches_and_clears(ledger: Ledger) -> None:
    corpus = every_message()

    async def scenario(histories: Histories) -> list[Any]:
        first, second = histories("first"), histories("second")
        seen = [dumps(await first.aget_messages())]
        await first.aadd_messages(corpus[:1])
        await first.aadd_messages(corpus[1:4])
        await second.aadd_messages(corpus[4:6])
        await first.aadd_messages([])
        seen += [dumps(await first.aget_messages()), dumps(await second.aget_messages())]
        await first.aclear()
        seen.append(dumps(await first.aget_messages()))
        await first.aadd_messages(corpus[6:])
        await first.aclear()
        await first.aadd_messages(corpus[2:3])
        seen += [dumps(await histories("first").aget_messages())]
        seen += [dumps(await histories("second").aget_messages())]
        await histories("never-written").aclear()
        seen.append(dumps(await histories("never-written").aget_messages()))
        return seen

    expected, got = await both(ledger, scenario)
    assert got == expected


def test_sync_methods_outside_an_event_loop(ledger: Ledger) -> None:
    """``messages``, ``add_message(s)``, ``add_user_message``/``add_ai_message`` and ``clear``
    on a thread that runs no event loop (here: a sync test)."""

    def scenario(histories: Histories) -> list[Any]:
        history = histories("sync")
        history.add_user_message("hello")
        history.add_ai_message(AIMessage("hi there", id="ai-9"))
        history.add_message(ToolMessage("out", tool_call_id="t-1"))
        history.add_messages(every_message()[:3])
        seen = [dumps(history.messages), str(history)]
        history.clear()
        seen.append(dumps(histories("sync").messages))
        history.add_messages([HumanMessage("again")])
        seen.append(dumps(histories("sync").messages))
        return seen

    assert scenario(ledger_histories(ledger)) == scenario(oracle_histories())


def fake_model(replies: list[str]) -> tuple[GenericFakeChatModel, list[list[BaseMessage]]]:
    """langchain-core's fake chat model answering ``replies`` in turn, and the list of what
    each call received."""
    received: list[list[BaseMessage]] = []
    answers: Iterator[AIMessage | str] = iter(
        [AIMessage(reply, id=f"reply-{index}") for index, reply in enumerate(replies)]
    )
    return GenericFakeChatModel(messages=answers), received


def chain_with_history(histories: Histories, replies: list[str]) -> tuple[Any, list[Any]]:
    model, received = fake_model(replies)

    def record(prompt: Any) -> Any:
        received.append(prompt.to_messages())
        return prompt

    prompt = ChatPromptTemplate.from_messages(
        [("system", "Be brief."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    chain = prompt | RunnableLambda(record) | model
    runnable = RunnableWithMessageHistory(
        chain,
        histories,
        input_messages_key="question",
        history_messages_key="history",
    )
    return runnable, received


async def test_runnable_with_message_history_keeps_the_conversation(ledger: Ledger) -> None:
    async def scenario(histories: Histories) -> Any:
        runnable, received = chain_with_history(histories, ["Hi Alice.", "You are Alice."])
        config: Any = {"configurable": {"session_id": "conversation"}}
        first = await runnable.ainvoke({"question": "I am Alice."}, config=config)
        # A new runnable (a new process, say): only the stored history connects the turns.
        runnable, received_later = chain_with_history(histories, ["unused", "You are Alice."])
        second = await runnable.ainvoke({"question": "Who am I?"}, config=config)
        stored = await histories("conversation").aget_messages()
        return first.content, second.content, dumps(stored), received + received_later

    expected, got = await both(ledger, scenario)
    assert got == expected
    assert [message.content for message in got[3][-1]] == [
        "Be brief.",
        "I am Alice.",
        "Hi Alice.",
        "Who am I?",
    ]


async def test_runnable_with_message_history_streams_into_the_history(ledger: Ledger) -> None:
    async def scenario(histories: Histories) -> Any:
        runnable, _ = chain_with_history(histories, ["Streamed in four parts.", "Again."])
        config: Any = {"configurable": {"session_id": "streamed"}}
        parts = [chunk.content async for chunk in runnable.astream({"question": "q"}, config)]
        stored = await histories("streamed").aget_messages()
        return parts, dumps(stored)

    expected, got = await both(ledger, scenario)
    assert got == expected
    assert len(got[0]) > 1  # it did stream


def test_runnable_with_message_history_sync_invoke(ledger: Ledger) -> None:
    def scenario(histories: Histories) -> Any:
        runnable, _ = chain_with_history(histories, ["One.", "Two."])
        config: Any = {"configurable": {"session_id": "sync-chain"}}
        runnable.invoke({"question": "first"}, config=config)
        runnable.invoke({"question": "second"}, config=config)
        return dumps(histories("sync-chain").messages)

    assert scenario(ledger_histories(ledger)) == scenario(oracle_histories())


async def test_sync_methods_inside_a_running_loop_say_to_await(database_url: str) -> None:
    # A connection per use: the worker thread below runs a loop of its own while this one
    # runs (see docs/agents-sdk.md, "Event loops, threads").
    async with Ledger.from_url(database_url, poolclass=NullPool) as ledger:
        history = LedgerChatMessageHistory.for_user(ledger, "loop", user_id="u1")
        with pytest.raises(SyncCallInEventLoopError, match="aadd_messages"):
            history.add_messages([HumanMessage("x")])
        with pytest.raises(SyncCallInEventLoopError, match="aget_messages"):
            _ = history.messages
        with pytest.raises(SyncCallInEventLoopError, match="aclear"):
            history.clear()
        assert await history.aget_messages() == []  # nothing was written
        # The same calls from a worker thread (no loop running there) work.
        await asyncio.to_thread(history.add_messages, [HumanMessage("from a thread")])
        assert [m.content for m in await history.aget_messages()] == ["from a thread"]
        assert [m.content for m in await asyncio.to_thread(lambda: history.messages)] == [
            "from a thread"
        ]
