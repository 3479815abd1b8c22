"""The whole loop, on loopback: a message sent through the API and delivered to an SMTP sink
tells the tenant's receiver email.sent then email.delivered; the customer's answer through the
MX tells it email.received, matched, in the outbound email's thread; a replay arrives again.
Every delivery is verified by three independent verifiers (tests/webhooks/receiver.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import resend

from mta.listeners import start_mx
from policy.domains.dkim_keys import DkimKeyPair
from policy.tokens import ReplyTokens
from tests.api.sending.emails_client import emails_api
from tests.api.sending.test_emails import parsed
from tests.conftest import make_settings, message, smtp_send
from tests.support.delivery_world import delivery_workers
from tests.support.queued_mail import poll_until
from tests.support.smtp_sink import Sink
from tests.webhooks.conftest import Queue
from tests.webhooks.receiver import Receiver, verified
from tests.webhooks.world import (
    api_server,
    call,
    create_webhook,
    sdk_as,
    tenant_with_key,
    webhook_workers,
)

CUSTOMER = "customer@example.net"


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    started = await Sink.start()
    yield started
    await started.stop()


async def test_send_deliver_answer_and_replay_reach_the_receiver_signed(
    queue: Queue,
    sink: Sink,
    receiver: Receiver,
    tokens: ReplyTokens,
    dkim_key: DkimKeyPair,
    tmp_path: Path,
) -> None:
    url, pool = queue
    env = {"OPENSEND_TRANSPORTS": f"example.net={sink.host}:{sink.port}"}
    domain, key = await tenant_with_key(pool, dkim_key)
    mx = await start_mx(make_settings(tmp_path, **env), pool, tokens)
    try:
        async with (
            api_server(pool, tokens, tmp_path, **env) as api_url,
            delivery_workers(pool, url, tmp_path, **env),
            webhook_workers(pool, url, tmp_path),
            emails_api(api_url, key) as client,
        ):
            with sdk_as(key, api_url):
                hook_id, secret = await create_webhook(
                    receiver.url, ["email.sent", "email.delivered", "email.received"]
                )
                sent_id = await client.sent_id(
                    {
                        "from": f"Acme <support@{domain.name}>",
                        "to": [CUSTOMER],
                        "subject": "Your order",
                        "text": "It ships today.\n",
                        "tags": [{"name": "kind", "value": "order"}],
                    }
                )
                [sent] = await receiver.wait_for_type("email.sent")
                [delivered] = await receiver.wait_for_type("email.delivered")
                assert receiver.posts.index(sent) < receiver.posts.index(delivered)
                sent_event, delivered_event = verified(sent, secret), verified(delivered, secret)
                thread_id = (await client.get(sent_id)).body["thread_id"]
                assert sent_event["data"]["email_id"] == sent_id
                assert sent_event["data"]["from"] == f"Acme <support@{domain.name}>"
                assert sent_event["data"]["to"] == [CUSTOMER]
                assert sent_event["data"]["subject"] == "Your order"
                assert sent_event["data"]["tags"] == {"kind": "order"}
                assert delivered_event["data"]["to"] == [CUSTOMER]
                assert delivered_event["data"]["thread_id"] == thread_id

                # The customer answers the way a mail client does: to Reply-To, threading on
                # our Message-ID.
                await poll_until(lambda: len(sink.messages) >= 1)
                ours = parsed(sink.messages[0].content)
                answer = message(
                    sender=f"Carol <{CUSTOMER}>",
                    to=str(ours["Reply-To"]),
                    subject=f"Re: {ours['Subject']}",
                    body="Thanks!\n",
                    headers={"In-Reply-To": ours["Message-ID"], "References": ours["Message-ID"]},
                )
                stored = await smtp_send(mx.port, CUSTOMER, [str(ours["Reply-To"])], answer)
                [answer_id] = stored.stored_ids
                [received] = await receiver.wait_for_type("email.received")
                event = verified(received, secret)
                data = event["data"]
                assert data["email_id"] == str(answer_id)
                assert data["reply_match_status"] == "matched"
                assert data["reply_to_email_id"] == sent_id
                assert data["thread_id"] == thread_id
                assert data["matched_by"] == "recipient"
                assert data["from"] == f"Carol <{CUSTOMER}>"
                assert data["received_for"] == [str(ours["Reply-To"])]
                assert data["subject"] == "Re: Your order" and data["attachments"] == []
                assert data["classification"] == "human"
                assert received.id != sent.id != delivered.id

                # The API lists what was delivered, and replays one: it arrives again under the
                # same id, with a second attempt recorded.
                listed = await _listed_when_all_succeeded(hook_id)
                assert {e["id"] for e in listed} == {sent.id, delivered.id, received.id}
                got = await call(resend.Webhooks.get_event, hook_id, received.id)
                assert got["payload"] == event and got["next_attempt_at"] is None
                replayed = await call(resend.Webhooks.replay_event, hook_id, received.id)
                assert replayed["id"] == received.id
                [first, again] = await receiver.wait_for_type("email.received", 2)
                assert again.id == first.id and verified(again, secret) == event
                attempts = await _attempts_when(hook_id, received.id, 2)
                assert [a["http_status_code"] for a in attempts] == [200, 200]
    finally:
        await mx.drain(grace=1.0)


async def _listed_when_all_succeeded(hook_id: str) -> list[dict[str, object]]:
    """The events once all are recorded as a success: the receiver sees a POST before the worker
    commits its outcome (no event says so; bounded)."""
    listed: list[dict[str, object]] = []
    for _ in range(600):
        listed = list((await call(resend.Webhooks.list_events, hook_id))["data"])
        if {e["status"] for e in listed} == {"success"}:
            return listed
        await asyncio.sleep(0.05)
    raise AssertionError(f"not all a success: {[e['status'] for e in listed]}")


async def _attempts_when(hook_id: str, event_id: str, count: int) -> list[dict[str, object]]:
    """The attempts once `count` are recorded (the receiver sees the POST before its record)."""
    found: list[dict[str, object]] = []

    async def enough() -> bool:
        nonlocal found
        found = list((await call(resend.Webhooks.list_event_attempts, hook_id, event_id))["data"])
        return len(found) >= count

    for _ in range(600):
        if await enough():
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {len(found)} attempts recorded")


async def test_grouped_sends_bounces_and_delays_each_reach_the_receiver(
    queue: Queue,
    sink: Sink,
    receiver: Receiver,
    tokens: ReplyTokens,
    dkim_key: DkimKeyPair,
    tmp_path: Path,
) -> None:
    url, pool = queue
    env = {"OPENSEND_TRANSPORTS": f"example.net={sink.host}:{sink.port}"}
    sink.handler.rcpt_replies = {
        "gone@example.net": "550 5.1.1 No such user",
        "later@example.net": "450 4.2.1 Mailbox busy",
    }
    domain, key = await tenant_with_key(pool, dkim_key)
    async with (
        api_server(pool, tokens, tmp_path, **env) as api_url,
        emails_api(api_url, key) as client,
    ):
        with sdk_as(key, api_url):
            _, secret = await create_webhook(
                receiver.url, ["email.sent", "email.bounced", "email.delivery_delayed"]
            )
        # Concurrent sends are committed in groups (storage/sending/writer.py): each still
        # has its event.
        sent_ids = await asyncio.gather(
            *(
                client.sent_id(
                    {
                        "from": f"support@{domain.name}",
                        "to": [f"ok{n}@example.net"],
                        "subject": f"n{n}",
                        "text": "hi\n",
                    }
                )
                for n in range(12)
            )
        )
        mixed = await client.sent_id(
            {
                "from": f"support@{domain.name}",
                "to": ["gone@example.net", "later@example.net"],
                "subject": "mixed",
                "text": "hi\n",
            }
        )
        async with (
            delivery_workers(pool, url, tmp_path, **env),
            webhook_workers(pool, url, tmp_path),
        ):
            sent = await receiver.wait_for_type("email.sent", 13)
            [bounced] = await receiver.wait_for_type("email.bounced")
            [delayed] = await receiver.wait_for_type("email.delivery_delayed")
    assert {verified(p, secret)["data"]["email_id"] for p in sent} == {*sent_ids, mixed}
    bounce = verified(bounced, secret)["data"]
    assert bounce["email_id"] == mixed and bounce["to"] == ["gone@example.net"]
    assert bounce["bounce"]["type"] == "Permanent"
    assert "No such user" in bounce["bounce"]["message"]
    assert "550" in bounce["bounce"]["diagnosticCode"]
    delay = verified(delayed, secret)["data"]
    assert delay["to"] == ["later@example.net"] and "Mailbox busy" in delay["delay"]["message"]
