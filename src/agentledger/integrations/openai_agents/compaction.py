"""Compaction that keeps every original: a policy, pluggable summarizers, and the run.

When what a model would receive from a session grows past the policy's trigger, everything but
the last ``keep_turns`` user turns (the newest checkpoint's summary included) is summarized,
and the summary is stored as a checkpoint (:mod:`agentledger.services.checkpoints`). Nothing is
deleted: the session's history keeps every original, and the model receives the summary then
the turns after it. The cut never falls inside a turn, so a tool call is never separated from
its output. The summarizer is any ``agents.Agent`` (run through the SDK's ``Runner``, so any
model provider works) or an async callable from items to summary items.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agents import Agent, Runner
from agents.items import TResponseInputItem

from agentledger.domain.records import Checkpoint, Usage
from agentledger.domain.windows import TokenCounter, approx_tokens, window_start
from agentledger.errors import InvalidInputError, StaleSessionError

if TYPE_CHECKING:
    from agentledger.integrations.store import HistoryStore

logger = logging.getLogger("agentledger")

#: An async callable that turns the items to summarize into the summary items.
SummarizeItems = Callable[[list[Any]], Awaitable[list[Any]]]

#: What an ``agents.Agent`` summarizer is asked, after the items to summarize.
DEFAULT_INSTRUCTIONS = (
    "Summarize the conversation above for your own later use: keep every fact, decision, "
    "name, number and open task that later turns may need; leave out small talk. Answer with "
    "the summary only."
)
#: The start of the summary item an ``agents.Agent`` summarizer's answer becomes.
SUMMARY_PREFIX = "Summary of the earlier conversation:\n"


@dataclass(frozen=True)
class CompactionPolicy:
    """When and how a session's context is compacted.

    ``summarizer``: an ``agents.Agent`` (run on the items to summarize followed by
    ``instructions``; its final output becomes one user message starting with
    :data:`SUMMARY_PREFIX`) or an async callable from items to summary items.
    Triggers (at least one): ``max_items`` items, or ``max_tokens`` estimated tokens
    (``count_tokens(item)``, by default about four characters a token), in what the model
    would receive. ``keep_turns`` recent user turns stay verbatim.
    """

    summarizer: Agent[Any] | SummarizeItems
    max_items: int | None = None
    max_tokens: int | None = None
    keep_turns: int = 2
    count_tokens: TokenCounter | None = None
    instructions: str = DEFAULT_INSTRUCTIONS

    def __post_init__(self) -> None:
        if not isinstance(self.summarizer, Agent) and not callable(self.summarizer):
            raise TypeError(
                "summarizer must be an agents.Agent or an async callable from items to "
                "summary items"
            )
        for name in ("max_items", "max_tokens"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise InvalidInputError(f"{name} must be a positive int or None, got {value!r}")
        if self.count_tokens is not None and not callable(self.count_tokens):
            raise TypeError("count_tokens must be a callable from an item to a token count")
        if self.max_items is None and self.max_tokens is None:
            raise InvalidInputError(
                "a CompactionPolicy needs a trigger: max_items=... and/or max_tokens=..."
            )
        if isinstance(self.keep_turns, bool) or not isinstance(self.keep_turns, int):
            raise TypeError("keep_turns must be an int")
        if self.keep_turns < 0:
            raise InvalidInputError(f"keep_turns must be zero or positive, got {self.keep_turns}")
        if not isinstance(self.instructions, str) or not self.instructions.strip():
            raise InvalidInputError("instructions must be a non-empty string")

    def triggered(self, items: Sequence[Any]) -> bool:
        """Whether ``items`` (what the model would receive) call for a compaction."""
        if self.max_items is not None and len(items) > self.max_items:
            return True
        if self.max_tokens is not None:
            count = self.count_tokens or approx_tokens
            return sum(count(item) for item in items) > self.max_tokens
        return False


async def compact(
    store: HistoryStore,
    session_id: uuid.UUID,
    user_id: str,
    policy: CompactionPolicy,
    *,
    force: bool = False,
) -> Checkpoint | None:
    """Compact the session when the policy's trigger is met (always, with ``force``); the new
    checkpoint, or ``None`` when there was nothing to do (not triggered, or nothing older
    than the turns kept verbatim)."""
    context = await store.get_context(session_id, user_id=user_id)
    if not force and not policy.triggered(context.items):
        return None
    messages = list(context.messages)
    keep_from = window_start([m.item for m in messages], max_turns=policy.keep_turns)
    if policy.keep_turns == 0:
        keep_from = len(messages)
    if keep_from == 0:
        return None  # everything after the last checkpoint is kept verbatim
    summarized = [
        *(context.checkpoint.items if context.checkpoint is not None else ()),
        *(message.item for message in messages[:keep_from]),
    ]
    items, usage, model = await _summarize(policy, summarized)
    last = messages[keep_from - 1]
    try:
        return await store.add_checkpoint(
            session_id,
            items,
            upto_seq=last.seq,
            model=model,
            usage=usage,
            user_id=user_id,
            upto_message_id=last.id,
        )
    except StaleSessionError:
        # Rewound, popped or cleared meanwhile: the summary describes messages that are gone.
        logger.info("agentledger: session %s changed during its compaction; skipped", session_id)
        return None


async def _summarize(
    policy: CompactionPolicy, items: list[Any]
) -> tuple[list[Any], Usage, str | None]:
    summarizer = policy.summarizer
    if isinstance(summarizer, Agent):
        prompt: TResponseInputItem = {"role": "user", "content": policy.instructions}
        result = await Runner.run(summarizer, [*items, prompt])
        spent = result.context_wrapper.usage
        usage = Usage(spent.requests, spent.input_tokens, spent.output_tokens, spent.total_tokens)
        summary = [{"role": "user", "content": SUMMARY_PREFIX + str(result.final_output)}]
        return summary, usage, _model_name(summarizer)
    produced = await summarizer(list(items))
    if not isinstance(produced, list) or not produced:
        raise InvalidInputError(
            "the summarizer must return a non-empty list of summary items, got "
            f"{type(produced).__name__}"
        )
    return produced, Usage(), getattr(summarizer, "__name__", None)


def _model_name(agent: Agent[Any]) -> str:
    model = agent.model
    if isinstance(model, str):
        return model
    if model is None:
        return f"{agent.name} (default model)"
    return str(getattr(model, "model", None) or type(model).__name__)


__all__ = [
    "DEFAULT_INSTRUCTIONS",
    "SUMMARY_PREFIX",
    "CompactionPolicy",
    "SummarizeItems",
    "compact",
]
