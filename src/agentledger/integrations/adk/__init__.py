"""Google ADK sessions in agentledger (extra ``agentledger[adk]``).

``LedgerSessionService(ledger)`` is an ADK ``BaseSessionService``: pass it to a ``Runner`` as
``session_service=``. See docs/frameworks.md.
"""

from agentledger.integrations.adk.mapping import FRAMEWORK
from agentledger.integrations.adk.service import LedgerSessionService, StaleSessionError

__all__ = ["FRAMEWORK", "LedgerSessionService", "StaleSessionError"]
