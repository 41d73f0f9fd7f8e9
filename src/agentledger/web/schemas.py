"""The API's request and response bodies (pydantic), built from the service's records.

Responses are typed so the OpenAPI document describes them exactly; requests forbid unknown
fields, so a misspelt field is a 400 instead of being silently ignored. Limits and content
rules are not repeated here: the service checks them (and answers 400 with what to fix).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentledger.domain.records import (
    AppendResult,
    MessageRecord,
    SearchHit,
    SessionState,
    SessionSummary,
    Usage,
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests -----------------------------------------------------------------------------------


class SessionCreate(Strict):
    agent_name: str = Field(description="the agent this conversation is with")
    metadata: dict[str, Any] | None = Field(default=None, description="a JSON object")
    title: str | None = Field(default=None, description="a title for session pickers")


class MessageIn(Strict):
    role: str = Field(description="user, assistant, system, developer or tool")
    content: str
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class MessagesAppend(Strict):
    messages: list[MessageIn] = Field(min_length=1, description="stored atomically, in order")


class ForkRequest(Strict):
    at_seq: int | None = Field(default=None, description="last seq to share (default: all)")
    title: str | None = None


class RewindRequest(Strict):
    to_seq: int = Field(description="last seq to keep")


class SessionPatch(Strict):
    metadata: dict[str, Any] | None = Field(
        default=None, description="merged into the metadata; a key set to null is removed"
    )
    title: str | None = Field(default=None, description="the new title; null keeps it")
    clear_title: bool = Field(default=False, description="remove the title")


class RetentionRequest(Strict):
    policies: dict[str, dict[str, Any]] | None = Field(
        default=None,
        description='agent name (or "*") -> policy, as in AGENTLEDGER_RETENTION (default: '
        "that setting)",
    )
    dry_run: bool = Field(default=True, description="only count (the default)")


class EraseRequest(Strict):
    user_id: str = Field(description="the user whose sessions, messages and usage go")
    dry_run: bool = Field(default=True, description="only count (the default)")


# -- responses ----------------------------------------------------------------------------------


class MessageOut(BaseModel):
    seq: int
    id: uuid.UUID
    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None
    item_type: str
    created_at: datetime

    @classmethod
    def of(cls, record: MessageRecord) -> MessageOut:
        return cls(
            seq=record.seq,
            id=record.id,
            role=record.role,
            content=record.content,
            tool_calls=record.tool_calls,
            tool_call_id=record.tool_call_id,
            item_type=record.item_type,
            created_at=record.created_at,
        )


class MessagePageOut(BaseModel):
    messages: list[MessageOut]
    next_after_seq: int | None = Field(description="pass as after_seq for the next page")


class SessionOut(BaseModel):
    id: uuid.UUID
    user_id: str
    agent_name: str
    metadata: dict[str, Any]
    title: str | None
    name: str | None
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None
    message_count: int
    last_seq: int = Field(description="the seq the history ends at (0: empty); for If-Match")

    @classmethod
    def of(cls, state: SessionState) -> SessionOut:
        return cls(
            id=state.id,
            user_id=state.user_id,
            agent_name=state.agent_name,
            metadata=state.metadata,
            title=state.title,
            name=state.name,
            created_at=state.created_at,
            updated_at=state.updated_at,
            archived_at=state.archived_at,
            message_count=state.message_count,
            last_seq=state.last_seq,
        )


class SessionSummaryOut(BaseModel):
    id: uuid.UUID
    agent_name: str
    metadata: dict[str, Any]
    title: str | None = Field(description="the title, else the first user message")
    name: str | None
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None
    message_count: int

    @classmethod
    def of(cls, summary: SessionSummary) -> SessionSummaryOut:
        return cls(
            id=summary.id,
            agent_name=summary.agent_name,
            metadata=summary.metadata,
            title=summary.title,
            name=summary.name,
            created_at=summary.created_at,
            updated_at=summary.updated_at,
            archived_at=summary.archived_at,
            message_count=summary.message_count,
        )


class SessionPageOut(BaseModel):
    sessions: list[SessionSummaryOut]
    next_cursor: str | None = Field(description="pass as cursor (same filters) for the next page")


class AppendOut(BaseModel):
    session_id: uuid.UUID
    first_seq: int
    last_seq: int
    count: int
    created_at: datetime
    created: bool = Field(description="false: an Idempotency-Key retry, stored before")

    @classmethod
    def of(cls, result: AppendResult) -> AppendOut:
        return cls(
            session_id=result.session_id,
            first_seq=result.first_seq,
            last_seq=result.first_seq + result.count - 1,
            count=result.count,
            created_at=result.created_at,
            created=result.created,
        )


class ItemsOut(BaseModel):
    items: list[Any] = Field(description="Agents SDK items, exactly as stored")


class RewindOut(BaseModel):
    removed: int


class UsageOut(BaseModel):
    requests: int
    input_tokens: int
    output_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, usage: Usage) -> UsageOut:
        return cls(
            requests=usage.requests,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
        )


class SearchHitOut(BaseModel):
    session_id: uuid.UUID
    seq: int
    role: str
    snippet: str
    rank: float
    created_at: datetime
    agent_name: str
    item_type: str

    @classmethod
    def of(cls, hit: SearchHit) -> SearchHitOut:
        return cls(
            session_id=hit.session_id,
            seq=hit.seq,
            role=hit.role,
            snippet=hit.snippet,
            rank=hit.rank,
            created_at=hit.created_at,
            agent_name=hit.agent_name,
            item_type=hit.item_type,
        )


class SearchPageOut(BaseModel):
    hits: list[SearchHitOut]
    next_cursor: str | None


class BlockedOut(BaseModel):
    session_id: uuid.UUID
    table: str | None
    constraint: str | None


class RetentionCountsOut(BaseModel):
    deleted_sessions: int
    deleted_messages: int
    archived_sessions: int
    trimmed_sessions: int
    trimmed_messages: int
    blocked_sessions: int


class RetentionOut(BaseModel):
    dry_run: bool
    policies: dict[str, RetentionCountsOut]
    blocked: list[BlockedOut]


class ErasureOut(BaseModel):
    dry_run: bool
    sessions: int
    messages: int
    usage_records: int
    blocked: list[BlockedOut]


class ProblemOut(BaseModel):
    """An error (RFC 9457, application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    error: str = Field(description="the agentledger error class")
    retryable: bool | None = None
    last_seq: int | None = Field(default=None, description="409 stale: where the session ends")
