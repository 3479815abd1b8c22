"""The webhook outbox as the delivery workers see it: claims under a lease, outcomes, statistics.

Workers on any number of machines share `webhook_deliveries` through row locks only. A claim
takes due rows FOR UPDATE SKIP LOCKED, at most `per_endpoint` in flight per endpoint across all
workers (rows under a live lease count), so one slow endpoint cannot hold every worker. It moves
the rows' next_attempt_at to the end of the lease: if the worker dies mid-POST the row is due
again then, for any worker, under the same id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors
from storage.ids import uuid7

NOTIFY_CHANNEL = "opensend_webhooks"

# Claims and outcomes do not wait for their WAL flush (synchronous_commit off, for their own
# one-statement transaction only, set inside the statement to save a round trip): one lost in a
# crash costs a resend under the same webhook-id, which the at-least-once contract allows
# anyway, and the flush would otherwise be paid per attempt, beside the MX's commits on the
# same disk. The events themselves are written in the changing transaction, durably.
_ASYNC_COMMIT = "SELECT set_config('synchronous_commit', 'off', true) AS async_commit"

CLAIM = f"""
WITH async_commit AS ({_ASYNC_COMMIT}), picked AS (
    SELECT d.id FROM webhooks w
    CROSS JOIN LATERAL (
        SELECT d.id FROM webhook_deliveries d
        WHERE d.webhook_id = w.id AND d.status IN ('pending', 'attempting')
          AND d.next_attempt_at <= now()
        ORDER BY d.next_attempt_at
        LIMIT greatest(0, $2 - (SELECT count(*) FROM webhook_deliveries x
                                WHERE x.webhook_id = w.id AND x.lease_until > now()
                                  AND x.status IN ('pending', 'attempting')))
        FOR UPDATE OF d SKIP LOCKED
    ) d
    WHERE w.status = 'enabled'
    LIMIT $1
)
UPDATE webhook_deliveries d
SET lease_until = now() + make_interval(secs => $3),
    next_attempt_at = now() + make_interval(secs => $3),
    lease_token = $4
FROM picked, async_commit, webhook_events e, webhooks w
WHERE d.id = picked.id AND e.id = d.event_id AND w.id = d.webhook_id
RETURNING d.id, d.webhook_id, d.tenant_id, d.attempts, e.type, e.created_at, e.data,
          w.endpoint, w.signing_secret,
          CASE WHEN w.previous_secret_until > now() THEN w.previous_secret END AS previous_secret
"""
# Every attempt is recorded, even one whose lease was lost meanwhile (it was made); only the
# lease holder moves the delivery on. The endpoint's failing streak starts at its first failure
# and ends at a success; past `$12` seconds of failing it is disabled, for the tenant to see.
RECORD_OUTCOME = f"""
WITH d AS (
    UPDATE webhook_deliveries
    SET status = $3, attempts = attempts + 1, last_attempt_at = $6,
        next_attempt_at = CASE WHEN $3 = 'attempting' THEN now() + make_interval(secs => $4)
                               ELSE next_attempt_at END,
        finished_at = CASE WHEN $3 IN ('success', 'failed') THEN now() END,
        lease_until = NULL, lease_token = NULL
    WHERE id = $1 AND lease_token = $2
    RETURNING id, webhook_id
), attempt AS (
    INSERT INTO webhook_attempts (id, delivery_id, attempted_at, status_code, latency_ms,
                                  response, error)
    VALUES ($5, $1, $6, $7, $8, $9, $10)
), endpoint AS (
    UPDATE webhooks w
    SET failing_since = CASE WHEN $11 THEN NULL ELSE coalesce(w.failing_since, $6) END,
        status = CASE WHEN NOT $11 AND w.failing_since < now() - make_interval(secs => $12)
                      THEN 'disabled' ELSE w.status END,
        disabled_reason = CASE WHEN NOT $11 AND w.failing_since < now() - make_interval(secs => $12)
                               THEN 'failing' ELSE w.disabled_reason END
    FROM d
    WHERE w.id = d.webhook_id AND (NOT $11 OR w.failing_since IS NOT NULL)
    RETURNING w.status
)
SELECT (SELECT count(*) FROM d)::int AS applied, (SELECT status FROM endpoint) AS endpoint_status,
       ({_ASYNC_COMMIT})
