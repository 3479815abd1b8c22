"""Classification of received mail, end to end: a message through the real MX, read back
through the real API. Auto-replies stay linked to what they answer but are flagged apart from
customer replies; a helpdesk agent's reply through our token stays a reply."""

from __future__ import annotations

from typing import Any

import aiohttp

from mta.listeners import MXListener
from storage.database import Pool
from tests.conftest import ApiServer, MakeTenant, message, smtp_send


async def get_json(api: ApiServer, key: str, path: str) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        aiohttp.ClientSession(base_url=api.url, headers=headers) as http,
        http.get(path) as response,
    ):
        body = await response.json()
        assert response.status == 200, body
        return body


async def test_out_of_office_reply_is_linked_and_flagged_not_counted_as_a_reply(
    mx: MXListener, api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    key = await acme.api_key()
    email, token = await acme.sent_email()
    before = await pool.fetchval(
        "SELECT last_message_at FROM threads WHERE id = $1", email.thread_id
    )
    reply_address = token.address(acme.reply_domain)
    sent = await smtp_send(
        mx.port,
        "",
        [reply_address],
        message(
            to=reply_address,
            subject="Automatic reply: Your order",
            body="I am out of the office until Monday.",
            headers={"Auto-Submitted": "auto-replied", "In-Reply-To": f"<{email.message_id}>"},
        ),
    )
    [stored] = sent.stored_ids

    detail = await get_json(api, key, f"/emails/receiving/{stored}")
    assert detail["classification"] == "auto_reply"
    assert detail["classification_reason"] == "auto_submitted_replied"
    # Linked to what it answers...
    assert detail["reply_match_status"] == "matched"
    assert detail["reply_to_email_id"] == str(email.id)
    assert detail["thread_id"] == str(email.thread_id)
    # ...and shown apart in the thread, without moving the thread's activity.
    [inbound] = [m for m in detail["thread"]["messages"] if m["direction"] == "inbound"]
    assert inbound["classification"] == "auto_reply"
    after = await pool.fetchval(
        "SELECT last_message_at FROM threads WHERE id = $1", email.thread_id
    )
    assert after == before

    humans = await get_json(api, key, "/emails/receiving?classification=human")
    assert str(stored) not in [item["id"] for item in humans["data"]]
    autos = await get_json(api, key, "/emails/receiving?classification=auto_reply")
    assert [item["id"] for item in autos["data"]] == [str(stored)]


async def test_helpdesk_reply_with_auto_submitted_and_our_token_stays_a_reply(
    mx: MXListener, api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    key = await acme.api_key()
    email, token = await acme.sent_email()
    reply_address = token.address(acme.reply_domain)
    # Zendesk sends an agent's answer with Auto-Submitted: auto-generated.
    sent = await smtp_send(
        mx.port,
        "support@helpdesk.example",
        [reply_address],
        message(
            sender="Agent Smith <support@helpdesk.example>",
            to=reply_address,
            subject="Re: Your order",
            body="Hello, the refund went out this morning.\n\n> Your order\n",
            headers={"Auto-Submitted": "auto-generated"},
        ),
    )
    [stored] = sent.stored_ids
    detail = await get_json(api, key, f"/emails/receiving/{stored}")
    assert detail["classification"] == "human"
    assert detail["classification_reason"] == "helpdesk_reply_with_token"
    assert detail["reply_match_status"] == "matched"
    assert detail["reply_to_email_id"] == str(email.id)


async def test_customer_reply_is_human_in_the_list(
    mx: MXListener, api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    key = await acme.api_key()
    sent = await smtp_send(mx.port, "c@example.net", [f"x@{acme.name}"], message())
    [stored] = sent.stored_ids
    listed = await get_json(api, key, "/emails/receiving")
    [item] = [i for i in listed["data"] if i["id"] == str(stored)]
    assert (item["classification"], item["classification_reason"]) == ("human", "no_rule")


async def test_ingested_message_is_classified_like_port_25(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    key = await acme.api_key()
    email, token = await acme.sent_email()
    reply_address = token.address(acme.reply_domain)
    content = message(
        to=reply_address,
        subject="Out of Office: Your order",
        body="Back on Monday.",
        headers={"X-Autoreply": "yes", "In-Reply-To": f"<{email.message_id}>"},
    )
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{api.url}/events/inbound",
            data=content,
            headers={
                "Content-Type": "message/rfc822",
                "X-OpenSend-Recipients": reply_address,
                "X-OpenSend-Mail-From": "<>",
            },
        ) as response,
    ):
        body = await response.json()
        assert response.status == 202, body
    [stored] = body["emails"]
    detail = await get_json(api, key, f"/emails/receiving/{stored['id']}")
    assert (detail["classification"], detail["classification_reason"]) == (
        "auto_reply",
        "vendor_auto_reply",
    )
    assert detail["reply_to_email_id"] == str(email.id)
