"""Errors of the HTTP API: another user's session is exactly a missing one, bad input is 400
and writes nothing, and every LedgerError class has its one status, as a problem document."""

from __future__ import annotations

import inspect
import uuid
from typing import Any

import httpx
import pytest

from agentledger import Ledger, errors
from agentledger.web.problems import STATUSES, status_of
from tests.web.conftest import as_user, host_app

ALICE, BOB = as_user("alice"), as_user("bob")

#: Every route that names a session: (method, path suffix, JSON body).
SESSION_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "", None),
    ("PATCH", "", {"title": "mine now"}),
    ("DELETE", "", None),
    ("GET", "/messages", None),
    ("POST", "/messages", {"messages": [{"role": "user", "content": "hi"}]}),
    ("GET", "/items", None),
    ("POST", "/fork", {}),
    ("POST", "/rewind", {"to_seq": 0}),
    ("GET", "/export", None),
    ("GET", "/usage", None),
    ("GET", "/events", None),
]


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    assert body["type"].startswith("urn:")
    return body


async def alice_session(client: httpx.AsyncClient) -> str:
    created = await client.post("/sessions", json={"agent_name": "A"}, headers=ALICE)
    sid: str = created.json()["id"]
    await client.post(
        f"/sessions/{sid}/messages",
        json={"messages": [{"role": "user", "content": "secret"}]},
        headers=ALICE,
    )
    return sid


@pytest.mark.parametrize(("method", "suffix", "body"), SESSION_ROUTES)
async def test_another_users_session_answers_exactly_like_a_missing_one(
    client: httpx.AsyncClient, method: str, suffix: str, body: dict[str, Any] | None
) -> None:
    sid = await alice_session(client)
    missing = uuid.uuid4()
    theirs = await client.request(method, f"/sessions/{sid}{suffix}", json=body, headers=BOB)
    nobody = await client.request(method, f"/sessions/{missing}{suffix}", json=body, headers=BOB)
    shown = problem(theirs, 404)
    assert problem(nobody, 404)["detail"] == shown["detail"].replace(sid, str(missing))
    assert "secret" not in theirs.text
    # Alice's session is untouched by Bob's attempt.
    page = (await client.get(f"/sessions/{sid}/messages", headers=ALICE)).json()
    assert [m["content"] for m in page["messages"]] == ["secret"]
    assert (await client.get(f"/sessions/{sid}", headers=ALICE)).json()["title"] is None


async def test_a_user_id_in_the_request_is_never_trusted(client: httpx.AsyncClient) -> None:
    sid = await alice_session(client)
    sneaky = await client.get(f"/sessions/{sid}?user_id=alice&user=alice", headers=BOB)
    problem(sneaky, 404)
    created = await client.post(
        "/sessions", json={"agent_name": "A", "user_id": "alice"}, headers=BOB
    )
    problem(created, 400)  # unknown field: refused, not ignored
    listing = await client.get("/sessions", params={"user_id": "alice"}, headers=BOB)
    assert listing.json()["sessions"] == []


async def test_the_hosts_authentication_answers_for_itself(client: httpx.AsyncClient) -> None:
    response = await client.get("/sessions")
    assert response.status_code == 401
    assert response.json() == {"detail": "the host's login is required"}


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    [
        ("GET", "/sessions/not-a-uuid", None, {}),
        ("GET", "/sessions", None, {"limit": "0"}),
        ("GET", "/sessions?limit=100000", None, {}),
        ("GET", "/sessions?cursor=garbage", None, {}),
        ("GET", "/sessions?metadata=[1]", None, {}),
        ("GET", "/sessions?metadata={", None, {}),
        ("POST", "/sessions", {"agent_name": ""}, {}),
        ("POST", "/sessions", b'{"agent_name": "A", "metadata": {"x": NaN}}', {}),
        ("POST", "/sessions", {"agent_name": "A", "title": "   "}, {}),
        ("POST", "/sessions", {"agent_name": "A", "unknown": 1}, {}),
        ("POST", "/sessions", None, {}),
        ("GET", "/search?q=", None, {}),
    ],
)
async def test_bad_input_is_400(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
) -> None:
    params = {"limit": headers.pop("limit")} if "limit" in headers else None
    response = await send(client, method, path, body, params=params, headers=ALICE)
    assert problem(response, 400)["error"] in ("InvalidInputError", "InvalidItemTypeError")
    assert (await client.get("/sessions", headers=ALICE)).json()["sessions"] == []


async def send(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: Any,
    *,
    headers: dict[str, str],
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """``body`` as JSON, or as raw bytes (JSON that Python's encoder would not write)."""
    if isinstance(body, bytes):
        raw = {**headers, "content-type": "application/json"}
        return await client.request(method, path, content=body, params=params, headers=raw)
    return await client.request(method, path, json=body, params=params, headers=headers)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({"messages": [{"role": "robot", "content": "x"}]}, {}),
        ({"messages": [{"role": "tool", "content": "x"}]}, {}),
        ({"messages": []}, {}),
        ({"messages": [{"role": "user", "content": "ok"}, {"role": "user"}]}, {}),
        (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', {}),
        ({"messages": [{"role": "user", "content": "x"}]}, {"If-Match": "last"}),
        ({"messages": [{"role": "user", "content": "x"}]}, {"Idempotency-Key": ""}),
    ],
)
async def test_a_bad_append_is_400_and_writes_nothing(
    client: httpx.AsyncClient, body: Any, headers: dict[str, str]
) -> None:
    sid = await alice_session(client)
    response = await send(
        client, "POST", f"/sessions/{sid}/messages", body, headers={**ALICE, **headers}
    )
    problem(response, 400)
    assert (await client.get(f"/sessions/{sid}", headers=ALICE)).json()["last_seq"] == 1


