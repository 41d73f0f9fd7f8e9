"""The JSONL format (``agentledger.transcript`` version 1): writing and reading it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, TextIO

from agentledger.domain.display import json_text
from agentledger.domain.encoding import MAX_JSON_DEPTH, dump_json
from agentledger.domain.records import Checkpoint, Usage
from agentledger.domain.time import as_utc
from agentledger.domain.transcripts.model import (
    FORMAT,
    MAX_SEQ,
    VERSION,
    VERSION_WITH_CHECKPOINTS,
    SessionTranscript,
    TranscriptMessage,
    check_framework_state,
)
from agentledger.domain.validation import (
    DEFAULT_FRAMEWORK,
    check_framework,
    check_metadata,
    check_name,
    check_title,
    prepare_item,
)
from agentledger.errors import InvalidInputError, LedgerDatabaseError


def _stamp(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _line(value: Any, what: str, wrapping: int) -> str:
    """One JSONL line; ``wrapping`` is how many levels the line adds around stored values."""
    return json_text(dump_json(value, what, max_depth=MAX_JSON_DEPTH + wrapping))


def jsonl_lines(transcript: SessionTranscript) -> Iterator[str]:
    """The transcript's JSONL lines, without line ends.

    Refuses (before the first line) a transcript with damaged messages: a JSONL export is a
    complete copy or nothing."""
    if transcript.damaged_seqs:
        shown = ", ".join(map(str, transcript.damaged_seqs[:10]))
        raise LedgerDatabaseError(
            f"session {transcript.id} cannot be exported losslessly: the stored JSON of "
            f"message(s) {shown} is damaged (changed outside agentledger); repair or delete "
            "those rows (docs/reliability.md, 'Damaged rows'), or export it as Markdown, "
            "which shows the rest"
        )
    yield jsonl_header(transcript, len(transcript.messages))
    for message in transcript.messages:
        yield jsonl_message(message)
    for checkpoint in transcript.checkpoints:
        yield jsonl_checkpoint(checkpoint)


def jsonl_header(transcript: SessionTranscript, message_count: int) -> str:
    """The header line of a transcript holding ``message_count`` messages (its own
    ``messages`` are not read: a streamed export sends them page by page after it)."""
    header = {
        "format": FORMAT,
        "version": VERSION_WITH_CHECKPOINTS if transcript.checkpoints else VERSION,
        "session": {
            "id": str(transcript.id),
            "user_id": transcript.user_id,
            "agent_name": transcript.agent_name,
            "title": transcript.title,
            "metadata": transcript.metadata,
            "created_at": _stamp(transcript.created_at),
            "updated_at": _stamp(transcript.updated_at),
            "archived_at": _stamp(transcript.archived_at),
            "trimmed_seq": transcript.trimmed_seq,
            "name": transcript.name,
            "framework": transcript.framework,
            **(
                {}
                if transcript.framework_state is None
                else {"framework_state": transcript.framework_state}
            ),
        },
        "message_count": message_count,
    }
    if transcript.checkpoints:
        header["checkpoint_count"] = len(transcript.checkpoints)
    return _line(header, "session header", 2)


def jsonl_message(message: TranscriptMessage) -> str:
    """One message line."""
    return _line(
        {"seq": message.seq, "created_at": _stamp(message.created_at), "item": message.item},
        f"message {message.seq}",
        1,
    )


def jsonl_checkpoint(checkpoint: Checkpoint) -> str:
    """One checkpoint line (they follow the messages)."""
    usage = checkpoint.usage
    return _line(
        {
            "checkpoint": {
                "upto_seq": checkpoint.upto_seq,
                "items": list(checkpoint.items),
                "model": checkpoint.model,
                "usage": {
                    "requests": usage.requests,
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "total_tokens": usage.total_tokens,
                },
                "created_at": _stamp(checkpoint.created_at),
            }
        },
        f"checkpoint up to seq {checkpoint.upto_seq}",
        3,
    )


def write_jsonl(transcript: SessionTranscript, stream: TextIO) -> None:
    """Write the transcript as JSONL to a text stream (open it with ``encoding="utf-8"``)."""
    for line in jsonl_lines(transcript):
        stream.write(line)
        stream.write("\n")


def dumps_jsonl(transcript: SessionTranscript) -> str:
    return "".join(f"{line}\n" for line in jsonl_lines(transcript))


def loads_jsonl(text: str, *, source: str = "transcript") -> SessionTranscript:
    """Parse JSONL text (split on ``\\n`` only, never on U+2028 and the like)."""
    return read_jsonl(text.split("\n"), source=source)


def read_jsonl(lines: Iterable[str], *, source: str = "transcript") -> SessionTranscript:
    """Parse and validate a JSONL transcript; :class:`InvalidInputError` names the bad line."""
    header: dict[str, Any] | None = None
    messages: list[TranscriptMessage] = []
    checkpoints: list[Checkpoint] = []
    expected = 0
    number = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as error:
            raise InvalidInputError(
                f"{source}, line {number}: not valid JSON ({error}); export the session "
                "again with `agentledger sessions export`"
            ) from None
        except RecursionError:
            raise InvalidInputError(
                f"{source}, line {number}: nested too deeply to read (agentledger stores at "
                f"most {MAX_JSON_DEPTH} levels)"
            ) from None
        if header is None:
            header = _check_header(value, source, number)
            expected = header["trimmed_seq"] + 1
            continue
        if len(messages) == header["message_count"]:
            if len(checkpoints) < header["checkpoint_count"]:
                last = header["trimmed_seq"] + header["message_count"]
                checkpoints.append(_check_checkpoint(value, source, number, last))
                continue
            raise _problem(
                source,
                number,
                f"the header announces {header['message_count']} messages and "
                f"{header['checkpoint_count']} checkpoints but more follow; export the session "
                "again",
            )
        messages.append(_check_message(value, source, number, expected))
        expected += 1
    if header is None:
        raise InvalidInputError(
            f"{source} is empty; expected an agentledger transcript (JSONL with a header line)"
        )
    if len(messages) < header["message_count"]:
        raise InvalidInputError(
            f"{source} holds {len(messages)} of the {header['message_count']} messages its "
            "header announces: the file is incomplete; export the session again"
        )
    if len(checkpoints) < header["checkpoint_count"]:
        raise InvalidInputError(
            f"{source} holds {len(checkpoints)} of the {header['checkpoint_count']} "
            "checkpoints its header announces: the file is incomplete; export the session again"
        )
    return SessionTranscript(
        id=header["id"],
        user_id=header["user_id"],
        agent_name=header["agent_name"],
        metadata=header["metadata"],
        created_at=header["created_at"],
        updated_at=header["updated_at"],
        messages=tuple(messages),
        title=header["title"],
        archived_at=header["archived_at"],
        trimmed_seq=header["trimmed_seq"],
        name=header["name"],
        checkpoints=tuple(checkpoints),
        framework=header["framework"],
        framework_state=header["framework_state"],
    )


def _problem(source: str, number: int, what: str) -> InvalidInputError:
    return InvalidInputError(f"{source}, line {number}: {what}")


def _check_header(value: Any, source: str, number: int) -> dict[str, Any]:
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise _problem(
            source,
            number,
            f'not an agentledger transcript (the first line must have "format": "{FORMAT}")',
        )
    version = value.get("version")
    if version not in (VERSION, VERSION_WITH_CHECKPOINTS) or isinstance(version, bool):
        raise _problem(
            source,
            number,
            f"transcript version {version!r} is not supported (this agentledger reads "
            f"versions {VERSION} and {VERSION_WITH_CHECKPOINTS}); upgrade agentledger",
        )
    checkpoint_count = value.get("checkpoint_count", 0)
    if (
        not isinstance(checkpoint_count, int)
        or isinstance(checkpoint_count, bool)
        or checkpoint_count < 0
        or (version == VERSION and checkpoint_count)
    ):
        raise _problem(
            source,
            number,
            '"checkpoint_count" must be a non-negative integer (and 0 in a version 1 file)',
        )
    session = value.get("session")
    count = value.get("message_count")
    if not isinstance(session, dict):
        raise _problem(source, number, 'the header has no "session" object')
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise _problem(source, number, '"message_count" must be a non-negative integer')
    try:
        session_id = uuid.UUID(str(session.get("id")))
    except ValueError:
        raise _problem(source, number, 'session "id" is not a UUID') from None
    for key in ("user_id", "agent_name"):
        if not isinstance(session.get(key), str):
            raise _problem(source, number, f"session {key!r} must be a string")
    title = session.get("title")
    if title is not None and not isinstance(title, str):
        raise _problem(source, number, 'session "title" must be a string or null')
    name = session.get("name")
    if name is not None and not isinstance(name, str):
        raise _problem(source, number, 'session "name" must be a string or null')
    # Transcripts written before sessions recorded their framework are the Agents SDK's.
    framework = session.get("framework", DEFAULT_FRAMEWORK)
    if not isinstance(framework, str):
        raise _problem(source, number, 'session "framework" must be a string')
    framework_state = session.get("framework_state")
    try:
        check_framework_state(framework_state, 'session "framework_state"')
    except InvalidInputError as error:
        raise _problem(source, number, str(error)) from None
    metadata = session.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _problem(source, number, 'session "metadata" must be an object')
    trimmed = session.get("trimmed_seq", 0)
    if not isinstance(trimmed, int) or isinstance(trimmed, bool) or not trimmed >= 0:
        raise _problem(source, number, 'session "trimmed_seq" must be a non-negative integer')
    if trimmed + count > MAX_SEQ:
        raise _problem(
            source,
            number,
            f'session "trimmed_seq" {trimmed} plus {count} messages passes the highest '
            f"sequence number a session can hold ({MAX_SEQ})",
        )
    try:  # what storing the session would refuse, refused here with the line
        check_name(session["user_id"], "session user_id")
        check_name(session["agent_name"], "session agent_name")
        if title is not None:
            check_title(title)
        if name is not None:
            check_name(name, "session name")
        check_framework(framework)
        check_metadata(metadata)
    except InvalidInputError as error:
        raise _problem(source, number, str(error)) from None
    return {
        "id": session_id,
        "user_id": session["user_id"],
        "agent_name": session["agent_name"],
        "title": title,
        "metadata": metadata,
        "created_at": _parse_stamp(session.get("created_at"), "created_at", source, number),
        "updated_at": _parse_stamp(session.get("updated_at"), "updated_at", source, number),
        "archived_at": _parse_stamp(
            session.get("archived_at"), "archived_at", source, number, optional=True
        ),
        "trimmed_seq": trimmed,
        "message_count": count,
        "checkpoint_count": checkpoint_count,
        "name": name,
        "framework": framework,
        "framework_state": framework_state,
    }


def _parse_stamp(value: Any, what: str, source: str, number: int, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise _problem(source, number, f"{what} must be an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise _problem(source, number, f"{what} must carry a UTC offset")
    try:
        return as_utc(parsed)
    except OverflowError:
        raise _problem(
            source, number, f"{what} {value!r} lies outside the years 1 to 9999 in UTC"
        ) from None


def _check_message(value: Any, source: str, number: int, expected: int) -> TranscriptMessage:
    if not isinstance(value, dict) or "item" not in value:
        raise _problem(source, number, 'a message line must be {"seq": n, "item": {...}}')
    seq = value.get("seq")
    if seq != expected or not isinstance(seq, int) or isinstance(seq, bool):
        raise _problem(
            source,
            number,
            f"expected the message with seq {expected}, found seq {seq!r}: messages must be "
            "contiguous and in order",
        )
    created_at = value.get("created_at")
    stamp = None if created_at is None else _parse_stamp(created_at, "created_at", source, number)
    try:
        prepare_item(value["item"])  # what storing it would refuse, refused here with the line
    except InvalidInputError as error:
        raise _problem(source, number, str(error)) from None
    return TranscriptMessage(seq=expected, item=value["item"], created_at=stamp)


def _check_checkpoint(value: Any, source: str, number: int, last_seq: int) -> Checkpoint:
    body = value.get("checkpoint") if isinstance(value, dict) else None
    if not isinstance(body, dict):
        raise _problem(source, number, 'a checkpoint line must be {"checkpoint": {...}}')
    upto = body.get("upto_seq")
    if not isinstance(upto, int) or isinstance(upto, bool) or not 1 <= upto <= last_seq:
        raise _problem(
            source, number, f"a checkpoint's upto_seq must be a seq from 1 to {last_seq}"
        )
    items = body.get("items")
    if not isinstance(items, list) or not items:
        raise _problem(source, number, "a checkpoint's items must be a non-empty list")
    model = body.get("model")
    usage = body.get("usage", {})
    counts = [usage.get(key, 0) if isinstance(usage, dict) else None for key in USAGE_KEYS]
    if not all(
        isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_SEQ for n in counts
    ):
        raise _problem(
            source, number, f"a checkpoint's usage must hold integers from 0 to {MAX_SEQ}"
        )
    try:
        for index, item in enumerate(items):
            prepare_item(item, index)
        if model is not None:
            check_name(model, "checkpoint model")
    except InvalidInputError as error:
        raise _problem(source, number, str(error)) from None
    created = body.get("created_at")
    stamp = _parse_stamp(created, "created_at", source, number)
    return Checkpoint(
        id=uuid.uuid4(),
        upto_seq=upto,
        items=tuple(items),
        model=model,
        usage=Usage(*(int(n or 0) for n in counts)),
        created_at=stamp,
    )


USAGE_KEYS = ("requests", "input_tokens", "output_tokens", "total_tokens")
