"""Webhook delivery against a real receiver on loopback: retries under the same webhook-id, a
hanging endpoint timed out without holding up another, signatures during a rotation, disabled
endpoints, the address check at connection time, and which events are written at all."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from uuid import UUID

import pytest
import resend

from policy.domains.dkim_keys import DkimKeyPair
from policy.tokens import ReplyTokens
from policy.webhooks.events import EmailEvent
from policy.webhooks.signing import new_secret
from storage.account import domains
from storage.conversations import contacts
from storage.database import Pool
from storage.sending.outbound import insert_tracked_email, new_email_id
from storage.webhooks.events import record_email_event
from tests.api.ingest.test_raw import post as ingest_post
from tests.conftest import DOMAIN_VIEW, ApiServer, MakeTenant, message
from tests.support.dns_server import LoopbackDNSServer
from tests.webhooks.conftest import Queue
from tests.webhooks.receiver import WAIT_SECONDS, Receiver, verified
from tests.webhooks.world import (
    api_server,
    call,
    create_webhook,
    sdk_as,
    tenant_with_key,
    webhook_workers,
)


async def new_contact(pool: Pool, tenant_id: UUID) -> None:
    """A change that writes a contact.created event (when subscribed)."""
    await contacts.create_contact(
        pool, tenant_id, f"c{secrets.token_hex(4)}@example.net", None, None, False
    )


async def attempts_of(pool: Pool, delivery_id: str, count: int) -> list[dict[str, object]]:
    """The delivery's attempts, oldest first, once `count` are recorded."""
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            rows = await pool.fetch(
                "SELECT status_code, error, response FROM webhook_attempts "
                "WHERE delivery_id = $1 ORDER BY id",
                UUID(delivery_id),
            )
            if len(rows) >= count:
                return [dict(r) for r in rows]
            await asyncio.sleep(0.05)


async def delivery_status(pool: Pool, delivery_id: str) -> str:
    status: str = await pool.fetchval(
        "SELECT status FROM webhook_deliveries WHERE id = $1", UUID(delivery_id)
    )
    return status


async def test_a_500_then_a_200_is_the_same_webhook_id_twice_with_two_attempts(
    queue: Queue,
    receiver: Receiver,
    tokens: ReplyTokens,
    dkim_key: DkimKeyPair,
    tmp_path: Path,
) -> None:
    url, pool = queue
    domain, key = await tenant_with_key(pool, dkim_key)
    receiver.answers = [500]
    async with (
        api_server(pool, tokens, tmp_path) as api_url,
        webhook_workers(pool, url, tmp_path),
    ):
        with sdk_as(key, api_url):
            hook_id, secret = await create_webhook(receiver.url, ["contact.created"])
            await new_contact(pool, domain.tenant_id)
            first, second = await receiver.wait_for(2)
            assert first.id == second.id
            assert verified(first, secret) == verified(second, secret)
            assert first.headers["webhook-timestamp"] <= second.headers["webhook-timestamp"]
            await attempts_of(pool, first.id, 2)
            attempts = await call(resend.Webhooks.list_event_attempts, hook_id, first.id)
            assert [a["http_status_code"] for a in attempts["data"]] == [200, 500]
            assert attempts["data"][1]["response"] == "answered 500"
            event = await call(resend.Webhooks.get_event, hook_id, first.id)
            assert event["status"] == "success"


async def test_a_hanging_endpoint_is_timed_out_and_does_not_hold_up_another(
    queue: Queue,
    receiver: Receiver,
    other_receiver: Receiver,
    tokens: ReplyTokens,
    dkim_key: DkimKeyPair,
    tmp_path: Path,
) -> None:
    url, pool = queue
    slow, slow_key = await tenant_with_key(pool, dkim_key)
    quick, quick_key = await tenant_with_key(pool, dkim_key)
    receiver.hang = True
    async with (
        api_server(pool, tokens, tmp_path) as api_url,
        webhook_workers(
            pool,
            url,
            tmp_path,
            OPENSEND_WEBHOOK_TIMEOUT="1s",
            OPENSEND_WEBHOOK_ENDPOINT_CONCURRENCY="2",
        ),
    ):
        with sdk_as(slow_key, api_url):
            await create_webhook(receiver.url, ["contact.created"])
        with sdk_as(quick_key, api_url):
            _, quick_secret = await create_webhook(other_receiver.url, ["contact.created"])
        for _ in range(5):
            await new_contact(pool, slow.tenant_id)
        await new_contact(pool, quick.tenant_id)
        # The quick endpoint is served while the slow one holds its two connections.
        [post] = await other_receiver.wait_for(1)
        verified(post, quick_secret)
        hung = await receiver.wait_for(2)
        assert len({p.id for p in hung}) == 2
        [attempt] = await attempts_of(pool, hung[0].id, 1)
        assert attempt["status_code"] is None and attempt["error"] == "timed out"
        assert await delivery_status(pool, hung[0].id) == "attempting"


