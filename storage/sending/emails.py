"""Outbound emails as the sending API stores them: the email, its queue rows, its events.

An accepted email is one statement of data-modifying CTEs: the thread, the `emails` row, one
`deliveries` row per envelope recipient, the `email_events` row, the Idempotency-Key completion
and the `pg_notify` that wakes the delivery workers at COMMIT. One statement is one transaction
and one round trip, so nothing is ever half-written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

import orjson

from storage.database import Pool
from storage.errors import storage_errors
from storage.ids import uuid7

# The channel the delivery workers LISTEN on.
DELIVERY_CHANNEL = "opensend_deliveries"


@dataclass(frozen=True, slots=True)
class DomainState:
    """A sender domain as read when the email was built; checked again when it is stored."""

    verified: bool
    status: str
    receiving_enabled: bool
    reply_domain: str | None


@dataclass(frozen=True, slots=True)
class NewEmail:
    id: UUID
    tenant_id: UUID
    domain_id: UUID
    thread_id: UUID | None  # a new thread, created with the email; None when untracked
    from_address: str
    from_header: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    reply_to: list[str]
    subject: str
    html: str | None
    text: str | None
    headers: dict[str, str]
    attachments: list[dict[str, Any]]  # metadata only; the content is in `raw`
    tags: list[dict[str, Any]]
    message_id: str
    reply_token: str | None
    reply_address: str | None
    reply_domain: str | None
    raw: bytes
    scheduled_at: datetime | None  # None: due now
    recipients: Sequence[str]  # envelope recipients, unique without case
    source: str = "api"
    # The domain as the message was built from it; None: only check it is the tenant's.
    domain_state: DomainState | None = None
    # An answer (POST /emails/{id}/reply, or any email naming a stored message in In-Reply-To
    # or References: policy.conversation) joins the thread of the message it answers: the thread
    # exists already, so it is touched (last_message_at), not created.
    thread_exists: bool = False
    in_reply_to_received_id: UUID | None = None

    def in_thread(self, thread_id: UUID, received_id: UUID | None) -> NewEmail:
        """This email as an answer in an existing conversation (and to a received email)."""
        return replace(
            self, thread_id=thread_id, thread_exists=True, in_reply_to_received_id=received_id
        )


@dataclass(frozen=True, slots=True)
class Completion:
    """Marks an Idempotency-Key done with its response, in the email's own statement."""

    key: str
    claimed_at: datetime  # the in-flight row's created_at: only its claimant may complete it
    status_code: int
    response: Any = field(default=None)


