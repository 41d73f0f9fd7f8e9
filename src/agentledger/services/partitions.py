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

from agentledger.db.repositories.partitions import Guard, Partition, Touched
from agentledger.db.uow import UnitOfWork
from agentledger.domain.records import PartitionRetirement
from agentledger.domain.retention import front_cut
from agentledger.domain.validation import check_name
from agentledger.domain.windows import answered, unanswered
from agentledger.errors import ConflictError, InvalidInputError, LedgerTimeoutError
from agentledger.services.base import ServiceBase, operation
from agentledger.translation import translated

#: Items read after a history's newest dropped row to find where its cut may fall (most cuts
#: fall right after it); doubled for a history whose cut lies further on.
CUT_WINDOW = 4
#: Items read up to a history's newest dropped row: a call among them whose output is still to
#: come is followed until that output (a call further back is not looked for).
CUT_LOOKBACK = 16
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
        (tried :data:`LOCK_ATTEMPTS` times, as is a deadlock), so a long transaction elsewhere
        makes this fail with :class:`~agentledger.errors.LedgerTimeoutError` rather than stall
        every reader queued behind it. With ``dry_run`` nothing is changed. It runs its own
        transactions: inside :meth:`SessionService.using` it is refused.
        """
        name = check_name(partition, "partition")
        if not isinstance(lock_timeout, timedelta):
            raise TypeError("lock_timeout must be a datetime.timedelta")
        if lock_timeout <= timedelta(0):
            raise InvalidInputError(f"lock_timeout must be positive, got {lock_timeout}")
        await self._require_every_tenant("retiring a partition")
        async with self._uow() as uow:
            if uow.borrowed:
                raise InvalidInputError(
                    "retiring a partition runs short transactions of its own and holds the "
                    "tables exclusively in one of them; call it on ledger.service, not inside "
                    "service.using(...)"
                )
            month = await uow.partitions.check(name)
            plan = await _Plan.make(uow, month)
        if dry_run:
            return plan.report(beyond=plan.beyond(), dry_run=True)
        for attempt in range(1, LOCK_ATTEMPTS + 1):
            try:
                with translated():
                    async with self._uow() as uow:
                        await uow.partitions.lock_tables(lock_timeout)
                        month = await uow.partitions.check(name)  # still there, under the lock
                        final = await _Plan.make(uow, month, reuse=plan)
                        await uow.partitions.drop(month)
                        await uow.partitions.cut(sorted(final.cuts.items()), final.strays())
                        await uow.commit()
                # Exact: nothing changed the histories while the tables were held.
                return final.report(beyond=final.beyond())
            except (LedgerTimeoutError, ConflictError):
                if attempt == LOCK_ATTEMPTS:
                    raise
                await asyncio.sleep(lock_timeout.total_seconds() * attempt)
        raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class _Plan:
    """The histories a partition holds rows of, as they were, and where each will start."""

    partition: Partition
    touched: dict[uuid.UUID, Touched]
    guards: dict[uuid.UUID, Guard]
    cuts: dict[uuid.UUID, int]

    @classmethod
    async def make(
        cls, uow: UnitOfWork, partition: Partition, *, reuse: _Plan | None = None
    ) -> _Plan:
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
        return PartitionRetirement(self.partition.name, len(self.touched), rows, beyond, dry_run)


async def _cuts(
    uow: UnitOfWork, touched: Sequence[Touched], guards: dict[uuid.UUID, Guard]
) -> dict[uuid.UUID, int]:
    """The seq each touched history will start after.

    Each history is read around its newest dropped row: ``CUT_LOOKBACK`` rows up to it (the
    calls there still waiting for their outputs) and ``CUT_WINDOW`` after it, doubling the
    latter until :func:`front_cut` finds a cut inside what was read and every call waiting at
    the dropped row has had its output, or the history ends.
    """
    pending = {t.session_id: t.through for t in touched}
    cuts: dict[uuid.UUID, int] = {}
    window = CUT_WINDOW
    while pending:
        spans = [
            (
                sid,
                max(guards[sid].trimmed_seq + 1, through - CUT_LOOKBACK + 1),
                min(guards[sid].last_seq, through + window),
            )
            for sid, through in pending.items()
        ]
        found = await uow.partitions.windows(spans)
        for sid, lo, hi in spans:
            items = found[sid]
            gone = pending[sid] - lo + 1
            if len(items) < gone:  # the rows went meanwhile: nothing left to keep whole
                cuts[sid] = pending.pop(sid)
                continue
            cut = front_cut(items, gone, history_starts=False)
            waiting = unanswered(items[:gone]) - answered(items[gone:])
            if (cut < len(items) and not waiting) or hi >= guards[sid].last_seq:
                cuts[sid] = lo - 1 + cut
                del pending[sid]
        window *= 2
    return cuts
