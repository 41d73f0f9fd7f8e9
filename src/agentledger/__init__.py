"""agentledger: durable sessions and conversation history for AI agents.

SQLAlchemy 2.0 models on PostgreSQL (asyncpg) or SQLite (aiosqlite), Alembic revisions shipped in
the package, a unit-of-work service layer, and OpenAI Agents SDK session memory.
"""

from ._version import __version__
from .config import LedgerSettings
from .engine import configure_sqlite
from .errors import (
    AlreadyExistsError,
    ConflictError,
    ConnectionLostError,
    DatabaseUnavailableError,
    InvalidInputError,
    LedgerDatabaseError,
    LedgerError,
    LedgerTimeoutError,
    PermissionDeniedError,
    RetryableError,
    SchemaNotReadyError,
    SessionNotFoundError,
    UnsupportedBackendError,
)
from .ledger import Ledger
from .models import AgentSession, ConversationMessage, metadata
from .records import (
    AppendResult,
    ErasureReport,
    MessageRecord,
    SearchHit,
    SearchPage,
    SessionPage,
    SessionRecord,
    SessionSummary,
    TranscriptImport,
    Usage,
)
from .retention import RetentionPolicy, RetentionReport
from .row_security import RowSecurityStatus
from .schema import host_include_object, include_object
from .service import SessionService
from .transcripts import SessionTranscript
from .uow import UnitOfWork
from .windows import HistoryWindow


def __getattr__(name: str) -> object:
    # The Agents SDK adapter is imported on first use, so `import agentledger` stays light.
    if name in ("SessionAgent", "LedgerSession", "AgentRunResult"):
        from .integrations import openai_agents

        return getattr(openai_agents, name)
    raise AttributeError(f"module 'agentledger' has no attribute {name!r}")


__all__ = [
    "AgentRunResult",
    "AgentSession",
    "AlreadyExistsError",
    "AppendResult",
    "ConflictError",
    "ConnectionLostError",
    "ConversationMessage",
    "DatabaseUnavailableError",
    "ErasureReport",
    "HistoryWindow",
    "InvalidInputError",
    "Ledger",
    "LedgerDatabaseError",
    "LedgerError",
    "LedgerSession",
    "LedgerSettings",
    "LedgerTimeoutError",
    "MessageRecord",
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
    "SessionService",
    "SessionSummary",
    "SessionTranscript",
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
