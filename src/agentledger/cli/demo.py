"""``agentledger demo`` and ``agentledger chat``: memory that survives the process.

The seed promised that an agent "should remember Alice" on a second run, but its history never
reached the model. The demo proves the opposite end to end: step 1 tells the agent "My name is
Alice" in this process; step 2 asks "What's my name?" in a *separate* Python process that shares
nothing with the first but the database, and prints exactly what its model received (the first
run's items) next to the answer.

Both processes open the same conversation by name: :data:`DEMO_SESSION` of :data:`DEMO_USER`,
which :class:`~agentledger.integrations.openai_agents.LedgerSession` maps to the same UUID in
every process (uuid5 over the user and the name), so no id has to be passed between them. The
database URL goes to the child through ``AGENTLEDGER_DATABASE_URL`` rather than the command
line, where a password would be visible to every user of the machine (``ps``).

With ``OPENAI_API_KEY`` set the agent uses the SDK's default model. Without it the demo stays
offline, says so in every line it prints, disables tracing (so nothing tries the network) and
answers with :class:`OfflineModel`, the SDK's own ``agents.testing.ScriptedModel`` replying from
the input items it is given: it can only know the name if the history really reached it.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

from agents import Agent, RunHooks, set_tracing_disabled
from agents.exceptions import AgentsException
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.run_context import RunContextWrapper
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message
from agents.usage import Usage as SdkUsage
from openai import OpenAIError

from agentledger.config import safe_url
from agentledger.domain.records import Usage
from agentledger.domain.windows import approx_tokens
from agentledger.errors import LedgerError
from agentledger.integrations.openai_agents import SessionAgent
from agentledger.ledger import Ledger

#: The demo conversation: this session name of this user (the same UUID in every process).
DEMO_SESSION = "agentledger-demo"
DEMO_USER = "demo-user"
AGENT_NAME = "MemoryAgent"
INSTRUCTIONS = "Help users and remember past conversations."
DEMO_INPUTS = {1: "My name is Alice", 2: "What's my name?"}

Output = Callable[[str], None]

_NAME_STATEMENT = re.compile(r"\bmy name is\s+([^\W\d_][\w'-]*)", re.IGNORECASE)
_NAME_QUESTION = re.compile(r"\b(what'?s|what is|do you know|remember)\b.*\bmy name\b|\bwho am i\b")


# -- the offline model ----------------------------------------------------------------------


def _text_of(item: Any) -> str:
    content = item.get("content") if isinstance(item, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _user_texts(items: Any) -> list[str]:
    if isinstance(items, str):
        return [items]
    return [
        _text_of(item) for item in items if isinstance(item, dict) and item.get("role") == "user"
    ]


def answer_from_history(call: ModelCall) -> ModelStep:
    """The offline model's reply, computed only from the input items of this model call.

    It knows a name only if a "My name is ..." user message is in its input, so a correct answer
    in step 2 proves that the stored history reached the model. Usage is an estimate (chars/4).
    """
    texts = _user_texts(call.input)
    latest = texts[-1] if texts else ""
    earlier = " ".join(texts[:-1])
    stated = _NAME_STATEMENT.search(latest)
    known = _NAME_STATEMENT.findall(earlier)
    if stated:
        reply = f"Nice to meet you, {stated.group(1)}! I will remember your name."
    elif _NAME_QUESTION.search(latest.lower()):
        reply = (
            f"Your name is {known[-1]}."
            if known
            else "I don't know your name yet: nobody told me in this conversation."
        )
    else:
        count = len(call.input) if isinstance(call.input, list) else 1
        reply = (
            f"(offline model) I received {count} item(s) of this conversation. Tell me "
            "'My name is ...' and ask me later; set OPENAI_API_KEY for real answers."
        )
    items = call.input if isinstance(call.input, list) else [call.input]
    input_tokens = sum(approx_tokens(item) for item in items)
    output_tokens = approx_tokens(reply)
    return ModelStep(
        output=[assistant_message(reply)],
        usage=SdkUsage(
            requests=1,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        ),
    )


class OfflineModel(ScriptedModel):
    """The SDK's ``ScriptedModel`` that never runs out of steps: every call is answered by
    :func:`answer_from_history` from the items it received."""

    def _ensure_step(self) -> None:
        if self.remaining_steps == 0:
            self.enqueue(ModelStep.respond(answer_from_history))

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        self._ensure_step()
        return await super().get_response(*args, **kwargs)

    async def stream_response(
        self, *args: Any, **kwargs: Any
    ) -> AsyncIterator[TResponseStreamEvent]:
        self._ensure_step()
        async for event in super().stream_response(*args, **kwargs):
            yield event


def is_offline() -> bool:
    """True when no OpenAI API key is configured: the demo then uses :class:`OfflineModel`."""
    return not os.environ.get("OPENAI_API_KEY")


def build_agent(offline: bool) -> Agent[Any]:
    """The demo agent: the SDK's default model, or :class:`OfflineModel` with tracing off."""
    if offline:
        set_tracing_disabled(True)
        return Agent(name=AGENT_NAME, instructions=INSTRUCTIONS, model=OfflineModel())
    return Agent(name=AGENT_NAME, instructions=INSTRUCTIONS)


def _mode_label(offline: bool) -> str:
    if offline:
        return (
            "OFFLINE model: agents.testing.ScriptedModel answering only from the input it "
            "receives (set OPENAI_API_KEY to use a real model)"
        )
    return "real model: the Agents SDK default (OPENAI_API_KEY is set)"


