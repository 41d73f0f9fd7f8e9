"""Validation of what callers hand the service: pure functions, no I/O.

Every check that decides whether input can be stored faithfully lives here (or in
:mod:`agentledger.domain.encoding` for text and JSON), and runs before a unit of work opens, so bad
input never writes anything. The service imports these; nothing here imports the service.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from agentledger.domain.encoding import (
    check_message_size,
    check_text,
    dump_json,
    escape_nul,
    sent_json_size,
    sent_text_size,
    statement_budget,
    utf8_size,
)
from agentledger.domain.projection import ChatView, chat_view, check_role, item_from_chat
from agentledger.domain.records import NewRow, SessionSpec, SessionState, Usage
from agentledger.errors import (
    InvalidInputError,
)

#: Longest ``user_id`` / ``agent_name`` / idempotency key (the columns are varchar(255)).
MAX_NAME_LENGTH = 255
#: Upper bound for one page of :meth:`SessionService.list_user_sessions`.
MAX_PAGE_SIZE = 1000
MESSAGE_KEYS = frozenset({"role", "content", "tool_calls", "tool_call_id"})
INT64 = range(-(2**63), 2**63)
#: The largest value of a BIGINT column (sequence numbers, counters) and of a SQL LIMIT.
MAX_INT64 = 2**63 - 1


def parse_session_id(value: object) -> uuid.UUID:
    """A session id as ``uuid.UUID``; strings must be UUIDs (any standard spelling)."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value.strip())
        except ValueError:
            pass
        raise InvalidInputError(
            f"malformed session id {value[:80]!r}: expected a UUID such as "
            "'0b0e7c9e-9d1f-4c43-9b2e-8f7d6a5c4b3a'"
        )
    raise TypeError(f"session id must be a uuid.UUID or a UUID string, not {type(value).__name__}")


def check_name(value: object, what: str) -> str:
    text = check_text(value, what)
    if not text or len(text) > MAX_NAME_LENGTH or "\x00" in text:
        raise InvalidInputError(
            f"{what} must be 1 to {MAX_NAME_LENGTH} characters without NUL, got {len(text)}"
        )
    return text


#: The framework a session's conversation comes from, when the caller names none.
DEFAULT_FRAMEWORK = "openai-agents"
#: Longest framework identifier (the column is varchar(32)).
MAX_FRAMEWORK_LENGTH = 32
_FRAMEWORK = re.compile(r"[a-z][a-z0-9]*(?:[._-][a-z0-9]+)*")


def check_framework(value: object) -> str:
    """A framework identifier as sessions record it: lower-case letters and digits in words
    joined by ``-``, ``_`` or ``.`` (``openai-agents``, ``adk``, ``langchain``), at most 32
    characters, so listings and filters compare one spelling."""
    if not isinstance(value, str):
        raise TypeError(f"framework must be a str, not {type(value).__name__}")
    if len(value) > MAX_FRAMEWORK_LENGTH or _FRAMEWORK.fullmatch(value) is None:
        raise InvalidInputError(
            f"framework must be a lower-case identifier such as 'openai-agents', 'adk' or "
            f"'langchain' (letters, digits and single -, _ or . between them, at most "
            f"{MAX_FRAMEWORK_LENGTH} characters), got {value[:40]!r}"
        )
    return value


def check_spec(spec: object) -> SessionSpec:
    """What a write creates a missing session with (``create_as``), checked as
    ``create_session`` checks its arguments: owner, agent, name and framework."""
    if not isinstance(spec, SessionSpec):
        raise TypeError(f"create_as must be a SessionSpec, not {type(spec).__name__}")
    return SessionSpec(
        check_name(spec.user_id, "user_id"),
        check_name(spec.agent_name, "agent_name"),
        None if spec.name is None else check_name(spec.name, "session name"),
        check_framework(spec.framework),
    )


def check_owner(value: object) -> str | None:
    """An optional ``user_id=`` argument (the owner a call must match): ``None`` or a name."""
    return None if value is None else check_name(value, "user_id")


def check_tool_call_id(value: object, what: str) -> str:
    """A tool call id: any text (U+0000 included, tool ids come from outside) that fits the
    varchar(255) column, where PostgreSQL stores U+0000 and U+E000 escaped as two characters."""
    text = check_text(value, what)
    if not text or len(escape_nul(text)) > MAX_NAME_LENGTH:
        raise InvalidInputError(
            f"{what} must be 1 to {MAX_NAME_LENGTH} characters (U+0000 and U+E000 count "
            f"twice), got {len(text)}"
        )
    return text


