"""The transcript's live tail over a real server on a free loopback port: new messages arrive
rendered (and escaped) as events, a tool output names the call it answers, a reconnect with
Last-Event-ID resumes after what was seen, another user's session is not found."""

from __future__ import annotations

import asyncio

import httpx

from agentledger import Ledger
from tests.support.server import served
from tests.web.test_events import sse
from tests.web.ui.app import host_app
from tests.web.ui.hostile import SCRIPT

WAIT = 30.0


async def test_the_tail_sends_new_messages_rendered_and_resumes(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("alice", "A")
    await svc.add_message(session.id, "user", "before the stream")
    events_url = f"/ui/sessions/{session.id}/events"
    async with (
        served(host_app(ledger)) as base,
        httpx.AsyncClient(base_url=base, timeout=WAIT, headers={"x-user": "alice"}) as client,
    ):
        assert (await client.get(events_url, headers={"x-user": "bob"})).status_code == 404
        async with client.stream("GET", events_url, params={"after": 1}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert "default-src 'none'" in stream.headers["content-security-policy"]
            call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
            await svc.add_message(session.id, "assistant", SCRIPT, tool_calls=[call])
            events = sse(stream)
            first_id, first = await asyncio.wait_for(anext(events), WAIT)
            await svc.add_message(session.id, "tool", "the result", tool_call_id="c1")
            second_id, second = await asyncio.wait_for(anext(events), WAIT)
        assert (first_id, first["seq"]) == (2, 2)
        assert "&lt;script&gt;" in first["html"]
        assert "<script>" not in first["html"]
        assert 'data-slot-for="c1"' in first["html"]
        assert (second_id, second["tool_call_id"]) == (3, "c1")
        assert "the result" in second["html"]
        await svc.add_message(session.id, "user", "while away")
        resumed = {"Last-Event-ID": "2"}
        async with client.stream("GET", events_url, params={"after": 0}, headers=resumed) as again:
            later = sse(again)
            seen = [(await asyncio.wait_for(anext(later), WAIT))[1]["seq"] for _ in range(2)]
    assert seen == [3, 4]  # after the Last-Event-ID, not after ?after=0