# $32-$35: the domain as the message was built from it (read through a cache); a domain changed
# or deleted since stores nothing and says so, and the caller builds again from a fresh read.
_INSERT_EMAIL = """
WITH domain AS (
    SELECT 1 FROM domains
    WHERE id = $4 AND tenant_id = $2
      AND ($32::boolean IS NULL
           OR (verified = $32 AND status = $33 AND receiving_enabled = $34
               AND reply_domain IS NOT DISTINCT FROM $35::text))
), claim AS (
    UPDATE idempotency_keys SET state = 'done', status_code = $24, response = $25
    WHERE $22::text IS NOT NULL AND tenant_id = $2 AND key = $22 AND state = 'in_flight'
      AND created_at = $23 AND EXISTS (SELECT 1 FROM domain)
    RETURNING 1
), go AS (
    SELECT 1 FROM domain WHERE $22::text IS NULL OR EXISTS (SELECT 1 FROM claim)
), thread AS (
    INSERT INTO threads (id, tenant_id, subject)
    SELECT $3, $2, $11 FROM go WHERE $3::uuid IS NOT NULL AND NOT $36::boolean
), email AS (
    INSERT INTO emails (id, tenant_id, thread_id, domain_id, from_address, from_header,
                        to_addresses, cc_addresses, bcc_addresses, reply_to_addresses, subject,
                        html_body, text_body, headers, attachments, tags, message_id,
                        reply_token, reply_address, reply_domain, raw, scheduled_at, status,
                        last_event, source, in_reply_to_received_id)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
           $19, $20, $21, $26,
           CASE WHEN $26::timestamptz IS NULL THEN 'sent' ELSE 'scheduled' END,
           CASE WHEN $26::timestamptz IS NULL THEN 'email.sent' ELSE 'email.scheduled' END,
           $27, $37
    FROM go
    RETURNING id
), touch AS (
    UPDATE threads SET last_message_at = now()
    FROM email WHERE $36::boolean AND threads.id = $3 AND threads.tenant_id = $2
), queue AS (
    INSERT INTO deliveries (id, email_id, tenant_id, recipient, recipient_domain,
                            next_attempt_at)
    SELECT r.id, email.id, $2, r.recipient, r.domain, coalesce($26::timestamptz, now())
    FROM email, unnest($28::uuid[], $29::text[], $30::text[]) AS r (id, recipient, domain)
), event AS (
    INSERT INTO email_events (id, tenant_id, email_id, type)
    SELECT $31, $2, email.id,
           CASE WHEN $26::timestamptz IS NULL THEN 'email.sent' ELSE 'email.scheduled' END
    FROM email
)
SELECT (SELECT count(*) FROM email) AS inserted,
       EXISTS (SELECT 1 FROM domain) AS domain_unchanged
"""
# The statement also wakes the delivery workers: the NOTIFY is delivered at COMMIT, and once per
# transaction however many of a group's statements sent it (PostgreSQL delivers identical
# notifications of one transaction once, and takes its notification lock once, at commit).
INSERT_EMAIL = _INSERT_EMAIL + f", pg_notify('{DELIVERY_CHANNEL}', '') AS notified"

# A group commit's emails (storage.sending.writer) in one statement: each column of the group as
# one array, so the statement's fixed cost (its plan's start and end, a CTE per table) is paid
# once per group instead of once per email (about a third of the database's CPU per email at
# five to a group: tests/perf/README.md, submission). An email's own arrays (To, Cc, ...) and
# its jsonb columns travel as JSON text: PostgreSQL's arrays are rectangular, and asyncpg does
# not quote JSON text as elements of a jsonb[]. Everything is inserted, and
# the statement aborts itself (migration 0011) when any email was built from a domain that has
# changed since, or any Idempotency-Key completion lost its claim: then nothing of the group is
# stored, and each request is stored on its own with INSERT_EMAIL, which tells which it was.
# Replies (thread_exists) are not grouped so: they update existing threads, in id order
# (storage.sending.writer), which one UPDATE over an array cannot promise.
GROUP_ABORTED_SQLSTATE = "OSG01"


def _text_array(column: str) -> str:
    """A text[] from a JSON array of strings, in the array's order."""
    return (
        f"ARRAY(SELECT a FROM jsonb_array_elements_text({column}::jsonb)"
        " WITH ORDINALITY AS x (a, n) ORDER BY n)"
    )


