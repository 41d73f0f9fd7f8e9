"""The transcript browser's pages, through a host app, on PostgreSQL and SQLite: what they
show, and that hostile content stays inert text."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest

from agentledger import Ledger, SessionService
from agentledger.domain.records import Usage
from agentledger.web.ui.security import CONTENT_SECURITY_POLICY
from tests.web.ui.app import browser
from tests.web.ui.hostile import (
    ANSI,
    FORGED,
    HOSTILE_TEXTS,
    IMG,
    MEGABYTE,
    SCRIPT,
    assert_inert,
    assert_labelled,
)


async def hostile_session(ledger: Ledger, user: str = "alice") -> uuid.UUID:
    svc = ledger.service
    session = await svc.create_session(user, f"agent {SCRIPT}", metadata={"note": IMG})
    for text in HOSTILE_TEXTS:
        await svc.add_message(session.id, "user", text)
    await svc.add_message(
        session.id,
        "assistant",
        "",
        tool_calls=[
            {"id": "call-1", "type": "function", "function": {"name": IMG, "arguments": FORGED}}
        ],
    )
    await svc.add_message(session.id, "tool", MEGABYTE, tool_call_id="call-1")
    return session.id


async def test_every_page_renders_hostile_content_as_inert_text(ledger: Ledger) -> None:
    sid = await hostile_session(ledger)
    await ledger.service.record_usage(sid, Usage(1, 10, 5, 15))
    async with browser(ledger) as client:
        for path in ("/ui/", f"/ui/sessions/{sid}", "/ui/usage", "/ui/?q=alert"):
            page = await client.get(path)
            assert page.status_code == 200, path
            assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert page.headers["x-content-type-options"] == "nosniff"
            assert page.headers["content-type"].startswith("text/html")
            assert_inert(page.text)
            assert_labelled(page.text)
        transcript = (await client.get(f"/ui/sessions/{sid}")).text
    # The text itself is there, escaped: shown, not obeyed.
    assert "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;" in transcript
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in transcript
    assert "&lt;/pre&gt;&lt;/article&gt;&lt;h1&gt;Signed in as admin&lt;/h1&gt;" in transcript
    # ANSI and bidi controls are visible escapes.
    assert "\\e[31mred\\e[0m \\e]0;retitled\\x07 \\u202eevil" in transcript
    assert ANSI not in transcript


async def test_a_megabyte_output_is_cut_and_served_whole_as_plain_text(ledger: Ledger) -> None:
    sid = await hostile_session(ledger)
    async with browser(ledger) as client:
        page = await client.get(f"/ui/sessions/{sid}")
        assert len(page.content) < 100_000
        assert "Showing 4096 of 1000029 characters." in page.text
        link = re.search(r'href="([^"]+/messages/6)">Show all</a>', page.text)
        assert link is not None
        whole = await client.get(link.group(1))
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "text/plain; charset=utf-8"
    assert whole.headers["x-content-type-options"] == "nosniff"
    assert whole.text == MEGABYTE


async def test_megabyte_arguments_are_cut_too(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("alice", "Helper")
    big = {"id": "c1", "type": "function", "function": {"name": "w", "arguments": MEGABYTE}}
    await svc.add_message(session.id, "assistant", "", tool_calls=[big])
    async with browser(ledger) as client:
        page = (await client.get(f"/ui/sessions/{session.id}")).text
    assert len(page) < 100_000
    assert "Arguments cut at 4096 of 1000029 characters" in page
    assert_inert(page)


async def test_a_tool_output_is_shown_under_its_call(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("alice", "Helper")
    await svc.add_message(session.id, "user", "list files")
    call = {"id": "c7", "type": "function", "function": {"name": "ls", "arguments": "{}"}}
    await svc.add_message(session.id, "assistant", "", tool_calls=[call])
    await svc.add_message(session.id, "tool", "a.txt b.txt", tool_call_id="c7")
    await svc.add_message(session.id, "assistant", "Two files.")
    async with browser(ledger) as client:
        page = (await client.get(f"/ui/sessions/{session.id}")).text
    details = page.split('<details class="tool-call">')[1].split("</details>")[0]
    assert "<code>ls</code> · output #3" in details
    assert "a.txt b.txt" in details
    assert page.count("a.txt b.txt") == 1  # not listed a second time on its own
    assert page.index("a.txt b.txt") < page.index("Two files.")


async def test_another_users_session_is_not_found(ledger: Ledger) -> None:
    sid = await hostile_session(ledger, user="alice")
    async with browser(ledger, user="bob") as client:
        for path in (f"/ui/sessions/{sid}", f"/ui/sessions/{sid}/messages/1"):
            assert (await client.get(path)).status_code == 404, path
        export = await client.get(f"/ui/sessions/{sid}/export?format=jsonl")
        assert export.status_code == 404
        listing = await client.get("/ui/")
    assert str(sid) not in listing.text
    assert "No sessions" in listing.text


async def test_the_list_pages_by_cursor_and_filters_by_agent_and_metadata(ledger: Ledger) -> None:
    svc = ledger.service
    for number in range(55):
        session = await svc.create_session(
            "alice", "Coder" if number % 5 else "Planner", metadata={"team": number % 2 == 0}
        )
        await svc.add_message(session.id, "user", f"task number {number}")
        if number % 10 == 0:
            await svc.set_title(session.id, f"Weekly <review> {number}")
    async with browser(ledger) as client:
        first = (await client.get("/ui/")).text
        assert first.count('data-label="Title"') == 50
        assert "task number 54" in first
        assert "Weekly &lt;review&gt; 50" in first
        assert "task number 4<" not in first
        older = re.search(r'<a rel="next" href="([^"]+)">Older sessions</a>', first)
        assert older is not None
        second = (await client.get(older.group(1).replace("&amp;", "&"))).text
        assert second.count('data-label="Title"') == 5
        assert "Weekly &lt;review&gt; 0<" in second
        assert 'rel="next"' not in second
        planners = (await client.get("/ui/?agent=Planner")).text
        assert planners.count('data-label="Title"') == 11
        team = (await client.get("/ui/", params={"meta": "team=true"})).text
        assert team.count('data-label="Title"') == 28
        both = (await client.get("/ui/", params={"agent": "Planner", "meta": "team=true"})).text
        assert both.count('data-label="Title"') == 6
        titled = (await client.get("/ui/", params={"title": "REVIEW>"})).text
        assert titled.count('data-label="Title"') == 6
        assert "Weekly &lt;review&gt; 50" in titled


async def test_search_links_to_the_message(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("alice", "Helper")
    await svc.add_message(session.id, "user", "where is the giraffe?")
    await svc.add_message(session.id, "assistant", "In the zoo.")
    async with browser(ledger) as client:
        page = (await client.get("/ui/", params={"q": "giraffe"})).text
        assert f'/ui/sessions/{session.id}?after=0#m1"' in page
        assert "where is the giraffe?" in page
        assert "zoo" not in page
        nothing = (await client.get("/ui/", params={"q": "elephant"})).text
    assert "No message matches." in nothing


async def test_transcript_pages_forward_and_back(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("alice", "Helper")
    await svc.add_messages(session.id, [{"role": "user", "content": f"m{n}"} for n in range(250)])
    async with browser(ledger) as client:
        first = (await client.get(f"/ui/sessions/{session.id}")).text
        assert 'id="m1"' in first
        assert 'id="m100"' in first
        assert 'id="m101"' not in first
        assert f"/ui/sessions/{session.id}?after=100" in first
        assert "data-events" not in first  # not the end: no live tail here
        latest = (await client.get(f"/ui/sessions/{session.id}", params={"before": 2**62})).text
        assert 'id="m151"' in latest
        assert 'id="m250"' in latest
        assert 'id="m150"' not in latest
        assert f"/ui/sessions/{session.id}/events?after=250" in latest
        assert f"/ui/sessions/{session.id}?before=151" in latest


async def test_checkpoints_metadata_and_usage_per_turn_are_shown(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("alice", "Helper", metadata={"ticket": "T-1"})
    await svc.add_messages(session.id, [{"role": "user", "content": f"m{n}"} for n in range(4)])
    await svc.add_checkpoint(
        session.id, [{"role": "user", "content": f"summary {SCRIPT}"}], upto_seq=3, model="mini"
    )
    await svc.record_usage(session.id, Usage(1, 100, 20, 120))
    await svc.record_usage(session.id, Usage(2, 300, 40, 340))
    async with browser(ledger) as client:
        page = (await client.get(f"/ui/sessions/{session.id}")).text
    assert_inert(page)
    assert "Checkpoint: messages up to #3 compacted by mini" in page
    assert "summary &lt;script&gt;" in page
    assert page.index('id="m3"') < page.index('id="cp3"') < page.index('id="m4"')
    assert "<dt>ticket</dt><dd>T-1</dd>" in page
    assert "460 tokens (400 in, 60 out) over 3 requests." in page
    assert "Per turn (2)" in page


async def test_fork_and_rewind_need_the_csrf_token(ledger: Ledger) -> None:
    svc = ledger.service
    session = await svc.create_session("alice", "Helper")
    await svc.add_messages(session.id, [{"role": "user", "content": f"m{n}"} for n in range(5)])
    async with browser(ledger) as client:
        page = (await client.get(f"/ui/sessions/{session.id}")).text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None
        fork_url = f"/ui/sessions/{session.id}/fork"
        assert (await client.post(fork_url, data={"at_seq": "2"})).status_code == 403
        forged = {"at_seq": "2", "csrf_token": "x" * 43}
        assert (await client.post(fork_url, data=forged)).status_code == 403
        forked = await client.post(fork_url, data={"at_seq": "2", "csrf_token": token.group(1)})
        assert forked.status_code == 303
        new_id = forked.headers["location"].rsplit("/", 1)[1]
        whole = await client.post(fork_url, data={"at_seq": "", "csrf_token": token.group(1)})
        assert whole.status_code == 303
        whole_id = whole.headers["location"].rsplit("/", 1)[1]
        rewind_url = f"/ui/sessions/{session.id}/rewind"
        refused = await client.post(rewind_url, data={"to_seq": "1"})
        assert refused.status_code == 403
        rewound = await client.post(
            rewind_url, data={"to_seq": "3", "confirm": "on", "csrf_token": token.group(1)}
        )
        assert rewound.status_code == 303
        beyond = await client.post(
            rewind_url, data={"to_seq": "9", "confirm": "on", "csrf_token": token.group(1)}
        )
        assert beyond.status_code == 400
        assert_inert(beyond.text)
    assert len(await svc.get_messages(whole_id)) == 5
    fork_page = await svc.get_messages(new_id)
    assert [m.content for m in fork_page] == ["m0", "m1"]
    assert [m.content for m in await svc.get_messages(session.id)] == ["m0", "m1", "m2"]


@pytest.mark.parametrize("form", ["jsonl", "markdown"])
async def test_export_downloads_the_transcript(ledger: Ledger, form: str) -> None:
    sid = await hostile_session(ledger)
    async with browser(ledger) as client:
        response = await client.get(f"/ui/sessions/{sid}/export", params={"format": form})
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("attachment;")
    if form == "jsonl":
        from agentledger.transcripts import loads_jsonl

        transcript = loads_jsonl(response.text)
        assert transcript.messages[-1].item["output"] == MEGABYTE
    else:
        assert response.headers["content-type"] == "text/markdown; charset=utf-8"


async def test_the_usage_chart_draws_tokens_per_agent(ledger: Ledger) -> None:
    svc = ledger.service
    coder = await svc.create_session("alice", "Coder")
    planner = await svc.create_session("alice", f"Planner {SCRIPT}")
    await svc.record_usage(coder.id, Usage(1, 1000, 234, 1234))
    await svc.record_usage(coder.id, Usage(1, 10, 10, 20))
    await svc.record_usage(planner.id, Usage(1, 50, 50, 100))
    other = await svc.create_session("bob", "Coder")
    await svc.record_usage(other.id, Usage(1, 9000, 0, 9000))
    async with browser(ledger) as client:
        page = (await client.get("/ui/usage", params={"days": 7})).text
    assert_inert(page)
    assert page.count("<polyline") == 2
    assert "Coder: 1254 tokens" in page
    assert "Planner &lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;: 100 tokens" in page
    assert "9000" not in page.split("<figure")[1]  # bob's usage is not alice's chart
    assert 'role="img"' in page
    assert '<title id="chart-title">' in page


async def test_bad_ids_and_parameters_are_plain_errors(ledger: Ledger) -> None:
    async with browser(ledger) as client:
        missing = await client.get(f"/ui/sessions/{uuid.uuid4()}")
        garbage = await client.get("/ui/sessions/not-a-uuid")
        bad_seq = await client.get(f"/ui/sessions/{uuid.uuid4()}", params={"after": "x"})
        bad_cursor = await client.get("/ui/", params={"cursor": "<script>"})
    assert missing.status_code == 404
    assert garbage.status_code == 404
    assert bad_seq.status_code == 400
    assert bad_cursor.status_code == 400
    for response in (missing, garbage, bad_seq, bad_cursor):
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


async def test_archived_sessions_are_listed_on_request(ledger: Ledger) -> None:
    svc = ledger.service
    old = SessionService(ledger.unit_of_work, clock=lambda: datetime(2020, 1, 1, tzinfo=UTC))
    idle = await old.create_session("alice", "support")
    await old.add_message(idle.id, "user", "an old question")
    fresh = await svc.create_session("alice", "support")
    await svc.add_message(fresh.id, "user", "a new question")
    await svc.apply_retention({"support": {"days": 30, "archive": True}})
    async with browser(ledger) as client:
        default = (await client.get("/ui/")).text
        everything = (await client.get("/ui/", params={"archived": "1"})).text
        found = (await client.get("/ui/", params={"q": "old", "archived": "1"})).text
        hidden = (await client.get("/ui/", params={"q": "old"})).text
    assert "a new question" in default
    assert "an old question" not in default
    assert "an old question" in everything
    assert everything.count('<span class="archived">archived</span>') == 1
    assert "an old question" in found
    assert "No message matches." in hidden