"""
# Claimed rows a stopping worker never started: due again at once.
RELEASE = """
UPDATE webhook_deliveries SET next_attempt_at = now(), lease_until = NULL, lease_token = NULL
WHERE id = ANY($1::uuid[]) AND lease_token = $2
"""
RENEW = """
UPDATE webhook_deliveries
SET lease_until = now() + make_interval(secs => $2),
    next_attempt_at = now() + make_interval(secs => $2)
WHERE lease_token = ANY($1::uuid[])
"""
# Deliveries of enabled endpoints only: a disabled endpoint's queue waits without alarm.
STATS = """
SELECT d.status, count(*)::int AS n,
       extract(epoch FROM now() - min(d.next_attempt_at)
               FILTER (WHERE d.next_attempt_at <= now() AND d.lease_until IS NULL))::float8
           AS oldest_due
FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id AND w.status = 'enabled'
WHERE d.status IN ('pending', 'attempting') GROUP BY d.status
"""
SECONDS_UNTIL_DUE = """
SELECT extract(epoch FROM min(d.next_attempt_at) - now())::float8
FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id AND w.status = 'enabled'
WHERE d.status IN ('pending', 'attempting')
"""


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: UUID
    webhook_id: UUID
    tenant_id: UUID
    attempts: int  # made before this one
    type: str
    created_at: datetime
    data: dict[str, Any]
    endpoint: str
    signing_secret: str
    previous_secret: str | None  # still signing: a rotation's grace period

    def __repr__(self) -> str:  # never the secrets, wherever a delivery is logged
        return f"ClaimedDelivery(id={self.id}, webhook_id={self.webhook_id}, type={self.type})"

    @property
    def secrets(self) -> list[str]:
        return [self.signing_secret] + ([self.previous_secret] if self.previous_secret else [])


@dataclass(frozen=True, slots=True)
class Claim:
    token: UUID
    deliveries: list[ClaimedDelivery]


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    delivery_id: UUID
    token: UUID
    status: str  # success, attempting, failed
    retry_in: int | None
    attempted_at: datetime
    status_code: int | None
    latency_ms: float
    response: str
    error: str | None
    succeeded: bool


async def claim(pool: Pool, *, limit: int, per_endpoint: int, lease_seconds: int) -> Claim:
    token = uuid7()
    async with storage_errors():
        rows = await pool.fetch(CLAIM, limit, per_endpoint, float(lease_seconds), token)
    return Claim(token, [ClaimedDelivery(**dict(row)) for row in rows])


async def record_outcome(
    pool: Pool, outcome: AttemptOutcome, *, disable_after_seconds: int
) -> tuple[bool, str | None]:
    """Whether the outcome moved the delivery on (its lease still held), and the endpoint's
    status when this attempt changed its failing streak."""
    async with storage_errors():
        row = await pool.fetchrow(
            RECORD_OUTCOME,
            outcome.delivery_id,
            outcome.token,
            outcome.status,
            float(outcome.retry_in or 0),
            uuid7(),
            outcome.attempted_at,
            outcome.status_code,
            outcome.latency_ms,
            outcome.response,
            outcome.error,
            outcome.succeeded,
            float(disable_after_seconds),
        )
    return bool(row["applied"]), row["endpoint_status"]


async def release(pool: Pool, token: UUID, delivery_ids: list[UUID]) -> None:
    async with storage_errors():
        await pool.execute(RELEASE, delivery_ids, token)


async def renew(pool: Pool, tokens: list[UUID], lease_seconds: int) -> None:
    async with storage_errors():
        await pool.execute(RENEW, tokens, float(lease_seconds))


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: dict[str, int]  # pending, attempting
    oldest_due_seconds: float


async def stats(pool: Pool) -> OutboxStats:
    async with storage_errors():
        rows = await pool.fetch(STATS)
    pending = {"pending": 0, "attempting": 0}
    oldest = 0.0
    for row in rows:
        pending[row["status"]] = row["n"]
        if row["oldest_due"] is not None:
            oldest = max(oldest, row["oldest_due"])
    return OutboxStats(pending, oldest)


async def seconds_until_due(pool: Pool) -> float | None:
    async with storage_errors():
        value: float | None = await pool.fetchval(SECONDS_UNTIL_DUE)
    return value
