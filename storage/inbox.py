"""Received mail: the evidence reply matching needs, and storing messages in one transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from storage.database import Pool
from storage.errors import StorageError, StorageUnavailable, storage_errors
from storage.group_commit import GroupCommit


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


@dataclass(slots=True)
class MatchEvidence:
    outbound: dict[UUID, OutboundRow] = field(default_factory=dict)
    known: dict[str, KnownMessageRow] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReceivedRecord:
    id: UUID
    tenant_id: UUID
    mail_from: str
    rcpt_to: list[str]
    remote_ip: str | None
    helo: str | None
    tls: bool
    tls_version: str | None
    received_header: str
    raw: bytes
    headers: list[tuple[str, str]]
    message_id: str | None
    in_reply_to: str | None
    references: str | None
    subject: str | None
    from_address: str | None
    from_name: str | None
    to_addresses: list[str]
    cc_addresses: list[str]
    reply_to_addresses: list[str]
    sent_at: datetime | None
    text_body: str | None
    html_body: str | None
    attachments: list[dict[str, Any]]
    parse_defects: list[str]
    reply_match_status: str
    reply_to_email_id: UUID | None
    thread_id: UUID | None
    contact_email: str | None  # the sender; linked to the tenant's contact of that address, if any
    match_source: str | None
    token_failure: str | None
    token_failure_source: str | None


# Everything matching needs for one tenant, in one round trip: the outbound emails that tokens
# name ($2) and stored messages (sent or received) with the Message-IDs offered ($3).
SELECT_MATCH_EVIDENCE = """
SELECT 'outbound' AS kind, e.id::text AS key, e.id AS email_id, e.thread_id,
       e.reply_token, e.reply_domain
FROM emails e WHERE e.tenant_id = $1 AND e.id = ANY($2::uuid[])
UNION ALL
SELECT 'known', e.message_id, e.id, e.thread_id, NULL, NULL
FROM emails e WHERE e.tenant_id = $1 AND e.message_id = ANY($3::text[])
UNION ALL
SELECT 'known', r.message_id, r.reply_to_email_id, r.thread_id, NULL, NULL
FROM received_emails r
WHERE r.tenant_id = $1 AND r.message_id = ANY($3::text[]) AND r.thread_id IS NOT NULL
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
)
# The contact is looked up inside the INSERT: one round trip fewer for every message.
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
) -> MatchEvidence:
    evidence = MatchEvidence()
    if not email_ids and not message_ids:
        return evidence  # most mail offers nothing to match: no query at all
    async with storage_errors():
        rows = await conn.fetch(
            SELECT_MATCH_EVIDENCE, tenant_id, list(email_ids), list(message_ids)
        )
    for row in rows:
        if row["kind"] == "outbound":
            evidence.outbound[row["email_id"]] = OutboundRow(
                row["email_id"], row["thread_id"], row["reply_token"], row["reply_domain"]
            )
        else:
            # A sent message and a received copy may share an id; either leads to the thread.
            evidence.known.setdefault(
                row["key"], KnownMessageRow(row["key"], row["email_id"], row["thread_id"])
            )
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


async def store_received(pool: Pool, records: Sequence[ReceivedRecord]) -> None:
    """Store every record or none: one transaction, committed before this returns."""
    threads = sorted({r.thread_id for r in records if r.thread_id is not None})
    async with storage_errors(), pool.acquire() as conn, conn.transaction():
        await conn.executemany(INSERT_RECEIVED, [_values(r) for r in records])
        if threads:
            await conn.execute(TOUCH_THREADS, threads)


class GroupCommitWriter:
    """Commits concurrent messages together: one transaction and one WAL flush for many.

    Each caller still waits for the commit that holds its own records, so every 250 follows
    its COMMIT. Under no load a message is flushed at once; batches form only while earlier
    flushes are in flight, so batching adds no latency. A batch that fails for a reason other
    than an outage is retried record by record, so one bad message cannot sink its neighbours.
    """

    def __init__(self, pool: Pool, *, max_batch: int = 64, max_inflight: int = 2) -> None:
        self._pool = pool
        self._group: GroupCommit[tuple[Sequence[ReceivedRecord], asyncio.Future[None]]] = (
            GroupCommit(self._flush, max_batch=max_batch, max_inflight=max_inflight)
        )

    async def store(self, records: Sequence[ReceivedRecord]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._group.submit((records, future))
        await future

    async def _flush(
        self, batch: list[tuple[Sequence[ReceivedRecord], asyncio.Future[None]]]
    ) -> None:
        try:
            await store_received(self._pool, [r for records, _ in batch for r in records])
        except StorageError as error:
            if error.temporary or len(batch) == 1:
                for _, future in batch:
                    _settle(future, error)
                return
            for records, future in batch:
                try:
                    await store_received(self._pool, records)
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