# A group with replies or large messages: one INSERT_EMAIL per email, pipelined in the group's
# one implicit transaction (storage.sending.writer), each aborting the group when it stored
# nothing.
INSERT_EMAIL_IN_GROUP = (
    INSERT_EMAIL
    + """,
       CASE WHEN NOT EXISTS (SELECT 1 FROM email) THEN opensend_group_abort() END AS aborted"""
)
INSERT_EMAIL_GROUP = f"""
WITH r AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[],
        $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
        $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[],
        $20::text[], $21::bytea[], $22::timestamptz[], $23::text[], $24::uuid[], $25::boolean[],
        $26::text[], $27::boolean[], $28::text[], $29::uuid[]
    ) AS r (id, tenant_id, thread_id, domain_id, from_address, from_header, to_addresses,
            cc_addresses, bcc_addresses, reply_to_addresses, subject, html_body, text_body,
            headers, attachments, tags, message_id, reply_token, reply_address, reply_domain,
            raw, scheduled_at, source, event_id, built_verified, built_status, built_receiving,
            built_reply_domain, in_reply_to_received_id)
), unchanged AS (
    SELECT 1 FROM r JOIN domains d ON d.id = r.domain_id AND d.tenant_id = r.tenant_id
    WHERE r.built_verified IS NULL
       OR (d.verified = r.built_verified AND d.status = r.built_status
           AND d.receiving_enabled = r.built_receiving
           AND d.reply_domain IS NOT DISTINCT FROM r.built_reply_domain)
), claim AS (
    UPDATE idempotency_keys k SET state = 'done', status_code = c.status_code,
                                  response = c.response::jsonb
    FROM unnest($30::uuid[], $31::text[], $32::timestamptz[], $33::integer[], $34::text[])
        AS c (tenant_id, key, claimed_at, status_code, response)
    WHERE k.tenant_id = c.tenant_id AND k.key = c.key AND k.state = 'in_flight'
      AND k.created_at = c.claimed_at
    RETURNING 1
), thread AS (
    INSERT INTO threads (id, tenant_id, subject)
    SELECT thread_id, tenant_id, subject FROM r WHERE thread_id IS NOT NULL
), email AS (
    INSERT INTO emails (id, tenant_id, thread_id, domain_id, from_address, from_header,
                        to_addresses, cc_addresses, bcc_addresses, reply_to_addresses, subject,
                        html_body, text_body, headers, attachments, tags, message_id,
                        reply_token, reply_address, reply_domain, raw, scheduled_at, status,
                        last_event, source, in_reply_to_received_id)
    SELECT id, tenant_id, thread_id, domain_id, from_address, from_header,
           {_text_array("to_addresses")},
           {_text_array("cc_addresses")},
           {_text_array("bcc_addresses")},
           {_text_array("reply_to_addresses")},
           subject, html_body, text_body, headers::jsonb, attachments::jsonb, tags::jsonb,
           message_id, reply_token,
           reply_address, reply_domain, raw, scheduled_at,
           CASE WHEN scheduled_at IS NULL THEN 'sent' ELSE 'scheduled' END,
           CASE WHEN scheduled_at IS NULL THEN 'email.sent' ELSE 'email.scheduled' END,
           source, in_reply_to_received_id
    FROM r
), queue AS (
    INSERT INTO deliveries (id, email_id, tenant_id, recipient, recipient_domain,
                            next_attempt_at)
    SELECT q.id, r.id, r.tenant_id, q.recipient, q.domain, coalesce(r.scheduled_at, now())
    FROM unnest($35::uuid[], $36::uuid[], $37::text[], $38::text[])
        AS q (id, email_id, recipient, domain)
    JOIN r ON r.id = q.email_id
), event AS (
    INSERT INTO email_events (id, tenant_id, email_id, type)
    SELECT event_id, tenant_id, id,
           CASE WHEN scheduled_at IS NULL THEN 'email.sent' ELSE 'email.scheduled' END
    FROM r
)
SELECT CASE WHEN (SELECT count(*) FROM unchanged) <> cardinality($1::uuid[])
              OR (SELECT count(*) FROM claim) <> cardinality($31::text[])
            THEN opensend_group_abort() END AS aborted,
       pg_notify('{DELIVERY_CHANNEL}', '') AS notified
"""


class Stored(Enum):
    """What became of an insert. Truthy only when stored, so `assert await insert_emails(...)`
    means what it says."""

    STORED = "stored"
    STALE_DOMAIN = "stale_domain"  # the domain changed since it was read: build again
    LOST_CLAIM = "lost_claim"  # the Idempotency-Key was taken over as abandoned

    def __bool__(self) -> bool:
        return self is Stored.STORED


