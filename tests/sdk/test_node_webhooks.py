"""Resend's Node SDK on what our webhook workers delivered: the events, their attempts and
replay, and `webhooks.verify` (the `standardwebhooks` npm package) accepting our signatures."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any
from uuid import UUID

from aiohttp import ClientSession

from policy.domains.dkim_keys import DkimKeyPair
from policy.tokens import ReplyTokens
from storage.account import directory
from storage.database import Pool
from tests.api.ingest.test_raw import post as ingest_post
from tests.conftest import message
from tests.sdk.node_sdks import run_script
from tests.sdk.test_node_sdks import assert_all_pass, require_node, sdk_env
from tests.webhooks import conftest as webhook_fixtures
from tests.webhooks.conftest import Queue
from tests.webhooks.receiver import WAIT_SECONDS, Receiver
from tests.webhooks.test_delivery import attempts_of
from tests.webhooks.world import api_server, tenant_with_key, webhook_workers


def closed_endpoint() -> str:
    """A loopback URL whose port refuses connections: bound, then closed, never listened on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


async def first_attempted(pool: Pool, webhook_id: UUID) -> UUID:
    """The webhook's first delivery, once an attempt of it is recorded."""
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            found: UUID | None = await pool.fetchval(
                "SELECT d.id FROM webhook_deliveries d JOIN webhook_attempts a "
                "ON a.delivery_id = d.id WHERE d.webhook_id = $1 LIMIT 1",
                webhook_id,
            )
            if found is not None:
                return found
            await asyncio.sleep(0.05)


# The webhook tests' world: a database of this module's own (its workers deliver no other
# test's events) and a receiver on loopback.
queue, receiver = webhook_fixtures.queue, webhook_fixtures.receiver


async def test_node_sdk_reads_replays_and_verifies_delivered_events(
    queue: Queue, receiver: Receiver, tokens: ReplyTokens, dkim_key: DkimKeyPair, tmp_path: Path
) -> None:
    require_node()
    url, pool = queue
    domain, key = await tenant_with_key(pool, dkim_key)
    receiver.answers = [500]  # the first event is attempted twice: a failure, then a success
    async with (
        api_server(pool, tokens, tmp_path) as api_url,
        webhook_workers(pool, url, tmp_path),
        ClientSession(api_url, headers={"Authorization": f"Bearer {key}"}) as http,
    ):

        async def send(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with http.request(method, path, json=body) as answer:
                assert answer.status in (200, 201), await answer.text()
                found: dict[str, Any] = await answer.json()
                return found

        events = ["contact.created", "domain.created", "email.received"]
        hook = await send("POST", "/webhooks", {"endpoint": receiver.url, "events": events})
        # An endpoint that never answers: its attempts carry no HTTP status.
        closed = await send(
            "POST", "/webhooks", {"endpoint": closed_endpoint(), "events": ["contact.created"]}
        )
        await send("POST", "/contacts", {"email": f"jane@{domain.name}"})
        first, retried = await receiver.wait_for(2)
        assert first.id == retried.id
        await attempts_of(pool, first.id, 2)
        unanswered = await first_attempted(pool, UUID(closed["id"]))
        await send("POST", "/domains", {"name": f"more.{domain.name}"})
        await receiver.wait_for(3)
        # After a rotation both secrets sign until the grace ends: either must verify.
        rotated = await send("POST", f"/webhooks/{hook['id']}/signing-secret/rotate", {})
        address = f"support@{domain.name}"
        await directory.add_route(pool, domain.tenant_id, address, None)
        raw = message(to=address, subject="Where is my order?")
        status, body = await ingest_post(
            api_url, raw=raw, headers={"X-OpenSend-Recipients": address}
        )
        assert status == 202, body
        posts = await receiver.wait_for(4)
        old, new = hook["signing_secret"], rotated["signing_secret"]
        signed = [(p, old) for p in posts[1:]] + [(posts[3], new)]
        context = {
            "webhook": hook["id"],
            "event": first.id,
            "unanswered": {"webhookId": closed["id"], "eventId": str(unanswered)},
            "posts": [
                {
                    "name": f"{p.payload['type']}, {'new' if s == new else 'old'} secret",
                    "headers": p.headers,
                    "body": p.body.decode(),
                    "secret": s,
                }
                for p, s in signed
            ],
        }
        calls = await run_script("resend_webhook_events.mjs", context, sdk_env(key, api_url))
        assert_all_pass(calls)
        assert {c.name for c in calls if c.name.startswith("webhooks.events.get")} == {
            f"webhooks.events.get ({kind})" for kind in events
        }
        verify_calls = {c.name for c in calls if c.name.startswith("webhooks.verify (")}
        assert verify_calls == {
            "webhooks.verify (contact.created, old secret)",
            "webhooks.verify (domain.created, old secret)",
            "webhooks.verify (email.received, old secret)",
            "webhooks.verify (email.received, new secret)",
        }
        # The replay is delivered again, under the event's id.
        replayed = (await receiver.wait_for(5))[4]
    assert replayed.id == first.id
