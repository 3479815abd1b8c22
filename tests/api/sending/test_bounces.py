"""Bounces and complaints end to end: an email sent through the API reaches a loopback sink from
its own bounce address (VERP); a DSN or ARF report posted back through the real MX marks the
delivery, raises its event, and suppresses the address when it should. Forged and foreign
bounce addresses change nothing."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from aiohttp import web

from api.app import make_app
from mta.dns import Resolver
from mta.listeners import MXListener, start_mx
from policy.domains.dkim_keys import DkimKeyPair
from policy.tokens import ReplyTokens
from storage.account import directory
from storage.database import Pool
from tests.api.sending.emails_client import EmailsApi, emails_api, events
from tests.conftest import DOMAIN_VIEW, make_settings, smtp_send
from tests.support.delivery_world import delivery_workers, queue_database
from tests.support.queued_mail import poll_until
from tests.support.smtp_sink import Received, Sink

Queue = tuple[str, Pool]


@pytest.fixture(scope="module")
async def queue(database_url: str) -> AsyncIterator[Queue]:
    async with queue_database(database_url) as made:
        yield made


@dataclass
class World:
    pool: Pool
    sink: Sink
    mx: MXListener
    api: EmailsApi
    tenant_id: Any
    domain: str
    reply_domain: str

    async def send(self, to: str, subject: str = "Your order") -> str:
        return await self.api.sent_id(
            {"from": f"support@{self.domain}", "to": [to], "subject": subject, "text": "Hi."}
        )

    async def arrival(self, recipient: str, count: int = 1) -> Received:
        await poll_until(lambda: len(self.sink.received_by(recipient)) >= count)
        return self.sink.received_by(recipient)[count - 1]

    async def email(self, email_id: str) -> dict[str, Any]:
        answer = await self.api.get(email_id)
        assert answer.status == 200, answer.body
        body: dict[str, Any] = answer.body
        return body


async def make_tenant(pool: Pool, dkim_key: DkimKeyPair) -> tuple[Any, str, str, str]:
    suffix = secrets.token_hex(4)
    tenant = await directory.create_tenant(pool, f"t-{suffix}")
    name = f"t{suffix}.test"
    await directory.add_domain(
        pool,
        tenant.id,
        name,
        receiving=True,
        reply_domain=f"inbound.{name}",
        verified=True,
        dkim=dkim_key,
        event_data=DOMAIN_VIEW.event_data,
    )
    _, key = await directory.create_api_key(pool, tenant.id, "test", "full_access")
    return tenant.id, name, f"inbound.{name}", key


@pytest.fixture
async def world(
    queue: Queue, tokens: ReplyTokens, dkim_key: DkimKeyPair, tmp_path: Path
) -> AsyncIterator[World]:
    url, pool = queue
    sink = await Sink.start()
    env = {"OPENSEND_TRANSPORTS": f"example.net={sink.host}:{sink.port}"}
    settings = make_settings(tmp_path, **env)
    tenant_id, name, reply_domain, key = await make_tenant(pool, dkim_key)
    runner = web.AppRunner(make_app(pool, settings, tokens, Resolver(settings.dns_servers)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    mx = await start_mx(settings, pool, tokens)
    try:
        async with (
            delivery_workers(pool, url, tmp_path, tokens=tokens, **env),
            emails_api(f"http://127.0.0.1:{runner.addresses[0][1]}", key) as client,
        ):
            yield World(pool, sink, mx, client, tenant_id, name, reply_domain)
    finally:
        await mx.drain(grace=1.0)
        await runner.cleanup()
        await sink.stop()


def dsn(
    recipient: str,
    *,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "550 5.1.1 <{r}>: Recipient address rejected: User unknown",
    returned: str = "",
) -> bytes:
    """An RFC 3464 report as Postfix writes one, CRLF line endings."""
    text = (
        "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n"
        "To: whoever@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BB"\r\n'
        "\r\n--BB\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "\r\n--BB\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        "Remote-MTA: dns; mx2.example.net\r\n"
        f"Diagnostic-Code: smtp; {diagnostic.format(r=recipient)}\r\n"
        f"\r\n--BB\r\nContent-Type: text/rfc822-headers\r\n\r\n{returned}"
        "Subject: Your order\r\n\r\n--BB--\r\n"
    )
    return text.encode()


async def post_dsn(world: World, to: str, content: bytes) -> list[Any]:
    sent = await smtp_send(world.mx.port, "", [to], content)
    assert sent.recipients[to][0] == 250, sent.recipients
    return sent.stored_ids


async def received(pool: Pool, received_id: Any) -> dict[str, Any]:
    row = await pool.fetchrow("SELECT * FROM received_emails WHERE id = $1", received_id)
    assert row is not None
    return dict(row)


async def test_dsn_to_the_bounce_address_bounces_that_recipient_and_suppresses_it(
    world: World,
) -> None:
    email_id = await world.send("gone@example.net")
    ours = await world.arrival("gone@example.net")
    assert ours.mail_from.startswith("bounce+osb_")
    assert ours.mail_from.endswith(f"@{world.reply_domain}")
    assert len(ours.mail_from.split("@")[0]) == 64  # RFC 5321 section 4.5.3.1.1
    await _until_status(world, email_id, "delivered")

    [stored] = await post_dsn(world, ours.mail_from, dsn("gone@example.net"))

    row = await received(world.pool, stored)
    assert (row["classification"], row["classification_reason"]) == ("bounce", "dsn_failure")
    assert row["reply_match_status"] == "matched"
    assert str(row["reply_to_email_id"]) == email_id
    email = await world.email(email_id)
    [delivery] = email["deliveries"]
    assert delivery["status"] == "bounced"
    assert delivery["report"]["status"] == "5.1.1"
    assert delivery["report"]["type"] == "Permanent"
    assert delivery["report"]["subtype"] == "NoEmail"
    assert "User unknown" in delivery["report"]["diagnostic_code"]
    assert delivery["report"]["remote_mta"] == "mx2.example.net"
    assert email["last_event"] == "bounced"
    assert "email.bounced" in await events(world.pool, email_id)
    listed = await world.pool.fetchrow(
        "SELECT origin, source_id FROM suppressions WHERE tenant_id = $1 AND email = $2",
        world.tenant_id,
        "gone@example.net",
    )
    assert listed is not None
    assert (listed["origin"], str(listed["source_id"])) == ("bounce", email_id)

    # The next email to the address is not attempted; the rest of it goes out.
    second = await world.api.sent_id(
        {
            "from": f"support@{world.domain}",
            "to": ["gone@example.net", "fine@example.net"],
            "subject": "Again",
            "text": "Hi.",
        }
    )
    await world.arrival("fine@example.net")
    await _until(world, second, lambda d: {x["status"] for x in d} == {"delivered", "suppressed"})
    by_recipient = {d["recipient"]: d for d in (await world.email(second))["deliveries"]}
    assert by_recipient["gone@example.net"]["status"] == "suppressed"
    assert by_recipient["gone@example.net"]["attempts"] == 0
    assert len(world.sink.received_by("gone@example.net")) == 1  # only the first email
    assert "email.suppressed" in await events(world.pool, second)


async def test_a_late_bounce_of_submission_mail_is_reported_to_its_sender_and_of_api_mail_not(
    world: World,
) -> None:
    """Our bounce address replaced the submission client's envelope sender, so a remote's
    report after its 250 comes to us: the sender is owed the DSN it would have had (README,
    "The envelope sender is where bounces go"). API senders learn from events alone."""
    submitted = await world.send("left@example.net")
    by_api = await world.send("quit@example.net")
    # As the submission ports store it: source smtp, the client's MAIL FROM as from_address.
    await world.pool.execute(
        "UPDATE emails SET source = 'smtp', from_address = 'carol@example.net' WHERE id = $1",
        UUID(submitted),
    )
    for email_id, recipient in ((submitted, "left@example.net"), (by_api, "quit@example.net")):
        ours = await world.arrival(recipient)
        await _until_status(world, email_id, "delivered")
        await post_dsn(world, ours.mail_from, dsn(recipient))
        await _until_status(world, email_id, "bounced")

    notice = await world.arrival("carol@example.net")
    assert notice.mail_from == "<>"  # RFC 5321 section 4.5.5: a DSN goes from the null path
    text = notice.content.decode()
    assert "Final-Recipient: rfc822; left@example.net" in text
    assert "Status: 5.1.1" in text
    assert "Diagnostic-Code: smtp; 550 5.1.1" in text
    assert "Remote-MTA: dns; mx2.example.net" in text
    dsns = await world.pool.fetch(
        "SELECT to_addresses FROM emails WHERE tenant_id = $1 AND source = 'dsn'",
        world.tenant_id,
    )
    assert [list(row["to_addresses"]) for row in dsns] == [["carol@example.net"]]


async def test_an_email_only_to_suppressed_addresses_is_suppressed(world: World) -> None:
    await world.pool.execute(
        "INSERT INTO suppressions (id, tenant_id, email, origin) VALUES ($1, $2, $3, 'manual')",
        uuid4(),
        world.tenant_id,
        "listed@example.net",
    )
    email_id = await world.send("Listed@Example.net")
    await _until_status(world, email_id, "suppressed")
    assert (await world.email(email_id))["last_event"] == "suppressed"
    assert world.sink.received_by("Listed@Example.net") == []


async def test_arf_complaint_about_our_message_is_recorded_and_suppresses(world: World) -> None:
    email_id = await world.send("angry@example.net")
    await world.arrival("angry@example.net")
    await _until_status(world, email_id, "delivered")
    message_id = (await world.email(email_id))["message_id"]
    await directory.add_route(world.pool, world.tenant_id, f"fbl@{world.domain}", None)
    report = (
        "From: feedback@isp.example\r\nTo: fbl@example.com\r\nSubject: complaint\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n\r\n'
        "--F\r\nContent-Type: text/plain\r\n\r\nA user marked this as spam.\r\n"
        "--F\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: isp-fbl/1.0\r\nVersion: 1\r\n"
        "Original-Rcpt-To: angry@example.net\r\n"
        "\r\n--F\r\nContent-Type: message/rfc822\r\n\r\n"
        f"From: support@{world.domain}\r\nMessage-ID: <{message_id}>\r\n"
        "Subject: Your order\r\n\r\nHi.\r\n--F--\r\n"
    ).encode()
    sent = await smtp_send(world.mx.port, "feedback@isp.example", [f"fbl@{world.domain}"], report)
    [stored] = sent.stored_ids

    row = await received(world.pool, stored)
    assert (row["classification"], row["classification_reason"]) == ("complaint", "arf_complaint")
    assert str(row["reply_to_email_id"]) == email_id
    [delivery] = (await world.email(email_id))["deliveries"]
    assert delivery["status"] == "delivered"  # a complaint does not undo the delivery
    assert delivery["complained_at"] is not None
    assert "email.complained" in await events(world.pool, email_id)
    origin = await world.pool.fetchval(
        "SELECT origin FROM suppressions WHERE tenant_id = $1 AND email = $2",
        world.tenant_id,
        "angry@example.net",
    )
    assert origin == "complaint"


async def test_delayed_dsn_records_the_delay_and_keeps_the_delivery(world: World) -> None:
    email_id = await world.send("slow@example.net")
    ours = await world.arrival("slow@example.net")
    await _until_status(world, email_id, "delivered")

    await post_dsn(
        world,
        ours.mail_from,
        dsn("slow@example.net", action="delayed", status="4.4.7", diagnostic="451 4.4.7 later"),
    )

    [delivery] = (await world.email(email_id))["deliveries"]
    assert delivery["status"] == "delivered"
    assert delivery["report"]["action"] == "delayed"
    assert delivery["report"]["type"] == "Transient"
    assert "email.delivery_delayed" in await events(world.pool, email_id)
    assert not await _suppressed(world, "slow@example.net")


async def test_policy_block_5_7_1_bounces_but_never_suppresses(world: World) -> None:
    email_id = await world.send("blocked@example.net")
    ours = await world.arrival("blocked@example.net")
    await _until_status(world, email_id, "delivered")
    await post_dsn(
        world,
        ours.mail_from,
        dsn("blocked@example.net", status="5.7.1", diagnostic="550 5.7.1 Message refused"),
    )
    [delivery] = (await world.email(email_id))["deliveries"]
    assert delivery["status"] == "bounced"
    assert not await _suppressed(world, "blocked@example.net")


async def test_forged_bounce_address_changes_nothing(world: World) -> None:
    email_id = await world.send("forged@example.net")
    ours = await world.arrival("forged@example.net")
    await _until_status(world, email_id, "delivered")
    local, domain = ours.mail_from.split("@")
    flipped = "0" if local[-1] != "0" else "1"
    forged = f"{local[:-1]}{flipped}@{domain}"

    [stored] = await post_dsn(world, forged, dsn("forged@example.net"))

    row = await received(world.pool, stored)
    assert row["classification"] == "bounce"  # stored and classified, for the audit
    [delivery] = (await world.email(email_id))["deliveries"]
    assert delivery["status"] == "delivered"
    assert delivery["report"] is None
    assert "email.bounced" not in await events(world.pool, email_id)
    assert not await _suppressed(world, "forged@example.net")


async def test_dsn_for_another_tenants_message_changes_nothing(
    world: World, dkim_key: DkimKeyPair
) -> None:
    email_id = await world.send("theirs@example.net")
    ours = await world.arrival("theirs@example.net")
    await _until_status(world, email_id, "delivered")
    _other_id, _other_name, other_reply_domain, _key = await make_tenant(world.pool, dkim_key)
    # The first tenant's bounce address, at the other tenant's reply domain...
    local = ours.mail_from.split("@")[0]
    await post_dsn(world, f"{local}@{other_reply_domain}", dsn("theirs@example.net"))
    # ...and a DSN returning the first tenant's Message-ID, to the other tenant's domain.
    message_id = (await world.email(email_id))["message_id"]
    returned = f"Message-ID: <{message_id}>\r\n"
    await post_dsn(
        world,
        f"bounce+osb_{'0' * 32}_{'0' * 20}@{other_reply_domain}",
        dsn("theirs@example.net", returned=returned),
    )

    [delivery] = (await world.email(email_id))["deliveries"]
    assert delivery["status"] == "delivered"
    assert "email.bounced" not in await events(world.pool, email_id)
    assert not await _suppressed(world, "theirs@example.net")


async def test_dsn_that_lost_the_envelope_is_linked_by_the_returned_message_id(
    world: World,
) -> None:
    email_id = await world.send("lost@example.net")
    # As if submitted: a report that reached the sender's own address (the tenant's here, as
    # the Message-ID link needs) is not forwarded as a DSN of ours as well.
    await world.pool.execute(
        "UPDATE emails SET source = 'smtp', from_address = 'carol@example.net' WHERE id = $1",
        UUID(email_id),
    )
    await world.arrival("lost@example.net")
    await _until_status(world, email_id, "delivered")
    message_id = (await world.email(email_id))["message_id"]
    # Sent to a plain address of the tenant: only the returned header links it.
    await directory.add_route(world.pool, world.tenant_id, f"postmaster@{world.domain}", None)
    await post_dsn(
        world,
        f"postmaster@{world.domain}",
        dsn("lost@example.net", returned=f"Message-ID: <{message_id}>\r\n"),
    )
    [delivery] = (await world.email(email_id))["deliveries"]
    assert delivery["status"] == "bounced"
    assert await _suppressed(world, "lost@example.net")
    queued = await world.pool.fetchval(
        "SELECT count(*) FROM emails WHERE tenant_id = $1 AND source = 'dsn'", world.tenant_id
    )
    assert queued == 0


async def _until_status(world: World, email_id: str, status: str) -> None:
    await _until(world, email_id, lambda found: [d["status"] for d in found] == [status])


async def _until(
    world: World, email_id: str, holds: Callable[[list[dict[str, Any]]], bool]
) -> None:
    """The delivery workers commit the outcome just after the sink's 250: wait for it."""
    for _ in range(1500):
        if holds((await world.email(email_id))["deliveries"]):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the deliveries never reached the state expected")


async def _suppressed(world: World, address: str) -> bool:
    found = await world.pool.fetchval(
        "SELECT 1 FROM suppressions WHERE tenant_id = $1 AND email = $2", world.tenant_id, address
    )
    return found is not None
