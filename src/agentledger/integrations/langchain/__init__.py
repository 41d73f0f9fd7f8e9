"""LangChain integration (extra ``agentledger[langchain]``): chat message history in agentledger.

:class:`LedgerChatMessageHistory` implements ``langchain_core``'s ``BaseChatMessageHistory``
(sync and async), so ``RunnableWithMessageHistory`` keeps its conversations in the same
database, service, CLI, exports, search, retention and erasure as every other framework's. It
depends on the protocols of :mod:`agentledger.integrations.store`, never on
:class:`~agentledger.Ledger`; LangChain is imported only inside this package.
"""

from __future__ import annotations

from agentledger.integrations.langchain.history import (
    DEFAULT_AGENT_NAME,
    FRAMEWORK,
    LedgerChatMessageHistory,
)

__all__ = ["DEFAULT_AGENT_NAME", "FRAMEWORK", "LedgerChatMessageHistory"]
