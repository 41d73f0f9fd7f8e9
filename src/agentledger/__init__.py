"""agentledger: durable sessions and conversation history for AI agents.

SQLAlchemy 2.0 models on PostgreSQL (asyncpg) or SQLite (aiosqlite), Alembic revisions shipped in
the package, a unit-of-work service layer, and OpenAI Agents SDK session memory.
"""

import logging
from typing import TYPE_CHECKING

from agentledger._version import __version__
from agentledger.config import LedgerSettings
from agentledger.db.engine import configure_sqlite
from agentledger.db.models import AgentSession, ConversationMessage, metadata
from agentledger.db.uow import UnitOfWork
from agentledger.domain.records import (
    AppendResult,
    Checkpoint,
    ErasureReport,
    MessagePage,
    MessageRecord,
    ModelContext,
    SearchHit,
    SearchPage,
    SessionPage,
    SessionRecord,
    SessionSummary,
    TranscriptImport,
    Usage,
)
from agentledger.domain.retention import RetentionPolicy, RetentionReport
from agentledger.domain.transcripts import SessionTranscript
from agentledger.domain.windows import HistoryWindow
from agentledger.errors import (
    AlreadyExistsError,
    ConfigurationError,
    ConflictError,
    ConnectionLostError,
    DatabaseUnavailableError,
    InvalidInputError,
    InvalidItemTypeError,
    LedgerDatabaseError,
    LedgerError,
    LedgerTimeoutError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RetryableError,
    SchemaNotReadyError,
    SessionNotFoundError,
    SessionReferencedError,
    StaleSessionError,
    UnsupportedBackendError,
)
from agentledger.ledger import Ledger
from agentledger.schema.alembic import host_include_object, include_object
from agentledger.schema.row_security import RowSecurityStatus
from agentledger.services.facade import SessionService
from agentledger.services.telemetry import Telemetry

# A library logs, the application decides where it goes: no "No handlers" warnings, no output
# unless the application configures logging.
logging.getLogger("agentledger").addHandler(logging.NullHandler())


if TYPE_CHECKING:  # imported on first use at runtime (below); typed for type checkers
    from agentledger.integrations.openai_agents import (
        AgentRunResult,
        CompactionPolicy,
        LedgerSession,
        SessionAgent,
    )


def __getattr__(name: str) -> object:
    # The Agents SDK adapter is imported on first use, so `import agentledger` stays light.
    if name in ("SessionAgent", "LedgerSession", "AgentRunResult", "CompactionPolicy"):
        from agentledger.integrations import openai_agents

        return getattr(openai_agents, name)
    raise AttributeError(f"module 'agentledger' has no attribute {name!r}")


__all__ = [
    "AgentRunResult",
    "AgentSession",
    "AlreadyExistsError",
    "AppendResult",
    "Checkpoint",
    "CompactionPolicy",
    "ConfigurationError",
    "ConflictError",
    "ConnectionLostError",
    "ConversationMessage",
    "DatabaseUnavailableError",
    "ErasureReport",
    "HistoryWindow",
    "InvalidInputError",
    "InvalidItemTypeError",
    "Ledger",
    "LedgerDatabaseError",
    "LedgerError",
    "LedgerSession",
    "LedgerSettings",
    "LedgerTimeoutError",
    "MessagePage",
    "MessageRecord",
    "ModelContext",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RetentionPolicy",
    "RetentionReport",
    "RetryableError",
    "RowSecurityStatus",
    "SchemaNotReadyError",
    "SearchHit",
    "SearchPage",
    "SessionAgent",
    "SessionNotFoundError",
    "SessionPage",
    "SessionRecord",
    "SessionReferencedError",
    "SessionService",
    "SessionSummary",
    "SessionTranscript",
    "StaleSessionError",
    "Telemetry",
    "TranscriptImport",
    "UnitOfWork",
    "UnsupportedBackendError",
    "Usage",
    "__version__",
    "configure_sqlite",
    "host_include_object",
    "include_object",
    "metadata",
]
