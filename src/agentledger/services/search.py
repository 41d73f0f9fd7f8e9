"""Full-text search over one user's history, one query per page."""

from __future__ import annotations

from agentledger.domain import cursors
from agentledger.domain.records import SearchHit, SearchPage
from agentledger.domain.search import parse_query, query_fingerprint, snippet
from agentledger.domain.validation import MAX_PAGE_SIZE, check_limit, check_name
from agentledger.errors import InvalidInputError
from agentledger.services.base import ServiceBase, operation


class Search(ServiceBase):
    """The search use case."""

    @operation()
    async def search(
        self,
        user_id: str,
        query: str,
        *,
        limit: int = 20,
        cursor: str | None = None,
        agent_name: str | None = None,
        include_archived: bool = False,
    ) -> SearchPage:
        """Full-text search over ``user_id``'s messages, best match first, one query per page.

        ``query`` uses web-search syntax (words, ``"a phrase"``, ``-excluded``, ``or``) and is
        always a bound parameter: PostgreSQL parses it with ``websearch_to_tsquery('simple',
        ...)`` and ranks with ``ts_rank``; SQLite matches case-insensitive substrings and ranks
        by occurrences (see :mod:`agentledger.domain.search`). Archived sessions are left out
        unless ``include_archived``. Pass a page's ``next_cursor`` (with the same query and
        filters) for the next page.
        """
        user_id = check_name(user_id, "user_id")
        terms = parse_query(query)
        checked = check_limit(limit)
        if checked is None or not 1 <= checked <= MAX_PAGE_SIZE:
            raise InvalidInputError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
        agent = None if agent_name is None else check_name(agent_name, "agent_name")
        fingerprint = query_fingerprint(user_id, terms.text, agent, bool(include_archived))
        after = None if cursor is None else cursors.decode_search(cursor, fingerprint)
        async with self._uow(autocommit=True) as uow:
            rows = await uow.search.search(
                user_id,
                terms,
                limit=checked + 1,
                after=after,
                agent_name=agent,
                include_archived=bool(include_archived),
            )
        hits = tuple(
            SearchHit(
                session_id=row.session_id,
                seq=row.seq,
                role=row.role,
                content=row.content,
                snippet=snippet(row.content, terms.wanted),
                rank=float(row.rank),
                created_at=row.created_at,
                agent_name=row.agent_name,
                item_type=row.item_type,
                framework=row.framework,
            )
            for row in rows[:checked]
        )
        next_cursor = None
        if len(rows) > checked:
            last = hits[-1]
            next_cursor = cursors.encode_search(last.rank, last.session_id, last.seq, fingerprint)
        return SearchPage(hits, next_cursor)
