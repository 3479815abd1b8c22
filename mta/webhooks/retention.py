"""The outbox's clean-up: finished webhook events older than OPENSEND_WEBHOOK_RETENTION go.

Every worker process runs it; several at once only share the batches (SKIP LOCKED). It never
touches an event with a delivery still to be attempted (storage.webhooks.retention).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from storage.database import Pool
from storage.errors import StorageError
from storage.webhooks.retention import delete_finished_events

log = logging.getLogger(__name__)

BATCH = 1000  # events per transaction
EVERY_SECONDS = 3600.0  # a pass an hour: retention is counted in days


async def prune_once(pool: Pool, keep_seconds: int, *, batch: int = BATCH) -> int:
    """Delete every finished event older than `keep_seconds`, a batch at a time; how many."""
    before = datetime.now(UTC) - timedelta(seconds=keep_seconds)
    deleted = 0
    while True:
        count = await delete_finished_events(pool, before=before, batch=batch)
        deleted += count
        if count < batch:
            return deleted


async def prune_forever(pool: Pool, keep_seconds: int) -> None:
    while True:
        try:
            deleted = await prune_once(pool, keep_seconds)
        except StorageError as error:  # the database away: the next pass will do it
            log.warning("could not delete old webhook events", extra={"error": str(error)})
        else:
            if deleted:
                log.info("old webhook events deleted", extra={"count": deleted})
        await asyncio.sleep(EVERY_SECONDS)