async def test_bad_seqs_are_400(client: httpx.AsyncClient) -> None:
    sid = await alice_session(client)
    problem(await client.post(f"/sessions/{sid}/rewind", json={"to_seq": 5}, headers=ALICE), 400)
    problem(await client.post(f"/sessions/{sid}/fork", json={"at_seq": -1}, headers=ALICE), 400)
    problem(await client.get(f"/sessions/{sid}/messages?after_seq=-1", headers=ALICE), 400)
    problem(await client.get(f"/sessions/{sid}/export?format=pdf", headers=ALICE), 400)
    problem(
        await client.get(f"/sessions/{sid}/events", headers={**ALICE, "Last-Event-ID": "x"}), 400
    )


async def test_a_body_over_the_limit_is_413(ledger: Ledger) -> None:
    transport = httpx.ASGITransport(app=host_app(ledger, max_body_bytes=1000))
    async with httpx.AsyncClient(transport=transport, base_url="http://host/api/v1") as client:
        sid = (await client.post("/sessions", json={"agent_name": "A"}, headers=ALICE)).json()["id"]
        big = {"messages": [{"role": "user", "content": "x" * 2000}]}
        body = problem(await client.post(f"/sessions/{sid}/messages", json=big, headers=ALICE), 413)
        assert body["error"] == "PayloadTooLargeError"

        async def chunks() -> Any:  # no Content-Length: counted as it arrives
            for _ in range(30):
                yield b" " * 100

        streamed = await client.post(
            f"/sessions/{sid}/messages",
            content=chunks(),
            headers={**ALICE, "content-type": "application/json"},
        )
        problem(streamed, 413)
        assert (await client.get(f"/sessions/{sid}", headers=ALICE)).json()["last_seq"] == 0


async def test_a_taken_session_referenced_elsewhere_is_409(
    client: httpx.AsyncClient, ledger: Ledger
) -> None:
    sid = await alice_session(client)
    conflict = errors.ConflictError("deadlock detected; retry", sqlstate="40P01")

    class Failing:
        def __getattr__(self, name: str) -> Any:
            async def fail(*_args: Any, **_kwargs: Any) -> Any:
                raise conflict

            return fail

    original = ledger.service_for
    ledger.service_for = lambda user: Failing()  # type: ignore[assignment,method-assign,return-value]
    try:
        response = await client.get(f"/sessions/{sid}", headers=ALICE)
    finally:
        ledger.service_for = original  # type: ignore[method-assign]
    body = problem(response, 409)
    assert body["retryable"] is True
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    "error",
    [
        errors.ConnectionLostError("the connection was lost; retry"),
        errors.DatabaseUnavailableError("the database does not exist"),
        errors.SchemaNotReadyError("run agentledger db upgrade"),
        errors.LedgerTimeoutError("lock timeout"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_an_unavailable_database_is_503(
    client: httpx.AsyncClient, ledger: Ledger, error: errors.LedgerError
) -> None:
    class Failing:
        def __getattr__(self, name: str) -> Any:
            async def fail(*_args: Any, **_kwargs: Any) -> Any:
                raise error

            return fail

    original = ledger.service_for
    ledger.service_for = lambda user: Failing()  # type: ignore[assignment,method-assign,return-value]
    try:
        response = await client.get("/usage", headers=ALICE)
    finally:
        ledger.service_for = original  # type: ignore[method-assign]
    body = problem(response, 503)
    assert body["error"] == type(error).__name__
    assert ("retry-after" in response.headers) is error.retryable


def test_every_ledger_error_class_has_one_status() -> None:
    classes = [
        kind
        for _name, kind in inspect.getmembers(errors, inspect.isclass)
        if issubclass(kind, errors.LedgerError)
    ]
    assert set(STATUSES) <= set(classes)
    for kind in classes:
        nearest = next(base for base in kind.__mro__ if base in STATUSES)
        assert status_of(_instance(kind)) == STATUSES[nearest]
    assert status_of(errors.StaleSessionError("x", last_seq=1, expected_last_seq=0)) == 409
    assert status_of(errors.PayloadTooLargeError("x")) == 413
    assert status_of(errors.InvalidItemTypeError("x")) == 400
    assert status_of(errors.SessionReferencedError("x")) == 409
    assert status_of(errors.ReadReplicaUnavailableError("x")) == 503


def _instance(kind: type[errors.LedgerError]) -> errors.LedgerError:
    if kind is errors.StaleSessionError:
        return kind("x", last_seq=0, expected_last_seq=1)
    return kind("x")
