"""The HTTP API through httpx, mounted in a host app, on PostgreSQL and SQLite: each route
does what the service does, for the caller the host's ``current_user`` names."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from agentledger import Ledger
from agentledger.transcripts import loads_jsonl
from tests.web.conftest import as_user

ALICE = as_user("alice")


async def new_session(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/sessions", json={"agent_name": "Helper", **body}, headers=ALICE)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def append(
    client: httpx.AsyncClient, sid: str, *contents: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    messages = [{"role": "user", "content": content} for content in contents]
    return await client.post(
        f"/sessions/{sid}/messages",
        json={"messages": messages},
        headers={**ALICE, **(headers or {})},
    )


async def test_create_append_read_and_page(client: httpx.AsyncClient) -> None:
    created = await new_session(client, metadata={"project": "x"}, title="Trip")
    assert created["user_id"] == "alice"
    assert created["title"] == "Trip"
    assert created["last_seq"] == 0
    assert created["message_count"] == 0
    sid = created["id"]
    stored = await append(client, sid, *(f"m{n}" for n in range(1, 8)))
    assert stored.status_code == 201
    assert stored.json()["first_seq"] == 1
    assert stored.json()["last_seq"] == 7

    record = (await client.get(f"/sessions/{sid}", headers=ALICE)).json()
    assert record["last_seq"] == 7
    assert record["message_count"] == 7

    seen: list[str] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if after is not None:
            params["after_seq"] = after
        page = (await client.get(f"/sessions/{sid}/messages", params=params, headers=ALICE)).json()
        seen.extend(message["content"] for message in page["messages"])
        after = page["next_after_seq"]
        if after is None:
            break
    assert seen == [f"m{n}" for n in range(1, 8)]

    items = (await client.get(f"/sessions/{sid}/items", params={"limit": 2}, headers=ALICE)).json()
    assert items["items"] == [
        {"role": "user", "content": "m6"},
        {"role": "user", "content": "m7"},
    ]


async def test_idempotency_key_stores_a_batch_once(client: httpx.AsyncClient) -> None:
    sid = (await new_session(client))["id"]
    first = await append(client, sid, "a", "b", headers={"Idempotency-Key": "batch-1"})
    again = await append(client, sid, "a", "b", headers={"Idempotency-Key": "batch-1"})
    assert first.status_code == again.status_code == 201
    assert first.json()["created"] is True
    assert again.json()["created"] is False
    assert again.json()["first_seq"] == first.json()["first_seq"] == 1
    record = (await client.get(f"/sessions/{sid}", headers=ALICE)).json()
    assert record["last_seq"] == 2


async def test_if_match_appends_only_onto_the_last_seq_read(client: httpx.AsyncClient) -> None:
    sid = (await new_session(client))["id"]
    assert (await append(client, sid, "first", headers={"If-Match": "0"})).status_code == 201
    stale = await append(client, sid, "late", headers={"If-Match": '"0"'})
    assert stale.status_code == 409
    assert stale.headers["content-type"] == "application/problem+json"
    assert stale.json()["error"] == "StaleSessionError"
    assert stale.json()["last_seq"] == 1
    assert "retry-after" not in stale.headers  # the same call would fail the same way
    assert (await append(client, sid, "next", headers={"If-Match": "1"})).status_code == 201
    page = (await client.get(f"/sessions/{sid}/messages", headers=ALICE)).json()
    assert [m["content"] for m in page["messages"]] == ["first", "next"]


async def test_listing_pages_filters_and_title_search(client: httpx.AsyncClient) -> None:
    for number in range(5):
        await new_session(
            client,
            title=f"Trip {number}" if number % 2 else f"Work {number}",
            metadata={"n": number % 2},
        )
    ids: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/sessions", params=params, headers=ALICE)).json()
        ids.extend(summary["id"] for summary in page["sessions"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(ids) == len(set(ids)) == 5

    trips = (await client.get("/sessions", params={"title": "tRIP"}, headers=ALICE)).json()
    assert sorted(s["title"] for s in trips["sessions"]) == ["Trip 1", "Trip 3"]
    odd = (
        await client.get("/sessions", params={"metadata": json.dumps({"n": 1})}, headers=ALICE)
    ).json()
    assert sorted(s["title"] for s in odd["sessions"]) == ["Trip 1", "Trip 3"]
    percent = (await client.get("/sessions", params={"title": "%"}, headers=ALICE)).json()
    assert percent["sessions"] == []  # LIKE wildcards are searched for literally


async def test_patch_fork_rewind_delete(client: httpx.AsyncClient) -> None:
    sid = (await new_session(client, metadata={"keep": 1, "drop": 2}))["id"]
    await append(client, sid, "one", "two", "three")
    patched = await client.patch(
        f"/sessions/{sid}",
        json={"metadata": {"drop": None, "new": "v"}, "title": "T"},
        headers=ALICE,
    )
    assert patched.status_code == 200
    assert patched.json()["metadata"] == {"keep": 1, "new": "v"}
    assert patched.json()["title"] == "T"
    cleared = await client.patch(f"/sessions/{sid}", json={"clear_title": True}, headers=ALICE)
    assert cleared.json()["title"] is None

    fork = await client.post(f"/sessions/{sid}/fork", json={"at_seq": 2}, headers=ALICE)
    assert fork.status_code == 201
    assert fork.json()["last_seq"] == 2
    assert fork.json()["id"] != sid

    rewound = await client.post(f"/sessions/{sid}/rewind", json={"to_seq": 1}, headers=ALICE)
    assert rewound.json() == {"removed": 2}
    assert (await client.get(f"/sessions/{sid}", headers=ALICE)).json()["last_seq"] == 1

    assert (await client.delete(f"/sessions/{sid}", headers=ALICE)).status_code == 204
    assert (await client.get(f"/sessions/{sid}", headers=ALICE)).status_code == 404
    assert (await client.delete(f"/sessions/{sid}", headers=ALICE)).status_code == 404


async def test_export_streams_a_transcript_that_imports_back(
    client: httpx.AsyncClient, ledger: Ledger
) -> None:
    sid = (await new_session(client, title="Export me"))["id"]
    contents = [f"line {n} \x00 ünïcode" for n in range(1, 1204)]  # more than two pages
    for start in range(0, len(contents), 400):
        assert (await append(client, sid, *contents[start : start + 400])).status_code == 201
    async with client.stream(
        "GET", f"/sessions/{sid}/export", params={"format": "jsonl"}, headers=ALICE
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        text = "".join([chunk async for chunk in response.aiter_text()])
    transcript = loads_jsonl(text)
    assert [m.item["content"] for m in transcript.messages] == contents
    assert transcript.title == "Export me"
    direct = await ledger.service.export_session(sid)
    assert transcript == direct

    markdown = await client.get(
        f"/sessions/{sid}/export", params={"format": "markdown"}, headers=ALICE
    )
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text.startswith("# Export me")
    assert "## 1203 · User" in markdown.text


async def test_search_and_usage(client: httpx.AsyncClient, ledger: Ledger) -> None:
    from agentledger.records import Usage

    sid = (await new_session(client))["id"]
    await append(client, sid, "the quick brown fox", "lazy dogs sleep")
    hits = (await client.get("/search", params={"q": "fox"}, headers=ALICE)).json()
    assert [(hit["session_id"], hit["seq"]) for hit in hits["hits"]] == [(sid, 1)]
    assert (await client.get("/search", params={"q": "fox"}, headers=as_user("bob"))).json()[
        "hits"
    ] == []

    await ledger.service.record_usage(sid, Usage(1, 10, 5, 15))
    usage = (await client.get(f"/sessions/{sid}/usage", headers=ALICE)).json()
    assert usage == {"requests": 1, "input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    assert (await client.get("/usage", headers=ALICE)).json()["total_tokens"] == 15
    assert (await client.get("/usage", headers=as_user("bob"))).json()["total_tokens"] == 0


async def test_the_export_reads_page_by_page_never_the_whole_session(
    client: httpx.AsyncClient, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentledger.services.facade import SessionService
    from agentledger.web import export

    sid = (await new_session(client))["id"]
    await append(client, sid, *(f"m{n}" for n in range(1, 51)))
    reads: list[tuple[str, int | None]] = []
    real_page = SessionService.get_messages

    async def paged(self: SessionService, *args: Any, **kwargs: Any) -> Any:
        reads.append(("get_messages", kwargs.get("limit")))
        return await real_page(self, *args, **kwargs)

    async def whole(self: SessionService, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the export must not load the whole session")

    monkeypatch.setattr(export, "PAGE", 7)
    monkeypatch.setattr(SessionService, "get_messages", paged)
    monkeypatch.setattr(SessionService, "export_session", whole)
    monkeypatch.setattr(SessionService, "get_session", whole)
    for format in ("jsonl", "markdown"):
        reads.clear()
        response = await client.get(
            f"/sessions/{sid}/export", params={"format": format}, headers=ALICE
        )
        assert response.status_code == 200
        assert "m50" in response.text
        assert reads == [("get_messages", 7)] * 8  # 50 messages in pages of 7