def arguments(email: NewEmail, completion: Completion | None) -> tuple[Any, ...]:
    recipients = list(email.recipients)
    state = email.domain_state
    return (
        email.id,
        email.tenant_id,
        email.thread_id,
        email.domain_id,
        email.from_address,
        email.from_header,
        email.to,
        email.cc,
        email.bcc,
        email.reply_to,
        email.subject,
        email.html,
        email.text,
        email.headers,
        email.attachments,
        email.tags,
        email.message_id,
        email.reply_token,
        email.reply_address,
        email.reply_domain,
        email.raw,
        completion.key if completion else None,
        completion.claimed_at if completion else None,
        completion.status_code if completion else None,
        completion.response if completion else None,
        email.scheduled_at,
        email.source,
        [uuid7() for _ in recipients],
        recipients,
        [r.rpartition("@")[2].lower() for r in recipients],
        uuid7(),
        state.verified if state else None,
        state.status if state else None,
        state.receiving_enabled if state else None,
        state.reply_domain if state else None,
        email.thread_exists,
        email.in_reply_to_received_id,
    )


def _json(value: Any) -> str:
    """JSON text for a group's arrays, by orjson: several times faster than `json.dumps` for
    the six values of each email. What it cannot encode raises TypeError, which stores that
    group request by request (storage.sending.writer)."""
    return orjson.dumps(value).decode()


def _group_row(email: NewEmail) -> tuple[Any, ...]:
    """One email's values for INSERT_EMAIL_GROUP's arrays $1 to $29, in their order."""
    state = email.domain_state
    return (
        email.id,
        email.tenant_id,
        email.thread_id,
        email.domain_id,
        email.from_address,
        email.from_header,
        _json(email.to),
        _json(email.cc),
        _json(email.bcc),
        _json(email.reply_to),
        email.subject,
        email.html,
        email.text,
        _json(email.headers),
        _json(email.attachments),
        _json(email.tags),
        email.message_id,
        email.reply_token,
        email.reply_address,
        email.reply_domain,
        email.raw,
        email.scheduled_at,
        email.source,
        uuid7(),  # its email.sent (or email.scheduled) event
        state.verified if state else None,
        state.status if state else None,
        state.receiving_enabled if state else None,
        state.reply_domain if state else None,
        email.in_reply_to_received_id,
    )


def group_arguments(pairs: Sequence[tuple[NewEmail, Completion | None]]) -> tuple[Any, ...]:
    """INSERT_EMAIL_GROUP's arguments: the group's emails column by column ($1 to $29), then
    the completions ($30 to $34) and the deliveries ($35 to $38), flattened the same way."""
    columns = [list(column) for column in zip(*(_group_row(e) for e, _ in pairs), strict=True)]
    completions = [
        (
            email.tenant_id,
            done.key,
            done.claimed_at,
            done.status_code,
            None if done.response is None else _json(done.response),
        )
        for email, done in pairs
        if done is not None
    ]
    deliveries = [
        (uuid7(), email.id, recipient, recipient.rpartition("@")[2].lower())
        for email, _ in pairs
        for recipient in email.recipients
    ]
    return (*columns, *_columns(completions, 5), *_columns(deliveries, 4))


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as columns; `width` empty columns for no rows."""
    return [[row[i] for row in rows] for i in range(width)]


def outcome_of(row: Any) -> Stored:
    if row["inserted"]:
        return Stored.STORED
    return Stored.LOST_CLAIM if row["domain_unchanged"] else Stored.STALE_DOMAIN


async def insert_emails(
    pool: Pool, emails: Sequence[NewEmail], completion: Completion | None = None
) -> Stored:
    """Store every email or none, and complete `completion` with them."""
    if len(emails) == 1:
        # One statement is its own transaction: one round trip, one COMMIT.
        async with storage_errors():
            row = await pool.fetchrow(INSERT_EMAIL, *arguments(emails[0], completion))
        return outcome_of(row)
    try:
        async with storage_errors(), pool.acquire() as conn, conn.transaction():
            # The key is completed with the last email, so a lost claim rolls back them all.
            for i, email in enumerate(emails):
                last = i == len(emails) - 1
                row = await conn.fetchrow(
                    INSERT_EMAIL, *arguments(email, completion if last else None)
                )
                if outcome_of(row) is not Stored.STORED:
                    raise _NotStored(outcome_of(row))
    except _NotStored as failed:
        return failed.outcome
    return Stored.STORED


class _NotStored(Exception):
    """Rolls back a batch that could not be stored whole."""

    def __init__(self, outcome: Stored) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome


# -- sender domains ----------------------------------------------------------------------------

SELECT_SENDER_DOMAIN = """
SELECT id, name, verified, status, receiving_enabled, reply_domain
FROM domains WHERE tenant_id = $1 AND name = $2
"""


async def find_sender_domain(pool: Pool, tenant_id: UUID, name: str) -> dict[str, Any] | None:
    """The tenant's domain of that name: id, name, verified, status, receiving, reply domain."""
    async with storage_errors():
        row = await pool.fetchrow(SELECT_SENDER_DOMAIN, tenant_id, name.lower())
    return dict(row) if row else None


