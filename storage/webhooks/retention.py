"""How long the webhook outbox keeps what it has finished with.

An event is kept while any of its deliveries may still be attempted, however old it is; once
every delivery has succeeded or failed for good it is kept for the retention period (for the
API's event list, replays and the dashboard), then deleted with its deliveries and attempts
(ON DELETE CASCADE). Events are found by id, not by created_at: their ids are UUIDv7, so
"older than" is a range of the primary key and needs no index of its own.
"""

from __future__ import annotations

from datetime import datetime

from storage.database import Pool
from storage.errors import storage_errors
from storage.ids import uuid7_floor

# One batch per transaction: short row locks beside the workers' claims, and SKIP LOCKED so a
# batch never waits on an event a worker holds (a replay of an old event, say).
DELETE_FINISHED = """
WITH finished AS (
    SELECT e.id FROM webhook_events e
    WHERE e.id < $1
      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                      WHERE d.event_id = e.id AND d.status IN ('pending', 'attempting'))
    ORDER BY e.id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM webhook_events WHERE id IN (SELECT id FROM finished)
"""


async def delete_finished_events(pool: Pool, *, before: datetime, batch: int) -> int:
    """Delete up to `batch` finished events made before `before`; how many went."""
    floor = uuid7_floor(int(before.timestamp() * 1000))
    async with storage_errors():
        status: str = await pool.execute(DELETE_FINISHED, floor, batch)
    return int(status.rsplit(" ", 1)[-1])
