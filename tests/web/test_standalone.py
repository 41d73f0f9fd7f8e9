"""The standalone server: bearer tokens (``agentledger tokens``), admin-only maintenance,
the OpenAPI document, and ``agentledger serve`` itself on a free loopback port."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentledger import Ledger
from agentledger.cli import main
from agentledger.web import create_app
from tests.conftest import run_sync
from tests.support.processes import finished
from tests.support.server import agentledger_serve, free_port


@pytest.fixture
async def app_client(ledger: Ledger) -> AsyncIterator[httpx.AsyncClient]:
    from agentledger.web import create_app

    transport = httpx.ASGITransport(app=create_app(ledger))
    async with httpx.AsyncClient(transport=transport, base_url="http://server") as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_every_api_request_needs_an_active_token(
    app_client: httpx.AsyncClient, ledger: Ledger
) -> None:
    alice = (await ledger.service.create_api_token("alice")).token
    bob = (await ledger.service.create_api_token("bob")).token
    for headers in (
        {},
        bearer("al_unknown"),
        bearer("not even a token"),
        {"Authorization": "Basic x"},
    ):
        response = await app_client.get("/api/v1/sessions", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["retryable"] is False  # like every problem (regression)

    created = await app_client.post(
        "/api/v1/sessions", json={"agent_name": "A"}, headers=bearer(alice)
    )
    assert created.status_code == 201
    assert created.json()["user_id"] == "alice"
    sid = created.json()["id"]
    assert (await app_client.get(f"/api/v1/sessions/{sid}", headers=bearer(bob))).status_code == 404

    assert await ledger.service.revoke_api_token(alice)
    revoked = await app_client.get(f"/api/v1/sessions/{sid}", headers=bearer(alice))
    assert revoked.status_code == 401
    assert alice not in revoked.text


async def test_maintenance_routes_need_an_admin_token(
    app_client: httpx.AsyncClient, ledger: Ledger
) -> None:
    user = (await ledger.service.create_api_token("alice")).token
    admin = (await ledger.service.create_api_token("root", admin=True)).token
    session = await ledger.service.create_session("alice", "A")
    await ledger.service.add_message(session.id, "user", "hello")

    body = {"user_id": "alice"}
    assert (await app_client.post("/api/v1/admin/erase-user", json=body)).status_code == 401
    refused = await app_client.post("/api/v1/admin/erase-user", json=body, headers=bearer(user))
    assert refused.status_code == 403

    dry = await app_client.post("/api/v1/admin/erase-user", json=body, headers=bearer(admin))
    assert dry.json() == {
        "dry_run": True,
        "sessions": 1,
        "messages": 1,
        "usage_records": 0,
        "blocked": [],
    }
    assert await ledger.service.get_session(session.id) is not None

    policies = {"*": {"days": 0}}
    retention = await app_client.post(
        "/api/v1/admin/retention", json={"policies": policies}, headers=bearer(admin)
    )
    assert retention.status_code == 200
    assert retention.json()["dry_run"] is True
    assert retention.json()["policies"]["*"]["deleted_sessions"] == 1
    bad = await app_client.post(
        "/api/v1/admin/retention", json={"policies": {"*": {"days": -1}}}, headers=bearer(admin)
    )
    assert bad.status_code == 400

    erased = await app_client.post(
        "/api/v1/admin/erase-user", json={**body, "dry_run": False}, headers=bearer(admin)
    )
    assert erased.json()["sessions"] == 1
    assert await ledger.service.get_session(session.id) is None


async def test_unknown_routes_are_problems_and_the_home_page_follows_the_ui(
    app_client: httpx.AsyncClient,
) -> None:
    missing = await app_client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    home = await app_client.get("/")
    if importlib.util.find_spec("agentledger.web.ui") is None:
        assert home.status_code == 404
    else:
        assert home.status_code == 307
        assert home.headers["location"] == "/ui/"


async def test_the_openapi_document_describes_every_route(app_client: httpx.AsyncClient) -> None:
    document = (await app_client.get("/api/v1/openapi.json")).json()
    paths = document["paths"]
    expected = {
        "/api/v1/sessions": {"get", "post"},
        "/api/v1/sessions/{session_id}": {"get", "patch", "delete"},
        "/api/v1/sessions/{session_id}/messages": {"get", "post"},
        "/api/v1/sessions/{session_id}/items": {"get"},
        "/api/v1/sessions/{session_id}/fork": {"post"},
        "/api/v1/sessions/{session_id}/rewind": {"post"},
        "/api/v1/sessions/{session_id}/export": {"get"},
        "/api/v1/sessions/{session_id}/usage": {"get"},
        "/api/v1/sessions/{session_id}/events": {"get"},
        "/api/v1/search": {"get"},
        "/api/v1/usage": {"get"},
        "/api/v1/admin/retention": {"post"},
        "/api/v1/admin/erase-user": {"post"},
    }
    assert {path: set(paths.get(path, {})) for path in expected} == expected
    schemas = document["components"]["schemas"]
    for path, operations in expected.items():
        for method in operations:
            operation = paths[path][method]
            assert operation["security"] == [{"HTTPBearer": []}], (path, method)
            admin = path.startswith("/api/v1/admin")
            statuses = (
                ("400", "401", "403", "503")
                if admin
                else ("400", "401", "404", "409", "413", "503")
            )
            for status in statuses:
                problem = operation["responses"][status]["content"]["application/problem+json"]
                assert problem["schema"]["title"] == "ProblemOut"
                assert {"type", "title", "status", "detail"} <= set(problem["schema"]["required"])
            success = next(code for code in operation["responses"] if code.startswith("2"))
            content = operation["responses"][success].get("content", {})
            for media in content.values():
                ref = media.get("schema", {}).get("$ref")
                if ref is not None:
                    assert ref.rsplit("/", 1)[1] in schemas
    assert "Idempotency-Key" in json.dumps(paths["/api/v1/sessions/{session_id}/messages"]["post"])
    assert "If-Match" in json.dumps(paths["/api/v1/sessions/{session_id}/messages"]["post"])
    assert "text/event-stream" in json.dumps(paths["/api/v1/sessions/{session_id}/events"])


def test_tokens_create_list_and_revoke(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def cli(*args: str) -> tuple[int, str, str]:
        code = main(["--database-url", database_url, *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, _ = cli("tokens", "create", "--user", "alice", "--json")
    assert code == 0
    issued = json.loads(out)
    assert issued["token"].startswith("al_")
    assert len(issued["token"]) > 40
    assert issued["admin"] is False
    code, out, _ = cli("tokens", "create", "--user", "root", "--admin")
    assert code == 0
    admin_token = out.splitlines()[0]
    assert admin_token.startswith("al_")

    code, out, _ = cli("tokens", "list", "--json")
    listed = json.loads(out)
    assert [(t["user_id"], t["admin"]) for t in listed] == [("alice", False), ("root", True)]
    assert issued["token"] not in out
    assert admin_token not in out

    assert cli("tokens", "revoke", issued["id"])[0] == 0
    assert cli("tokens", "revoke", issued["id"])[0] == 1  # already revoked
    assert cli("tokens", "revoke", admin_token)[0] == 0
    assert cli("tokens", "revoke")[0] == 2

    async def active() -> list[bool]:
        async with Ledger.from_url(database_url) as ledger:
            return [token.active for token in await ledger.service.list_api_tokens()]

    assert run_sync(active()) == [False, False]


async def test_agentledger_serve_end_to_end(database_url: str) -> None:
    async with Ledger.from_url(database_url) as ledger:
        token = (await ledger.service.create_api_token("alice")).token
    async with agentledger_serve(database_url) as base, httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/api/v1/sessions")).status_code == 401
        created = await client.post(
            "/api/v1/sessions", json={"agent_name": "A"}, headers=bearer(token)
        )
        assert created.status_code == 201
        sid = created.json()["id"]
        appended = await client.post(
            f"/api/v1/sessions/{sid}/messages",
            json={"messages": [{"role": "user", "content": "over the wire"}]},
            headers=bearer(token),
        )
        assert appended.json()["last_seq"] == 1
        page = await client.get(f"/api/v1/sessions/{sid}/messages", headers=bearer(token))
        assert page.json()["messages"][0]["content"] == "over the wire"


async def test_serve_works_on_a_fresh_embedded_database(tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentledger",
        "--database-url",
        url,
        "tokens",
        "create",
        "--user",
        "me",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    code, out, err = await finished(process)
    assert code == 0, err
    token = json.loads(out)["token"]
    async with agentledger_serve(url) as base, httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/api/v1/usage", headers=bearer(token))).status_code == 200


async def test_serve_refuses_to_listen_beyond_loopback_without_tokens(tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'open.db'}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentledger",
        "--database-url",
        url,
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    code, _out, err = await finished(process)
    assert code == 1
    assert "tokens create" in err
    assert "0.0.0.0" in err


async def test_the_openapi_document_lists_no_422_the_api_never_sends(
    tmp_path: Path,
) -> None:
    """Bad input is a 400 problem document; FastAPI's default 422 entry is not listed
    (regression: every route listed it), and every other error is the documented default."""
    ledger = Ledger.from_url(f"sqlite+aiosqlite:///{tmp_path / 'openapi.db'}")
    try:
        document = create_app(ledger).openapi()
    finally:
        await ledger.dispose()
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert operations
    for operation in operations:
        assert "422" not in operation["responses"]
        assert "default" in operation["responses"]
