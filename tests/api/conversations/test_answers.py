"""End to end: an email sent through the API is answered by SMTP at our MX, and the answer is
stored matched to it; and when the database is away, sending is a 503 that stored nothing."""

from __future__ import annotations

from pathlib import Path

from mta.listeners import MXListener
from policy.tokens import ReplyTokens
from storage.database import Pool
from tests.api.sending.emails_client import email, email_row, emails_api
from tests.conftest import (
    ApiServer,
    MakeTenant,
    message,
    received_rows,
    smtp_send,
)
from tests.support.outage_api import api_on_own_cluster


async def test_reply_to_the_reply_address_is_stored_matched_to_the_email_and_thread(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        email_id = await client.sent_id(email(acme, to="customer@example.net"))
    sent = await email_row(pool, email_id)
    reply = message(
        sender="customer@example.net",
        to=sent["reply_address"],
        subject="Re: Your order has shipped",
        headers={"In-Reply-To": f"<{sent['message_id']}>", "References": f"<{sent['message_id']}>"},
    )
    delivery = await smtp_send(mx.port, "customer@example.net", [sent["reply_address"]], reply)
    [stored] = await received_rows(pool, delivery.stored_ids)
    assert stored["tenant_id"] == acme.id
    assert stored["reply_match_status"] == "matched"
    assert stored["reply_to_email_id"] == sent["id"]
    assert stored["thread_id"] == sent["thread_id"]


async def test_reply_to_the_callers_own_reply_to_still_matches_by_message_id(
    api: ApiServer, pool: Pool, mx: MXListener, make_tenant: MakeTenant
) -> None:
    """The caller's reply_to wins the Reply-To field; the token still rides in Message-ID."""
    acme = await make_tenant()
    await acme.route(f"help@{acme.name}")
    async with emails_api(api, await acme.api_key()) as client:
        email_id = await client.sent_id(email(acme, reply_to=f"Help <help@{acme.name}>"))
    sent = await email_row(pool, email_id)
    reply = message(
        to=f"help@{acme.name}",
        subject="Re: Your order has shipped",
        headers={"In-Reply-To": f"<{sent['message_id']}>"},
    )
    delivery = await smtp_send(mx.port, "customer@example.net", [f"help@{acme.name}"], reply)
    [stored] = await received_rows(pool, delivery.stored_ids)
    assert (stored["reply_match_status"], stored["reply_to_email_id"], stored["thread_id"]) == (
        "matched",
        sent["id"],
        sent["thread_id"],
    )


async def test_send_while_the_database_is_down_is_503_and_stores_nothing(
    tmp_path: Path, tokens: ReplyTokens
) -> None:
    async with api_on_own_cluster(tmp_path, tokens) as api:
        world = api.world
        async with emails_api(api.url, await world.api_key()) as client:
            assert (await client.send(email(world))).status == 200  # key and domain cached
            await api.cluster.stop()
            down = await client.send(email(world, subject="While down"))
            await api.cluster.start()
            up = await client.send(email(world, subject="After"))
        assert (down.status, down.name) == (503, "application_error")
        assert down.message == "Temporarily unable to process the request; try again shortly."
        assert up.status == 200
        subjects = await api.pool.fetch("SELECT subject FROM emails ORDER BY created_at")
        assert [r["subject"] for r in subjects] == ["Your order has shipped", "After"]
