"""Commits delivery outcomes together, and keeps trying until they are committed.

After a remote host said 250 the message is its responsibility; forgetting that would send it
again when the lease runs out. So a failed commit is retried (never the send): with backoff while
the database is away, one outcome at a time if a batch fails for another reason. Concurrent
sessions' outcomes share one transaction, as storage.inbound.inbox.GroupCommitWriter does for
received mail: batches form only while earlier commits are in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from uuid import UUID

from storage.database import Pool
from storage.delivery.queue import Outcome, RollUp, record_outcomes
from storage.errors import StorageError
from storage.group_commit import GroupCommit

log = logging.getLogger(__name__)

RETRY_FIRST_SECONDS = 0.05
RETRY_MAX_SECONDS = 5.0

_Pending = tuple[Sequence[Outcome], "asyncio.Future[set[UUID]]"]


class OutcomeWriter:
    def __init__(
        self, pool: Pool, roll_up: RollUp, *, max_batch: int = 256, max_inflight: int = 2
    ) -> None:
        self._pool = pool
        self._roll_up = roll_up
        # Batches are weighed in outcomes, not callers: max_batch outcomes per transaction.
        self._group: GroupCommit[_Pending] = GroupCommit(
            self._flush,
            max_batch=max_batch,
            max_inflight=max_inflight,
            weight=lambda item: len(item[0]),
        )
        self._stragglers: set[asyncio.Task[None]] = set()
        self.retries = 0

    async def write(self, outcomes: Sequence[Outcome]) -> set[UUID]:
        """Return once `outcomes` are committed: the ids applied (a lost lease applies none)."""
        future: asyncio.Future[set[UUID]] = asyncio.get_running_loop().create_future()
        self._group.submit((outcomes, future))
        # Shielded: a caller cancelled while waiting (a stopping worker) must not cancel the
        # commit of outcomes other callers share.
        return await asyncio.shield(future)

    @property
    def busy(self) -> bool:
        return self._group.busy or bool(self._stragglers)

    async def drain(self) -> None:
        """Until every outcome handed in so far is committed."""
        while self.busy:
            await asyncio.gather(*self._group.inflight, *self._stragglers, return_exceptions=True)
            await asyncio.sleep(0)

    async def _flush(self, batch: list[_Pending]) -> None:
        delay = RETRY_FIRST_SECONDS
        outcomes = [o for items, _ in batch for o in items]
        while True:
            try:
                applied = await record_outcomes(self._pool, outcomes, self._roll_up)
            except StorageError as error:
                if not error.temporary and len(batch) > 1:
                    # One bad outcome must not hold up its neighbours: each on its own.
                    for item in batch:
                        self._retry_alone(item)
                    return
                if error.bad_data:
                    # Alone and refused for what it holds: the same write fails the same way
                    # forever, and waiting on it would hold a slot of this writer for good.
                    # (Any other refusal, a schema mid-upgrade say, is retried: giving up would
                    # have the remote's accepted message sent again when its lease ran out.)
                    log.error(
                        "delivery outcomes refused by the database; their rows come back "
                        "when their lease runs out",
                        extra={"outcomes": len(outcomes), "error": str(error)},
                    )
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    return
                self.retries += 1
                log.warning(
                    "delivery outcomes not committed yet; retrying",
                    extra={"outcomes": len(outcomes), "error": str(error), "in": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            except BaseException as unexpected:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(StorageError(repr(unexpected), temporary=True))
                raise
            for items, future in batch:
                if not future.done():
                    future.set_result({o.delivery_id for o in items} & applied)
            lost = len(outcomes) - len(applied)
            if lost:
                log.warning(
                    "outcomes of deliveries whose lease was lost were not recorded",
                    extra={"outcomes": lost},
                )
            return

    def _retry_alone(self, item: _Pending) -> None:
        task = asyncio.get_running_loop().create_task(self._flush([item]))
        self._stragglers.add(task)
        task.add_done_callback(self._stragglers.discard)