class _InputRecorder(RunHooks[Any]):
    """Keeps what the model was sent, to show it (works for real and offline models alike)."""

    def __init__(self) -> None:
        self.inputs: list[list[TResponseInputItem]] = []

    async def on_llm_start(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        system_prompt: str | None,
        input_items: list[TResponseInputItem],
    ) -> None:
        self.inputs.append(list(input_items))


def describe_item(item: Any) -> str:
    """One line for one history item: ``role: text`` or the item type."""
    if not isinstance(item, dict):
        return repr(item)[:120]
    text = _text_of(item)
    label = item.get("role") or item.get("type") or "item"
    if not text:
        text = str(item.get("type", ""))
    one_line = " ".join(text.split())
    return f"{label}: {one_line[:117] + '...' if len(one_line) > 120 else one_line}"


def _describe_usage(usage: Usage, offline: bool) -> str:
    estimate = " (estimated)" if offline else ""
    return (
        f"{usage.requests} request(s), {usage.input_tokens} input + {usage.output_tokens} "
        f"output = {usage.total_tokens} tokens{estimate}"
    )


# -- the demo -------------------------------------------------------------------------------


async def run_demo(database_url: str, *, step: int | None = None, out: Output = print) -> None:
    """Play the two-process memory demo (``step=None``), or one of its steps (1 or 2).

    Step 1 starts the demo conversation afresh; step 2 continues it. The full demo runs step 1
    here and step 2 in a child process (``python -m agentledger demo --step 2``). The database
    is migrated to head first: the demo is the newcomer's first command.
    """
    if step not in (None, 1, 2):
        raise ValueError(f"step must be 1, 2 or None (both), got {step!r}")
    offline = is_offline()
    if step is not None:
        await _run_step(database_url, step, offline, out)
        return
    out(f"agentledger demo on {safe_url(database_url)}")
    out(_mode_label(offline))
    out(
        f"conversation: session {DEMO_SESSION!r} of user {DEMO_USER!r}; both processes map "
        "this name to the same session UUID"
    )
    out("")
    await _run_step(database_url, 1, offline, out)
    out("")
    out("step 2 runs in a separate Python process that shares only the database:")
    await _run_child_step(database_url, 2, out)
    out("")
    out(
        "continue the conversation with: agentledger chat "
        f"--session {DEMO_SESSION} --user {DEMO_USER}"
    )


async def _run_step(database_url: str, step: int, offline: bool, out: Output) -> None:
    tag = f"[step {step} | process {os.getpid()} | {'offline' if offline else 'real'} model]"
    agent = build_agent(offline)
    recorder = _InputRecorder()
    async with Ledger.from_url(database_url) as ledger:
        await ledger.upgrade()
        runner = SessionAgent(agent, ledger)
        if step == 1:
            await runner.session(DEMO_SESSION, DEMO_USER).clear_session()
        text = DEMO_INPUTS[step]
        out(f"{tag} user: {text}")
        try:
            result = await runner.run(
                text, session_id=DEMO_SESSION, user_id=DEMO_USER, hooks=recorder
            )
        except (AgentsException, OpenAIError) as error:
            raise LedgerError(
                f"the demo's model call failed ({type(error).__name__}: {error}); check "
                "OPENAI_API_KEY and the network, or unset OPENAI_API_KEY to run it offline"
            ) from error
        received = recorder.inputs[0] if recorder.inputs else []
        out(f"{tag} the model received {len(received)} item(s):")
        for item in received:
            out(f"      {describe_item(item)}")
        out(f"{tag} assistant: {result.final_output}")
        out(f"{tag} session {result.session_id}, usage: {_describe_usage(result.usage, offline)}")


async def _run_child_step(database_url: str, step: int, out: Output) -> None:
    env = dict(os.environ)
    env["AGENTLEDGER_DATABASE_URL"] = database_url
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentledger",
        "demo",
        "--step",
        str(step),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    assert process.stdout is not None
    async for line in process.stdout:
        out(line.decode("utf-8", errors="replace").rstrip("\r\n"))
    code = await process.wait()
    if code != 0:
        raise LedgerError(
            f"demo step {step} failed in its own process (exit code {code}); its output is "
            "above. Check that `python -m agentledger demo --step 2` runs in this environment"
        )


# -- the chat -------------------------------------------------------------------------------


async def run_chat(
    database_url: str,
    session: str,
    user_id: str,
    *,
    input_fn: Callable[[str], str] = input,
    out: Output = print,
) -> None:
    """An interactive chat over a stored session (any name or UUID), until EOF or ``/exit``.

    Every turn goes through :class:`SessionAgent`, so the model sees the stored history, the
    turn is appended and its usage recorded; quitting and running the chat again (or the demo)
    continues the same conversation. A failed model call is reported and the chat goes on.
    """
    offline = is_offline()
    agent = build_agent(offline)
    async with Ledger.from_url(database_url) as ledger:
        runner = SessionAgent(agent, ledger)
        sdk_session = runner.session(session, user_id)
        earlier = await sdk_session.get_items()
        out(_mode_label(offline))
        out(
            f"session {session!r} of user {user_id!r} ({sdk_session.ledger_session_id}): "
            f"{len(earlier)} earlier item(s). Type /exit or press Ctrl-D to quit."
        )
        while True:
            try:
                line = input_fn("you> ")
            except EOFError:
                out("")
                return
            text = line.strip()
            if text == "/exit":
                return
            if not text:
                continue
            try:
                result = await runner.run(text, session_id=session, user_id=user_id)
            except (AgentsException, OpenAIError) as error:
                out(f"the model call failed: {error}; try again, or /exit")
                continue
            out(f"{agent.name}> {result.final_output}")
