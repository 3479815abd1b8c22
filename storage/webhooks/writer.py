"""Commits webhook attempts together: the outcomes of concurrent requests in one statement.

Batches form only while earlier commits are in flight (storage.group_commit), so a lone attempt
is written at once. A batch that fails for a reason other than an outage is written outcome by
outcome, so one bad row cannot hold up its neighbours; while the database is away the batch is
tried again with backoff until `give_up_after` seconds, after which its leases will have run
out anyway and the deliveries are sent again (same webhook-id).
"""

from __future__ import annotations

import asyncio
import logging
import time

from storage.database import Pool
from storage.errors import StorageError
from storage.group_commit import GroupCommit
from storage.webhooks.outbox import AttemptOutcome, Recorded, record_outcomes

log = logging.getLogger(__name__)

RETRY_FIRST_SECONDS = 0.05
RETRY_MAX_SECONDS = 5.0

_Pending = tuple[AttemptOutcome, "asyncio.Future[Recorded]"]


class AttemptWriter:
    def __init__(
        self,
        pool: Pool,
        *,
        disable_after_seconds: int,
        give_up_after: float,
        max_batch: int = 128,
        max_inflight: int = 2,
    ) -> None:
        self._pool = pool
        self._disable_after = disable_after_seconds
        self._give_up_after = give_up_after
        self._group: GroupCommit[_Pending] = GroupCommit(
            self._flush, max_batch=max_batch, max_inflight=max_inflight
        )

    async def write(self, outcome: AttemptOutcome) -> Recorded:
        """Once committed: what the batch holding `outcome` applied and disabled. Raises
        StorageError when it could not be committed in time."""
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._group.submit((outcome, future))
        # Shielded: a stopping worker's cancelled request must not cancel a shared commit.
        return await asyncio.shield(future)

    async def _flush(self, batch: list[_Pending]) -> None:
        deadline = time.monotonic() + self._give_up_after
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                recorded = await record_outcomes(
                    self._pool,
                    [outcome for outcome, _ in batch],
                    disable_after_seconds=self._disable_after,
                )
            except StorageError as error:
                if not error.temporary and len(batch) > 1:
                    for item in batch:
                        await self._flush([item])
                    return
                if error.temporary and time.monotonic() + delay < deadline:
                    log.warning(
                        "webhook attempts not recorded yet; retrying",
                        extra={"attempts": len(batch), "error": str(error), "in": delay},
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_SECONDS)
                    continue
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                return
            except BaseException as unexpected:  # never leave a caller waiting forever
                for _, future in batch:
                    if not future.done():
                        future.set_exception(StorageError(repr(unexpected), temporary=True))
                raise
            for _, future in batch:
                if not future.done():
                    future.set_result(recorded)
            return
