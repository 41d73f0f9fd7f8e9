"""Showing stored text safely: to a terminal, in JSON output, in Markdown.

Message content comes from users, models and tools. Shown raw, an ANSI escape sequence in it
can rewrite the operator's terminal (move the cursor, retitle the window, hide lines), and a
bidirectional-formatting character can make text read differently from what it is. These
helpers make such characters visible, and never change what is stored.
"""

from __future__ import annotations

import re

#: C0 controls, DEL, C1 controls, and Unicode's bidirectional formatting characters (plus the
#: line and paragraph separators, which some terminals and JavaScript treat as line ends).
_FORMATTING = "\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[\x00-\x1f{_FORMATTING}]")
_CONTROL_BUT_LINES = re.compile(f"[\x00-\x08\x0b-\x1f{_FORMATTING}]")
_SHORT_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\x00": "\\0", "\x1b": "\\e"}


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_text(text: str, *, keep_lines: bool = False) -> str:
    """``text`` with every control and bidi-formatting character written as an escape
    (``\\n``, ``\\e``, ``\\x9b``, ``\\u202e``); ``keep_lines`` leaves newlines and tabs as
    they are, for multi-line output."""
    pattern = _CONTROL_BUT_LINES if keep_lines else _CONTROL
    return pattern.sub(_escape, text)


_JSON_UNSAFE = re.compile(f"[{_FORMATTING}]")


def json_text(encoded: str) -> str:
    """JSON text with the characters ``json.dumps(..., ensure_ascii=False)`` leaves raw but a
    terminal acts on (DEL, C1 controls, bidi formatting, U+2028/U+2029) written as ``\\u``
    escapes: the same JSON value, safe to print. (``json`` already escapes C0 controls.)"""
    return _JSON_UNSAFE.sub(lambda match: f"\\u{ord(match.group(0)):04x}", encoded)


#: How many characters of the first user message a session picker shows for an untitled session.
TITLE_PREVIEW_CHARS = 80

_CONTROL_TO_SPACE = dict.fromkeys((*range(0x20), 0x7F), " ")


def picker_title(explicit: str | None, first_user_text: str | None) -> str | None:
    """A session picker's label: the explicit title, else the first user message's start, on
    one line (whitespace runs and control characters, U+0000 included, become one space) and
    at most :data:`TITLE_PREVIEW_CHARS` characters."""
    if explicit is not None:
        return explicit
    if first_user_text is None:
        return None
    text = first_user_text
    if text.isprintable():  # the common case: only " " separates words, nothing to translate
        preview = text.strip(" ") if "  " not in text else " ".join(text.split())
    else:
        preview = " ".join(text.translate(_CONTROL_TO_SPACE).split())
    if len(preview) > TITLE_PREVIEW_CHARS:
        preview = preview[: TITLE_PREVIEW_CHARS - 1].rstrip() + "…"
    return preview or None