# -- reading and changing sent emails ----------------------------------------------------------

_SUMMARY = """e.id, e.from_header, e.from_address, e.to_addresses, e.cc_addresses, e.bcc_addresses,
       e.reply_to_addresses, e.subject, e.created_at, e.scheduled_at, e.status, e.last_event,
       e.tags, e.thread_id, e.message_id, e.reply_address"""
SELECT_EMAIL = f"""
SELECT {_SUMMARY}, e.html_body, e.text_body,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'recipient', d.recipient, 'status', d.status, 'attempts', d.attempts,
                    'last_code', d.last_code, 'last_response', d.last_response,
                    'next_attempt_at', d.next_attempt_at,
                    'updated_at', greatest(d.queued_at, d.last_attempt_at, d.finished_at),
                    'report', d.report, 'reported_at', d.reported_at,
                    'complained_at', d.complained_at)
                    ORDER BY d.recipient)
                 FROM deliveries d WHERE d.email_id = e.id), '[]') AS deliveries
FROM emails e WHERE e.tenant_id = $1 AND e.id = $2
"""
# A sent email's attachments: their metadata, and (to serve one) the raw message that holds them.
SELECT_ATTACHMENTS = "SELECT attachments FROM emails WHERE tenant_id = $1 AND id = $2"
SELECT_ATTACHMENTS_AND_RAW = "SELECT attachments, raw FROM emails WHERE tenant_id = $1 AND id = $2"
SELECT_CURSOR = "SELECT created_at, id FROM emails WHERE tenant_id = $1 AND id = $2"
# Newest first on the (tenant_id, created_at DESC, id DESC) index; `before` walks back up.
SELECT_FIRST_PAGE = f"""
SELECT {_SUMMARY} FROM emails e WHERE e.tenant_id = $1
ORDER BY e.created_at DESC, e.id DESC LIMIT $2
"""
SELECT_PAGE_AFTER = f"""
SELECT {_SUMMARY} FROM emails e WHERE e.tenant_id = $1 AND (e.created_at, e.id) < ($3, $4)
ORDER BY e.created_at DESC, e.id DESC LIMIT $2
"""
SELECT_PAGE_BEFORE = f"""
SELECT {_SUMMARY} FROM emails e WHERE e.tenant_id = $1 AND (e.created_at, e.id) > ($3, $4)
ORDER BY e.created_at ASC, e.id ASC LIMIT $2
"""
# Only an email still waiting for its time may move or be canceled: once due, the delivery
# workers may hold its rows, so `scheduled_at > now()` is part of the condition.
RESCHEDULE = """
WITH email AS (
    UPDATE emails SET scheduled_at = $3
    WHERE tenant_id = $1 AND id = $2 AND status = 'scheduled' AND scheduled_at > now()
    RETURNING id
), queue AS (
    UPDATE deliveries SET next_attempt_at = $3
    FROM email WHERE deliveries.email_id = email.id AND deliveries.status = 'queued'
)
SELECT (SELECT count(*) FROM email) AS changed,
       (SELECT status FROM emails WHERE tenant_id = $1 AND id = $2) AS status
"""
CANCEL = """
WITH email AS (
    UPDATE emails SET status = 'canceled', last_event = 'email.canceled'
    WHERE tenant_id = $1 AND id = $2 AND status = 'scheduled' AND scheduled_at > now()
    RETURNING id
), queue AS (
    UPDATE deliveries SET status = 'canceled', finished_at = now()
    FROM email
    WHERE deliveries.email_id = email.id AND deliveries.status IN ('queued', 'deferred')
), event AS (
    INSERT INTO email_events (id, tenant_id, email_id, type)
    SELECT $3, $1, email.id, 'email.canceled' FROM email
)
SELECT (SELECT count(*) FROM email) AS changed,
       (SELECT status FROM emails WHERE tenant_id = $1 AND id = $2) AS status
"""


