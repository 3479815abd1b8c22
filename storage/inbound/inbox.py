"""Received mail: the evidence reply matching needs, and storing messages in one transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import asyncpg

from storage.account.directory import RecipientRoute, lookup_recipient
from storage.bounces.reports import (
    DeliveryRow,
    LateDsn,
    ReportToApply,
    apply_reports,
    delivery_evidence,
)
from storage.database import Pool
from storage.delivery.queue import RollUp
from storage.errors import StorageError, StorageUnavailable, storage_errors
from storage.group_commit import GroupCommit
from storage.inbound.lookup_cache import TTLCache


@dataclass(frozen=True, slots=True)
class OutboundRow:
    email_id: UUID
    thread_id: UUID | None
    reply_token: str | None
    reply_domain: str | None


@dataclass(frozen=True, slots=True)
class KnownMessageRow:
    message_id: str
    reply_to_email_id: UUID | None
    thread_id: UUID | None
    received_id: UUID | None = None  # set when the message is a received one


@dataclass(slots=True)
class MatchEvidence:
    outbound: dict[UUID, OutboundRow] = field(default_factory=dict)
    known: dict[str, KnownMessageRow] = field(default_factory=dict)
    # Received emails asked for by id (the one POST /emails/{id}/reply answers).
    answered: dict[UUID, KnownMessageRow] = field(default_factory=dict)


class ReceivedRecord(Protocol):
    """One stored copy of a received message for one tenant
    (policy.inbound.pipeline.ReceivedMessage)."""

    @property
    def id(self) -> UUID: ...
    @property
    def tenant_id(self) -> UUID: ...
    @property
    def mail_from(self) -> str: ...
    @property
    def rcpt_to(self) -> list[str]: ...
    @property
    def remote_ip(self) -> str | None: ...
    @property
    def helo(self) -> str | None: ...
    @property
    def tls(self) -> bool: ...
    @property
    def tls_version(self) -> str | None: ...
    @property
    def received_header(self) -> str: ...
    @property
    def raw(self) -> bytes: ...
    @property
    def headers(self) -> list[tuple[str, str]]: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def in_reply_to(self) -> str | None: ...
    @property
    def references(self) -> str | None: ...
    @property
    def subject(self) -> str | None: ...
    @property
    def from_address(self) -> str | None: ...
    @property
    def from_name(self) -> str | None: ...
    @property
    def to_addresses(self) -> list[str]: ...
    @property
    def cc_addresses(self) -> list[str]: ...
    @property
    def reply_to_addresses(self) -> list[str]: ...
    @property
    def sent_at(self) -> datetime | None: ...
    @property
    def text_body(self) -> str | None: ...
    @property
    def html_body(self) -> str | None: ...
    @property
    def attachments(self) -> list[dict[str, Any]]: ...
    @property
    def parse_defects(self) -> list[str]: ...
    @property
    def reply_match_status(self) -> str: ...
    @property
    def reply_to_email_id(self) -> UUID | None: ...
    @property
    def thread_id(self) -> UUID | None: ...
    @property
    def contact_email(self) -> str | None: ...
    @property
    def match_source(self) -> str | None: ...
    @property
    def token_failure(self) -> str | None: ...
    @property
    def token_failure_source(self) -> str | None: ...
    @property
    def ingest_source(self) -> str | None: ...
    @property
    def ingest_event_id(self) -> str | None: ...
    @property
    def classification(self) -> str: ...
    @property
    def classification_reason(self) -> str: ...
    @property
    def report(self) -> dict[str, Any] | None: ...
    @property
    def delivery_reports(self) -> Sequence[ReportToApply]: ...
    @property
    def parse_pending(self) -> bool: ...


# Everything matching needs for one tenant, in one round trip: the outbound emails that tokens
# name ($2), stored messages (sent or received) with the Message-IDs offered ($3) and received
# emails by id ($4). A received message links to the newest email of ours in its thread that
# has gone out (see migration 0012): a message that answers the customer's own earlier one
# answers the conversation as it stands. A received message without a thread comes back too:
# an answer of ours to it opens its thread (storage.sending.replies.thread_for_reply). Rows with a
# thread, and sent before received, come first: the first row of a Message-ID is the one kept.
SELECT_MATCH_EVIDENCE = """
SELECT * FROM (
    SELECT 'outbound' AS kind, e.id::text AS key, e.id AS email_id, e.thread_id,
           e.reply_token, e.reply_domain, NULL::uuid AS received_id
    FROM emails e WHERE e.tenant_id = $1 AND e.id = ANY($2::uuid[])
    UNION ALL
    SELECT 'known', e.message_id, e.id, e.thread_id, NULL, NULL, NULL
    FROM emails e WHERE e.tenant_id = $1 AND e.message_id = ANY($3::text[])
    UNION ALL
    SELECT 'known', r.message_id, newest.id, r.thread_id, NULL, NULL, r.id
    FROM received_emails r
    LEFT JOIN LATERAL (
        SELECT n.id FROM emails n
        WHERE n.tenant_id = $1 AND n.thread_id = r.thread_id
          AND n.status NOT IN ('scheduled', 'canceled')
        ORDER BY n.created_at DESC, n.id DESC LIMIT 1
    ) AS newest ON true
    WHERE r.tenant_id = $1 AND r.message_id = ANY($3::text[])
    UNION ALL
    SELECT 'answered', r.id::text, NULL, r.thread_id, NULL, NULL, r.id
    FROM received_emails r WHERE r.tenant_id = $1 AND r.id = ANY($4::uuid[])
) AS evidence
ORDER BY thread_id IS NULL, received_id IS NOT NULL
"""

SELECT_TOKEN_EVIDENCE = """
SELECT id AS email_id, thread_id, reply_token, reply_domain
FROM emails WHERE tenant_id = $1 AND id = $2
"""

RECEIVED_COLUMNS = (
    "id",
    "tenant_id",
    "mail_from",
    "rcpt_to",
    "remote_ip",
    "helo",
    "tls",
    "tls_version",
    "received_header",
    "raw",
    "size",
    "headers",
    "message_id",
    "in_reply_to",
    "references",
    "subject",
    "from_address",
    "from_name",
    "to_addresses",
    "cc_addresses",
    "reply_to_addresses",
    "sent_at",
    "text_body",
    "html_body",
    "attachments",
    "parse_defects",
    "reply_match_status",
    "reply_to_email_id",
    "thread_id",
    "contact_id",
    "match_source",
    "token_failure",
    "token_failure_source",
    "ingest_source",
    "ingest_event_id",
    "classification",
    "classification_reason",
    "report",
    "parse_pending",  # the body is parsed after the commit (storage/inbound/fill_in.py)
)
# The contact is looked up inside the INSERT: one round trip fewer for every message. Nothing
# else is written for the authentication checks: they find the message by its id
# (storage/authcheck/results.py).
_CONTACT_PARAM = RECEIVED_COLUMNS.index("contact_id") + 1
INSERT_RECEIVED = "INSERT INTO received_emails ({}) VALUES ({})".format(
    ", ".join(f'"{c}"' for c in RECEIVED_COLUMNS),
    ", ".join(
        f"(SELECT id FROM contacts WHERE tenant_id = $2 AND email = lower(${i}::text))"
        if i == _CONTACT_PARAM
        else f"${i}"
        for i in range(1, len(RECEIVED_COLUMNS) + 1)
    ),
)
TOUCH_THREADS = """
UPDATE threads SET last_message_at = now() WHERE id = ANY($1::uuid[])
"""


async def token_evidence(
    conn: Pool | asyncpg.Connection, tenant_id: UUID, email_id: UUID
) -> OutboundRow | None:
    async with storage_errors():
        row = await conn.fetchrow(SELECT_TOKEN_EVIDENCE, tenant_id, email_id)
    return OutboundRow(**dict(row)) if row else None


async def match_evidence(
    conn: Pool | asyncpg.Connection,
    tenant_id: UUID,
    email_ids: Sequence[UUID],
    message_ids: Sequence[str],
    received_ids: Sequence[UUID] = (),
) -> MatchEvidence:
    evidence = MatchEvidence()
    if not email_ids and not message_ids and not received_ids:
        return evidence  # most mail offers nothing to match: no query at all
    async with storage_errors():
        rows = await conn.fetch(
            SELECT_MATCH_EVIDENCE,
            tenant_id,
            list(email_ids),
            list(message_ids),
            list(received_ids),
        )
    for row in rows:
        if row["kind"] == "outbound":
            evidence.outbound[row["email_id"]] = OutboundRow(
                row["email_id"], row["thread_id"], row["reply_token"], row["reply_domain"]
            )
            continue
        known = KnownMessageRow(row["key"], row["email_id"], row["thread_id"], row["received_id"])
        if row["kind"] == "answered":
            evidence.answered[row["received_id"]] = known
        else:
            # A sent message and a received copy may share an id; the first row is kept.
            evidence.known.setdefault(row["key"], known)
    return evidence


def _values(record: ReceivedRecord) -> tuple[Any, ...]:
    values: list[Any] = []
    for column in RECEIVED_COLUMNS:
        if column == "size":
            values.append(len(record.raw))
        elif column == "headers":
            values.append([list(pair) for pair in record.headers])
        elif column == "contact_id":
            values.append(record.contact_email)
        else:
            values.append(getattr(record, column))
    return tuple(values)


def _touched_threads(records: Sequence[ReceivedRecord]) -> list[UUID]:
    """Threads that a person's message moves; automatic mail is linked but is no activity."""
    return sorted(
        {r.thread_id for r in records if r.thread_id is not None and r.classification == "human"}
    )


