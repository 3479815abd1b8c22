"""The outbound queue: claiming due deliveries under a lease, and recording what became of them.

Workers on any number of machines share the `deliveries` table through row locks only:
`FOR UPDATE SKIP LOCKED` hands each due row to one claimer, and the claim's lease (a deadline
and a token) tells everyone else that a live worker owns it. Every outcome is written with the
event it causes and the email's rolled-up status in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import asyncpg

from storage.database import Pool
from storage.errors import storage_errors
from storage.ids import uuid7

# Due rows first, then rows whose worker died (its lease ran out). Each CTE walks its own
# partial index (deliveries_due, deliveries_leased). Rows of one email share next_attempt_at
# (inserted in one transaction), so ordering by email next keeps them in the same claim.
CLAIM = """
WITH expired AS (
    SELECT id FROM deliveries
    WHERE status = 'sending' AND lease_until < now()
    ORDER BY lease_until
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), due AS (
    SELECT id FROM deliveries
    WHERE status IN ('queued', 'deferred') AND next_attempt_at <= now()
    ORDER BY next_attempt_at, email_id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d
SET status = 'sending', lease_until = now() + make_interval(secs => $2), lease_token = $3,
    reclaims = d.reclaims + CASE WHEN d.status = 'sending' AND (d.reclaims = 0 OR d.attempt_began)
                                 THEN 1 ELSE 0 END,
    attempt_began = false
FROM emails e
WHERE d.id IN (SELECT id FROM expired UNION ALL SELECT id FROM due) AND e.id = d.email_id
RETURNING d.id, d.email_id, d.tenant_id, d.recipient, d.recipient_domain, d.attempts,
          d.reclaims,
          extract(epoch FROM now() - greatest(d.queued_at, e.scheduled_at))::float8 AS age,
          EXISTS (SELECT 1 FROM suppressions s
                  WHERE s.tenant_id = d.tenant_id AND s.email = lower(d.recipient)) AS suppressed
"""
# A scheduled email becomes sent when its first recipient is claimed; the status test makes
# that happen once, whichever worker gets there first.
MARK_SCHEDULED_SENT = """
UPDATE emails SET status = 'sent', last_event = 'email.sent'
WHERE id = ANY($1::uuid[]) AND status = 'scheduled'
RETURNING id, tenant_id
"""
# Content up to $2 bytes comes with the claim; a larger message is read when its turn comes
# (SELECT_CONTENT), so a claim of many large messages does not sit in memory at once.
SELECT_MESSAGES = """
SELECT e.id, e.tenant_id, e.from_address, octet_length(e.raw) AS size,
       CASE WHEN octet_length(e.raw) <= $2 THEN e.raw END AS raw,
       dm.name AS domain, dm.dkim_selector, dm.dkim_private_key, e.reply_domain, e.source
FROM emails e LEFT JOIN domains dm ON dm.id = e.domain_id
WHERE e.id = ANY($1::uuid[])
"""
SELECT_CONTENT = "SELECT raw FROM emails WHERE id = $1"
INLINE_CONTENT_BYTES = 256 * 1024
RENEW_LEASES = """
UPDATE deliveries SET lease_until = now() + make_interval(secs => $2)
WHERE lease_token = ANY($1::uuid[]) AND status = 'sending'
"""
# Set just before a row that was reclaimed already is attempted: its next reclaim counts only
# if its own attempt began (migration 0022), not because it was claimed beside a crash.
MARK_ATTEMPT_BEGAN = """
UPDATE deliveries SET attempt_began = true
WHERE id = ANY($1::uuid[]) AND lease_token = $2 AND status = 'sending'
RETURNING id
"""
# Claimed rows a stopping worker never started: due again at once, for any worker.
RELEASE = """
UPDATE deliveries
SET status = CASE WHEN attempts = 0 THEN 'queued' ELSE 'deferred' END,
    lease_until = NULL, lease_token = NULL
WHERE id = ANY($1::uuid[]) AND lease_token = $2 AND status = 'sending'
"""
# Emails first, in id order: their row locks serialise concurrent completions of one email's
# recipients, so the roll-up below always counts the other worker's committed outcome (each
# statement of a READ COMMITTED transaction sees what committed before it started).
LOCK_EMAILS = "SELECT id FROM emails WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"
# Only rows still leased under the claim's token: a late outcome of a worker that lost its
# lease (and whose rows were re-claimed) changes nothing.
UPDATE_OUTCOMES = """
UPDATE deliveries d
SET status = u.status,
    attempts = d.attempts + CASE WHEN u.status = 'suppressed' THEN 0 ELSE 1 END,
    last_attempt_at = CASE WHEN u.status = 'suppressed' THEN d.last_attempt_at ELSE now() END,
    next_attempt_at = CASE WHEN u.status = 'deferred'
                           THEN now() + make_interval(secs => u.retry_in)
                           ELSE d.next_attempt_at END,
    finished_at = CASE WHEN u.status = 'deferred' THEN NULL ELSE now() END,
    lease_until = NULL,
    lease_token = NULL,
    reclaims = 0,
    last_code = u.code,
    last_enhanced = u.enhanced,
    last_response = u.response,
    remote_host = u.remote_host
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::int[], $6::text[], $7::text[],
            $8::text[]) AS u(id, token, status, retry_in, code, enhanced, response, remote_host)