async def test_a_hanging_endpoint_does_not_hold_up_another_on_the_same_host(
    queue: Queue,
    receiver: Receiver,
    tokens: ReplyTokens,
    dkim_key: DkimKeyPair,
    tmp_path: Path,
) -> None:
    """Two tenants' endpoints behind one host (a hosted receiver): the cap is per endpoint, not
    per host. With the client's connections capped per host, the quick endpoint's request
    waited for one of the slow endpoint's and timed out, which began a failing streak."""
    url, pool = queue
    slow, slow_key = await tenant_with_key(pool, dkim_key)
    quick, quick_key = await tenant_with_key(pool, dkim_key)
    receiver.hang_paths.add("/slow")
    async with (
        api_server(pool, tokens, tmp_path) as api_url,
        webhook_workers(
            pool,
            url,
            tmp_path,
            OPENSEND_WEBHOOK_TIMEOUT="2s",
            OPENSEND_WEBHOOK_CONNECT_TIMEOUT="1s",
            OPENSEND_WEBHOOK_ENDPOINT_CONCURRENCY="2",
        ),
    ):
        with sdk_as(slow_key, api_url):
            await create_webhook(receiver.url_of("/slow"), ["contact.created"])
        with sdk_as(quick_key, api_url):
            _, quick_secret = await create_webhook(receiver.url_of("/quick"), ["contact.created"])
        for _ in range(5):
            await new_contact(pool, slow.tenant_id)
        await receiver.wait_for(2)  # the slow endpoint holds its two requests
        await new_contact(pool, quick.tenant_id)
        post = await receiver.wait_for_path("/quick")
        verified(post, quick_secret)
        [attempt] = await attempts_of(pool, post.id, 1)
        assert attempt["status_code"] == 200


async def test_after_a_rotation_both_secrets_sign_until_the_grace_ends(
    queue: Queue,
    receiver: Receiver,
    tokens: ReplyTokens,
    dkim_key: DkimKeyPair,
    tmp_path: Path,
) -> None:
    url, pool = queue
    domain, key = await tenant_with_key(pool, dkim_key)
    async with (
        api_server(pool, tokens, tmp_path) as api_url,
        webhook_workers(pool, url, tmp_path),
    ):
        with sdk_as(key, api_url):
            hook_id, old = await create_webhook(receiver.url, ["contact.created"])
            new = (await call(resend.Webhooks.rotate_signing_secret, hook_id))["signing_secret"]
            await new_contact(pool, domain.tenant_id)
            [during] = await receiver.wait_for(1)
            assert len(during.headers["webhook-signature"].split(" ")) == 2
            assert verified(during, old) == verified(during, new)
            await pool.execute(
                "UPDATE webhooks SET previous_secret_until = now() WHERE id = $1", UUID(hook_id)
            )
            await new_contact(pool, domain.tenant_id)
            [_, after] = await receiver.wait_for(2)
            assert len(after.headers["webhook-signature"].split(" ")) == 1
            verified(after, new)
            with pytest.raises(ValueError, match="no matching signature"):
                verified(after, old)


async def test_a_disabled_endpoint_gets_nothing_and_five_days_of_failures_disable_one(
    queue: Queue,
    receiver: Receiver,
    other_receiver: Receiver,
    tokens: ReplyTokens,
    dkim_key: DkimKeyPair,
    tmp_path: Path,
) -> None:
    url, pool = queue
    domain, key = await tenant_with_key(pool, dkim_key)
    other_receiver.answers = [503]
    async with (
        api_server(pool, tokens, tmp_path) as api_url,
        webhook_workers(pool, url, tmp_path),
    ):
        with sdk_as(key, api_url):
            off_id, _ = await create_webhook(receiver.url, ["contact.created"])
            await call(resend.Webhooks.update, {"webhook_id": off_id, "status": "disabled"})
            failing_id, _ = await create_webhook(other_receiver.url, ["contact.created"])
            # It has failed every attempt for more than five days.
            await pool.execute(
                "UPDATE webhooks SET failing_since = now() - interval '5 days 1 minute' "
                "WHERE id = $1",
                UUID(failing_id),
            )
            await new_contact(pool, domain.tenant_id)
            [post] = await other_receiver.wait_for(1)
            await attempts_of(pool, post.id, 1)
            failing = await call(resend.Webhooks.get, failing_id)
            assert (failing["status"], failing["disabled_reason"]) == ("disabled", "failing")
            event = await call(resend.Webhooks.get_event, failing_id, post.id)
            assert event["status"] == "attempting" and event["next_attempt_at"] is not None
        assert receiver.posts == []
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1", UUID(off_id)
            )
            == 0
        )


