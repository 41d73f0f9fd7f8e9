"""Signing in to the standalone server's transcript browser with an API token: the cookie,
CSRF on the form, no open redirect, revocation; through ``create_app`` in process."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from agentledger import Ledger
from agentledger.web import create_app
from agentledger.web.ui import create_ui_router
from agentledger.web.ui.security import CONTENT_SECURITY_POLICY, LOGIN_COOKIE


@asynccontextmanager
async def site(
    ledger: Ledger, base: str = "https://ledger.test"
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(ledger))
    async with httpx.AsyncClient(transport=transport, base_url=base) as client:
        yield client


async def login_form(client: httpx.AsyncClient, next_path: str = "") -> str:
    page = await client.get("/ui/login", params={"next": next_path} if next_path else None)
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


async def test_pages_send_a_browser_without_login_to_the_form(ledger: Ledger) -> None:
    async with site(ledger) as client:
        response = await client.get("/ui/usage")
        root = await client.get("/")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Fusage"
    assert root.headers["location"] == "/ui/"


async def test_a_pasted_token_signs_in_with_a_secure_httponly_cookie(ledger: Ledger) -> None:
    session = await ledger.service.create_session("alice", "Helper")
    token = (await ledger.service.create_api_token("alice")).token
    async with site(ledger) as client:
        csrf = await login_form(client, f"/ui/sessions/{session.id}")
        signed = await client.post(
            "/ui/login",
            data={"token": token, "csrf_token": csrf, "next": f"/ui/sessions/{session.id}"},
        )
        assert signed.status_code == 303
        assert signed.headers["location"] == f"/ui/sessions/{session.id}"
        cookie = signed.headers["set-cookie"]
        assert cookie.startswith(f"{LOGIN_COOKIE}={token};")
        for part in ("HttpOnly", "Path=/ui", "SameSite=lax", "Secure"):
            assert part in cookie, cookie
        page = await client.get(f"/ui/sessions/{session.id}")
        assert page.status_code == 200
        assert "Signed in as <strong>alice</strong>" in page.text
        csrf_out = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf_out is not None
        assert (await client.post("/ui/logout")).status_code == 403
        out = await client.post("/ui/logout", data={"csrf_token": csrf_out.group(1)})
        assert out.status_code == 303
        assert (await client.get("/ui/")).status_code == 303


async def test_plain_http_gets_no_secure_flag(ledger: Ledger) -> None:
    token = (await ledger.service.create_api_token("alice")).token
    async with site(ledger, "http://127.0.0.1:8000") as client:
        csrf = await login_form(client)
        signed = await client.post("/ui/login", data={"token": token, "csrf_token": csrf})
    assert signed.status_code == 303
    assert "Secure" not in signed.headers["set-cookie"]


async def test_the_login_form_needs_its_csrf_token_and_a_valid_token(ledger: Ledger) -> None:
    token = (await ledger.service.create_api_token("alice")).token
    async with site(ledger) as client:
        csrf = await login_form(client)
        assert (await client.post("/ui/login", data={"token": token})).status_code == 403
        forged = await client.post("/ui/login", data={"token": token, "csrf_token": "y" * 43})
        assert forged.status_code == 403
        wrong = await client.post("/ui/login", data={"token": "al_nope", "csrf_token": csrf})
        assert wrong.status_code == 401
        assert "unknown or revoked" in wrong.text
        assert "set-cookie" not in wrong.headers or LOGIN_COOKIE not in wrong.headers["set-cookie"]


async def test_next_never_leaves_the_site(ledger: Ledger) -> None:
    token = (await ledger.service.create_api_token("alice")).token
    async with site(ledger) as client:
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "ui/"):
            csrf = await login_form(client)
            signed = await client.post(
                "/ui/login", data={"token": token, "csrf_token": csrf, "next": target}
            )
            assert signed.headers["location"] == "/ui/", target


async def test_revoking_the_token_ends_the_login(ledger: Ledger) -> None:
    issued = await ledger.service.create_api_token("alice")
    async with site(ledger) as client:
        csrf = await login_form(client)
        await client.post("/ui/login", data={"token": issued.token, "csrf_token": csrf})
        assert (await client.get("/ui/")).status_code == 200
        assert await ledger.service.revoke_api_token(issued.token)
        assert (await client.get("/ui/")).status_code == 303


async def test_the_ui_stays_out_of_the_api_document(ledger: Ledger) -> None:
    async with site(ledger) as client:
        document = (await client.get("/api/v1/openapi.json")).json()
    assert document["paths"]
    assert not [path for path in document["paths"] if path.startswith("/ui")]


def test_the_router_needs_exactly_one_way_to_know_the_user(ledger: Ledger) -> None:
    async def someone() -> str:
        return "alice"

    with pytest.raises(ValueError, match="exactly one"):
        create_ui_router(ledger)
    with pytest.raises(ValueError, match="exactly one"):
        create_ui_router(ledger, current_user=someone, token_login=True)