WHERE d.id = u.id AND d.lease_token = u.token AND d.status = 'sending'
RETURNING d.id, d.attempts
"""
INSERT_EVENTS = """
INSERT INTO email_events (id, tenant_id, email_id, type, recipient, data)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::jsonb[])
"""
COUNT_RECIPIENT_STATES = """
SELECT email_id, status, count(*)::int AS n FROM deliveries
WHERE email_id = ANY($1::uuid[]) GROUP BY email_id, status
"""
UPDATE_EMAIL_STATUS = """
UPDATE emails e SET status = u.status, last_event = u.last_event
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(id, status, last_event)
WHERE e.id = u.id AND e.status <> 'canceled'
"""
QUEUE_STATS = """
SELECT status, count(*)::int AS n,
       extract(epoch FROM now() - min(next_attempt_at) FILTER (WHERE next_attempt_at <= now()))
           ::float8 AS oldest_due
FROM deliveries WHERE status IN ('queued', 'deferred', 'sending') GROUP BY status
"""
# Seconds until something becomes claimable: a retry or schedule coming due, or a lease
# running out. NULL when the queue holds nothing at all.
SECONDS_UNTIL_DUE = """
SELECT extract(epoch FROM least(
    (SELECT min(next_attempt_at) FROM deliveries WHERE status IN ('queued', 'deferred')),
    (SELECT min(lease_until) FROM deliveries WHERE status = 'sending')) - now())::float8
"""
NOTIFY_CHANNEL = "opensend_deliveries"


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: UUID
    email_id: UUID
    tenant_id: UUID
    recipient: str
    recipient_domain: str
    attempts: int  # made before this one
    # Times in a row its lease ran out and it was claimed again: the first time always, later
    # times only if its own attempt had begun (migrations 0021 and 0022).
    reclaims: int
    age: float  # seconds since it was queued (or since its scheduled time)
    suppressed: bool = False  # on the tenant's suppression list now: not attempted


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    email_id: UUID
    tenant_id: UUID
    sender: str
    size: int | None  # None: the email has no content at all
    raw: bytes | None  # None when larger than INLINE_CONTENT_BYTES: see `content`
    domain: str | None
    dkim_selector: str | None
    dkim_private_key: str | None = field(repr=False)
    # Where bounces come back (VERP, policy.bounces.verp); None: the domain does not receive.
    reply_domain: str | None = None
    source: str = "api"  # api, smtp (submission), reply, dsn


@dataclass(frozen=True, slots=True)
class Claim:
    token: UUID
    deliveries: list[ClaimedDelivery]
    messages: dict[UUID, OutboundMessage]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to record for one claimed delivery after an attempt."""

    delivery_id: UUID
    token: UUID
    email_id: UUID
    tenant_id: UUID
    recipient: str
    status: str  # delivered, deferred, bounced
    code: int | None
    enhanced: str | None
    response: str
    remote_host: str | None
    retry_in: int | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    dsn: DsnToQueue | None = None  # queued with this outcome, if it applies
    # The event, when it is not the status's own (EVENT_FOR_STATUS): email.failed for a bounce
    # on our side (policy.delivery.result.failed_not_bounced).
    event: str | None = None

    @property
    def event_type(self) -> str:
        return self.event or EVENT_FOR_STATUS[self.status]


