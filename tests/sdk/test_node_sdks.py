"""The official Node SDKs, unchanged but for the base URL, against the real server: every call
they make of a route we serve answers without an SDK error and with the data their types promise.

Node and the pinned SDKs are installed by .ci/run (`npm ci` in tests/sdk/node); without them the
tests fail with the command that installs them, never skip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mta.server import MXListener
from policy.dkim_keys import DkimKeyPair
from policy.tokens import ReplyTokens
from tests.api.test_emails_send import parsed
from tests.api.test_reply_delivered import CUSTOMER, Queue, running
from tests.conftest import ApiServer, MakeTenant, TenantWorld, message, smtp_send
from tests.sdk.node_sdks import Call, node_available, run_script
from tests.support.delivery_world import queue_database
from tests.support.queued_mail import poll_until
from tests.support.smtp_sink import Sink


def require_node() -> None:
    assert node_available(), "Node SDKs missing: run `npm ci` in tests/sdk/node (or .ci/run)"


async def received_with_attachment(world: TenantWorld, mx: MXListener) -> str:
    """A message with a text body and one attachment, received through the real MX."""
    address = f"support@{world.name}"
    await world.route(address)
    msg = EmailMessage()
    msg["From"] = "Carol <customer@example.net>"
    msg["To"] = address
    msg["Subject"] = "Where is my order?"
    msg["Message-ID"] = f"<order-question@{world.name}.example.net>"
    msg.set_content("Hi,\nwhere is my order?\n")
    msg.add_attachment(b"order 42", maintype="application", subtype="pdf", filename="order.pdf")
    delivery = await smtp_send(mx.port, "customer@example.net", [address], msg.as_bytes())
    [stored] = delivery.stored_ids
    return str(stored)


def assert_all_pass(calls: list[Call]) -> None:
    failed = [c.why() for c in calls if c.failed]
    summary = f"{len(failed)} of {len(calls)} calls fail:\n"
    assert not failed, summary + "\n".join(failed)


async def sdk_world(api: ApiServer, mx: MXListener, make_tenant: MakeTenant) -> dict[str, Any]:
    acme = await make_tenant()
    received = await received_with_attachment(acme, mx)
    return {"domain": acme.name, "received": received, "key": await acme.api_key()}


async def test_resend_node_sdk_every_served_method(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    require_node()
    world = await sdk_world(api, mx, make_tenant)
    env = {"RESEND_API_KEY": world["key"], "RESEND_BASE_URL": api.url}
    calls = await run_script("resend_calls.mjs", world, env)
    assert_all_pass(calls)


async def test_inboundemail_sdk_replies(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    require_node()
    world = await sdk_world(api, mx, make_tenant)
    env = {"INBOUND_API_KEY": world["key"], "INBOUND_BASE_URL": api.url}
    calls = await run_script("inboundemail_calls.mjs", world, env)
    assert_all_pass(calls)


async def test_inbound_sdk_replies(api: ApiServer, mx: MXListener, make_tenant: MakeTenant) -> None:
    require_node()
    world = await sdk_world(api, mx, make_tenant)
    env = {"INBOUND_API_KEY": world["key"], "INBOUND_BASE_URL": api.url}
    calls = await run_script("inbound_sdk_calls.mjs", world, env)
    assert_all_pass(calls)


@pytest.fixture(scope="module")
async def queue(database_url: str) -> AsyncIterator[Queue]:
    """A queue database of this module's own, for the delivery workers (as the reply tests)."""
    async with queue_database(database_url) as made:
        yield made


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    started = await Sink.start()
    yield started
    await started.stop()


async def test_inbound_replies_through_both_sdks_reach_the_customer_threaded(
    queue: Queue, sink: Sink, tokens: ReplyTokens, dkim_key: DkimKeyPair, tmp_path: Path
) -> None:
    """Both Inbound SDKs reply to a customer's message; the delivery workers hand every reply to
    the customer's server (a loopback sink), each answering the customer's Message-ID."""
    require_node()
    async with running(queue, sink, tokens, dkim_key, tmp_path) as world:
        question = message(
            sender=f"Carol <{CUSTOMER}>",
            to=f"support@{world.domain}",
            subject="Where is my order?",
            body="Hi,\nwhere is my order?\n",
        )
        [received_id] = (
            await smtp_send(world.mx.port, CUSTOMER, [f"support@{world.domain}"], question)
        ).stored_ids
        key = (await world.client.call("POST", "/api-keys", {"name": "sdk"})).body["token"]
        context = {"domain": world.domain, "received": str(received_id)}
        env = {"INBOUND_API_KEY": key, "INBOUND_BASE_URL": world.client.url}
        calls = [
            *await run_script("inboundemail_calls.mjs", context, env),
            *await run_script("inbound_sdk_calls.mjs", context, env),
        ]
        assert_all_pass(calls)
        calls = [c for c in calls if "reply" in c.name]
        await poll_until(lambda: len(sink.messages) >= len(calls))
    question_id = str(parsed(question)["Message-ID"])
    replies = [parsed(m.content) for m in sink.messages]
    assert sorted(tuple(m.rcpt_tos) for m in sink.messages) == [(CUSTOMER,)] * len(calls)
    for reply in replies:
        assert reply["In-Reply-To"] == question_id
        assert question_id in str(reply["References"]).split()
        assert str(reply["Subject"]) in ("Re: Where is my order?", "About your order")
        assert reply["DKIM-Signature"] is not None
    ids = {
        str(c.data["message_id"] if "message_id" in c.data else c.data["messageId"]) for c in calls
    }
    assert {str(r["Message-ID"]).strip("<>") for r in replies} == ids
