"""domain.created, domain.updated and domain.deleted as a receiver gets them: the domain as
GET /domains/{id} shows it (the records to publish in Resend's labels, with the last check's
results), written in the transaction of the change, and an update only when something the
tenant sees has changed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import resend

from policy.domains.dkim_keys import DkimKeyPair
from policy.tokens import ReplyTokens
from storage.account import directory, domains
from storage.account.domains import DomainDetails
from storage.database import Pool
from tests.api.account.domains_client import DomainsApi, domains_api, new_name, publish
from tests.conftest import DOMAIN_VIEW
from tests.support.dns_server import LoopbackDNSServer
from tests.webhooks.conftest import Queue
from tests.webhooks.receiver import Receiver, verified
from tests.webhooks.world import (
    api_server,
    create_webhook,
    sdk_as,
    tenant_with_key,
    webhook_workers,
)

DOMAIN_EVENTS = ["domain.created", "domain.updated", "domain.deleted"]
# The fields of the SDK's domain event data: id, name, status, created_at, region, records.
SDK_FIELDS = tuple(resend.DomainEventData.__annotations__)
# What the events leave out of the API's domain: what an answer says about itself, and the time
# of the last check (which every check moves).
NOT_IN_EVENTS = ("object", "deleted", "last_checked_at")


@dataclass
class World:
    api: DomainsApi
    pool: Pool
    receiver: Receiver
    secret: str
    tenant_id: UUID

    async def event(self, kind: str, count: int = 1) -> dict[str, Any]:
        """The `data` of the count-th event of this kind, its signature verified."""
        posts = await self.receiver.wait_for_type(kind, count)
        payload = verified(posts[-1], self.secret)
        assert payload["type"] == kind
        data: dict[str, Any] = payload["data"]
        return data

    async def events_written(self) -> int:
        count: int = await self.pool.fetchval(
            "SELECT count(*) FROM webhook_events WHERE tenant_id = $1", self.tenant_id
        )
        return count

    async def shown(self, domain_id: str) -> dict[str, Any]:
        answer = await self.api.get(domain_id)
        assert answer.status == 200, answer
        body: dict[str, Any] = answer.body
        return body


def sdk_fields(domain: dict[str, Any]) -> dict[str, Any]:
    return {field: domain[field] for field in SDK_FIELDS}


def labels(domain: dict[str, Any]) -> list[str]:
    return [record["record"] for record in domain["records"]]


@pytest.fixture
async def world(
    queue: Queue,
    receiver: Receiver,
    dns: LoopbackDNSServer,
    tokens: ReplyTokens,
    dkim_key: DkimKeyPair,
    tmp_path: Path,
) -> AsyncIterator[World]:
    url, pool = queue
    domain, key = await tenant_with_key(pool, dkim_key)
    async with (
        api_server(pool, tokens, tmp_path, OPENSEND_DNS_SERVERS=dns.address) as api_url,
        webhook_workers(pool, url, tmp_path),
    ):
        with sdk_as(key, api_url):
            _, secret = await create_webhook(receiver.url, DOMAIN_EVENTS)
        async with domains_api(api_url, key) as api:
            yield World(api, pool, receiver, secret, domain.tenant_id)


async def test_domain_created_carries_the_records_the_api_shows(world: World) -> None:
    name = new_name()
    created = await world.api.create(name, receiving=True, reply_domain=f"inbound.{name}")

    data = await world.event("domain.created")

    shown = await world.shown(created["id"])
    assert labels(data) == ["Receiving", "SPF", "DKIM"]
    assert sdk_fields(data) == sdk_fields(shown) == sdk_fields(created)
    assert data == {k: v for k, v in shown.items() if k not in NOT_IN_EVENTS}


async def test_a_check_that_changes_record_statuses_is_an_update_with_the_api_records(
    world: World, dns: LoopbackDNSServer
) -> None:
    created = await world.api.create(new_name(), receiving=True)
    await world.event("domain.created")
    publish(dns.zone, created)

    checked = await world.api.verify(created["id"])

    data = await world.event("domain.updated")
    assert checked.body["status"] == "verified"
    assert sdk_fields(data) == sdk_fields(await world.shown(created["id"]))
    assert {record["status"] for record in data["records"]} == {"verified"}
    assert labels(data) == ["Receiving", "SPF", "DKIM"]
    # The outbox row was written by the transaction that made the change.
    changed_by = await world.pool.fetchval(
        "SELECT xmin::text FROM domains WHERE id = $1::uuid", created["id"]
    )
    written_by = await world.pool.fetchval(
        "SELECT xmin::text FROM webhook_events WHERE tenant_id = $1 AND type = 'domain.updated'",
        world.tenant_id,
    )
    assert changed_by == written_by


async def test_a_check_that_finds_what_the_last_one_found_writes_no_event(
    world: World, dns: LoopbackDNSServer
) -> None:
    created = await world.api.create(new_name())
    publish(dns.zone, created)
    first = await world.api.verify(created["id"])
    await world.event("domain.updated")
    written = await world.events_written()

    again = await world.api.verify(created["id"])

    assert again.body["last_checked_at"] > first.body["last_checked_at"]
    assert again.body["records"] == first.body["records"]
    assert await world.events_written() == written


async def test_turning_receiving_on_is_an_update_with_the_new_receiving_record(
    world: World,
) -> None:
    created = await world.api.create(new_name())
    await world.event("domain.created")

    await world.api.patch(created["id"], {"capabilities": {"receiving": "enabled"}})

    data = await world.event("domain.updated")
    assert labels(data) == ["Receiving", "SPF", "DKIM"]
    assert sdk_fields(data) == sdk_fields(await world.shown(created["id"]))


async def test_delete_sends_domain_deleted_with_the_domain_as_it_was_shown(world: World) -> None:
    created = await world.api.create(new_name(), receiving=True)
    shown = await world.shown(created["id"])

    gone = await world.api.delete(created["id"])

    data = await world.event("domain.deleted")
    assert gone.status == 200
    assert sdk_fields(data) == sdk_fields(shown) == sdk_fields(gone.body)


async def test_a_change_whose_event_cannot_be_built_is_not_made(world: World) -> None:
    """The event is written in the change's transaction: no event, no change."""
    created = await world.api.create(new_name())
    await world.event("domain.created")
    written = await world.events_written()

    def unbuildable(domain: DomainDetails) -> dict[str, Any]:
        raise RuntimeError(f"no data for {domain.name}")

    with pytest.raises(RuntimeError):
        await domains.update_receiving(
            world.pool,
            world.tenant_id,
            UUID(created["id"]),
            receiving=True,
            reply_domain=None,
            event_data=unbuildable,
        )

    assert (await world.shown(created["id"]))["capabilities"]["receiving"] == "disabled"
    assert await world.events_written() == written


async def test_a_key_made_on_first_read_is_an_update_with_the_new_dkim_record(
    world: World,
) -> None:
    """A domain added without a DKIM key (directory.add_domain) gets one when first read: its
    DKIM record appears, which its tenant sees."""
    keyless = await directory.add_domain(
        world.pool,
        world.tenant_id,
        new_name(),
        receiving=False,
        reply_domain=None,
        verified=False,
        event_data=DOMAIN_VIEW.event_data,
    )
    created = await world.event("domain.created")
    assert labels(created) == ["SPF"]

    shown = await world.shown(str(keyless.id))

    data = await world.event("domain.updated")
    assert labels(data) == ["SPF", "DKIM"]
    assert sdk_fields(data) == sdk_fields(shown)
