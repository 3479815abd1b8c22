"""Idempotency-Key rows: claimed before the work, completed in the work's own statement.

A key is claimed with INSERT ... ON CONFLICT, so of two simultaneous requests exactly one gets
it. The claim is the row's `created_at`; the email insert completes the key only if that claim
still holds (`storage.sending.emails.INSERT_EMAIL`), so a claim taken over as abandoned can never
lead to a second send. A request that fails releases its key, so the client may retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors

KEEP_FOR = timedelta(hours=24)  # Resend keeps keys for 24 hours
# An in-flight claim this old belongs to a request that died before it committed (the insert
# statement runs under a 30-second command timeout) and may be taken over.
ABANDONED_AFTER = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Claim:
    key: str
    claimed_at: datetime


@dataclass(frozen=True, slots=True)
class Earlier:
    """The key was used before, within KEEP_FOR."""

    request_hash: str
    in_flight: bool
    status_code: int | None
    response: Any


CLAIM = """
INSERT INTO idempotency_keys AS k (tenant_id, key, endpoint, request_hash, state)
VALUES ($1, $2, $3, $4, 'in_flight')
ON CONFLICT (tenant_id, key) DO UPDATE
    SET endpoint = EXCLUDED.endpoint, request_hash = EXCLUDED.request_hash,
        state = 'in_flight', status_code = NULL, response = NULL, created_at = now()
    WHERE k.created_at < now() - $5::interval
       OR (k.state = 'in_flight' AND k.created_at < now() - $6::interval)
RETURNING created_at
"""
SELECT_EARLIER = """
SELECT request_hash, state, status_code, response FROM idempotency_keys
WHERE tenant_id = $1 AND key = $2
"""
COMPLETE = """
UPDATE idempotency_keys SET state = 'done', status_code = $4, response = $5
WHERE tenant_id = $1 AND key = $2 AND state = 'in_flight' AND created_at = $3
"""
RELEASE = """
DELETE FROM idempotency_keys
WHERE tenant_id = $1 AND key = $2 AND state = 'in_flight' AND created_at = $3
"""
DELETE_EXPIRED = "DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval"


async def claim(
    pool: Pool, tenant_id: UUID, key: str, endpoint: str, request_hash: str
) -> Claim | Earlier:
    """The key for this request, or what an earlier request with the same key left."""
    async with storage_errors():
        for _ in range(3):
            claimed_at = await pool.fetchval(
                CLAIM, tenant_id, key, endpoint, request_hash, KEEP_FOR, ABANDONED_AFTER
            )
            if claimed_at is not None:
                return Claim(key, claimed_at)
            row = await pool.fetchrow(SELECT_EARLIER, tenant_id, key)
            if row is not None:
                return Earlier(
                    row["request_hash"],
                    row["state"] == "in_flight",
                    row["status_code"],
                    row["response"],
                )
            # The holder released it between our two statements: try again.
    return Earlier(request_hash, True, None, None)


async def complete(
    pool: Pool, tenant_id: UUID, claim: Claim, status_code: int, response: Any
) -> bool:
    """For work that stored nothing else; False when the claim was taken over."""
    async with storage_errors():
        status = await pool.execute(
            COMPLETE, tenant_id, claim.key, claim.claimed_at, status_code, response
        )
    return bool(status == "UPDATE 1")


async def release(pool: Pool, tenant_id: UUID, claim: Claim) -> None:
    """The request failed: forget the key so that a retry does the work."""
    async with storage_errors():
        await pool.execute(RELEASE, tenant_id, claim.key, claim.claimed_at)


async def delete_expired(pool: Pool) -> int:
    """Rows past KEEP_FOR are ignored already; this reclaims their space (run periodically)."""
    async with storage_errors():
        status = await pool.execute(DELETE_EXPIRED, KEEP_FOR)
    return int(status.split()[-1])
