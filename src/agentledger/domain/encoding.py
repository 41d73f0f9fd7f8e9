"""Turning Python values into what the database can hold, exactly and reversibly.

Two rules live here and nowhere else:

* **Strict JSON.** Values are encoded with ``allow_nan=False`` and must be valid UTF-8 (no lone
  surrogates), so anything the database stores can be read back by any JSON reader. Values that
  do not qualify raise :class:`~agentledger.errors.InvalidInputError` *before* a statement runs.
* **U+0000 survives PostgreSQL.** PostgreSQL ``text`` and ``jsonb`` cannot hold the NUL
  character, yet tool outputs contain it. On PostgreSQL, strings bound to ``text``/``jsonb``
  columns go through :func:`escape_nul`, a reversible escape that leaves every string without
  NUL or the escape character untouched (so indexes and search see the real text).
  ``json`` columns (the lossless SDK item) need no escape: the JSON text holds ``\\u0000``.

The sizes PostgreSQL accepts are checked here too, before anything is sent: each value
(:func:`check_size`) and each message's fields together in one statement
(:func:`check_message_size`); a batch larger than one statement is split into consecutive
runs (:func:`statement_runs`) that the caller sends in one transaction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentledger.errors import InvalidInputError, InvalidItemTypeError

#: Escape character for NUL on PostgreSQL: a private-use code point that ordinary text avoids.
ESCAPE = "\ue000"
_ESCAPED_NUL = ESCAPE + "0"
_ESCAPED_ESCAPE = ESCAPE + ESCAPE
_UNESCAPE = re.compile(ESCAPE + "(.)", re.DOTALL)

#: Nesting deeper than this is refused: decoding it later would risk RecursionError.
MAX_JSON_DEPTH = 512


def escape_nul(text: str) -> str:
    """Make ``text`` storable in a PostgreSQL ``text`` column; :func:`unescape_nul` reverses it."""
    if "\x00" not in text and ESCAPE not in text:
        return text
    return text.replace(ESCAPE, _ESCAPED_ESCAPE).replace("\x00", _ESCAPED_NUL)


def unescape_nul(text: str) -> str:
    """Reverse :func:`escape_nul`."""
    if ESCAPE not in text:
        return text
    return _UNESCAPE.sub(lambda match: ESCAPE if match.group(1) == ESCAPE else "\x00", text)


_JSON_ESCAPE_SEQUENCE = re.compile(r"\\(?:u0000|.)", re.DOTALL)


def escape_nul_in_json(text: str) -> str:
    """:func:`escape_nul` applied to every string inside JSON text written by :func:`dump_json`.

    Equivalent to decoding, mapping every string through :func:`escape_nul` and encoding
    again, without the round trip: ``\\u0000`` escape sequences become the escaped NUL, and the
    escape character (written raw by :func:`dump_json`) is doubled.
    """
    if "\\u0000" not in text and ESCAPE not in text:
        return text
    text = text.replace(ESCAPE, _ESCAPED_ESCAPE)
    return _JSON_ESCAPE_SEQUENCE.sub(
        lambda match: _ESCAPED_NUL if match.group(0) == "\\u0000" else match.group(0), text
    )


def map_strings(value: Any, transform: Any) -> Any:
    """Apply ``transform`` to every string (keys included) inside a decoded JSON value."""
    if isinstance(value, str):
        return transform(value)
    if isinstance(value, dict):
        return {transform(key): map_strings(item, transform) for key, item in value.items()}
    if isinstance(value, list):
        return [map_strings(item, transform) for item in value]
    return value


#: PostgreSQL's limit for one field (``text``, ``json``): 1 GB. Larger values are refused
#: before anything is sent, on every backend, so both store the same things.
MAX_FIELD_BYTES = 2**30 - 1
#: PostgreSQL's limit for one ``jsonb`` value (and so for any string inside it): 256 MB.
MAX_JSONB_BYTES = 2**28 - 1


def check_text(value: object, what: str, *, limit: int | None = None) -> str:
    """Return ``value`` if it is a ``str`` that UTF-8 can encode within ``limit`` bytes
    (default :data:`MAX_FIELD_BYTES`); raise a clear error otherwise."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    if value.isascii():  # no surrogates, one byte per character: nothing to encode
        check_size(len(value), what, MAX_FIELD_BYTES if limit is None else limit)
        return value
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as error:
        raise InvalidInputError(
            f"{what} contains a lone surrogate (U+{ord(value[error.start]):04X} at index "
            f"{error.start}); decode the source text correctly or replace it before storing"
        ) from None
    check_size(size, what, MAX_FIELD_BYTES if limit is None else limit)
    return value


