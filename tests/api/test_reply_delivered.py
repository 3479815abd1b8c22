"""The conversation loop with delivery too: the API, the MX and the real delivery workers on a
queue database of their own, the customer's mailbox a loopback SMTP sink. What the customer
receives (our email, then our reply) is read from the sink, as delivered and DKIM-signed."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiohttp import web

from api.app import make_app
from mta.dns import Resolver
from mta.server import start_mx
from policy.dkim_keys import DkimKeyPair
from policy.tokens import ReplyTokens
from storage import directory
from storage.database import Pool
from tests.api.emails_client import emails_api
from tests.api.test_emails_send import parsed, text_of
from tests.conftest import make_settings, message, smtp_send
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


async def test_the_customer_receives_our_reply_threaded_quoted_and_signed(
    queue: Queue, sink: Sink, tokens: ReplyTokens, dkim_key: DkimKeyPair, tmp_path: Path
) -> None:
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
    )
    _, key = await directory.create_api_key(pool, tenant.id, "test", "full_access")
    runner = web.AppRunner(make_app(pool, settings, tokens, Resolver(settings.dns_servers)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    mx = await start_mx(settings, pool, tokens)
    try:
        async with (
            delivery_workers(pool, url, tmp_path, **env),
            emails_api(f"http://127.0.0.1:{runner.addresses[0][1]}", key) as client,
        ):
            # We write; the customer's server receives it.
            sent_id = await client.sent_id(email_for(domain.name))
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
                {"from": f"support@{domain.name}", "text": "Tomorrow."},
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
    finally:
        await mx.drain(grace=1.0)
        await runner.cleanup()


def email_for(domain: str) -> dict[str, object]:
    return {
        "from": f"Acme Support <support@{domain}>",
        "to": [CUSTOMER],
        "subject": "Your order",
        "text": "Hello,\nyour order is on its way.\n",
    }