async def get_email(pool: Pool, tenant_id: UUID, email_id: UUID) -> dict[str, Any] | None:
    async with storage_errors():
        row = await pool.fetchrow(SELECT_EMAIL, tenant_id, email_id)
    return dict(row) if row else None


async def get_attachments(
    pool: Pool, tenant_id: UUID, email_id: UUID
) -> list[dict[str, Any]] | None:
    """The sent email's attachment metadata, in the order they were given; None: no such email."""
    async with storage_errors():
        row = await pool.fetchrow(SELECT_ATTACHMENTS, tenant_id, email_id)
    return None if row is None else _json_list(row["attachments"])


async def get_attachments_and_raw(
    pool: Pool, tenant_id: UUID, email_id: UUID
) -> tuple[list[dict[str, Any]], bytes] | None:
    async with storage_errors():
        row = await pool.fetchrow(SELECT_ATTACHMENTS_AND_RAW, tenant_id, email_id)
    return None if row is None else (_json_list(row["attachments"]), bytes(row["raw"]))


def _json_list(value: Any) -> list[dict[str, Any]]:
    # jsonb comes back as text unless the pool has a codec for it.
    loaded = json.loads(value) if isinstance(value, str) else value
    return list(loaded)


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[dict[str, Any]]
    has_more: bool


async def list_emails(
    pool: Pool,
    tenant_id: UUID,
    limit: int,
    *,
    after: UUID | None = None,
    before: UUID | None = None,
) -> Page | None:
    """A page, newest first; None when the cursor is not an email of this tenant."""
    async with storage_errors(), pool.acquire() as conn:
        if after is None and before is None:
            rows = await conn.fetch(SELECT_FIRST_PAGE, tenant_id, limit + 1)
        else:
            cursor = await conn.fetchrow(SELECT_CURSOR, tenant_id, after or before)
            if cursor is None:
                return None
            query = SELECT_PAGE_AFTER if after is not None else SELECT_PAGE_BEFORE
            rows = await conn.fetch(query, tenant_id, limit + 1, *cursor)
    page = [dict(r) for r in rows[:limit]]
    if before is not None:
        page.reverse()
    return Page(page, len(rows) > limit)


@dataclass(frozen=True, slots=True)
class Change:
    changed: bool
    status: str | None  # the email's status before; None: no such email for this tenant


async def reschedule_email(pool: Pool, tenant_id: UUID, email_id: UUID, when: datetime) -> Change:
    async with storage_errors():
        row = await pool.fetchrow(RESCHEDULE, tenant_id, email_id, when)
    return Change(bool(row["changed"]), row["status"])


async def cancel_email(pool: Pool, tenant_id: UUID, email_id: UUID) -> Change:
    async with storage_errors():
        row = await pool.fetchrow(CANCEL, tenant_id, email_id, uuid7())
    return Change(bool(row["changed"]), row["status"])
