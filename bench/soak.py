"""`make soak`: 64 concurrent agents on 16 shared sessions, then the invariants of
docs/reliability.md are checked. Bounded: ``--seconds`` (default 60) of load, then checks.

Each agent loops: append a batch of 1-3 messages (unique tokens), read the session, and now
and then pop the newest item or clear the session. Every message content is a unique token
``a<agent>.b<batch>.<k>``. Checked at the end (exit status 1 on any violation):

* nothing lost: every acknowledged token is in the final history, or was returned by a pop,
  or a clear of its session returned after the token's append was called;
* nothing duplicated: no token twice in a history, no token returned by two pops, no popped
  token still in the history;
* gap-free: every observed and final history has seqs exactly 1..n;
* every observed read is a prefix of the history at one instant: each batch appears as a
  contiguous prefix of itself (pops take whole items off the end; never a torn batch), and
  one agent's batches appear in the order it appended them.

Run: ``python -m bench.soak [--seconds N] [--backend postgresql|sqlite]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from agentledger import Ledger
from agentledger.errors import LedgerError
from agentledger.testing import throwaway_ledger

AGENTS = 64
SESSIONS = 16


@dataclass
class Observed:
    acked: dict[str, tuple[uuid.UUID, float]] = field(default_factory=dict)  # token -> sid, start
    popped: list[str] = field(default_factory=list)
    clears: dict[uuid.UUID, list[float]] = field(default_factory=lambda: defaultdict(list))
    reads: list[tuple[uuid.UUID, list[int], list[str]]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    operations: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def _parse(token: str) -> tuple[int, int, int]:
    agent, batch, index = token.split(".")
    return int(agent[1:]), int(batch[1:]), int(index)


async def _agent(
    ledger: Ledger, number: int, sessions: list[uuid.UUID], deadline: float, seen: Observed
) -> None:
    svc = ledger.service
    rng = random.Random(number)
    batch = 0
    while time.monotonic() < deadline:
        sid = rng.choice(sessions)
        roll = rng.random()
        try:
            if roll < 0.55:
                batch += 1
                tokens = [f"a{number}.b{batch}.{k}" for k in range(rng.randint(1, 3))]
                started = time.monotonic()
                await svc.add_messages(sid, [{"role": "user", "content": t} for t in tokens])
                for token in tokens:
                    seen.acked[token] = (sid, started)
                seen.operations["append"] += 1
            elif roll < 0.90:
                record = await svc.get_session(sid)
                assert record is not None
                seen.reads.append(
                    (sid, [m.seq for m in record.messages], [m.content for m in record.messages])
                )
                seen.operations["read"] += 1
            elif roll < 0.99:
                item = await svc.pop_item(sid)
                if item is not None:
                    seen.popped.append(item["content"])
                seen.operations["pop"] += 1
            else:
                await svc.clear_session(sid)
                seen.clears[sid].append(time.monotonic())
                seen.operations["clear"] += 1
        except LedgerError as error:  # typed, e.g. a timeout under load: counted, not fatal
            seen.errors[type(error).__name__] += 1


def _check_history(seqs: list[int], tokens: list[str], what: str) -> list[str]:
    problems = []
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append(f"{what}: seqs are not 1..n")
    if len(set(tokens)) != len(tokens):
        problems.append(f"{what}: a token appears twice")
    by_batch: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    last_batch: dict[int, int] = {}
    for position, token in enumerate(tokens):
        agent, batch, index = _parse(token)
        by_batch[(agent, batch)].append((position, index))
        if last_batch.get(agent, 0) > batch:
            problems.append(f"{what}: agent {agent}'s batches out of order")
        last_batch[agent] = batch
    for (agent, batch), entries in by_batch.items():
        positions = [p for p, _ in entries]
        indexes = [i for _, i in entries]
        if indexes != list(range(len(indexes))) or positions != list(
            range(positions[0], positions[0] + len(positions))
        ):
            problems.append(f"{what}: batch a{agent}.b{batch} torn")
    return problems


async def soak(backend: str, seconds: float) -> int:
    async with throwaway_ledger(backend) as ledger:
        svc = ledger.service
        sessions = [
            (await svc.create_session(user_id=f"u{i % 4}", agent_name="soak")).id
            for i in range(SESSIONS)
        ]
        seen = Observed()
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(*(_agent(ledger, n, sessions, deadline, seen) for n in range(AGENTS)))
        elapsed = time.monotonic() - started
        problems: list[str] = []
        final: dict[uuid.UUID, list[str]] = {}
        for sid in sessions:
            record = await svc.get_session(sid)
            assert record is not None
            tokens = [m.content for m in record.messages]
            final[sid] = tokens
            problems += _check_history([m.seq for m in record.messages], tokens, f"final {sid}")
        for sid, seqs, tokens in seen.reads:
            problems += _check_history(seqs, tokens, f"read of {sid}")
        if len(set(seen.popped)) != len(seen.popped):
            problems.append("a token was popped twice")
        in_final = {token for tokens in final.values() for token in tokens}
        if in_final & set(seen.popped):
            problems.append("a popped token is still in a history")
        lost = [
            token
            for token, (sid, append_started) in seen.acked.items()
            if token not in in_final
            and token not in set(seen.popped)
            and not any(end > append_started for end in seen.clears[sid])
        ]
        if lost:
            problems.append(f"{len(lost)} acknowledged tokens lost, e.g. {lost[:3]}")
        total = sum(seen.operations.values())
        print(f"backend={backend} agents={AGENTS} sessions={SESSIONS} seconds={elapsed:.1f}")
        print(
            f"operations={total} ({total / elapsed:.0f}/s) "
            + " ".join(f"{name}={count}" for name, count in sorted(seen.operations.items()))
        )
        print(
            f"acknowledged tokens={len(seen.acked)} popped={len(seen.popped)} "
            f"reads checked={len(seen.reads)} final messages={len(in_final)}"
        )
        print("typed errors: " + (", ".join(f"{k}={v}" for k, v in seen.errors.items()) or "none"))
        for problem in problems[:20]:
            print("VIOLATION:", problem)
        print("invariants: " + ("VIOLATED" if problems else "all hold"))
        return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    args = parser.parse_args(argv)
    return asyncio.run(soak(args.backend, min(args.seconds, 300.0)))


if __name__ == "__main__":
    sys.exit(main())
