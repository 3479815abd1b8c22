"""The webhook outbox as the delivery workers see it: claims under a lease, outcomes, statistics.

Workers on any number of machines share `webhook_deliveries` through row locks only. A claim
takes due rows FOR UPDATE SKIP LOCKED, at most `per_endpoint` in flight per endpoint across all
workers (rows under a live lease count), one while the endpoint is failing, so one slow endpoint
cannot hold every worker. It leases the rows: if the worker dies mid-POST a row is due again
when its lease runs out, for any worker, under the same id. A worker records the outcomes of its
finished requests and claims again in one statement (a cycle).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors
from storage.ids import uuid7

NOTIFY_CHANNEL = "opensend_webhooks"

# The settings of the workers' connections (storage.database.open_pool). A queue's size swings
# from empty to thousands within seconds, faster than ANALYZE follows, so no plan of the cycle
# may depend on what the statistics say of it:
# - Sequential and bitmap scans are priced out, and so are hash and merge joins, which read
#   one side whole (with a few hundred endpoints and a small outbox, the heads were joined to
#   the whole primary-key index by hash); the statement (`picked`) cannot read the due index
#   whole; the concurrency cap is a number in the statement (cycle_statement). Every read of
#   webhook_deliveries in the cycle goes by a key (an outcome's or a head's id, an endpoint's
#   queue), so a plan costs what the cycle carries, whatever the queue holds. A generic plan
#   made on an empty outbox (a new server, a quiet spell) used to join the outcomes by a
#   sequential scan and pick the heads from a bitmap scan of the whole due index: with 6,000
#   events waiting, 9 ms of PostgreSQL CPU per event instead of 0.14, and a drain of about 100
#   events/s.
# - That plan made once is kept (force_generic_plan), never made again for each cycle's
#   arguments: planning this statement costs about 1 ms of PostgreSQL CPU, three times what
#   running it costs; left to choose, PostgreSQL planned every cycle once a backlog had been
#   analyzed. (An ANALYZE still makes the kept plan again, under the same rules.)
# The workers' other statements read more, and not per event: the statistics (STATS,
# SECONDS_UNTIL_DUE) count every due row through the due index, every 15 s and when idle;
# retention walks old events in id order and their deliveries through (event_id, webhook_id).
# Figures and the test: tests/perf/README.md, webhooks; tests/webhooks/test_outbox.py.
WORKER_SESSION_SETTINGS = {
    "plan_cache_mode": "force_generic_plan",
    "enable_seqscan": "off",
    "enable_bitmapscan": "off",
    "enable_hashjoin": "off",
    "enable_mergejoin": "off",
}

# Claims and outcomes do not wait for their WAL flush (synchronous_commit off, for their own
# one-statement transaction only, set inside the statement to save a round trip): one lost in a
# crash costs a resend under the same webhook-id, which the at-least-once contract allows
# anyway, and the flush would otherwise be paid per attempt, beside the MX's commits on the
# same disk. The events themselves are written in the changing transaction, durably.
_ASYNC_COMMIT = "SELECT set_config('synchronous_commit', 'off', true) AS async_commit"

# One round trip a cycle of the worker: the outcomes of the requests that ended since the last
# cycle ($1..$11, arrays, possibly empty), then a claim of what is due now. Under load the
# outcomes of several requests share the statement, and their commit, with the next claim;
# alone, an event costs one cycle to claim and one to record, as before.
#
# Every attempt is recorded, even one whose lease was lost meanwhile (it was made); only the
# lease holder moves the delivery on. An endpoint's failing streak starts at its first failure
# and ends at a success (the attempts of a cycle count in their order); past `$12` seconds of
# failing it is disabled, for the tenant to see.
#
# The claim: each endpoint's queue in due order (then id), and its first `{per_endpoint}` rows (the
# concurrency cap, written into the statement: see cycle_statement), or its first row alone while
# the endpoint is failing, are the ones that may be in flight. Those under a live lease are (another
# worker's, or ours); the others in that head are claimed, FOR UPDATE SKIP LOCKED (one a concurrent
# claim is taking is skipped, not taken past: the head stays that long, so the cap holds across
# workers). A claim sets the lease only (`$14` seconds, `$15` its token), no indexed column, so the
# row can be updated in place (HOT) and a claim reads only the head of each queue, however long the
# queue: a worker that dies mid-POST leaves its row at the head, due again when the lease runs out,
# for any worker, under the same id.
#
# Every part of one statement reads the same snapshot, so the claim does not see what this cycle
# recorded: the deliveries recorded here are left out of the heads (they are no longer in
# flight), an endpoint this cycle disabled is not claimed for, and one whose streak this cycle
# began or ended is read through `streak`.
_CYCLE = f"""
WITH async_commit AS ({_ASYNC_COMMIT}), u AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::float8[], $5::uuid[],
                         $6::timestamptz[], $7::int[], $8::float8[], $9::text[], $10::text[],
                         $11::boolean[])
        AS u (delivery_id, token, status, retry_in, attempt_id, attempted_at, status_code,
              latency_ms, response, error, succeeded)
), recorded AS (
    UPDATE webhook_deliveries d
    SET status = u.status, attempts = d.attempts + 1, last_attempt_at = u.attempted_at,
        next_attempt_at = CASE WHEN u.status = 'attempting'
                               THEN now() + make_interval(secs => u.retry_in)
                               ELSE d.next_attempt_at END,
        finished_at = CASE WHEN u.status IN ('success', 'failed') THEN now() END,
        lease_until = NULL, lease_token = NULL
    FROM u
    WHERE d.id = u.delivery_id AND d.lease_token = u.token
    RETURNING d.id, d.webhook_id, u.succeeded, u.attempted_at
), attempt AS (
    INSERT INTO webhook_attempts (id, delivery_id, attempted_at, status_code, latency_ms,
                                  response, error)
    SELECT attempt_id, delivery_id, attempted_at, status_code, latency_ms, response, error
    FROM u
), last_success AS (
    SELECT webhook_id, max(attempted_at) FILTER (WHERE succeeded) AS at
    FROM recorded GROUP BY webhook_id
), streak AS (
    -- Each endpoint's failing streak after this cycle's attempts, as if recorded one by one:
    -- none when the latest succeeded; else from the first failure after the cycle's last
    -- success, or, with no success in the cycle, from where it already ran.
    SELECT r.webhook_id, w.failing_since AS was,
           CASE WHEN (array_agg(r.succeeded ORDER BY r.attempted_at DESC))[1] THEN NULL
                WHEN l.at IS NOT NULL
                THEN min(r.attempted_at) FILTER (WHERE NOT r.succeeded AND r.attempted_at > l.at)
                ELSE coalesce(w.failing_since, min(r.attempted_at) FILTER (WHERE NOT r.succeeded))
           END AS failing_since
    FROM recorded r
    JOIN last_success l ON l.webhook_id = r.webhook_id
    JOIN webhooks w ON w.id = r.webhook_id
    GROUP BY r.webhook_id, l.at, w.failing_since
), endpoint AS (
    UPDATE webhooks w
    SET failing_since = s.failing_since,
        status = CASE WHEN s.failing_since < now() - make_interval(secs => $12)
                      THEN 'disabled' ELSE w.status END,
        disabled_reason = CASE WHEN s.failing_since < now() - make_interval(secs => $12)
                               THEN 'failing' ELSE w.disabled_reason END
    FROM streak s
    WHERE w.id = s.webhook_id
      AND (s.failing_since IS DISTINCT FROM s.was
           OR s.failing_since < now() - make_interval(secs => $12))
    RETURNING w.id, w.status
), head AS (
    -- An endpoint in a failing streak (any attempt without a 2xx since its last 2xx) is sent
    -- one request at a time until one succeeds: a hanging endpoint then holds one of a
    -- worker's slots, not the whole cap, for each timeout. The cap stays a number (LIMIT);
    -- the one-at-a-time rule is a filter on the head's places. The streak is as this cycle's
    -- outcomes leave it (`streak`), else as the endpoint's row has it: the cycle that records
    -- the first timeouts claims one more, not another cap's worth. Deliveries written in one
    -- transaction share their due time, so the queue's order ends with the id, as the due
    -- index does: with ties, the head and its places would follow wherever an update moved a
    -- row in the heap, and a leased row could drop out of the head while another took it.
    SELECT x.id, x.next_attempt_at FROM webhooks w
    CROSS JOIN LATERAL (
        SELECT x.id, x.lease_until, x.next_attempt_at,
               row_number() OVER (ORDER BY x.next_attempt_at, x.id) AS place
        FROM webhook_deliveries x
        WHERE x.webhook_id = w.id AND x.status IN ('pending', 'attempting')
          AND x.next_attempt_at <= now() AND x.id <> ALL ($1::uuid[])
        ORDER BY x.next_attempt_at, x.id
        LIMIT {{per_endpoint}}
    ) x
    LEFT JOIN streak s ON s.webhook_id = w.id
    WHERE w.status = 'enabled' AND (x.lease_until IS NULL OR x.lease_until <= now())
      AND (x.place = 1
           OR (CASE WHEN s.webhook_id IS NULL THEN w.failing_since ELSE s.failing_since END)
              IS NULL)
      AND w.id NOT IN (SELECT id FROM endpoint WHERE status = 'disabled')
), picked AS (
    -- Checked again on the row as it is now when a concurrent claim or outcome committed
    -- since this statement's snapshot (READ COMMITTED re-evaluates a locked row). The heads'
    -- rows are looked up by primary key: the status test is written NOT IN, not IN ('pending',
    -- 'attempting') (the same rows, by the table's CHECK), so that it does not match the due
    -- index's predicate and no plan can read that index whole here, in due order, through the
    -- entries of every delivery finished since the last VACUUM. Such a plan, chosen after an
    -- ANALYZE saw a backlog, made cycles of 20 to 200 ms (tests/perf/README.md, webhooks).
    SELECT d.id FROM head h JOIN webhook_deliveries d ON d.id = h.id
    WHERE d.status NOT IN ('success', 'failed') AND d.next_attempt_at <= now()
      AND (d.lease_until IS NULL OR d.lease_until <= now())
    ORDER BY h.next_attempt_at, h.id
    LIMIT $13
    FOR UPDATE OF d SKIP LOCKED
), claimed AS (
    UPDATE webhook_deliveries d
    SET lease_until = now() + make_interval(secs => $14), lease_token = $15
    FROM picked, async_commit, webhook_events e, webhooks w
    WHERE d.id = picked.id AND e.id = d.event_id AND w.id = d.webhook_id
    RETURNING d.id, d.webhook_id, d.tenant_id, d.attempts, e.type, e.created_at, e.data,
              w.endpoint, w.signing_secret,
              CASE WHEN w.previous_secret_until > now() THEN w.previous_secret END
                  AS previous_secret
), result AS (
    SELECT ARRAY(SELECT id FROM recorded) AS applied,
           ARRAY(SELECT id FROM endpoint WHERE status = 'disabled') AS disabled,
           (SELECT async_commit FROM async_commit)
)
SELECT result.applied, result.disabled, claimed.* FROM result LEFT JOIN claimed ON true
"""
# Deliveries of enabled endpoints only: a disabled endpoint's queue waits without alarm.
STATS = """
SELECT d.status, count(*)::int AS n,
       extract(epoch FROM now() - min(d.next_attempt_at)
               FILTER (WHERE d.next_attempt_at <= now()
                         AND (d.lease_until IS NULL OR d.lease_until <= now())))::float8
           AS oldest_due
FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id AND w.status = 'enabled'
WHERE d.status IN ('pending', 'attempting') GROUP BY d.status
"""
SECONDS_UNTIL_DUE = """
SELECT extract(epoch FROM min(greatest(d.next_attempt_at, d.lease_until)) - now())::float8
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


@dataclass(frozen=True, slots=True)
class Cycle:
    token: UUID  # the claim's lease token
    claimed: list[ClaimedDelivery]
    applied: set[UUID]  # recorded deliveries moved on (their lease still held)
    disabled: set[UUID]  # endpoints the recorded attempts disabled (5 days of failures)


_CLAIMED_FIELDS = ClaimedDelivery.__slots__


@functools.cache
def cycle_statement(per_endpoint: int) -> str:
    """The cycle for a concurrency cap of `per_endpoint`, written into the statement as a number,
    not passed as a parameter: the plan the workers keep (WORKER_SESSION_SETTINGS) is made
    without the parameters' values, and PostgreSQL takes an unknown LIMIT to keep a tenth of
    the rows. With thousands due for one endpoint it then expected hundreds of heads, and
    joined them to the whole of webhook_deliveries by hash instead of looking each one up. The
    cap is a setting, fixed for the life of a process."""
    return _CYCLE.format(per_endpoint=int(per_endpoint))


async def cycle(
    pool: Pool,
    outcomes: Sequence[AttemptOutcome],
    *,
    limit: int,
    per_endpoint: int,
    lease_seconds: int,
    disable_after_seconds: int,
) -> Cycle:
    """Record `outcomes` and claim at most `limit` due deliveries, in one transaction."""
    token = uuid7()
    async with storage_errors():
        rows = await pool.fetch(
            cycle_statement(per_endpoint),
            [o.delivery_id for o in outcomes],
            [o.token for o in outcomes],
            [o.status for o in outcomes],
            [float(o.retry_in or 0) for o in outcomes],
            [uuid7() for _ in outcomes],
            [o.attempted_at for o in outcomes],
            [o.status_code for o in outcomes],
            [o.latency_ms for o in outcomes],
            [o.response for o in outcomes],
            [o.error for o in outcomes],
            [o.succeeded for o in outcomes],
            float(disable_after_seconds),
            limit,
            float(lease_seconds),
            token,
        )
    first = rows[0]
    claimed = [
        ClaimedDelivery(*[row[name] for name in _CLAIMED_FIELDS])
        for row in rows
        if row["id"] is not None
    ]
    return Cycle(token, claimed, set(first["applied"]), set(first["disabled"]))


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
