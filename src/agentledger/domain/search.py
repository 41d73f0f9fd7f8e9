"""Full-text search over a user's history: query terms, snippets and page cursors.

PostgreSQL does the matching and ranking itself: ``conversation_messages.search_vector`` is a
generated ``to_tsvector('simple', content)`` with a GIN index, and the user's text goes through
``websearch_to_tsquery('simple', :query)`` as a bound parameter, so no query text can inject
tsquery operators or SQL, and no input makes the query fail. SQLite has no text search here; it
runs a fallback over the same web-search syntax, parsed by :func:`parse_query`:

* words are ANDed; ``"quoted words"`` are one phrase (matched as a substring);
* ``-word`` / ``-"a phrase"`` excludes messages containing it;
* ``or`` between terms gives alternatives (``a b or c`` is ``(a AND b) OR c``, as in
  PostgreSQL, where AND binds tighter).

Each term is a case-insensitive (ASCII) ``LIKE '%term%'`` with ``%``, ``_`` and ``\\`` escaped,
and the rank is the number of occurrences of the wanted terms: deterministic and cheap, not a
relevance model. Both backends order hits by rank, then ``(session_id, seq)``.

Pages use a keyset cursor (:mod:`agentledger.domain.cursors`) over ``(rank, session_id, seq)``
rather than an offset: a message's
rank depends only on its own content, so pages stay consistent while new messages arrive (an
offset would repeat or skip hits when a new match ranks above the current page). The cursor also
carries a fingerprint of the query, so a cursor is refused when reused with another query.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from agentledger.errors import InvalidInputError

#: Longest accepted query, in characters.
MAX_QUERY_LENGTH = 1000
#: Characters of context on each side of the first match in a snippet.
SNIPPET_CONTEXT = 60

_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')
_EDGE_PUNCTUATION = re.compile(r"^[^\w]+|[^\w]+$")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True, slots=True)
class TermGroup:
    """One alternative of a query: every ``include`` term and none of the ``exclude`` terms."""

    include: tuple[str, ...]
    exclude: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SearchTerms:
    """A query parsed into alternatives (``or``) of term groups."""

    text: str
    groups: tuple[TermGroup, ...]

    @property
    def wanted(self) -> tuple[str, ...]:
        """Every distinct term that a hit may contain (for ranking and snippets)."""
        seen: dict[str, None] = {}
        for group in self.groups:
            for term in group.include:
                seen.setdefault(ascii_lower(term))
        return tuple(seen)


def ascii_lower(text: str) -> str:
    """Lower-case A-Z only, as SQLite's ``lower()`` and ``LIKE`` do without ICU."""
    return text.translate(_ASCII_LOWER)


def clean_query(query: object) -> str:
    """The query text to search for, or :class:`InvalidInputError` saying what is wrong."""
    if not isinstance(query, str):
        raise InvalidInputError(f"the search query must be a string, got {type(query).__name__}")
    if len(query) > MAX_QUERY_LENGTH:
        raise InvalidInputError(
            f"the search query is {len(query)} characters long; shorten it to at most "
            f"{MAX_QUERY_LENGTH}"
        )
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            "the search query contains a lone surrogate; pass properly decoded text"
        ) from None
    # U+0000 cannot be sent to PostgreSQL as text, and no word contains it.
    return query.replace("\x00", " ").strip()


def parse_query(query: object) -> SearchTerms:
    """Parse web-search syntax (see the module docstring); refuses a query without any term."""
    text = clean_query(query)
    groups: list[TermGroup] = []
    include: list[str] = []
    exclude: list[str] = []
    for match in _TOKEN.finditer(text):
        negated, phrase, word = match.group(1), match.group(2), match.group(3)
        if word is not None and ascii_lower(word) == "or":
            if include or exclude:
                groups.append(TermGroup(tuple(include), tuple(exclude)))
                include, exclude = [], []
            continue
        if phrase is not None:
            term = " ".join(phrase.split())
            target = exclude if negated else include
        else:
            assert word is not None
            target = include
            if word.startswith("-") and len(word) > 1:
                word, target = word[1:], exclude
            term = _EDGE_PUNCTUATION.sub("", word)
        if term:
            target.append(term)
    if include or exclude:
        groups.append(TermGroup(tuple(include), tuple(exclude)))
    if not groups:
        raise InvalidInputError(
            "the search query has no words to look for; pass at least one word, e.g. 'invoice'"
        )
    return SearchTerms(text, tuple(groups))


def escape_like(text: str) -> str:
    """``text`` for ``LIKE ... ESCAPE '\\'`` with its wildcards (``%``, ``_``) and the escape
    character taken literally: the one LIKE escaper (search terms, idempotency key prefixes)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def like_pattern(term: str) -> str:
    """``%term%``: ``term`` anywhere, taken literally."""
    return f"%{escape_like(term)}%"


def snippet(content: str, terms: tuple[str, ...], context: int = SNIPPET_CONTEXT) -> str:
    """The part of ``content`` around the first occurrence of any term (whitespace collapsed).

    Falls back to the start of the content when no term occurs literally (PostgreSQL matched
    a word the parser split differently, or the query only excludes words).
    """
    first: tuple[int, int] | None = None
    for term in terms:
        found = re.search(re.escape(term), content, re.IGNORECASE) if term else None
        if found is not None and (first is None or found.start() < first[0]):
            first = (found.start(), found.end())
    if first is None:
        start, end = 0, min(len(content), 2 * context)
    else:
        start, end = max(0, first[0] - context), min(len(content), first[1] + context)
    text = " ".join(content[start:end].split())
    prefix = "…" if start > 0 else ""
    suffix = "…" if end < len(content) else ""
    return f"{prefix}{text}{suffix}"


# -- cursors -------------------------------------------------------------------------------------


def query_fingerprint(
    user_id: str, query: str, agent_name: str | None, include_archived: bool
) -> str:
    """Identity of a search (whose, what, where), so a cursor is only used with the search
    that made it."""
    raw = json.dumps([user_id, query, agent_name, include_archived], ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:16]
