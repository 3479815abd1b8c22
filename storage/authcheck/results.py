"""The authentication checks' reads and writes: new mail found by id, results written beside it.

The MX writes nothing for the checks. Received mail has uuid7 ids, minted in time order
(storage/ids.py), so the checker finds new mail as the ids above its watermark
(`auth_check_progress.checked_through`, migration 0010) that have no results yet: a scan of
received_emails' primary key, no queue. It writes only `received_auth_results`, never the
message's wide row.

One checker runs at a time across every machine, under a session advisory lock (`LOCK`): no
row locks, no leases. A checker that dies loses nothing: what it had not written has no results
and is above the watermark, so the next holder of the lock finds it.

The watermark lags behind the clock by a settle window: ids are minted before their commit
(group commit, several MX processes), so a message may appear after later ids did. Below the
window every id has committed (or never will); above it the NOT EXISTS skips what is checked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from uuid import UUID

import asyncpg

from storage.database import Pool
from storage.errors import StorageError, StorageUnavailable, storage_errors
from storage.group_commit import GroupCommit
from storage.ids import uuid7_floor, uuid7_millis

# Content up to this size comes with the batch; a larger message is read when its turn comes,
# so a batch of many large messages does not sit in memory at once (as storage.delivery.queue does).
INLINE_CONTENT_BYTES = 256 * 1024

# "authchck" in ASCII, as a bigint: the checkers' session advisory lock (storage/migrate.py
# uses "opensend"). Released by PostgreSQL when its session ends, a crashed checker's too.
CHECKER_LOCK_ID = 0x617574686368636B
LOCK = "SELECT pg_try_advisory_lock($1)"
UNLOCK = "SELECT pg_advisory_unlock($1)"

# The settings of the checker's connections (storage.database.open_pool): sequential and bitmap
# scans priced out. Its batch writes (RECORD_RESULTS, and storage.authcheck.stripped's
# RECORD_STRIPPED) keep only the messages that still exist, an EXISTS on received_emails by id.
# PostgreSQL caches a generic plan after five executions; made on a new server's empty
# received_emails, it joined each batch to the whole table by a sequential scan, and kept doing
# so, with the table growing by thousands of wide rows a minute, until an autoanalyze made it
# again. Every statement of the checker has an index to read by: ids above the watermark, the
# recheck index, a batch's ids (tests/mta/authcheck/test_plans.py).
CHECKER_SESSION_SETTINGS = {"enable_seqscan": "off", "enable_bitmapscan": "off"}

_BEFORE_ALL = "'00000000-0000-0000-0000-000000000000'::uuid"
_WATERMARK = f"(SELECT coalesce(checked_through, {_BEFORE_ALL}) FROM auth_check_progress)"
_UNCHECKED = "NOT EXISTS (SELECT 1 FROM received_auth_results a WHERE a.received_id = r.id)"

# New mail (oldest first, along the primary key from the watermark, or from the checker's own
# position $5 when it is past it) and rechecks due, in one round trip. `checks` is how many
# checks this one makes. Messages the checker holds now ($2) are left out: $1 asks for enough
# more to make up for them.
SELECT_TO_CHECK = f"""
WITH fresh AS (
    SELECT r.id, 1 AS checks FROM received_emails r
    WHERE r.id > greatest({_WATERMARK}, $5::uuid) AND {_UNCHECKED}
    ORDER BY r.id
    LIMIT $1
), due AS (
    SELECT received_id AS id, checks + 1 AS checks FROM received_auth_results
    WHERE next_check_at <= now()
    ORDER BY next_check_at
    LIMIT $1
), picked AS (
    SELECT * FROM (SELECT * FROM fresh UNION ALL SELECT * FROM due) p
    WHERE p.id <> ALL($2::uuid[])
    LIMIT $3
)
SELECT r.id, host(r.remote_ip) AS remote_ip, r.helo, r.mail_from, r.ingest_source, p.checks,
       r.size, CASE WHEN r.size <= $4 THEN r.raw END AS raw
FROM picked p JOIN received_emails r ON r.id = p.id
ORDER BY r.id
"""
SELECT_CONTENT = "SELECT raw FROM received_emails WHERE id = $1"
# One statement for a batch. A recheck rewrites the row; so does a second check of a message
# whose first checker died after writing (both verdicts are true, the later one stands).
RECORD_RESULTS = """
INSERT INTO received_auth_results AS a
    (received_id, results, header, checked_at, checks, next_check_at)
SELECT u.id, u.results, u.header, now(), u.checks,
       now() + make_interval(secs => u.recheck_in)
FROM unnest($1::uuid[], $2::jsonb[], $3::text[], $4::int[], $5::int[])
    AS u(id, results, header, checks, recheck_in)
-- A message deleted while it was being checked has nothing to write to.
WHERE EXISTS (SELECT 1 FROM received_emails r WHERE r.id = u.id)
ON CONFLICT (received_id) DO UPDATE
SET results = excluded.results, header = excluded.header, checked_at = excluded.checked_at,
    checks = excluded.checks, next_check_at = excluded.next_check_at
