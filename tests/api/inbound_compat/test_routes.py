"""Inbound's other reply routes (api.inbound_compat): /api/e2/emails/{id}/reply with reply_all
and its answer shape, /api/v2/mail sent from the address the email came to, Inbound's errors."""

from __future__ import annotations

from uuid import uuid4

from mta.listeners import MXListener
from storage.database import Pool
from tests.api.sending.emails_client import email_row, emails_api
from tests.api.sending.reply_client import received_email
from tests.api.sending.test_reply_send import matched_received
from tests.conftest import ApiServer, MakeTenant


async def test_e2_reply_answers_inbounds_shape_and_reply_all_copies_the_cc(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    cc = {"Cc": f"Dan <dan@example.org>, support@{acme.name}"}
    received_id = await received_email(acme, mx, headers=cc)
    async with emails_api(api, await acme.api_key()) as client:
        body = {"from": f"support@{acme.name}", "text": "On its way.", "reply_all": True}
        answer = await client.call("POST", f"/api/e2/emails/{received_id}/reply", body)
        detail = (await client.call("GET", f"/emails/receiving/{received_id}")).body
    assert answer.status == 200, answer.body
    assert set(answer.body) == {
        "id",
        "aws_message_id",
        "is_thread_reply",
        "message_id",
        "replied_to_email_id",
        "replied_to_thread_id",
    }
    assert answer.body["replied_to_email_id"] == received_id
    assert answer.body["is_thread_reply"] is False
    assert answer.body["aws_message_id"] == answer.body["message_id"]
    row = await email_row(pool, answer.body["id"])
    assert row["message_id"] == answer.body["message_id"]
    assert str(row["thread_id"]) == answer.body["replied_to_thread_id"] == detail["thread_id"]
    # The original's Cc, but not our own address (it is where the email came to).
    assert list(row["cc_addresses"]) == ["dan@example.org"]


async def test_mail_reply_sends_from_the_address_the_email_came_to(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    received_id = await received_email(acme, mx, to=f"help@{acme.name}")
    async with emails_api(api, await acme.api_key()) as client:
        body = {
            "emailId": received_id,
            "to": "customer@example.net",
            "subject": "Re: Where is my order?",
            "textBody": "On its way.",
        }
        answer = await client.call("POST", "/api/v2/mail", body)
    assert answer.status == 200, answer.body
    assert answer.body["message"] and answer.body["awsMessageId"] == answer.body["messageId"]
    row = await email_row(pool, answer.body["id"])
    assert row["from_address"] == f"help@{acme.name}"
    assert list(row["to_addresses"]) == ["customer@example.net"]


async def test_inbound_routes_answer_inbounds_errors(
    api: ApiServer, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        unknown = await client.call("POST", "/api/v2/mail", {"emailId": "nope", "textBody": "x"})
        missing = await client.call(
            "POST",
            "/api/e2/emails/00000000-0000-0000-0000-000000000001/reply",
            {"from": f"support@{acme.name}", "text": "x"},
        )
    async with emails_api(api, "re_not_a_key") as stranger:
        refused = await stranger.call("POST", "/api/v2/mail", {"emailId": "x"})
    assert (unknown.status, unknown.body["error"]) == (400, "Valid email ID is required")
    assert (missing.status, missing.body["error"]) == (404, "Email not found")
    assert (refused.status, refused.body["error"]) == (401, "Unauthorized")


async def test_e2_reply_to_a_thread_answers_its_newest_received_message(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        sent, received_id = await matched_received(acme, client, pool, mx)
        thread_id = str(sent["thread_id"])
        body = {"from": f"support@{acme.name}", "text": "Tomorrow."}
        answer = await client.call("POST", f"/api/e2/emails/{thread_id}/reply", body)
        unknown = await client.call("POST", f"/api/e2/emails/{uuid4()}/reply", body)
    assert answer.status == 200, answer.body
    assert answer.body["is_thread_reply"] is True
    assert answer.body["replied_to_email_id"] == received_id
    assert answer.body["replied_to_thread_id"] == thread_id
    assert (unknown.status, unknown.body["error"]) == (404, "Email not found")