async def store_received(
    pool: Pool,
    records: Sequence[ReceivedRecord],
    *,
    roll_up: RollUp,
    late_dsn: LateDsn | None = None,
) -> None:
    """Store every record or none: one transaction, committed before this returns.

    A report among them is applied to the delivery it is about in the same transaction
    (storage.bounces.reports); `roll_up` turns recipient states into an email's status, and
    `late_dsn` makes the DSN a late bounce of submission mail is owed.
    """
    threads = _touched_threads(records)
    async with storage_errors(), pool.acquire() as conn, conn.transaction():
        await conn.executemany(INSERT_RECEIVED, [_values(r) for r in records])
        if threads:
            await conn.execute(TOUCH_THREADS, threads)
        await _apply_reports(conn, records, roll_up, late_dsn)


@dataclass(frozen=True, slots=True)
class StoredCopy:
    id: UUID
    tenant_id: UUID
    reply_match_status: str


# Serialises concurrent retries of one provider event, so the check below cannot race itself.
LOCK_INGEST_EVENT = "SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || $2, 0))"
SELECT_INGEST_EVENT = """
SELECT id, tenant_id, reply_match_status FROM received_emails
WHERE ingest_source = $1 AND ingest_event_id = $2 AND tenant_id = ANY($3::uuid[]) ORDER BY id
"""


