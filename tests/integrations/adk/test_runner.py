"""An ADK Runner end to end on LedgerSessionService, with an offline model: a tool call, state
written by a tool and by the agent's output_key, and a second turn that sees the first."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from google.adk.agents.llm_agent import LlmAgent
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.tools.tool_context import ToolContext
from google.genai import types
from pydantic import Field

from agentledger import Ledger
from agentledger.integrations.adk import LedgerSessionService


class ScriptedLlm(BaseLlm):
    """Answers each request with the next canned response and keeps the requests."""

    model: str = "scripted"
    responses: list[LlmResponse] = Field(default_factory=list)
    requests: list[LlmRequest] = Field(default_factory=list)

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        self.requests.append(llm_request)
        yield self.responses[len(self.requests) - 1]


def said(text: str) -> LlmResponse:
    return LlmResponse(content=types.Content(role="model", parts=[types.Part(text=text)]))


def calls(name: str, **args: Any) -> LlmResponse:
    call = types.FunctionCall(id="call-1", name=name, args=args)
    return LlmResponse(content=types.Content(role="model", parts=[types.Part(function_call=call)]))


def remember_city(city: str, tool_context: ToolContext) -> dict[str, str]:
    """Remembers the user's city."""
    tool_context.state["user:city"] = city
    tool_context.state["temp:checked"] = True
    return {"stored": city}


def user_says(text: str) -> types.Content:
    return types.Content(role="user", parts=[types.Part(text=text)])


async def test_a_runner_keeps_its_conversation_and_state_in_the_ledger(ledger: Ledger) -> None:
    model = ScriptedLlm(
        responses=[
            calls("remember_city", city="Oslo"),
            said("Noted: Oslo."),
            said("You live in Oslo."),
        ]
    )
    agent = LlmAgent(name="concierge", model=model, tools=[remember_city], output_key="last_answer")
    service = LedgerSessionService(ledger)
    runner = Runner(app_name="concierge_app", agent=agent, session_service=service)
    session = await service.create_session(app_name="concierge_app", user_id="ana")

    first = [
        e
        async for e in runner.run_async(
            user_id="ana", session_id=session.id, new_message=user_says("I live in Oslo")
        )
    ]
    second = [
        e
        async for e in runner.run_async(
            user_id="ana", session_id=session.id, new_message=user_says("Where do I live?")
        )
    ]

    stored = await service.get_session(
        app_name="concierge_app", user_id="ana", session_id=session.id
    )
    assert stored is not None
    yielded = [e for e in first + second if not e.partial]
    # Every event the runner yielded is stored, in order, after each turn's user message.
    assert [e.id for e in stored.events if e.author != "user"] == [e.id for e in yielded]
    assert [e.author for e in stored.events] == [
        "user",
        "concierge",
        "concierge",
        "concierge",
        "user",
        "concierge",
    ]
    assert stored.state["user:city"] == "Oslo"
    assert stored.state["last_answer"] == "You live in Oslo."
    assert "temp:checked" not in stored.state
    # The second turn's request held the first turn, read back from the ledger.
    history = [p.text for c in model.requests[-1].contents for p in c.parts or [] if p.text]
    assert history[:2] == ["I live in Oslo", "Noted: Oslo."]
    assert history[-1] == "Where do I live?"

    # The same conversation as the ledger shows it to every other tool.
    page = await ledger.service.list_user_sessions("ana", framework="adk")
    assert [(s.agent_name, s.message_count) for s in page] == [("concierge_app", 6)]
    record = await ledger.service.get_session(page[0].id)
    assert record is not None
    assert [m.role for m in record.messages] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
    ]
