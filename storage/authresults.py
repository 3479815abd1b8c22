"""The authentication-check queue: received messages claimed under a lease, their results
written beside them.

Two narrow tables (migration 0010), never `received_emails` itself: `received_auth_queue` holds
a row per message still to be checked, inserted by the statement that stores the message
(storage/inbox.py); its `due_at` is when the message is next due and, while a worker holds it,
when its lease ends. `received_auth_results` holds the verdicts. Workers on any number of
machines meet only in row locks (`FOR UPDATE SKIP LOCKED`) and in the lease token: results of a
worker whose lease ran out (and whose message another worker took) are not written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from storage.database import Pool
from storage.errors import StorageError, StorageUnavailable, storage_errors
from storage.group_commit import GroupCommit
from storage.ids import uuid7

# Content up to this size comes with the claim; a larger message is read when its turn comes,
# so a claim of many large messages does not sit in memory at once (as storage.queue does).
INLINE_CONTENT_BYTES = 256 * 1024

# Oldest due first. Each claim is counted, so a message's recheck schedule knows where it is.
# Only the queue rows are written; the evidence is read from the message's row.
CLAIM = """
WITH due AS (
    SELECT received_id FROM received_auth_queue
    WHERE due_at <= now()
    ORDER BY due_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE received_auth_queue q
    SET due_at = now() + make_interval(secs => $2), lease_token = $3, checks = q.checks + 1
    FROM due WHERE q.received_id = due.received_id
    RETURNING q.received_id, q.checks
)
SELECT r.id, host(r.remote_ip) AS remote_ip, r.helo, r.mail_from, r.ingest_source, c.checks,
       r.size, CASE WHEN r.size <= $4 THEN r.raw END AS raw
FROM claimed c JOIN received_emails r ON r.id = c.received_id
"""
SELECT_CONTENT = "SELECT raw FROM received_emails WHERE id = $1"
RENEW_LEASES = """
UPDATE received_auth_queue SET due_at = now() + make_interval(secs => $3)
WHERE received_id = ANY($1::uuid[]) AND lease_token = ANY($2::uuid[])
"""
# Claimed messages a stopping worker never started: due again at once, for any worker.
RELEASE = """
UPDATE received_auth_queue SET due_at = now(), lease_token = NULL
WHERE received_id = ANY($1::uuid[]) AND lease_token = $2
"""
# One statement for a batch, and only under the claim's token: a final result (no recheck)
# takes the message out of the queue, a temperror puts it back for its recheck. The results
# are written for the queue rows so held, and a message checked again gets its new ones.
RECORD_RESULTS = """
WITH checked AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::jsonb[], $4::text[], $5::int[])
        AS u(id, token, results, header, recheck_in)
), finished AS (
    DELETE FROM received_auth_queue q USING checked c
    WHERE q.received_id = c.id AND q.lease_token = c.token AND c.recheck_in IS NULL
    RETURNING c.id, c.token, q.checks, NULL::timestamptz AS next_check_at
), rescheduled AS (
    UPDATE received_auth_queue q
    SET due_at = now() + make_interval(secs => c.recheck_in), lease_token = NULL
    FROM checked c
    WHERE q.received_id = c.id AND q.lease_token = c.token AND c.recheck_in IS NOT NULL
    RETURNING c.id, c.token, q.checks, q.due_at AS next_check_at
), held AS (
    SELECT * FROM finished UNION ALL SELECT * FROM rescheduled
)
INSERT INTO received_auth_results AS a
    (received_id, results, header, checked_at, checks, next_check_at)
SELECT c.id, c.results, c.header, now(), h.checks, h.next_check_at
FROM checked c JOIN held h ON h.id = c.id AND h.token = c.token
ON CONFLICT (received_id) DO UPDATE
SET results = excluded.results, header = excluded.header, checked_at = excluded.checked_at,
    checks = excluded.checks, next_check_at = excluded.next_check_at
RETURNING a.received_id AS id
"""
# Due now: what the workers are behind by. A message being checked is due only when its
# lease ends, so it is not counted unless its worker died.
BACKLOG = """
SELECT count(*)::int AS messages,
       coalesce(extract(epoch FROM now() - min(due_at)), 0)::float8 AS oldest_due
