"""The conversation loop with delivery too: the API, the MX and the real delivery workers on a
queue database of their own, the customer's mailbox a loopback SMTP sink. What the customer
receives (our email, then our reply) is read from the sink, as delivered and DKIM-signed."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiohttp import web

from api.app import make_app
from mta.dns import Resolver
from mta.listeners import MXListener, start_mx
from policy.domains.dkim_keys import DkimKeyPair
from policy.tokens import ReplyTokens
from storage.account import directory
from storage.database import Pool
from tests.api.sending.emails_client import EmailsApi, emails_api
from tests.api.sending.test_emails import parsed, text_of
from tests.conftest import DOMAIN_VIEW, make_settings, message, received_rows, smtp_send
from tests.support.delivery_world import delivery_workers, queue_database
from tests.support.queued_mail import poll_until
from tests.support.smtp_sink import Sink

Queue = tuple[str, Pool]
CUSTOMER = "customer@example.net"


@pytest.fixture(scope="module")
async def queue(database_url: str) -> AsyncIterator[Queue]:
    async with queue_database(database_url) as made:
        yield made


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    started = await Sink.start()
    yield started
    await started.stop()


async def delivered(sink: Sink, count: int) -> EmailMessage:
    """The `count`th message the customer's server received."""
    await poll_until(lambda: len(sink.messages) >= count)
    return parsed(sink.messages[count - 1].content)


@dataclass
class World:
    """A receiving tenant with the API, the MX and the delivery workers running."""

    domain: str
    client: EmailsApi
    mx: MXListener


