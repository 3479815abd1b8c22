"""The whole conversation loop through real parts: POST /emails, the customer's answer through
the MX as a mail client writes it, the match seen in GET /emails/receiving/{id}, our reply with
POST /emails/{id}/reply, the customer's second answer, and one thread of four messages.

The reply is checked as stored for delivery (`emails.raw`, what the delivery workers send byte
for byte, less their DKIM-Signature); the workers themselves are tested in tests/mta.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mta.listeners import MXListener
from storage.database import Pool
from tests.api.sending.emails_client import EmailsApi, email, email_row, emails_api
from tests.api.sending.test_emails import parsed, text_of
from tests.conftest import ApiServer, MakeTenant, TenantWorld, message, smtp_send

CUSTOMER = "customer@example.net"


@dataclass(frozen=True)
class Client:
    """How the customer's mail client answers: where to, and which threading fields it keeps."""

    to_routed_address: bool  # answers to support@ (say, a forwarded copy) not the Reply-To
    keeps_references: bool


async def answer(
    mx: MXListener,
    world: TenantWorld,
    client: Client,
    *,
    reply_to: str,
    parent_id: str,
    references: list[str],
    subject: str,
    body: str,
) -> tuple[str, str]:
    """The customer's answer through the MX: (its received email id, its Message-ID)."""
    to = f"support@{world.name}" if client.to_routed_address else reply_to
    headers = {"In-Reply-To": f"<{parent_id}>"}
    if client.keeps_references:
        headers["References"] = " ".join(f"<{i}>" for i in [*references, parent_id])
    content = message(
        sender=f"Carol <{CUSTOMER}>", to=to, subject=subject, body=body, headers=headers
    )
    msg_id = str(parsed(content)["Message-ID"])
    delivery = await smtp_send(mx.port, CUSTOMER, [to], content)
    [stored] = delivery.stored_ids
    return str(stored), msg_id.strip("<>")


async def matched(api: EmailsApi, received_id: str, thread_id: str) -> None:
    got = await api.call("GET", f"/emails/receiving/{received_id}")
    assert got.status == 200, got.body
    assert (got.body["reply_match_status"], got.body["thread_id"]) == ("matched", thread_id)


@pytest.mark.parametrize(
    "client",
    [
        Client(to_routed_address=False, keeps_references=True),
        Client(to_routed_address=True, keeps_references=True),
        Client(to_routed_address=False, keeps_references=False),
    ],
    ids=["to-reply-address", "to-routed-address-by-headers", "client-drops-references"],
)
async def test_a_conversation_of_four_messages_is_one_thread_in_order(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant, client: Client
) -> None:
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")
    async with emails_api(api, await acme.api_key()) as http:
        # 1. We write to the customer.
        sent = await email_row(pool, await http.sent_id(email(acme, subject="Your order")))
        thread_id = str(sent["thread_id"])

        # 2. The customer answers, as a mail client does, through our MX.
        first_id, first_msg = await answer(
            mx,
            acme,
            client,
            reply_to=sent["reply_address"],
            parent_id=sent["message_id"],
            references=[],
            subject="Re: Your order",
            body="Where is it?\n",
        )
        await matched(http, first_id, thread_id)

        # 3. We reply to that answer.
        replied = await http.call(
            "POST",
            f"/emails/{first_id}/reply",
            {"from": f"support@{acme.name}", "text": "Tomorrow."},
        )
        assert replied.status == 200, replied.body
        reply = await email_row(pool, replied.body["id"])
        raw = parsed(reply["raw"])
        assert raw["Subject"] == "Re: Your order"
        assert raw["To"] == CUSTOMER
        assert raw["In-Reply-To"] == f"<{first_msg}>"
        expected_refs = [sent["message_id"], first_msg] if client.keeps_references else [first_msg]
        assert raw["References"] == " ".join(f"<{i}>" for i in expected_refs)
        assert raw["Reply-To"] == reply["reply_address"] != sent["reply_address"]
        text = raw.get_body(("plain",))
        assert text is not None
        quoted = text_of(text).split("\n")
        assert quoted[0] == "Tomorrow."
        assert quoted[2].endswith(f"Carol <{CUSTOMER}> wrote:")
        assert quoted[3] == "> Where is it?"

        # 4. The customer answers our reply.
        second_id, _ = await answer(
            mx,
            acme,
            client,
            reply_to=reply["reply_address"],
            parent_id=reply["message_id"],
            references=expected_refs,
            subject="Re: Your order",
            body="Thanks!\n",
        )
        await matched(http, second_id, thread_id)

        # 5. One thread, four messages, in the order they were written.
        got = await http.call("GET", f"/threads/{thread_id}")
    assert got.status == 200, got.body
    assert [(m["direction"], m["id"]) for m in got.body["messages"]] == [
        ("outbound", str(sent["id"])),
        ("inbound", first_id),
        ("outbound", str(reply["id"])),
        ("inbound", second_id),
    ]
    assert got.body["messages"][3]["reply_to_email_id"] == str(reply["id"])
