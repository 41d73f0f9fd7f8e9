"""Edge cases of the service contract, each a regression test for a fault found in review."""

from __future__ import annotations

from typing import Any

import pytest

from agentledger import AlreadyExistsError, InvalidInputError, Ledger


async def test_create_session_with_a_taken_id_says_so(ledger: Ledger) -> None:
    first = await ledger.service.create_session(user_id="u", agent_name="a")
    with pytest.raises(AlreadyExistsError, match="session id is taken"):
        await ledger.service.create_session(user_id="u", agent_name="a", session_id=first.id)
    # The failure left the connection usable and the first session intact.
    assert (await ledger.service.get_session(first.id)) is not None


async def test_idempotency_key_reused_for_a_different_batch_is_refused(ledger: Ledger) -> None:
    svc = ledger.service
    s = await svc.create_session(user_id="u", agent_name="a")
    batch = [{"role": "user", "content": "one"}]
    first = await svc.add_messages(s.id, batch, idempotency_key="k")
    retry = await svc.add_messages(s.id, batch, idempotency_key="k")
    assert (retry.first_seq, retry.count, retry.created) == (first.first_seq, 1, False)
    with pytest.raises(InvalidInputError, match="already used for a different batch"):
        await svc.add_messages(s.id, [{"role": "user", "content": "two"}], idempotency_key="k")
    record = await svc.get_session(s.id)
    assert record is not None
    assert [m.content for m in record.messages] == ["one"]


async def test_empty_batches_have_no_position_with_or_without_key(ledger: Ledger) -> None:
    svc = ledger.service
    s = await svc.create_session(user_id="u", agent_name="a")
    await svc.add_message(s.id, role="user", content="x")
    plain = await svc.add_messages(s.id, [])
    keyed = await svc.add_messages(s.id, [], idempotency_key="empty")
    assert (plain.first_seq, plain.count) == (0, 0)
    assert (keyed.first_seq, keyed.count) == (0, 0)
    assert list(keyed.seqs) == []


async def test_call_ids_longer_than_the_column_are_refused_on_every_backend(
    ledger: Ledger,
) -> None:
    svc = ledger.service
    s = await svc.create_session(user_id="u", agent_name="a")
    item = {"type": "function_call_output", "call_id": "c" * 256, "output": "x"}
    with pytest.raises(InvalidInputError, match="call_id"):
        await svc.add_items(s.id, [item])
    assert await svc.get_items(s.id) == []
    item["call_id"] = "c" * 255
    await svc.add_items(s.id, [item])
    assert await svc.get_items(s.id) == [item]


async def test_message_record_does_not_alias_the_callers_list(ledger: Ledger) -> None:
    svc = ledger.service
    s = await svc.create_session(user_id="u", agent_name="a")
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    record = await svc.add_message(s.id, role="assistant", content="", tool_calls=calls)
    calls.append({"id": "c2"})
    assert record.tool_calls is not None
    assert [c["id"] for c in record.tool_calls] == ["c1"]


async def test_metadata_with_non_string_keys_is_refused_not_rewritten(ledger: Ledger) -> None:
    int_key: dict[Any, Any] = {1: "x"}  # not the dict[str, Any] the signature asks for
    with pytest.raises(InvalidInputError, match="non-string key"):
        await ledger.service.create_session(user_id="u", agent_name="a", metadata=int_key)
    with pytest.raises(InvalidInputError, match="non-string key"):
        await ledger.service.create_session(
            user_id="u", agent_name="a", metadata={"nested": {2: "y"}}
        )
    assert len(await ledger.service.list_user_sessions("u")) == 0
