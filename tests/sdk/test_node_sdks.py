"""The official Node SDKs, unchanged but for the base URL, against the real server: every call
they make of a route we serve answers without an SDK error and with the data their types promise.

Node and the pinned SDKs are installed by .ci/run (`npm ci` in tests/sdk/node); without them the
tests fail with the command that installs them, never skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mta.listeners import MXListener
from policy.domains.dkim_keys import DkimKeyPair
from policy.tokens import ReplyTokens
from tests.api.conversations.test_receiving import deliver, with_attachments
from tests.api.sending import test_reply_delivered as reply_world
from tests.api.sending.test_emails import parsed
from tests.api.sending.test_reply_delivered import CUSTOMER, Queue, running
from tests.conftest import ApiServer, MakeTenant, TenantWorld, message, smtp_send
from tests.sdk.node_sdks import Call, node_available, run_script
from tests.support.queued_mail import poll_until
from tests.support.smtp_sink import Sink


def require_node() -> None:
    assert node_available(), "Node SDKs missing: run `npm ci` in tests/sdk/node (or .ci/run)"


async def received_with_attachment(world: TenantWorld, mx: MXListener) -> str:
    """A message with a text body and one attachment, received through the real MX."""
    address = f"support@{world.name}"
    await world.route(address)
    content = with_attachments(address, [("order.pdf", b"order 42", "application/pdf")])
    return str(await deliver(mx, world, content, rcpt=address))


def assert_all_pass(calls: list[Call]) -> None:
    failed = [c.why() for c in calls if c.failed]
    summary = f"{len(failed)} of {len(calls)} calls fail:\n"
    assert not failed, summary + "\n".join(failed)


def sdk_env(key: str, url: str) -> dict[str, str]:
    """What a user's program sets: each SDK's key and base URL variables, nothing else."""
    names = ("RESEND_API_KEY", "RESEND_BASE_URL", "INBOUND_API_KEY", "INBOUND_BASE_URL")
    return dict(zip(names, (key, url, key, url), strict=True))


# One script per SDK: Resend's every served method, Inbound's e2 and v2 replies.
SCRIPTS = ["resend_calls.mjs", "inboundemail_calls.mjs", "inbound_sdk_calls.mjs"]


@pytest.mark.parametrize("script", SCRIPTS, ids=["resend", "inboundemail", "inbound_sdk"])
async def test_node_sdk_every_served_method_answers_as_its_types_promise(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant, script: str
) -> None:
    require_node()
    acme = await make_tenant()
    world = {"domain": acme.name, "received": await received_with_attachment(acme, mx)}
    calls = await run_script(script, world, sdk_env(await acme.api_key(), api.url))
    assert_all_pass(calls)


# The delivery world of the reply tests (its own queue database, the customer's sink), shared.
reply_queue, customer_sink = reply_world.queue, reply_world.sink


async def test_inbound_replies_through_both_sdks_reach_the_customer_threaded(
    reply_queue: Queue,
    customer_sink: Sink,
    tokens: ReplyTokens,
    dkim_key: DkimKeyPair,
    tmp_path: Path,
) -> None:
    """Both Inbound SDKs reply to a customer's message; the delivery workers hand every reply to
    the customer's server (a loopback sink), each answering the customer's Message-ID."""
    require_node()
    sink = customer_sink
    async with running(reply_queue, sink, tokens, dkim_key, tmp_path) as world:
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
        env = sdk_env(key, world.client.url)
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
