"""What the benchmark stores: realistic Agents SDK turns, and fast bulk builders in plain SQL.

A *turn* is what ``Runner.run`` appends after a model call without tools: the user's input item
and the assistant's output message (about 1 KB of JSON together). Large histories are built
server-side with ``INSERT ... SELECT generate_series`` so that building 1,000,000 messages takes
seconds, not the hours a turn-by-turn build would.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

USER_TEXT = (
    "Can you summarise what we decided about the quarterly report, and list the open action "
    "items with their owners? Keep it short, please."
)
ASSISTANT_TEXT = (
    "Here is the summary of the quarterly report discussion. We agreed to move the revenue "
    "section before the cost analysis, to present the churn numbers per region rather than "
    "globally, and to add a short appendix on the pricing experiment that ran in March. Open "
    "action items: Alice drafts the revised revenue section by Thursday; Bob re-runs the churn "
    "query with the new regional split and shares the notebook; Carol collects the pricing "
    "experiment results and writes the appendix; Dan reviews the whole document on Monday and "
    "circulates it to the leadership team. The next sync is scheduled for Tuesday at 10:00, "
    "where we will review the draft together and decide on the final charts."
)


def user_item(turn: int) -> dict[str, Any]:
    return {"role": "user", "content": f"{USER_TEXT} (turn {turn})"}


def assistant_item(turn: int) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [
            {"type": "output_text", "text": ASSISTANT_TEXT, "annotations": [], "logprobs": []}
        ],
    }


def turn_items(turn: int) -> list[dict[str, Any]]:
    """One turn: a user item and an assistant item."""
    return [user_item(turn), assistant_item(turn)]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# Templates for bulk builds; '#' is replaced by the message's position.
_USER_JSON = _compact({"role": "user", "content": f"{USER_TEXT} (turn #)"})
_ASSISTANT_JSON = _compact(
    {
        "id": "msg_#",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [
            {"type": "output_text", "text": ASSISTANT_TEXT, "annotations": [], "logprobs": []}
        ],
    }
)

# -- agentledger's schema ------------------------------------------------------------------------


async def fill_ledger_sessions(
    connection: asyncpg.Connection,
    sessions: list[tuple[uuid.UUID, str, int]],
    *,
    idle_days: float = 0.0,
) -> None:
    """Create agentledger sessions ``(id, user_id, n_messages)`` with their histories.

    Message ``g`` is alternately a user and an assistant item with distinct timestamps, as if
    each had been appended one second after the previous; the session was last updated
    ``idle_days`` ago.
    """
    await connection.execute(
        """
        INSERT INTO agent_sessions (id, user_id, agent_name, metadata, created_at, updated_at,
                                    last_seq)
        SELECT id, user_id, 'bench', '{}',
               now() - make_interval(days => $4::int) - make_interval(secs => n),
               now() - make_interval(days => $4::int), n
        FROM unnest($1::uuid[], $2::text[], $3::bigint[]) AS t(id, user_id, n)
        """,
        [s[0] for s in sessions],
        [s[1] for s in sessions],
        [s[2] for s in sessions],
        round(idle_days),
    )
    await connection.execute(
        """
        INSERT INTO conversation_messages
            (session_id, seq, id, role, content, item_type, item, created_at)
        SELECT s.id, g, gen_random_uuid(),
               CASE WHEN g % 2 = 1 THEN 'user' ELSE 'assistant' END,
               CASE WHEN g % 2 = 1 THEN $1 || ' (turn ' || g || ')' ELSE $2 END,
               'message',
               CAST(replace(CASE WHEN g % 2 = 1 THEN $3 ELSE $4 END, '#', g::text) AS json),
               s.updated_at - make_interval(secs => s.last_seq - g)
        FROM agent_sessions s, generate_series(1, s.last_seq) g
        WHERE s.id = ANY($5::uuid[])
        """,
        USER_TEXT,
        ASSISTANT_TEXT,
        _USER_JSON,
        _ASSISTANT_JSON,
        [s[0] for s in sessions],
    )


async def add_empty_ledger_sessions(
    connection: asyncpg.Connection, user_id: str, count: int
) -> None:
    """``count`` sessions without messages for ``user_id``, updated over the past days."""
    await connection.execute(
        """
        INSERT INTO agent_sessions (id, user_id, agent_name, metadata, created_at, updated_at,
                                    last_seq)
        SELECT gen_random_uuid(), $1, 'bench', '{"topic": "listing"}',
               now() - make_interval(secs => g * 60), now() - make_interval(secs => g * 37), 0
        FROM generate_series(1, $2::int) g
        """,
        user_id,
        count,
    )


# -- the Agents SDK's SQLAlchemySession schema (the peer) -------------------------------------


async def fill_peer_session(connection: asyncpg.Connection, session_id: str, count: int) -> None:
    """An SDK ``SQLAlchemySession`` history of ``count`` items, stored as the SDK stores them
    (``json.dumps`` with ``ensure_ascii=True``, one row per item, increasing ids)."""
    await connection.execute(
        "INSERT INTO agent_sessions (session_id, created_at, updated_at) "
        "VALUES ($1, now()::timestamp, now()::timestamp)",
        session_id,
    )
    await connection.execute(
        """
        INSERT INTO agent_messages (session_id, message_data, created_at)
        SELECT $1, replace(CASE WHEN g % 2 = 1 THEN $2 ELSE $3 END, '#', g::text),
               (now() - make_interval(secs => $4::int - g))::timestamp
        FROM generate_series(1, $4::int) g
        ORDER BY g
        """,
        session_id,
        json.dumps(json.loads(_USER_JSON), separators=(",", ":")),
        json.dumps(json.loads(_ASSISTANT_JSON), separators=(",", ":")),
        count,
    )
