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
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInputError

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


def dump_json(value: Any, what: str, *, jsonb: bool = False) -> str:
    """Encode ``value`` as strict JSON text, or raise :class:`InvalidInputError` saying why.

    ``jsonb``: the value goes to a ``jsonb`` column (256 MB at most rather than 1 GB)."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as error:
        raise InvalidInputError(
            f"{what} contains NaN or Infinity, which JSON cannot represent; use null or a "
            "string instead"
        ) from error
    except TypeError as error:
        raise InvalidInputError(
            f"{what} is not JSON-serializable ({error}); convert it to dicts, lists, strings, "
            "numbers, booleans and None first"
        ) from error
    except RecursionError:
        raise InvalidInputError(
            f"{what} is nested too deeply to store; flatten it (at most {MAX_JSON_DEPTH} levels)"
        ) from None
    check_text(text, what, limit=MAX_JSONB_BYTES if jsonb else MAX_FIELD_BYTES)
    _check_depth(text, what)
    return text


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


def _check_depth(text: str, what: str) -> None:
    """Refuse JSON nested deeper than :data:`MAX_JSON_DEPTH` (cheap scan, strings skipped)."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
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
            if depth > MAX_JSON_DEPTH:
                raise InvalidInputError(
                    f"{what} is nested more than {MAX_JSON_DEPTH} levels deep; flatten it"
                )
        elif char in "]}":
            depth -= 1