@asynccontextmanager
async def running(
    queue: Queue, sink: Sink, tokens: ReplyTokens, dkim_key: DkimKeyPair, tmp_path: Path
) -> AsyncIterator[World]:
    url, pool = queue
    env = {"OPENSEND_TRANSPORTS": f"example.net={sink.host}:{sink.port}"}
    settings = make_settings(tmp_path, **env)
    suffix = secrets.token_hex(4)
    tenant = await directory.create_tenant(pool, f"t-{suffix}")
    domain = await directory.add_domain(
        pool,
        tenant.id,
        f"t{suffix}.test",
        receiving=True,
        reply_domain=f"inbound.t{suffix}.test",
        verified=True,
        dkim=dkim_key,
        event_data=DOMAIN_VIEW.event_data,
    )
    _, key = await directory.create_api_key(pool, tenant.id, "test", "full_access")
    await directory.add_route(pool, tenant.id, f"support@{domain.name}", None)
    runner = web.AppRunner(make_app(pool, settings, tokens, Resolver(settings.dns_servers)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    mx = await start_mx(settings, pool, tokens)
    try:
        async with (
            delivery_workers(pool, url, tmp_path, **env),
            emails_api(f"http://127.0.0.1:{runner.addresses[0][1]}", key) as client,
        ):
            yield World(domain.name, client, mx)
    finally:
        await mx.drain(grace=1.0)
        await runner.cleanup()


async def test_the_customer_receives_our_reply_threaded_quoted_and_signed(
    queue: Queue, sink: Sink, tokens: ReplyTokens, dkim_key: DkimKeyPair, tmp_path: Path
) -> None:
    async with running(queue, sink, tokens, dkim_key, tmp_path) as world:
        domain, client, mx = world.domain, world.client, world.mx
        # We write; the customer's server receives it.
        sent_id = await client.sent_id(email_for(domain))
        ours = await delivered(sink, 1)
        assert ours["DKIM-Signature"] is not None

        # The customer's client answers to Reply-To, threading on our Message-ID.
        answer = message(
            sender=f"Carol <{CUSTOMER}>",
            to=str(ours["Reply-To"]),
            subject=f"Re: {ours['Subject']}",
            body="Where is it?\n",
            headers={"In-Reply-To": ours["Message-ID"], "References": ours["Message-ID"]},
        )
        stored = await smtp_send(mx.port, CUSTOMER, [str(ours["Reply-To"])], answer)
        [answer_id] = stored.stored_ids
        answer_msg_id = str(parsed(answer)["Message-ID"])

        # We reply; the customer's server receives the reply.
        replied = await client.call(
            "POST",
            f"/emails/{answer_id}/reply",
            {"from": f"support@{domain}", "text": "Tomorrow."},
        )
        assert replied.status == 200, replied.body
        reply = await delivered(sink, 2)
        assert sink.messages[1].rcpt_tos == [CUSTOMER]
        assert reply["Subject"] == "Re: Your order"
        assert reply["In-Reply-To"] == answer_msg_id
        assert reply["References"] == f"{ours['Message-ID']} {answer_msg_id}"
        assert reply["Message-ID"] == f"<{replied.body['messageId']}>"
        assert reply["DKIM-Signature"] is not None
        body = reply.get_body(("plain",))
        assert body is not None
        lines = text_of(body).split("\n")
        assert (lines[0], lines[3]) == ("Tomorrow.", "> Where is it?")

        # The customer answers the reply; one thread of four.
        again = message(
            sender=f"Carol <{CUSTOMER}>",
            to=str(reply["Reply-To"]),
            subject=str(reply["Subject"]),
            body="Thanks!\n",
            headers={
                "In-Reply-To": str(reply["Message-ID"]),
                "References": f"{reply['References']} {reply['Message-ID']}",
            },
        )
        [again_id] = (
            await smtp_send(mx.port, CUSTOMER, [str(reply["Reply-To"])], again)
        ).stored_ids
        got = await client.get(sent_id)
        thread = await client.call("GET", f"/threads/{got.body['thread_id']}")
    assert [(m["direction"], m["id"]) for m in thread.body["messages"]] == [
        ("outbound", sent_id),
        ("inbound", str(answer_id)),
        ("outbound", replied.body["id"]),
        ("inbound", str(again_id)),
    ]


async def test_a_reply_to_a_message_whose_id_has_a_comment_is_threaded_on_the_id(
    queue: Queue, sink: Sink, tokens: ReplyTokens, dkim_key: DkimKeyPair, tmp_path: Path
) -> None:
    """An ISP added a comment to the customer's Message-ID (RFC 5322 section 3.6.4 allows it):
    the customer's next message naming the bare id finds it, and our reply names it too."""
    _url, pool = queue
    async with running(queue, sink, tokens, dkim_key, tmp_path) as world:
        await world.client.sent_id(email_for(world.domain))
        ours = await delivered(sink, 1)
        msg_id = f"{secrets.token_hex(8)}@isp.example"
        answer = (
            f"From: Carol <{CUSTOMER}>\r\nTo: {ours['Reply-To']}\r\n"
            f"Subject: Re: Your order\r\n"
            f"Message-ID: <{msg_id}>\r\n (added by postmaster@isp.example (relay 2))\r\n"
            f"In-Reply-To: {ours['Message-ID']}\r\nReferences: {ours['Message-ID']}\r\n"
            "\r\nWhere is it?\r\n"
        ).encode()
        stored = await smtp_send(world.mx.port, CUSTOMER, [str(ours["Reply-To"])], answer)
        [answer_id] = stored.stored_ids
        # Only the bare id links the next message, sent to our support address.
        support = f"support@{world.domain}"
        follow_up = message(
            sender=f"Carol <{CUSTOMER}>", to=support, headers={"In-Reply-To": f"<{msg_id}>"}
        )
        again = await smtp_send(world.mx.port, CUSTOMER, [support], follow_up)

        replied = await world.client.call(
            "POST", f"/emails/{answer_id}/reply", {"from": f"support@{world.domain}", "text": "Ok."}
        )
        assert replied.status == 200, replied.body
        reply = await delivered(sink, 2)
    [first, second] = await received_rows(pool, [answer_id, *again.stored_ids])
    assert first["message_id"] == msg_id
    assert (second["match_source"], second["thread_id"]) == ("in-reply-to", first["thread_id"])
    assert reply["In-Reply-To"] == f"<{msg_id}>"
    assert reply["References"] == f"{ours['Message-ID']} <{msg_id}>"


def email_for(domain: str) -> dict[str, object]:
    return {
        "from": f"Acme Support <support@{domain}>",
        "to": [CUSTOMER],
        "subject": "Your order",
        "text": "Hello,\nyour order is on its way.\n",
    }
