"""Retiring a time partition of the messages: old history leaves by dropping a table.

On a deployment that partitions ``conversation_messages`` by ``created_at`` (docs/scaling.md),
deleting a month of messages row by row costs time, WAL and vacuum in proportion to the rows;
dropping the month's partition costs next to nothing, whatever the size of the table. What
dropping alone would get wrong, this does right: each history that had rows in the partition
starts after the newest of them (``trimmed_seq``), so counts and pages stay exact, and the cut
keeps pairs whole (:func:`agentledger.domain.retention.front_cut`): an output whose call was in
the partition goes with it, as do rows numbered below a dropped row but dated later (several
writers' clocks disagree). Readers only ever see a history before the cut or after it.

Two phases. The plan reads the partition and, for each history, the stretch after its newest
dropped row, without holding anything. Then one short transaction takes the messages table
exclusively, plans again only the histories that changed meanwhile, drops the partition and
applies every cut in two statements.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from agentledger.db.repositories.partitions import Guard, Touched
from agentledger.db.uow import UnitOfWork
from agentledger.domain.records import PartitionRetirement
from agentledger.domain.retention import front_cut
from agentledger.domain.validation import check_name
from agentledger.errors import LedgerTimeoutError
from agentledger.services.base import ServiceBase, operation

#: Items read after a history's newest dropped row to find where its cut may fall (most cuts
#: fall right after it); doubled for a history whose cut lies further on.
CUT_WINDOW = 4
#: How often the exclusive lock is tried before giving up (each try waits ``lock_timeout``).
LOCK_ATTEMPTS = 5


class Partitions(ServiceBase):
    """Retiring time partitions of the messages table (PostgreSQL)."""

    @operation(retry=False)
    async def retire_message_partition(
        self,
        partition: str,
        *,
        dry_run: bool = False,
        lock_timeout: timedelta = timedelta(seconds=2),
    ) -> PartitionRetirement:
        """Drop ``partition`` (a partition of ``conversation_messages`` by ``created_at``) and
        start every history it held rows of after the newest of them, keeping tool pairs whole.

        Under the exclusive lock the partition's ``(session_id, seq)`` index is read once more
        and the touched histories are updated in two statements, so readers and writers wait
        about as long as those take. ``lock_timeout`` bounds the wait for the lock itself
        (tried :data:`LOCK_ATTEMPTS` times), so a long transaction elsewhere makes this fail
        with :class:`~agentledger.errors.LedgerTimeoutError` rather than stall every reader
        queued behind it. With ``dry_run`` nothing is changed.
        """
        name = check_name(partition, "partition")
        if not isinstance(lock_timeout, timedelta) or lock_timeout <= timedelta(0):
            raise TypeError("lock_timeout must be a positive datetime.timedelta")
        await self._require_every_tenant("retiring a partition")
        async with self._uow() as uow:
            await uow.partitions.check(name)
            plan = await _Plan.make(uow, name)
        if dry_run:
            return plan.report(beyond=plan.beyond(), dry_run=True)
        for attempt in range(1, LOCK_ATTEMPTS + 1):
            try:
                async with self._uow() as uow:
                    await uow.partitions.lock_messages(lock_timeout)
                    await uow.partitions.check(name)  # still there, under the lock
                    final = await _Plan.make(uow, name, reuse=plan)
                    await uow.partitions.drop(name)
                    await uow.partitions.cut(sorted(final.cuts.items()), final.strays())
                    await uow.commit()
                # Exact: nothing changed the histories while the table was held.
                return final.report(beyond=final.beyond())
            except LedgerTimeoutError:
                if attempt == LOCK_ATTEMPTS:
                    raise
                await asyncio.sleep(lock_timeout.total_seconds() * attempt)
        raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class _Plan:
    """The histories a partition holds rows of, as they were, and where each will start."""

    partition: str
    touched: dict[uuid.UUID, Touched]
    guards: dict[uuid.UUID, Guard]
    cuts: dict[uuid.UUID, int]

    @classmethod
    async def make(cls, uow: UnitOfWork, partition: str, *, reuse: _Plan | None = None) -> _Plan:
        """Read what the partition holds and plan each cut; a history that looks exactly as
        it did in ``reuse`` (same rows in the partition, same bounds, same last change) keeps
        the cut planned there."""
        touched = {t.session_id: t for t in await uow.partitions.touched(partition)}
        guards = await uow.partitions.guards(list(touched))
        cuts: dict[uuid.UUID, int] = {}
        again: list[Touched] = []
        for sid, found in touched.items():
            if sid not in guards:
                continue  # deleted meanwhile: its rows go with the partition, nothing to cut
            if (
                reuse is not None
                and reuse.touched.get(sid) == found
                and reuse.guards.get(sid) == guards[sid]
                and sid in reuse.cuts
            ):
                cuts[sid] = reuse.cuts[sid]
            else:
                again.append(found)
        cuts.update(await _cuts(uow, again, guards))
        return cls(partition, touched, guards, cuts)

    def _outside(self, sid: uuid.UUID) -> int:
        """Rows of the history up to its cut that are not in the partition."""
        return self.cuts[sid] - self.guards[sid].trimmed_seq - self.touched[sid].rows

    def beyond(self) -> int:
        """Rows outside the partition that the cuts take (exact while nothing changes)."""
        return sum(self._outside(sid) for sid in self.cuts)

    def strays(self) -> list[tuple[uuid.UUID, int]]:
        """The cuts of the histories with rows outside the partition up to their cut (only
        these need a DELETE: the others' rows up to the cut all go with the partition)."""
        return sorted((sid, cut) for sid, cut in self.cuts.items() if self._outside(sid) > 0)

    def report(self, *, beyond: int, dry_run: bool = False) -> PartitionRetirement:
        rows = sum(t.rows for t in self.touched.values())
        return PartitionRetirement(self.partition, len(self.touched), rows, beyond, dry_run)


async def _cuts(
    uow: UnitOfWork, touched: Sequence[Touched], guards: dict[uuid.UUID, Guard]
) -> dict[uuid.UUID, int]:
    """The seq each touched history will start after.

    Each history's items from its newest dropped row on are read ``CUT_WINDOW`` at a time
    (doubling) until :func:`front_cut` finds a cut inside them or they reach the history's end.
    """
    pending = {t.session_id: t.through for t in touched}
    cuts: dict[uuid.UUID, int] = {}
    window = CUT_WINDOW
    while pending:
        spans = [
            (sid, through, min(guards[sid].last_seq, through + window))
            for sid, through in pending.items()
        ]
        found = await uow.partitions.windows(spans)
        for sid, through, hi in spans:
            cut = front_cut(found[sid], 1, history_starts=False) if found[sid] else 1
            if cut < len(found[sid]) or hi >= guards[sid].last_seq:
                cuts[sid] = through - 1 + cut
                del pending[sid]
        window *= 2
    return cuts
