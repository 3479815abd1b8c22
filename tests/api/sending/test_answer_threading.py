"""An agent's answer joins the conversation it answers however it is sent: POST /emails with
In-Reply-To, or the agent's own mail client over port 587. The real API, submission server and
MX on loopback; the customer's next answer lands in the same thread."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import pytest

from mta.listeners import MXListener
from storage.database import Pool
from tests.api.sending.emails_client import email, email_row, emails_api
from tests.conftest import (
    ApiServer,
    MakeTenant,
    StartSubmission,
    TenantWorld,
    message,
    received_rows,
    smtp_send,
)
from tests.mta.submission.test_pipeline import submit

CUSTOMER = "customer@example.net"
# How an agent answers: (world, In-Reply-To, References) -> the stored email's id.
Answer = Callable[[TenantWorld, str, str], Awaitable[UUID]]


@pytest.fixture(params=["api", "submission"])
async def answer(
    request: pytest.FixtureRequest, api: ApiServer, start_test_submission: StartSubmission
) -> Answer:
    """The agent's answer, through POST /emails or from their mail client over 587."""
    if request.param == "api":

        async def by_api(world: TenantWorld, in_reply_to: str, references: str) -> UUID:
            headers = {"In-Reply-To": in_reply_to, "References": references}
            async with emails_api(api, await world.api_key()) as client:
                sent = await client.sent_id(
                    email(
                        world,
                        subject="Re: Your order",
                        text="Tomorrow.",
                        html=None,
                        headers=headers,
                    )
                )
            return UUID(sent)

        return by_api
    server = await start_test_submission()

    async def by_submission(world: TenantWorld, in_reply_to: str, references: str) -> UUID:
        content = message(
            sender=f"Agent <support@{world.name}>",
            to=CUSTOMER,
            subject="Re: Your order",
            body="Tomorrow.\n",
            headers={"In-Reply-To": in_reply_to, "References": references},
        )
        return await submit(server, world, content, [CUSTOMER])

    return by_submission


async def customer_writes(mx: MXListener, pool: Pool, to: str, **headers: str) -> dict[str, Any]:
    content = message(
        sender=f"Carol <{CUSTOMER}>", to=to, subject="Re: Your order", headers=headers
    )
    [row] = await received_rows(
        pool, (await smtp_send(mx.port, CUSTOMER, [to], content)).stored_ids
    )
    return row


async def thread_ids(pool: Pool, world: TenantWorld) -> list[UUID]:
    rows = await pool.fetch("SELECT id FROM threads WHERE tenant_id = $1", world.id)
    return [row["id"] for row in rows]


