"""OpenAI Agents SDK integration: agentledger as the SDK's session memory, and SessionAgent.

:class:`LedgerSession` (``session.py``) implements the SDK's ``agents.memory.Session``
protocol, so ``Runner.run(agent, text, session=...)`` keeps its history in agentledger.
:class:`ContextUserSession` (``context_user.py``) is the same with the user taken from each
run's context. :class:`SessionAgent` (``agent.py``) runs an agent with the history reaching the
model, every turn stored verbatim and each run's token usage recorded. They depend on the small
protocols of :mod:`agentledger.integrations.store`, not on :class:`~agentledger.Ledger`.
"""

from __future__ import annotations

from agentledger.domain.naming import SESSION_NAME_NAMESPACE, resolve_session_uuid
from agentledger.domain.windows import HistoryWindow
from agentledger.integrations.openai_agents.agent import (
    AgentRunResult,
    SessionAgent,
    StreamedAgentRun,
    usage_from_sdk,
)
from agentledger.integrations.openai_agents.compaction import (
    CompactionPolicy,
    SummarizeItems,
    compact,
)
from agentledger.integrations.openai_agents.context_user import ContextUserSession, UserFromContext
from agentledger.integrations.openai_agents.session import LedgerSession

__all__ = [
    "SESSION_NAME_NAMESPACE",
    "AgentRunResult",
    "CompactionPolicy",
    "ContextUserSession",
    "HistoryWindow",
    "LedgerSession",
    "SessionAgent",
    "StreamedAgentRun",
    "SummarizeItems",
    "UserFromContext",
    "compact",
    "resolve_session_uuid",
    "usage_from_sdk",
]