FROM received_auth_queue WHERE due_at <= now()
"""


@dataclass(frozen=True, slots=True)
class PendingCheck:
    id: UUID
    token: UUID
    remote_ip: str | None
    helo: str | None
    mail_from: str
    ingest_source: str | None  # the ingester it came through; None for port 25
    checks: int  # claims of this message so far, this one included
    size: int
    raw: bytes | None  # None when larger than INLINE_CONTENT_BYTES: see `content`


@dataclass(frozen=True, slots=True)
class CheckedMessage:
    id: UUID
    token: UUID
    results: dict[str, Any]
    header: str
    recheck_in: int | None  # seconds until the next check; None: the results are final


@dataclass(frozen=True, slots=True)
class Backlog:
    messages: int
    oldest_due_seconds: float


async def claim(pool: Pool, *, limit: int, lease_seconds: float) -> list[PendingCheck]:
    """Up to `limit` due messages (and those of workers that died), under a new lease."""
    token = uuid7()
    async with storage_errors():
        rows = await pool.fetch(CLAIM, limit, float(lease_seconds), token, INLINE_CONTENT_BYTES)
    return [
        PendingCheck(
            id=row["id"],
            token=token,
            remote_ip=row["remote_ip"],
            helo=row["helo"],
            mail_from=row["mail_from"],
            ingest_source=row["ingest_source"],
            checks=row["checks"],
            size=row["size"],
            raw=None if row["raw"] is None else bytes(row["raw"]),
        )
        for row in rows
    ]


async def content(pool: Pool, pending: PendingCheck) -> bytes:
    """The message as received: from the claim, or for a large one, read now."""
    if pending.raw is not None:
        return pending.raw
    async with storage_errors():
        raw: bytes | None = await pool.fetchval(SELECT_CONTENT, pending.id)
    return b"" if raw is None else bytes(raw)


async def renew_leases(
    pool: Pool, ids: Sequence[UUID], tokens: Sequence[UUID], lease_seconds: float
) -> None:
    async with storage_errors():
        await pool.execute(RENEW_LEASES, list(ids), list(tokens), float(lease_seconds))


async def release(pool: Pool, token: UUID, ids: Sequence[UUID]) -> None:
    async with storage_errors():
        await pool.execute(RELEASE, list(ids), token)


async def record_results(pool: Pool, checked: Sequence[CheckedMessage]) -> set[UUID]:
    """Write results in one statement; the ids written (a lost lease writes nothing)."""
    async with storage_errors():
        rows = await pool.fetch(
            RECORD_RESULTS,
            [c.id for c in checked],
            [c.token for c in checked],
            [c.results for c in checked],
            [c.header for c in checked],
            [c.recheck_in for c in checked],
        )
    return {row["id"] for row in rows}


async def backlog(pool: Pool) -> Backlog:
    async with storage_errors():
        row = await pool.fetchrow(BACKLOG)
    return Backlog(row["messages"], row["oldest_due"])


class ResultWriter:
    """Writes the results of concurrent checks together: one statement and one commit for many.

    A write that fails is not retried: the message stays leased, and when the lease ends it is
    checked again by whichever worker claims it. Nothing is lost, only repeated.
    """

    def __init__(self, pool: Pool, *, max_batch: int = 128, max_inflight: int = 2) -> None:
        self._pool = pool
        self._group: GroupCommit[tuple[CheckedMessage, asyncio.Future[bool]]] = GroupCommit(
            self._flush, max_batch=max_batch, max_inflight=max_inflight
        )

    async def write(self, checked: CheckedMessage) -> bool:
        """True once committed; False when the lease was lost and another worker has it."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._group.submit((checked, future))
        # Shielded: a cancelled caller (a stopping worker) must not cancel a shared commit.
        return await asyncio.shield(future)

    async def _flush(self, batch: list[tuple[CheckedMessage, asyncio.Future[bool]]]) -> None:
        try:
            written = await record_results(self._pool, [checked for checked, _ in batch])
        except StorageError as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        except BaseException as unexpected:  # never leave a caller waiting forever
            for _, future in batch:
                if not future.done():
                    future.set_exception(StorageUnavailable(f"unexpected: {unexpected!r}"))
            raise
        for checked, future in batch:
            if not future.done():
                future.set_result(checked.id in written)