def check_limit(limit: int | None, what: str = "limit") -> int | None:
    if limit is None:
        return None
    return check_count(limit, what, minimum=0)


def check_count(value: object, what: str, *, minimum: int = 1, maximum: int = MAX_INT64) -> int:
    """An int argument from ``minimum`` to ``maximum`` (by default what a BIGINT or a SQL LIMIT
    holds): :class:`TypeError` for another type, :class:`InvalidInputError` out of range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < minimum:
        floor = "zero or positive" if minimum == 0 else f"at least {minimum}"
        raise InvalidInputError(f"{what} must be {floor}, got {value}")
    if value > maximum:
        raise InvalidInputError(f"{what} must be at most {maximum}, got {value}")
    return value


def check_seq(value: object, what: str) -> int:
    """A sequence number argument: a non-negative int (0 is "before the first message")."""
    return check_count(value, what, minimum=0)


def check_in_history(seq: int, session: SessionState, what: str) -> None:
    """``seq`` must lie in the session's history, ``trimmed_seq .. last_seq``."""
    if not session.trimmed_seq <= seq <= session.last_seq:
        raise InvalidInputError(
            f"{what} {seq} is outside the history of session {session.id}, which holds seqs "
            f"{session.trimmed_seq + 1}..{session.last_seq}; pass a seq from "
            f"{session.trimmed_seq} to {session.last_seq}"
        )


def check_title(value: object) -> str:
    text = check_text(value, "title")
    if not text.strip() or len(escape_nul(text)) > MAX_NAME_LENGTH:
        raise InvalidInputError(
            f"title must be 1 to {MAX_NAME_LENGTH} characters, not blank (U+0000 and U+E000 "
            f"count twice), got {len(text)}; pass None to remove the title"
        )
    return text


def title_pattern(text: object) -> str:
    """The LIKE pattern (escape character ``\\``) of a title search: titles containing
    ``text``, ignoring case (compare it with the lowered title)."""
    if not isinstance(text, str) or not text or len(text) > MAX_NAME_LENGTH or "\x00" in text:
        raise InvalidInputError(
            f"a title search must be 1 to {MAX_NAME_LENGTH} characters without NUL"
        )
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def check_metadata_changes(changes: object) -> dict[str, Any]:
    """Metadata changes as strict JSON: a mapping of string keys to JSON values (None: remove)."""
    if not isinstance(changes, Mapping):
        raise InvalidInputError(
            "metadata changes must be a mapping of keys to JSON values (None removes a key), "
            f"got {type(changes).__name__}"
        )
    encoded = dump_json(dict(changes), "metadata changes", jsonb=True)
    decoded: dict[str, Any] = json.loads(encoded)
    return decoded


