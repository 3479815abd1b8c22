"""Mail stored before its body is parsed: hidden until filled in, then what an idle MX stores.

OPENSEND_MX_PARSE_LATER=always makes every plain message take the path a busy MX takes
(mta/mx/fill_in.py); `never` is the idle MX's. The sweep that fills in a dead process's leftovers
is run here by hand on a row left pending as a crash would leave it.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any
from uuid import UUID

from prometheus_client import REGISTRY

from mta.mx.fill_in import parsed_columns
from storage.conversations import contacts
from storage.conversations.threads import get_thread, latest_received, thread_messages
from storage.dashboard.contact_threads import threads_of_contact
from storage.dashboard.overview import overview
from storage.dashboard.search import EmailQuery, search_emails
from storage.database import Pool
from storage.ids import uuid7
from storage.inbound.fill_in import ParsedColumns, fill_in, fill_in_stale
from storage.inbound.received import ReceivedFilters, get_received, list_received
from storage.webhooks.endpoints import create_webhook
from tests.conftest import MakeTenant, StartMX, TenantWorld, message, smtp_send

# Written after the commit, from the body and the full address grammar.
FILLED_IN = (
    "from_name",
    "to_addresses",
    "cc_addresses",
    "reply_to_addresses",
    "sent_at",
    "text_body",
    "html_body",
    "attachments",
    "parse_defects",
)
# Written by the INSERT, from the header fields, in both ways.
DECIDED_BEFORE = (
    "subject",
    "from_address",
    "message_id",
    "in_reply_to",
    "headers",
    "reply_match_status",
    "classification",
    "classification_reason",
    "contact_id",
)


def plain_with_attachment(to: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice Example <alice@example.net>"
    msg["To"] = f"Support <{to}>"
    msg["Cc"] = "bob@example.net"
    msg["Subject"] = "Figures attached"
    msg["Date"] = "Mon, 07 Dec 2026 12:00:00 +0000"
    msg["Message-ID"] = make_msgid(domain="example.net")
    msg.set_content("The figures are attached.\n")
    msg.add_alternative("<p>The figures are attached.</p>\n", subtype="html")
    msg.add_attachment(b"%PDF-1.4\n", maintype="application", subtype="pdf", filename="q.pdf")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


async def row_once_filled(pool: Pool, record_id: UUID) -> dict[str, Any]:
    """The row after its fill-in, which the MX runs as soon as it is quiet."""
    for _ in range(500):
        row = await pool.fetchrow("SELECT * FROM received_emails WHERE id = $1", record_id)
        if row is not None and not row["parse_pending"]:
            return dict(row)
        await asyncio.sleep(0.02)
    raise AssertionError("the message was never filled in")


async def received_events(pool: Pool, record_id: UUID) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT data FROM webhook_events WHERE type = 'email.received' AND data->>'email_id' = $1",
        str(record_id),
    )
    return [dict(row["data"]) for row in rows]


def parsed_later() -> float:
    return REGISTRY.get_sample_value("opensend_mx_parse_later_total") or 0.0


async def send(port: int, world: TenantWorld, content: bytes) -> UUID:
    sent = await smtp_send(port, "alice@example.net", [f"support@{world.name}"], content)
    [record_id] = sent.stored_ids
    return record_id


async def test_message_parsed_after_its_commit_ends_as_the_idle_mx_stores_it(
    start_test_mx: StartMX, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    later = await start_test_mx(OPENSEND_MX_PARSE_LATER="always")
    now = await start_test_mx(OPENSEND_MX_PARSE_LATER="never")
    content = plain_with_attachment(f"support@{acme.name}")

    before = parsed_later()
    deferred = await row_once_filled(pool, await send(later.port, acme, content))
    assert parsed_later() == before + 1
    inline = await row_once_filled(pool, await send(now.port, acme, content))
    assert parsed_later() == before + 1

    for column in FILLED_IN + DECIDED_BEFORE:
        assert deferred[column] == inline[column], column
    assert [a["filename"] for a in deferred["attachments"]] == ["q.pdf"]
    assert deferred["cc_addresses"] == ["bob@example.net"]


async def test_pending_row_is_hidden_until_the_sweep_fills_it_in_and_announces_it_once(
    start_test_mx: StartMX, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    mx = await start_test_mx(OPENSEND_MX_PARSE_LATER="never")
    record_id = await send(mx.port, acme, plain_with_attachment(f"support@{acme.name}"))
    complete = await row_once_filled(pool, record_id)
    await create_webhook(pool, acme.id, "https://hooks.example.com/in", ["email.received"], "s")
    # As an MX that died between its commit and the fill-in leaves it.
    await pool.execute(
        "UPDATE received_emails SET parse_pending = true, text_body = NULL, html_body = NULL,"
        " attachments = '[]', to_addresses = '{}', cc_addresses = '{}', from_name = NULL"
        " WHERE id = $1",
        record_id,
    )

    assert await get_received(pool, acme.id, record_id) is None
    listed = await list_received(pool, acme.id, ReceivedFilters(), limit=10)
    assert listed is not None and record_id not in [s.id for s in listed[0]]

    assert await fill_in_stale(pool, before=uuid7(), limit=1000, parse=parsed_columns) >= 1
    filled = await get_received(pool, acme.id, record_id)
    assert filled is not None
    for column in FILLED_IN:
        assert getattr(filled, column) == complete[column], column
    # A second fill-in of the same row (its MX and a sweep both at it) writes nothing more.
    await fill_in_stale(pool, before=uuid7(), limit=1000, parse=parsed_columns)
    [event] = await received_events(pool, record_id)
    assert [a["filename"] for a in event["attachments"]] == ["q.pdf"]
    assert event["cc"] == ["bob@example.net"]


async def test_email_received_is_written_by_the_fill_in_with_the_parsed_fields(
    start_test_mx: StartMX, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    await create_webhook(pool, acme.id, "https://hooks.example.com/in", ["email.received"], "s")
    mx = await start_test_mx(OPENSEND_MX_PARSE_LATER="always")

    before = parsed_later()
    record_id = await send(mx.port, acme, plain_with_attachment(f"support@{acme.name}"))
    assert parsed_later() == before + 1  # stored with its parse pending, then filled in
    await row_once_filled(pool, record_id)

    [event] = await received_events(pool, record_id)
    assert event["from_name"] == "Alice Example"
    assert [a["filename"] for a in event["attachments"]] == ["q.pdf"]


async def test_a_fill_in_batch_writes_each_row_its_own_columns(
    start_test_mx: StartMX, pool: Pool, make_tenant: MakeTenant
) -> None:
    # Rows of different list lengths, an empty list, non-ASCII text and no date, written in one
    # transaction (storage.inbound.fill_in), must each land on their own row.
    acme = await make_tenant(catch_all=True)
    mx = await start_test_mx(OPENSEND_MX_PARSE_LATER="never")
    content = plain_with_attachment(f"support@{acme.name}")
    ids = [await send(mx.port, acme, content) for _ in range(3)]
    already = await send(mx.port, acme, content)
    for record_id in [*ids, already]:
        await row_once_filled(pool, record_id)
    await pool.execute(
        "UPDATE received_emails SET parse_pending = true WHERE id = ANY($1::uuid[])", ids
    )
    batch = [
        ParsedColumns(
            from_name=f"Zoë {n}",
            to_addresses=[f"to{k}@example.net" for k in range(n)],
            cc_addresses=[] if n else ["cc@example.net", "cc2@example.net"],
            reply_to_addresses=[f"r{n}@example.net"],
            sent_at=None if n == 1 else datetime(2026, 12, 7, 12, n, tzinfo=UTC),
            text_body=f"body {n} ✓",
            html_body=None if n else "<p>0</p>",
            attachments=[{"filename": f"f{k}.txt", "size": k} for k in range(n + 1)],
            parse_defects=["MissingHeaderBodySeparatorDefect"] * n,
        )
        for n in range(3)
    ]
    untouched = await pool.fetchrow("SELECT * FROM received_emails WHERE id = $1", already)

    await fill_in(pool, [*zip(ids, batch, strict=True), (already, batch[2])])

    for record_id, columns in zip(ids, batch, strict=True):
        row = await pool.fetchrow("SELECT * FROM received_emails WHERE id = $1", record_id)
        assert row is not None and not row["parse_pending"]
        for column in FILLED_IN:
            assert row[column] == getattr(columns, column), (record_id, column)
    # A row no longer pending (filled in by someone else) is left as it was.
    assert await pool.fetchrow("SELECT * FROM received_emails WHERE id = $1", already) == untouched


async def test_a_batch_announces_each_subscribed_row_once_and_other_updates_announce_nothing(
    start_test_mx: StartMX, pool: Pool, make_tenant: MakeTenant
) -> None:
    # The fill-in's trigger (migration 0019) writes an event and a delivery per row of a
    # subscribed tenant, from that row's own fields.
    acme = await make_tenant(catch_all=True)
    quiet = await make_tenant(catch_all=True)  # no webhook: its rows write nothing
    await create_webhook(pool, acme.id, "https://hooks.example.com/in", ["email.received"], "s")
    mx = await start_test_mx(OPENSEND_MX_PARSE_LATER="never")
    subscribed = [
        await send(mx.port, acme, plain_with_attachment(f"support@{acme.name}")) for _ in range(2)
    ]
    unsubscribed = await send(mx.port, quiet, plain_with_attachment(f"support@{quiet.name}"))
    ids = [*subscribed, unsubscribed]
    for record_id in ids:
        await row_once_filled(pool, record_id)
    await pool.execute("DELETE FROM webhook_events WHERE tenant_id = $1", acme.id)
    await pool.execute(
        "UPDATE received_emails SET parse_pending = true WHERE id = ANY($1::uuid[])", ids
    )
    names = {record_id: f"Sender {n}" for n, record_id in enumerate(ids)}
    batch = [
        (record_id, parsed_columns_named(plain_with_attachment("x@example.net"), name))
        for record_id, name in names.items()
    ]

    await fill_in(pool, batch)

    for record_id in subscribed:
        [event] = await received_events(pool, record_id)
        assert event["from_name"] == names[record_id]
    assert await received_events(pool, unsubscribed) == []
    deliveries = await pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id"
        " WHERE e.tenant_id = $1",
        acme.id,
    )
    assert deliveries == 2
    # Any other UPDATE of the rows, filled in already, writes no event.
    await pool.execute(
        "UPDATE received_emails SET thread_id = thread_id WHERE id = ANY($1::uuid[])", ids
    )
    await fill_in(pool, batch)  # no longer pending: nothing to write, nothing to announce
    for record_id in subscribed:
        assert len(await received_events(pool, record_id)) == 1


def parsed_columns_named(raw: bytes, name: str) -> ParsedColumns:
    return replace(parsed_columns(raw), from_name=name)


async def test_every_reader_leaves_a_pending_reply_out_until_it_is_filled_in(
    start_test_mx: StartMX, pool: Pool, make_tenant: MakeTenant
) -> None:
    # The dashboard's counts and flags too, not only the API and the thread pages: a reader
    # sees exactly the received rows it could open (storage.inbound.received.readable).
    acme = await make_tenant()
    sent, token = await acme.sent_email()
    await contacts.create_contact(pool, acme.id, "customer@example.net", None, None, False)
    mx = await start_test_mx(OPENSEND_MX_PARSE_LATER="never")
    reply = await smtp_send(
        mx.port,
        "customer@example.net",
        [token.address(acme.reply_domain)],
        message(sender="customer@example.net", to=token.address(acme.reply_domain)),
    )
    [reply_id] = reply.stored_ids
    row = await row_once_filled(pool, reply_id)
    assert row["reply_match_status"] == "matched" and row["thread_id"] == sent.thread_id
    contact = row["contact_id"]
    assert contact is not None  # the sender is a contact of the tenant
    thread_id = sent.thread_id
    assert thread_id is not None

    async def seen() -> dict[str, Any]:
        figures = await overview(pool, acme.id)
        [domain] = figures.domains
        [listed], _ = await search_emails(pool, acme.id, EmailQuery(), limit=10)
        replied, _ = await search_emails(pool, acme.id, EmailQuery(has_reply=True), limit=10)
        thread = await get_thread(pool, acme.id, thread_id)
        assert thread is not None
        return {
            "matched today": figures.today["matched"],
            "domain replied": domain["replied"],
            "has reply": listed["has_reply"],
            "replied filter": len(replied),
            "contact threads": len(await threads_of_contact(pool, acme.id, contact)),
            "thread's contact": thread.contact_id,
            "latest received": await latest_received(pool, acme.id, thread_id),
            "thread messages": (await thread_messages(pool, acme.id, [thread_id]))[thread_id].total,
        }

    async def same_utc_day() -> bool:  # "today" is the database's UTC day
        received_today: bool = await pool.fetchval(
            "SELECT received_at >= date_trunc('day', now()) FROM received_emails WHERE id = $1",
            reply_id,
        )
        return received_today

    shown = await seen()
    await pool.execute("UPDATE received_emails SET parse_pending = true WHERE id = $1", reply_id)
    try:
        hidden = await seen()
        counted_today = await same_utc_day()
    finally:  # filled in again, for no later sweep to find
        await pool.execute(
            "UPDATE received_emails SET parse_pending = false WHERE id = $1", reply_id
        )
    expected = {  # what each reader gives: filled in, then pending
        "matched today": (1, 0),
        "domain replied": (1, 0),
        "has reply": (True, False),
        "replied filter": (1, 0),
        "contact threads": (1, 0),
        "thread's contact": (contact, None),
        "latest received": (reply_id, None),
        "thread messages": (2, 1),  # pending: the outbound email alone
    }
    if not counted_today:  # the test ran across midnight UTC: today's count began again
        del expected["matched today"], shown["matched today"], hidden["matched today"]
    assert shown == {reader: filled for reader, (filled, _) in expected.items()}
    assert hidden == {reader: pending for reader, (_, pending) in expected.items()}