async def _apply_reports(
    conn: asyncpg.Connection,
    records: Sequence[ReceivedRecord],
    roll_up: RollUp,
    late_dsn: LateDsn | None,
) -> None:
    reported = [r for r in records if r.delivery_reports]
    if reported:
        await apply_reports(conn, reported, roll_up, late_dsn)


async def store_ingested(
    pool: Pool,
    records: Sequence[ReceivedRecord],
    *,
    source: str,
    event_id: str,
    roll_up: RollUp,
    late_dsn: LateDsn | None = None,
) -> tuple[list[StoredCopy], bool]:
    """Store an ingester event's records, except for tenants that have it already.

    Returns the copies of the event for these tenants and whether all of them were stored
    before (a provider's retry). An event id is unique per tenant: another provider's event
    that happens to reuse the id for another tenant's mail is stored, never taken for a retry.
    """
    tenants = sorted({r.tenant_id for r in records})
    async with storage_errors(), pool.acquire() as conn, conn.transaction():
        await conn.execute(LOCK_INGEST_EVENT, source, event_id)
        earlier = [
            StoredCopy(**dict(row))
            for row in await conn.fetch(SELECT_INGEST_EVENT, source, event_id, tenants)
        ]
        stored_for = {copy.tenant_id for copy in earlier}
        new = [r for r in records if r.tenant_id not in stored_for]
        if new:
            await conn.executemany(INSERT_RECEIVED, [_values(r) for r in new])
            threads = _touched_threads(new)
            if threads:
                await conn.execute(TOUCH_THREADS, threads)
            await _apply_reports(conn, new, roll_up, late_dsn)
    copies = earlier + [StoredCopy(r.id, r.tenant_id, r.reply_match_status) for r in new]
    return sorted(copies, key=lambda copy: copy.id), not new