"""
# Up to the first id at or below the cutoff still without results (one being checked, or one
# committed late): just below it. None unchecked up to the cutoff: the cutoff itself.
ADVANCE_WATERMARK = f"""
WITH gap AS (
    SELECT (SELECT r.id FROM received_emails r
            WHERE r.id > {_WATERMARK} AND r.id <= $1 AND {_UNCHECKED}
            ORDER BY r.id LIMIT 1) AS id
), target AS (
    SELECT CASE WHEN gap.id IS NULL THEN $1::uuid
                ELSE (SELECT r.id FROM received_emails r
                      WHERE r.id > {_WATERMARK} AND r.id < gap.id
                      ORDER BY r.id DESC LIMIT 1)
           END AS id
    FROM gap
)
UPDATE auth_check_progress p SET checked_through = target.id
FROM target
WHERE target.id IS NOT NULL AND (p.checked_through IS NULL OR target.id > p.checked_through)
"""
# What the checker is behind by: new mail above the watermark without results (a scan of what
# came since the settle window, plus any backlog), and rechecks due.
BACKLOG = f"""
SELECT (SELECT count(*) FROM received_emails r WHERE r.id > {_WATERMARK} AND {_UNCHECKED})::int
           AS fresh,
       (SELECT r.id FROM received_emails r WHERE r.id > {_WATERMARK} AND {_UNCHECKED}
        ORDER BY r.id LIMIT 1) AS oldest_fresh,
       (SELECT count(*) FROM received_auth_results WHERE next_check_at <= now())::int AS due,
       (SELECT extract(epoch FROM now() - min(next_check_at)) FROM received_auth_results
        WHERE next_check_at <= now())::float8 AS oldest_due
"""
SELECT_WATERMARK = "SELECT checked_through FROM auth_check_progress"


R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class PendingCheck:
    id: UUID
    remote_ip: str | None
    helo: str | None
    mail_from: str
    ingest_source: str | None  # the ingester it came through; None for port 25
    checks: int  # checks of this message so far, this one included
    size: int
    raw: bytes | None  # None when larger than INLINE_CONTENT_BYTES: see `content`


@dataclass(frozen=True, slots=True)
class CheckedMessage:
    id: UUID
    checks: int
    results: dict[str, Any]
    header: str
    recheck_in: int | None  # seconds until the next check; None: the results are final


@dataclass(frozen=True, slots=True)
class Backlog:
    messages: int
    oldest_due_seconds: float


async def try_lock(conn: asyncpg.Connection) -> bool:
    """The checkers' lock for this session, if no other session holds it."""
    async with storage_errors():
        return bool(await conn.fetchval(LOCK, CHECKER_LOCK_ID))


async def unlock(conn: asyncpg.Connection) -> None:
    async with storage_errors():
        await conn.fetchval(UNLOCK, CHECKER_LOCK_ID)


async def to_check(
    pool: Pool, *, limit: int, held: Collection[UUID] = (), after: UUID | None = None
) -> list[PendingCheck]:
    """Up to `limit` messages to check, oldest first: new mail (above the watermark, and above
    `after` if given), then rechecks due; none of `held` (being checked now)."""
    async with storage_errors():
        rows = await pool.fetch(
            SELECT_TO_CHECK, limit + len(held), list(held), limit, INLINE_CONTENT_BYTES, after
        )
    return [
        PendingCheck(
            id=row["id"],
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
    """The message as received: from the batch, or for a large one, read now."""
    if pending.raw is not None:
        return pending.raw
    async with storage_errors():
        raw: bytes | None = await pool.fetchval(SELECT_CONTENT, pending.id)
    return b"" if raw is None else bytes(raw)


async def record_results(pool: Pool, checked: Sequence[CheckedMessage]) -> None:
    async with storage_errors():
        await pool.execute(
            RECORD_RESULTS,
            [c.id for c in checked],
            [c.results for c in checked],
            [c.header for c in checked],
            [c.checks for c in checked],
            [c.recheck_in for c in checked],
        )


def settled_cutoff(settle_seconds: float, now: float | None = None) -> UUID:
    """The highest id the watermark may reach: ids minted `settle_seconds` ago or earlier."""
    millis = int(((time.time() if now is None else now) - settle_seconds) * 1000)
    return uuid7_floor(millis)


async def advance_watermark(pool: Pool, cutoff: UUID) -> None:
    """Move the watermark up through every checked id at or below `cutoff`."""
    async with storage_errors():
        await pool.execute(ADVANCE_WATERMARK, cutoff)


async def watermark(pool: Pool) -> UUID | None:
    async with storage_errors():
        value: UUID | None = await pool.fetchval(SELECT_WATERMARK)
    return value


async def backlog(pool: Pool) -> Backlog:
    async with storage_errors():
        row = await pool.fetchrow(BACKLOG)
    oldest = 0.0 if row["oldest_due"] is None else max(row["oldest_due"], 0.0)
    if row["oldest_fresh"] is not None:
        waited = time.time() - uuid7_millis(row["oldest_fresh"]) / 1000
        oldest = max(oldest, waited, 0.0)
    return Backlog(row["fresh"] + row["due"], oldest)


class ResultWriter(Generic[R]):
    """Writes the results of concurrent checks together: one statement and one commit for many.

    A write that fails is not retried: the message has no results (or its old ones, due), so
    it is checked again. Nothing is lost, only repeated. `record` writes one batch: the
    authentication results by default, or another after-commit job's
    (storage/authcheck/stripped.py).
    """

    def __init__(
        self,
        pool: Pool,
        *,
        max_batch: int = 128,
        max_inflight: int = 2,
        record: Callable[[Pool, Sequence[R]], Awaitable[None]] = record_results,  # type: ignore[assignment]
    ) -> None:
        self._pool = pool
        self._record = record
        self._group: GroupCommit[tuple[R, asyncio.Future[None]]] = GroupCommit(
            self._flush, max_batch=max_batch, max_inflight=max_inflight
        )

    async def write(self, checked: R) -> None:
        """Returns once committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._group.submit((checked, future))
        # Shielded: a cancelled caller (a stopping checker) must not cancel a shared commit.
        await asyncio.shield(future)

    async def _flush(self, batch: list[tuple[R, asyncio.Future[None]]]) -> None:
        try:
            await self._record(self._pool, [checked for checked, _ in batch])
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
        for _, future in batch:
            if not future.done():
                future.set_result(None)