async def test_a_name_that_resolves_to_loopback_at_connection_time_is_refused(
    queue: Queue,
    receiver: Receiver,
    dns: LoopbackDNSServer,
    tokens: ReplyTokens,
    dkim_key: DkimKeyPair,
    tmp_path: Path,
) -> None:
    """DNS rebinding: the name was public when the endpoint was stored, loopback when used."""
    url, pool = queue
    domain, key = await tenant_with_key(pool, dkim_key)
    dns.zone.add("hook.rebind.test", "A", "93.184.216.34")
    production = {
        "OPENSEND_ENV": "production",
        "OPENSEND_DATABASE_URL": url,
        "OPENSEND_DNS_SERVERS": dns.address,
    }
    port = receiver.url.split(":")[2].split("/")[0]
    async with api_server(pool, tokens, tmp_path, **production) as api_url:
        with sdk_as(key, api_url):
            await create_webhook(f"https://hook.rebind.test:{port}/hook", ["contact.created"])
    dns.zone.remove("hook.rebind.test", "A")
    dns.zone.add("hook.rebind.test", "A", "127.0.0.1")
    async with webhook_workers(pool, url, tmp_path, **production):
        await new_contact(pool, domain.tenant_id)
        delivery_id = await _only_delivery(pool, domain.tenant_id)
        [attempt] = await attempts_of(pool, delivery_id, 1)
    assert attempt["status_code"] is None
    assert (
        attempt["error"] == "refused: hook.rebind.test resolves to 127.0.0.1 (a loopback address)"
    )
    assert receiver.posts == []


async def test_an_address_in_unicode_digits_is_judged_as_the_address_the_client_connects_to(
    queue: Queue, receiver: Receiver, dkim_key: DkimKeyPair, tmp_path: Path
) -> None:
    """aiohttp reads "１２７.０.０.１" (fullwidth digits) as 127.0.0.1 and connects without
    resolving anything; an endpoint stored so (before the API refused it) is refused at send."""
    url, pool = queue
    domain, _key = await tenant_with_key(pool, dkim_key)
    port = receiver.url.split(":")[2].split("/")[0]
    await pool.execute(
        "INSERT INTO webhooks (id, tenant_id, endpoint, events, signing_secret) "
        "VALUES (opensend_uuid7(), $1, $2, $3, $4)",
        domain.tenant_id,
        f"https://１２７.０.０.１:{port}/hook",
        ["contact.created"],
        new_secret(),
    )
    production = {"OPENSEND_ENV": "production", "OPENSEND_DATABASE_URL": url}
    async with webhook_workers(pool, url, tmp_path, **production):
        await new_contact(pool, domain.tenant_id)
        delivery_id = await _only_delivery(pool, domain.tenant_id)
        [attempt] = await attempts_of(pool, delivery_id, 1)
    assert attempt["status_code"] is None
    assert attempt["error"] == "refused: 127.0.0.1 (a loopback address)"
    assert receiver.posts == []


async def _only_delivery(pool: Pool, tenant_id: UUID) -> str:
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            ids = await pool.fetch(
                "SELECT id FROM webhook_deliveries WHERE tenant_id = $1", tenant_id
            )
            if ids:
                [row] = ids
                return str(row["id"])
            await asyncio.sleep(0.05)


async def test_events_are_written_only_for_subscribed_types_in_the_changing_transaction(
    queue: Queue, tokens: ReplyTokens, dkim_key: DkimKeyPair, tmp_path: Path
) -> None:
    _, pool = queue
    domain, key = await tenant_with_key(pool, dkim_key)
    quiet, _ = await tenant_with_key(pool, dkim_key)
    async with api_server(pool, tokens, tmp_path) as api_url:
        with sdk_as(key, api_url):
            await create_webhook("http://127.0.0.1:9/", ["domain.updated", "contact.deleted"])
    # Not subscribed: nothing is written.
    await new_contact(pool, domain.tenant_id)
    await new_contact(pool, quiet.tenant_id)
    assert await _types(pool, domain.tenant_id) == []
    found = await contacts.list_contacts(pool, domain.tenant_id, limit=1)
    contact_id = found[0][0].id
    # A rolled-back change leaves no event behind.
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("DELETE FROM contacts WHERE id = $1", contact_id)
        await tx.rollback()
    assert await _types(pool, domain.tenant_id) == []
    await domains.update_receiving(
        pool,
        domain.tenant_id,
        domain.id,
        receiving=False,
        reply_domain=None,
        event_data=DOMAIN_VIEW.event_data,
    )
    await contacts.delete_contact(pool, domain.tenant_id, contact_id)
    assert await _types(pool, domain.tenant_id) == ["domain.updated", "contact.deleted"]
    data = await pool.fetchval(
        "SELECT data FROM webhook_events WHERE tenant_id = $1 AND type = 'domain.updated'",
        domain.tenant_id,
    )
    assert (data["name"], data["capabilities"]["receiving"]) == (domain.name, "disabled")