class EvidenceLookups:
    """The stored messages matching may name (policy.inbound.pipeline.EvidenceLookups), on one
    pool."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def match_evidence(
        self,
        tenant_id: UUID,
        email_ids: Sequence[UUID],
        message_ids: Sequence[str],
        received_ids: Sequence[UUID] = (),
    ) -> MatchEvidence:
        return await match_evidence(self._pool, tenant_id, email_ids, message_ids, received_ids)


class InboxLookups(EvidenceLookups):
    """What the inbound pipeline looks up (policy.inbound.pipeline.InboundLookups), on one pool.

    Routing answers are cached for a few seconds (see `TTLCache`): RCPT asks for the same domain
    again and again, and an administrator's change still applies within seconds.
    """

    def __init__(self, pool: Pool) -> None:
        super().__init__(pool)
        self._routes: TTLCache[RecipientRoute | None] = TTLCache(
            lambda domain, candidates: lookup_recipient(pool, domain, candidates)
        )

    async def recipient_route(
        self, domain: str, candidates: Sequence[str]
    ) -> RecipientRoute | None:
        return await self._routes.get(domain, candidates)

    async def token_evidence(self, tenant_id: UUID, email_id: UUID) -> OutboundRow | None:
        return await token_evidence(self._pool, tenant_id, email_id)

    async def delivery_evidence(self, tenant_id: UUID, delivery_id: UUID) -> DeliveryRow | None:
        return await delivery_evidence(self._pool, tenant_id, delivery_id)


# Messages of this many bytes or more are not batched with others (GroupCommitWriter.store).
STORE_ALONE_BYTES = 1 << 20


class GroupCommitWriter:
    """Commits concurrent messages together: one transaction and one WAL flush for many.

    Each caller still waits for the commit that holds its own records, so every 250 follows
    its COMMIT. Under no load a message is flushed at once; batches form only while earlier
    flushes are in flight, so batching adds no latency. A batch that fails for a reason other
    than an outage is retried record by record, so one bad message cannot sink its neighbours.
    """

    def __init__(
        self,
        pool: Pool,
        *,
        roll_up: RollUp,
        late_dsn: LateDsn | None = None,
        max_batch: int = 64,
        max_inflight: int = 2,
    ) -> None:
        self._pool = pool
        self._roll_up = roll_up
        self._late_dsn = late_dsn
        self._group: GroupCommit[tuple[Sequence[ReceivedRecord], asyncio.Future[None]]] = (
            GroupCommit(self._flush, max_batch=max_batch, max_inflight=max_inflight)
        )

    async def store(self, records: Sequence[ReceivedRecord]) -> None:
        if sum(len(record.raw) for record in records) >= STORE_ALONE_BYTES:
            # A large message commits in a transaction of its own, beside the batches: in one
            # it would hold every small message batched with it for the second or more that
            # PostgreSQL takes to compress and write it (tests/perf/README.md, "MX memory").
            await store_received(
                self._pool, records, roll_up=self._roll_up, late_dsn=self._late_dsn
            )
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._group.submit((records, future))
        await future

    async def _flush(
        self, batch: list[tuple[Sequence[ReceivedRecord], asyncio.Future[None]]]
    ) -> None:
        try:
            await store_received(
                self._pool,
                [r for records, _ in batch for r in records],
                roll_up=self._roll_up,
                late_dsn=self._late_dsn,
            )
        except StorageError as error:
            if error.temporary or len(batch) == 1:
                for _, future in batch:
                    _settle(future, error)
                return
            for records, future in batch:
                try:
                    await store_received(
                        self._pool, records, roll_up=self._roll_up, late_dsn=self._late_dsn
                    )
                except StorageError as single_error:
                    _settle(future, single_error)
                else:
                    _settle(future, None)
            return
        except BaseException as unexpected:  # never leave a caller waiting forever
            for _, future in batch:
                _settle(future, StorageUnavailable(f"unexpected: {unexpected!r}"))
            raise
        for _, future in batch:
            _settle(future, None)


def _settle(future: asyncio.Future[None], error: StorageError | None) -> None:
    if future.done():
        return  # the SMTP session went away; the commit stands, nobody is waiting for it
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