def check_metadata_filter(metadata: object) -> dict[str, Any]:
    """A listing filter: top-level metadata keys and the JSON scalars they must equal."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(
            "the metadata filter must be a mapping of top-level keys to the values they must "
            f"equal, got {type(metadata).__name__}"
        )
    checked: dict[str, Any] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise InvalidInputError(f"metadata filter keys must be strings, got {key!r}")
        check_text(key, "metadata filter key")
        if isinstance(value, str):
            check_text(value, f"metadata filter value of {key!r}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidInputError(f"metadata filter value of {key!r} must be a finite number")
        elif isinstance(value, int) and not isinstance(value, bool) and value not in INT64:
            raise InvalidInputError(
                f"metadata filter value of {key!r} must fit in 64 bits, got {value}"
            )
        elif not isinstance(value, (str, int, float)):
            raise InvalidInputError(
                f"metadata filter value of {key!r} must be a string, number or boolean "
                f"(filters compare top-level values for equality), got {type(value).__name__}"
            )
        checked[key] = value
    return checked


def new_row(view: ChatView, item_json: str, where: str) -> NewRow:
    """The row to insert; refused when its fields together do not fit one statement."""
    tool_calls_json = (
        None if view.tool_calls is None else dump_json(view.tool_calls, "tool_calls", jsonb=True)
    )
    # Every field as the append statement sends it (repositories._PG_APPEND), on every backend.
    sizes = {
        "role": utf8_size(view.role),
        "content": sent_text_size(view.content),
        "tool_calls": 0 if tool_calls_json is None else sent_json_size(tool_calls_json),
        "tool_call_id": 0 if view.tool_call_id is None else sent_text_size(view.tool_call_id),
        "item_type": utf8_size(view.item_type),
        "item": utf8_size(item_json),
    }
    return NewRow(
        id=uuid.uuid4(),
        role=view.role,
        content=view.content,
        tool_calls_json=tool_calls_json,
        tool_call_id=view.tool_call_id,
        item_type=view.item_type,
        item_json=item_json,
        size=check_message_size(sizes, where),
    )


def fits_one_statement(rows: Sequence[NewRow]) -> bool:
    """Whether the batch goes in one append statement (else it needs a transaction)."""
    return sum(row.size for row in rows) <= statement_budget()


def prepare_chat_message(message: Mapping[str, Any], index: int | None = None) -> NewRow:
    """Validate one chat-API message and build the row to insert."""
    where = "message" if index is None else f"message {index}"
    if not isinstance(message, Mapping):
        raise TypeError(f"{where} must be a mapping with role and content")
    unknown = set(message) - MESSAGE_KEYS
    if unknown:
        raise InvalidInputError(
            f"{where} has unknown keys {sorted(map(str, unknown))}; allowed: {sorted(MESSAGE_KEYS)}"
        )
    if "role" not in message or "content" not in message:
        raise InvalidInputError(f"{where} needs both 'role' and 'content'")
    try:
        role = check_role(message["role"])
    except InvalidInputError as error:
        raise InvalidInputError(f"{where}: {error}") from None
    content = check_text(message["content"], f"{where} content")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None and (
        not isinstance(tool_calls, list) or not all(isinstance(c, dict) for c in tool_calls)
    ):
        raise InvalidInputError(f"{where} tool_calls must be a list of dicts or None")
    tool_call_id = message.get("tool_call_id")
    if tool_call_id is not None:
        tool_call_id = check_tool_call_id(tool_call_id, f"{where} tool_call_id")
    _check_tool_fields(where, role, tool_calls, tool_call_id)
    item = item_from_chat(role, content, tool_calls, tool_call_id)
    view = ChatView(role, content, tool_calls, tool_call_id, item.get("type", "message"))
    return new_row(view, dump_json(item, where), where)


def _check_tool_fields(
    where: str, role: str, tool_calls: list[Any] | None, tool_call_id: str | None
) -> None:
    """The chat API's pairing, which models enforce on input: only an assistant message makes
    tool calls, and a tool message answers exactly one of them by its id. Stored otherwise,
    the history would come back as input a model refuses."""
    if tool_calls and role != "assistant":
        raise InvalidInputError(f"{where}: only an assistant message has tool_calls, not {role!r}")
    if role == "tool" and tool_call_id is None:
        raise InvalidInputError(
            f"{where}: a tool message needs the tool_call_id of the call it answers"
        )
    if tool_call_id is not None and role != "tool":
        raise InvalidInputError(
            f"{where}: only a tool message has a tool_call_id, not a {role!r} message"
        )


def prepare_item(item: Any, index: int | None = None) -> NewRow:
    """Validate one Agents SDK item and build the row to insert (item kept verbatim)."""
    where = "item" if index is None else f"item {index}"
    item_json = dump_json(item, where)
    view = chat_view(item)
    if view.tool_call_id is not None:
        check_tool_call_id(view.tool_call_id, f"{where} call_id")
    return new_row(view, item_json, where)


def batch_fingerprint(rows: Sequence[NewRow]) -> str:
    """Identity of a batch's content, to tell a retry from a reused idempotency key."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(row.item_json.encode("utf-8"))
        digest.update(b"\x1e")
    return digest.hexdigest()


def check_metadata(metadata: object) -> dict[str, Any]:
    """Session metadata as strict JSON: a mapping of string keys (``None``: empty)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(
            f"metadata must be a JSON object (a dict), got {type(metadata).__name__}"
        )
    decoded: dict[str, Any] = json.loads(dump_json(dict(metadata), "metadata", jsonb=True))
    return decoded


def check_state(state: object, what: str) -> dict[str, Any]:
    """A framework's scoped state (or a change to it) as strict JSON: a mapping of string keys,
    stored exactly (U+0000 included) in a ``json`` column."""
    if not isinstance(state, Mapping):
        raise InvalidInputError(
            f"{what} must be a JSON object (a dict), got {type(state).__name__}"
        )
    decoded: dict[str, Any] = json.loads(dump_json(dict(state), what))
    return decoded


def check_usage(usage: object) -> Usage:
    """A token usage record: an :class:`~agentledger.Usage` whose counts fit a BIGINT."""
    if not isinstance(usage, Usage):
        raise TypeError(f"usage must be an agentledger.Usage, not {type(usage).__name__}")
    for name in ("requests", "input_tokens", "output_tokens", "total_tokens"):
        value = getattr(usage, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT64:
            raise InvalidInputError(
                f"usage.{name} must be an int from 0 to {MAX_INT64}, got {value!r}"
            )
    return usage