async def test_the_hook_for_suppressions_and_complaints_writes_their_events(
    queue: Queue, receiver: Receiver, tokens: ReplyTokens, dkim_key: DkimKeyPair, tmp_path: Path
) -> None:
    url, pool = queue
    domain, key = await tenant_with_key(pool, dkim_key)
    email_id = new_email_id()
    await insert_tracked_email(
        pool,
        email_id=email_id,
        tenant_id=domain.tenant_id,
        thread_id=None,
        from_address=f"support@{domain.name}",
        to=["gone@example.net"],
        subject="Hello",
        message_id=f"m1@{domain.name}",
        reply_token=None,
        reply_address=None,
        reply_domain=None,
    )
    async with (
        api_server(pool, tokens, tmp_path) as api_url,
        webhook_workers(pool, url, tmp_path),
    ):
        with sdk_as(key, api_url):
            _, secret = await create_webhook(receiver.url, ["email.suppressed", "email.complained"])
        async with pool.acquire() as conn, conn.transaction():
            await record_email_event(
                conn,
                domain.tenant_id,
                email_id,
                EmailEvent.SUPPRESSED,
                recipient="gone@example.net",
                data={"type": "OnAccountSuppressionList", "message": "bounced before"},
            )
            await record_email_event(conn, domain.tenant_id, email_id, EmailEvent.COMPLAINED)
        posts = await receiver.wait_for(2)
    events = {p.payload["type"]: verified(p, secret)["data"] for p in posts}
    assert events["email.suppressed"]["suppressed"] == {
        "type": "OnAccountSuppressionList",
        "message": "bounced before",
    }
    assert events["email.suppressed"]["to"] == ["gone@example.net"]
    assert events["email.complained"]["email_id"] == str(email_id)
    assert events["email.complained"]["message_id"] == f"<m1@{domain.name}>"


async def _types(pool: Pool, tenant_id: UUID) -> list[str]:
    rows = await pool.fetch(
        "SELECT type FROM webhook_events WHERE tenant_id = $1 ORDER BY id", tenant_id
    )
    return [r["type"] for r in rows]


async def test_ingested_mail_for_two_tenants_writes_each_its_email_received(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant, sdk: None
) -> None:
    """The ingester stores one copy per recipient tenant; each copy has its own event."""
    acme, other = await make_tenant(), await make_tenant()
    for world in (acme, other):
        await world.route(f"support@{world.name}")
        resend.api_key, resend.api_url = await world.api_key(), api.url
        await create_webhook("http://127.0.0.1:9/", ["email.received"])
    raw = message(to=f"support@{acme.name}", subject="Two of us")
    status, body = await ingest_post(
        api.url,
        raw=raw,
        headers={
            "X-OpenSend-Recipients": f"support@{acme.name}, support@{other.name}",
            "X-OpenSend-Event-Id": f"evt-{acme.name}",
        },
    )
    assert status == 202, body
    for world in (acme, other):
        [row] = await pool.fetch(
            "SELECT type, data FROM webhook_events WHERE tenant_id = $1", world.id
        )
        assert row["type"] == "email.received"
        data = row["data"]
        assert data["ingest_source"] == "inbound" and data["subject"] == "Two of us"
        assert data["rcpt_to"] == [f"support@{world.name}"]
        assert data["reply_match_status"] == "unmatched"


async def test_a_redirect_is_not_followed_but_retried_as_a_failure(
    queue: Queue,
    receiver: Receiver,
    other_receiver: Receiver,
    tokens: ReplyTokens,
    dkim_key: DkimKeyPair,
    tmp_path: Path,
) -> None:
    url, pool = queue
    domain, key = await tenant_with_key(pool, dkim_key)
    receiver.answers = [307]
    receiver.location = other_receiver.url
    async with (
        api_server(pool, tokens, tmp_path) as api_url,
        webhook_workers(pool, url, tmp_path),
    ):
        with sdk_as(key, api_url):
            await create_webhook(receiver.url, ["contact.created"])
        await new_contact(pool, domain.tenant_id)
        first, second = await receiver.wait_for(2)
        attempts = await attempts_of(pool, first.id, 2)
    assert first.id == second.id
    assert [a["status_code"] for a in attempts] == [307, 200]
    assert other_receiver.posts == []