async def test_an_answer_naming_the_customers_reply_joins_its_thread_and_so_does_the_next(
    answer: Answer, mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")
    ours, token = await acme.sent_email()
    first = await customer_writes(
        mx, pool, token.address(acme.reply_domain), **{"In-Reply-To": f"<{ours.message_id}>"}
    )
    assert first["thread_id"] == ours.thread_id

    answer_id = await answer(
        acme, f"<{first['message_id']}>", f"<{ours.message_id}> <{first['message_id']}>"
    )

    row = await email_row(pool, str(answer_id))
    assert row["thread_id"] == ours.thread_id  # the conversation's thread, not a new one
    assert row["in_reply_to_received_id"] == first["id"]
    assert await thread_ids(pool, acme) == [ours.thread_id]
    # The customer answers our answer from a client that writes only In-Reply-To, to support@.
    nxt = await customer_writes(
        mx, pool, f"support@{acme.name}", **{"In-Reply-To": f"<{row['message_id']}>"}
    )
    assert (nxt["reply_match_status"], nxt["thread_id"]) == ("matched", ours.thread_id)
    assert nxt["reply_to_email_id"] == answer_id


async def test_an_answer_to_an_unmatched_message_opens_its_thread_for_both(
    answer: Answer, mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")
    first = await customer_writes(mx, pool, f"support@{acme.name}")
    assert (first["reply_match_status"], first["thread_id"]) == ("unmatched", None)

    answer_id = await answer(acme, f"<{first['message_id']}>", f"<{first['message_id']}>")

    row = await email_row(pool, str(answer_id))
    [adopted] = await received_rows(pool, [first["id"]])
    assert row["thread_id"] is not None and adopted["thread_id"] == row["thread_id"]
    assert row["in_reply_to_received_id"] == first["id"]
    thread = await pool.fetchrow("SELECT subject FROM threads WHERE id = $1", row["thread_id"])
    assert thread["subject"] == "Re: Your order"  # named by the message it opened for
    nxt = await customer_writes(
        mx,
        pool,
        f"support@{acme.name}",
        **{"References": f"<{first['message_id']}> <{row['message_id']}>"},
    )
    assert (nxt["reply_match_status"], nxt["thread_id"]) == ("matched", row["thread_id"])
    assert nxt["reply_to_email_id"] == answer_id


async def test_an_answer_naming_a_sent_email_joins_its_thread(
    answer: Answer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    ours, _token = await acme.sent_email()
    answer_id = await answer(acme, f"<{ours.message_id}>", f"<{ours.message_id}>")
    row = await email_row(pool, str(answer_id))
    assert row["thread_id"] == ours.thread_id
    assert row["in_reply_to_received_id"] is None


async def test_another_tenants_message_ids_are_never_found(
    answer: Answer, mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    victim = await make_tenant()
    await victim.route(f"support@{victim.name}")
    theirs, _token = await victim.sent_email()
    unmatched = await customer_writes(mx, pool, f"support@{victim.name}")
    other = await make_tenant()

    answer_id = await answer(
        other, f"<{unmatched['message_id']}>", f"<{theirs.message_id}> <{unmatched['message_id']}>"
    )

    row = await email_row(pool, str(answer_id))
    assert row["thread_id"] not in (None, theirs.thread_id)
    assert row["in_reply_to_received_id"] is None
    assert await thread_ids(pool, other) == [row["thread_id"]]  # a thread of its own
    [untouched] = await received_rows(pool, [unmatched["id"]])
    assert untouched["thread_id"] is None  # no thread opened for the other tenant's message


async def test_a_message_naming_no_stored_message_starts_its_own_thread(
    answer: Answer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    answer_id = await answer(acme, "<unknown@elsewhere.example>", "<root@elsewhere.example>")
    row = await email_row(pool, str(answer_id))
    assert await thread_ids(pool, acme) == [row["thread_id"]]
    assert row["in_reply_to_received_id"] is None


async def test_a_follow_up_to_the_customers_own_message_answers_our_newest_sent_email(
    api: ApiServer, mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    """The customer writes again on their own first message, after we answered it: the
    message answers the conversation as it stands, our newest email that has gone out."""
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")
    ours, token = await acme.sent_email()
    first = await customer_writes(mx, pool, token.address(acme.reply_domain))
    threading = {"In-Reply-To": f"<{first['message_id']}>"}
    async with emails_api(api, await acme.api_key()) as client:
        answered = await client.sent_id(email(acme, text="Tomorrow.", html=None, headers=threading))
        # Scheduled for later: not gone out, so not what the customer can be answering.
        later = email(acme, text="Any news?", html=None, headers=threading, scheduled_at="in 1 day")
        scheduled = await client.sent_id(later)
    assert (await email_row(pool, scheduled))["thread_id"] == ours.thread_id

    follow_up = await customer_writes(
        mx, pool, f"support@{acme.name}", **{"References": f"<{first['message_id']}>"}
    )

    assert (follow_up["reply_match_status"], follow_up["match_source"]) == ("matched", "references")
    assert follow_up["thread_id"] == ours.thread_id
    assert follow_up["reply_to_email_id"] == UUID(answered)


async def test_a_batch_puts_each_answer_in_its_own_conversation(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    first, _ = await acme.sent_email(subject="first")
    second, _ = await acme.sent_email(subject="second")
    items = [
        email(acme, headers={"In-Reply-To": f"<{first.message_id}>"}),
        email(acme),
        email(acme, headers={"References": f"<{first.message_id}> <{second.message_id}>"}),
    ]
    async with emails_api(api, await acme.api_key()) as client:
        sent = await client.batch(items)
    assert sent.status == 200, sent.body
    rows = [await email_row(pool, item["id"]) for item in sent.body["data"]]
    assert rows[0]["thread_id"] == first.thread_id
    assert rows[1]["thread_id"] not in (first.thread_id, second.thread_id, None)
    assert rows[2]["thread_id"] == second.thread_id  # References: the newest id first