class DsnToQueue(Protocol):
    """A delivery status notification to send (policy.bounces.dsn.Dsn)."""

    @property
    def email_id(self) -> UUID: ...
    @property
    def message_id(self) -> str: ...
    @property
    def to(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def from_header(self) -> str: ...
    @property
    def raw(self) -> bytes: ...


EVENT_FOR_STATUS = {
    "delivered": "email.delivered",
    "deferred": "email.delivery_delayed",
    "bounced": "email.bounced",
    "suppressed": "email.suppressed",
}


async def claim(pool: Pool, *, limit: int, lease_seconds: float) -> Claim:
    """Take up to `limit` due deliveries (and crashed workers' ones) under a new lease."""
    token = uuid7()
    async with storage_errors(), pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(CLAIM, limit, float(lease_seconds), token)
        if not rows:
            return Claim(token, [], {})
        email_ids = list({row["email_id"] for row in rows})
        started = await conn.fetch(MARK_SCHEDULED_SENT, email_ids)
        if started:
            await _insert_events(
                conn, [(r["tenant_id"], r["id"], "email.sent", None, {}) for r in started]
            )
        messages = await conn.fetch(SELECT_MESSAGES, email_ids, INLINE_CONTENT_BYTES)
    return Claim(
        token,
        [ClaimedDelivery(**dict(row)) for row in rows],
        {
            m["id"]: OutboundMessage(
                m["id"],
                m["tenant_id"],
                m["from_address"],
                m["size"],
                m["raw"],
                m["domain"],
                m["dkim_selector"],
                m["dkim_private_key"],
                m["reply_domain"],
                m["source"],
            )
            for m in messages
        },
    )


async def content(pool: Pool, message: OutboundMessage) -> bytes | None:
    """The message as built, from the claim or, for a large one, read now."""
    if message.raw is not None or message.size is None:
        return message.raw
    async with storage_errors():
        raw: bytes | None = await pool.fetchval(SELECT_CONTENT, message.email_id)
    return raw


async def renew_leases(pool: Pool, tokens: Sequence[UUID], lease_seconds: float) -> None:
    async with storage_errors():
        await pool.execute(RENEW_LEASES, list(tokens), float(lease_seconds))


async def mark_attempt_began(pool: Pool, token: UUID, delivery_ids: Sequence[UUID]) -> set[UUID]:
    """The ids marked: those still leased under `token`."""
    async with storage_errors():
        rows = await pool.fetch(MARK_ATTEMPT_BEGAN, list(delivery_ids), token)
    return {row["id"] for row in rows}


async def release(pool: Pool, token: UUID, delivery_ids: Sequence[UUID]) -> None:
    async with storage_errors():
        await pool.execute(RELEASE, list(delivery_ids), token)


async def _insert_events(
    conn: asyncpg.Connection,
    events: Sequence[tuple[UUID, UUID, str, str | None, Mapping[str, Any]]],
) -> None:
    await conn.execute(
        INSERT_EVENTS,
        [uuid7() for _ in events],
        [e[0] for e in events],
        [e[1] for e in events],
        [e[2] for e in events],
        [e[3] for e in events],
        [dict(e[4]) for e in events],
    )


RollUp = Callable[[Mapping[str, int]], str]


async def record_outcomes(pool: Pool, outcomes: Sequence[Outcome], roll_up: RollUp) -> set[UUID]:
    """Write outcomes, their events and their emails' statuses in one transaction.

    Returns the ids of the deliveries it applied; an outcome whose lease was lost is skipped.
    `roll_up` turns an email's recipient states into its status (policy decides).
    """
    email_ids = sorted({o.email_id for o in outcomes})
    async with storage_errors(), pool.acquire() as conn, conn.transaction():
        await conn.execute(LOCK_EMAILS, email_ids)
        applied_rows = await conn.fetch(
            UPDATE_OUTCOMES,
            [o.delivery_id for o in outcomes],
            [o.token for o in outcomes],
            [o.status for o in outcomes],
            [o.retry_in or 0 for o in outcomes],
            [o.code for o in outcomes],
            [o.enhanced for o in outcomes],
            [o.response for o in outcomes],
            [o.remote_host for o in outcomes],
        )
        attempts = {row["id"]: row["attempts"] for row in applied_rows}
        applied = [o for o in outcomes if o.delivery_id in attempts]
        if not applied:
            return set()
        await _insert_events(
            conn,
            [
                (
                    o.tenant_id,
                    o.email_id,
                    o.event_type,
                    o.recipient,
                    {**o.data, "attempt": attempts[o.delivery_id]},
                )
                for o in applied
            ],
        )
        for outcome in applied:
            if outcome.dsn is not None:
                await queue_dsn(conn, outcome.tenant_id, outcome.dsn)
        states: dict[UUID, dict[str, int]] = {}
        for row in await conn.fetch(COUNT_RECIPIENT_STATES, email_ids):
            states.setdefault(row["email_id"], {})[row["status"]] = row["n"]
        last_event = {o.email_id: o.event_type for o in applied}
        touched = sorted(last_event)
        await conn.execute(
            UPDATE_EMAIL_STATUS,
            touched,
            [roll_up(states.get(email_id, {})) for email_id in touched],
            [last_event[email_id] for email_id in touched],
        )
    return set(attempts)


# A DSN is an email of the tenant like any other, from the null reverse-path (from_address ''),
# unsigned (no domain), never tracked for replies; its one delivery wakes the workers at COMMIT.
INSERT_DSN = """
WITH email AS (
    INSERT INTO emails (id, tenant_id, from_address, from_header, to_addresses, subject,
                        message_id, raw, status, last_event, source)
    VALUES ($1, $2, '', $3, ARRAY[$4::text], $5, $6, $7, 'sent', 'email.sent', 'dsn')
    RETURNING id
), queue AS (
    INSERT INTO deliveries (id, email_id, tenant_id, recipient, recipient_domain)
    SELECT $8, email.id, $2, $4, lower(split_part($4, '@', 2)) FROM email
), event AS (
    INSERT INTO email_events (id, tenant_id, email_id, type)
    SELECT $9, $2, email.id, 'email.sent' FROM email
)
SELECT pg_notify('opensend_deliveries', '')
"""


async def queue_dsn(conn: asyncpg.Connection, tenant_id: UUID, dsn: DsnToQueue) -> None:
    """Queue a DSN email and its one delivery, in the caller's transaction."""
    await conn.execute(
        INSERT_DSN,
        dsn.email_id,
        tenant_id,
        dsn.from_header,
        dsn.to,
        dsn.subject,
        dsn.message_id,
        dsn.raw,
        uuid7(),
        uuid7(),
    )


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: dict[str, int]  # queued, deferred, sending
    oldest_due_seconds: float  # how long the longest-waiting due delivery has waited; 0 if none


async def queue_stats(pool: Pool) -> QueueStats:
    async with storage_errors():
        rows = await pool.fetch(QUEUE_STATS)
    depth = {"queued": 0, "deferred": 0, "sending": 0}
    oldest = 0.0
    for row in rows:
        depth[row["status"]] = row["n"]
        if row["status"] != "sending" and row["oldest_due"] is not None:
            oldest = max(oldest, row["oldest_due"])
    return QueueStats(depth, oldest)


async def seconds_until_due(pool: Pool) -> float | None:
    async with storage_errors():
        value: float | None = await pool.fetchval(SECONDS_UNTIL_DUE)
    return value
