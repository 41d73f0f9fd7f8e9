"""OpenAI Agents SDK integration: agentledger as the SDK's session memory, and SessionAgent.

:class:`LedgerSession` (``session.py``) implements the SDK's ``agents.memory.Session``
protocol, so ``Runner.run(agent, text, session=...)`` keeps its history in agentledger.
:class:`SessionAgent` (``agent.py``) runs an agent with the history reaching the model, every
turn stored verbatim and each run's token usage recorded. Both depend on the small protocols of
:mod:`agentledger.integrations.store`, not on :class:`~agentledger.Ledger`.
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
from agentledger.integrations.openai_agents.session import LedgerSession

__all__ = [
    "SESSION_NAME_NAMESPACE",
    "AgentRunResult",
    "HistoryWindow",
    "LedgerSession",
    "SessionAgent",
    "StreamedAgentRun",
    "resolve_session_uuid",
    "usage_from_sdk",
]
