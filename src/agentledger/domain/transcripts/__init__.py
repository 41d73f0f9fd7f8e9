"""Session transcripts: the JSONL export/import format and a readable Markdown rendering.

JSONL (``agentledger.transcript`` version 1), one JSON object per line, UTF-8:

* line 1, the header: ``{"format": "agentledger.transcript", "version": 1, "session": {...},
  "message_count": N}`` with the session's ``id``, ``user_id``, ``agent_name``, ``title``,
  ``metadata``, ``created_at``, ``updated_at``, ``archived_at`` and ``trimmed_seq`` (messages
  start at ``trimmed_seq + 1``; retention may have trimmed the ones before);
* then one line per message, in order: ``{"seq": n, "created_at": "...", "item": {...}}`` where
  ``item`` is the stored item exactly (what ``get_items`` returns).

It is lossless: every stored item and every character comes back exactly. Text is written as
UTF-8; control characters, bidirectional-formatting characters and U+2028/U+2029 are written
as ``\\u`` escapes (the same JSON value, safe to print to a terminal). Only ``\\n`` separates
lines. ``message_count`` lets a reader tell a complete file from a truncated one. An item at
the deepest nesting agentledger stores (:data:`~agentledger.domain.encoding.MAX_JSON_DEPTH`) still
exports and imports: the line around it may be that much deeper.

This module is pure: no database. The service builds a :class:`SessionTranscript`
(``export_session``) and stores one (``import_session``).
"""

from agentledger.domain.transcripts.jsonl import (
    dumps_jsonl,
    jsonl_lines,
    loads_jsonl,
    read_jsonl,
    write_jsonl,
)
from agentledger.domain.transcripts.markdown import render_markdown
from agentledger.domain.transcripts.model import (
    FORMAT,
    MAX_SEQ,
    VERSION,
    SessionTranscript,
    TranscriptMessage,
    check_transcript,
    not_after,
)

__all__ = [
    "FORMAT",
    "MAX_SEQ",
    "VERSION",
    "SessionTranscript",
    "TranscriptMessage",
    "check_transcript",
    "dumps_jsonl",
    "jsonl_lines",
    "loads_jsonl",
    "not_after",
    "read_jsonl",
    "render_markdown",
    "write_jsonl",
]
