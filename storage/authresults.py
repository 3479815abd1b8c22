"""The authentication-check queue: received messages claimed under a lease, their results
written back.

The queue is `received_emails` itself (migration 0010): `auth_due_at` is when a message is next
due, and while a worker holds it, when its lease ends. Workers on any number of machines meet
only in row locks (`FOR UPDATE SKIP LOCKED`) and in the lease token: results of a worker whose
lease ran out (and whose message another worker took) are not written.
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
CLAIM = """
WITH due AS (
    SELECT id FROM received_emails
    WHERE auth_due_at <= now()
    ORDER BY auth_due_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE received_emails r
SET auth_due_at = now() + make_interval(secs => $2), auth_lease_token = $3,
    auth_checks = r.auth_checks + 1
FROM due WHERE r.id = due.id
RETURNING r.id, host(r.remote_ip) AS remote_ip, r.helo, r.mail_from, r.ingest_source,
          r.auth_checks,
          octet_length(r.raw) AS size, CASE WHEN octet_length(r.raw) <= $4 THEN r.raw END AS raw
"""
SELECT_CONTENT = "SELECT raw FROM received_emails WHERE id = $1"
RENEW_LEASES = """
UPDATE received_emails SET auth_due_at = now() + make_interval(secs => $3)
WHERE id = ANY($1::uuid[]) AND auth_lease_token = ANY($2::uuid[])
"""
# Claimed messages a stopping worker never started: due again at once, for any worker.
RELEASE = """
UPDATE received_emails SET auth_due_at = now(), auth_lease_token = NULL
WHERE id = ANY($1::uuid[]) AND auth_lease_token = $2
"""
# Only under the claim's token. A NULL recheck makes the results final (nothing due).
RECORD_RESULTS = """
UPDATE received_emails r
SET auth_results = u.results, auth_header = u.header, auth_checked_at = now(),
    auth_due_at = now() + make_interval(secs => u.recheck_in), auth_lease_token = NULL
FROM unnest($1::uuid[], $2::uuid[], $3::jsonb[], $4::text[], $5::int[])
     AS u(id, token, results, header, recheck_in)
WHERE r.id = u.id AND r.auth_lease_token = u.token
RETURNING r.id
"""
# Due now: what the workers are behind by. A message being checked is due only when its
# lease ends, so it is not counted unless its worker died.
BACKLOG = """
SELECT count(*)::int AS messages,
       coalesce(extract(epoch FROM now() - min(auth_due_at)), 0)::float8 AS oldest_due
FROM received_emails WHERE auth_due_at <= now()
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
            checks=row["auth_checks"],
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