def check_size(size: int, what: str, limit: int) -> None:
    """The one size rule: a value of ``size`` UTF-8 bytes must fit PostgreSQL's ``limit``."""
    if size > limit:
        raise InvalidInputError(
            f"{what} is {size:,} bytes as UTF-8, more than the {limit:,} bytes PostgreSQL can "
            "hold in one value; store large payloads elsewhere (e.g. object storage) and keep "
            "a reference in the message"
        )


#: PostgreSQL's limit for one protocol message from a client, ``PQ_LARGE_MESSAGE_LIMIT``
#: (``MaxAllocSize - 1``, the message's length word included). A statement's Bind message
#: carries all of its parameters, so everything one statement sends must fit: past it the
#: server logs "invalid message length" and drops the connection. (The arrays the server builds
#: from those parameters stay under ``MaxAllocSize`` as long as the message fits.)
MAX_STATEMENT_BYTES = 2**30 - 2
#: Kept free in every statement for what is not message fields: the protocol framing, the
#: statement's own parameters (session id, user id, agent name, times) and array headers.
STATEMENT_RESERVE_BYTES = 2**16
#: What a message adds to a statement besides its text: its 16-byte id and the 4-byte length
#: word of each of its seven array elements (see ``repositories._PG_APPEND``).
MESSAGE_OVERHEAD_BYTES = 16 + 7 * 4


def utf8_size(text: str) -> int:
    """Length of ``text`` in UTF-8 (no copy for ASCII text); ``text`` is valid Unicode."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def sent_text_size(text: str) -> int:
    """UTF-8 bytes of ``text`` as PostgreSQL receives it, after :func:`escape_nul`
    (U+0000 and U+E000 each grow by 3 bytes)."""
    size = utf8_size(text)
    if "\x00" in text or ESCAPE in text:
        size += 3 * (text.count("\x00") + text.count(ESCAPE))
    return size


def sent_json_size(text: str) -> int:
    """UTF-8 bytes of JSON text for a ``jsonb`` column as PostgreSQL receives it, after
    :func:`escape_nul_in_json`."""
    return utf8_size(escape_nul_in_json(text))


def statement_budget() -> int:
    """Bytes of message fields one statement can carry (read at every call)."""
    return MAX_STATEMENT_BYTES - STATEMENT_RESERVE_BYTES


def check_message_size(sizes: Mapping[str, int], what: str) -> int:
    """The combined rule: one message's fields *together* must fit one statement.

    ``sizes`` are the fields' UTF-8 bytes as PostgreSQL receives them (``0`` for a NULL). Each
    field may be under its own limit (:func:`check_size`) while the message is not: the SDK
    item repeats the content, so a 600 MB content is sent twice. Measured the same way on every
    backend, so both store the same things. Returns the message's share of a statement
    (:data:`MESSAGE_OVERHEAD_BYTES` included), which :func:`statement_runs` adds up.
    """
    total = MESSAGE_OVERHEAD_BYTES + sum(sizes.values())
    limit = statement_budget()
    if total > limit:
        fields = ", ".join(f"{name} {size:,}" for name, size in sizes.items() if size)
        raise InvalidInputError(
            f"{what} is {total:,} bytes as sent to the database (fields in UTF-8 bytes: "
            f"{fields}), more than the {limit:,} bytes PostgreSQL accepts in one statement "
            "(the SDK item repeats the content, so large content counts twice); store large "
            "payloads elsewhere (e.g. object storage) and keep a reference in the message"
        )
    return total


def statement_runs(sizes: Sequence[int]) -> list[range]:
    """Split consecutive messages of these sizes (:func:`check_message_size`) into the fewest
    runs, in order, whose sizes add up to at most :func:`statement_budget` each."""
    limit = statement_budget()
    runs: list[range] = []
    start = used = 0
    for index, size in enumerate(sizes):
        if index > start and used + size > limit:
            runs.append(range(start, index))
            start, used = index, 0
        used += size
    if start < len(sizes):
        runs.append(range(start, len(sizes)))
    return runs


def dump_json(value: Any, what: str, *, jsonb: bool = False, max_depth: int | None = None) -> str:
    """Encode ``value`` as strict JSON text, or raise :class:`InvalidInputError` saying why.

    Strict means it decodes back to an equal value: object keys must be strings (``json``
    would turn ``1`` into ``"1"``, and ``{1: .., "1": ..}`` would lose a value), tuples are
    refused (they would come back as lists), and so are NaN, Infinity, cycles and anything
    that is not JSON. ``jsonb``: the value goes to a ``jsonb`` column (256 MB at most rather
    than 1 GB). ``max_depth`` (default :data:`MAX_JSON_DEPTH`) bounds the nesting.
    """
    check_json_structure(value, what)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as error:
        if "ircular" in str(error):
            raise InvalidInputError(
                f"{what} contains itself (a circular reference), which JSON cannot represent"
            ) from None
        if "digits" in str(error):
            raise InvalidInputError(
                f"{what} contains an integer too long to write as text ({error}); store it as "
                "a string"
            ) from None
        raise InvalidInputError(
            f"{what} contains NaN or Infinity, which JSON cannot represent; use null or a "
            "string instead"
        ) from error
    except TypeError as error:
        raise InvalidItemTypeError(
            f"{what} is not JSON-serializable ({error}); convert it to dicts, lists, strings, "
            "numbers, booleans and None first"
        ) from error
    except RecursionError:
        raise InvalidInputError(
            f"{what} is nested too deeply to store; flatten it (at most {MAX_JSON_DEPTH} levels)"
        ) from None
    check_text(text, what, limit=MAX_JSONB_BYTES if jsonb else MAX_FIELD_BYTES)
    _check_depth(text, what, MAX_JSON_DEPTH if max_depth is None else max_depth)
    return text


def check_json_structure(value: Any, what: str) -> None:
    """Refuse what JSON would store differently from what it was given: a non-string object
    key, or a tuple. Iterative (no recursion limit) and visits each container once; the
    common case (plain dicts with ``str`` keys, lists, scalars) runs on exact type checks."""
    pending = [value]
    seen: set[int] = set()
    push, pop = pending.append, pending.pop
    while pending:
        current = pop()
        kind = type(current)
        if kind is dict or (kind is not list and isinstance(current, dict)):
            if id(current) in seen:
                continue
            seen.add(id(current))
            for key, item in current.items():
                if type(key) is not str and not isinstance(key, str):
                    raise InvalidItemTypeError(
                        f"{what} has a non-string key {key!r} ({type(key).__name__}); JSON "
                        "object keys are strings, so it would come back as a different key "
                        "(and keys like 1 and '1' would collide): use string keys"
                    )
                if type(item) not in _SCALARS:
                    push(item)
        elif kind is list or isinstance(current, list):
            if id(current) in seen:
                continue
            seen.add(id(current))
            for item in current:
                if type(item) not in _SCALARS:
                    push(item)
        elif isinstance(current, tuple):
            raise InvalidItemTypeError(
                f"{what} contains a tuple, which JSON stores as an array and gives back as a "
                "list; pass a list instead"
            )


#: Types that hold nothing to check (``json`` encodes them as they are, or refuses them).
_SCALARS = frozenset({str, int, float, bool, type(None)})


@dataclass(frozen=True, slots=True)
class DamagedJSON:
    """Stands in for stored JSON that cannot be decoded (a row damaged outside agentledger:
    invalid JSON text, or nesting too deep for Python). Reads leave such messages out and log
    a warning naming the session and seq, never the content (see docs/reliability.md)."""

    reason: str


def load_stored_json(text: str | bytes | None) -> Any:
    """Decode JSON read back from the database; the one place stored JSON is decoded.

    Ledger-made engines use it as their ``json_deserializer`` (the driver's JSON codec on
    asyncpg, the JSON type on SQLite), so one damaged row yields a :class:`DamagedJSON`
    instead of an exception that would make the whole session unreadable.
    """
    if text is None:
        return None
    try:
        return json.loads(text)
    except RecursionError:
        return DamagedJSON("nested too deeply to decode")
    except ValueError:
        return DamagedJSON("not valid JSON")


def load_json(text: str | bytes | None) -> Any:
    """Decode JSON text written by :func:`dump_json` (``None`` stays ``None``)."""
    if text is None:
        return None
    return json.loads(text)


def _check_depth(text: str, what: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON nested deeper than ``max_depth`` (cheap scan, strings skipped)."""
    if text.count("[") + text.count("{") <= max_depth:
        return
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                raise InvalidInputError(
                    f"{what} is nested more than {max_depth} levels deep; flatten it"
                )
        elif char in "]}":
            depth -= 1
