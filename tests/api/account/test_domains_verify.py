"""POST /domains/{id}/verify against a real DNS server on loopback (OPENSEND_DNS_SERVERS):
the records the API hands out verify once published; wrong, missing and unanswerable ones say
so, and a resolver outage is never taken for a failure."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import dkim
import pytest
from dns.resolver import Resolver as DnsResolver

from policy.domains import dkim_keys
from storage.account import directory
from storage.database import Pool
from tests.api.account.domains_client import (
    HOST,
    DomainsApi,
    all_records,
    domains_api,
    new_name,
    publish,
    record,
)
from tests.conftest import MakeTenant, StartApi
from tests.support.dns_server import LoopbackDNSServer


@pytest.fixture
async def client(
    dns: LoopbackDNSServer, start_test_api: StartApi, make_tenant: MakeTenant
) -> AsyncIterator[DomainsApi]:
    server = await start_test_api(OPENSEND_DNS_SERVERS=dns.address)
    tenant = await make_tenant()
    async with domains_api(server, await tenant.api_key()) as api:
        yield api


async def receiving_domain(api: DomainsApi) -> dict[str, Any]:
    name = new_name()
    return await api.create(name, receiving=True, reply_domain=f"inbound.{name}")


def statuses(domain: dict[str, Any]) -> dict[str, str]:
    return {r["record"]: r["status"] for r in all_records(domain)}


async def test_publishing_the_returned_records_verifies_the_domain(
    client: DomainsApi, dns: LoopbackDNSServer, pool: Pool
) -> None:
    created = await receiving_domain(client)
    publish(dns.zone, created)

    answer = await client.verify(created["id"])

    assert answer.status == 200
    assert answer.body["status"] == "verified"
    assert statuses(answer.body) == {
        "Receiving": "verified",
        "SPF": "verified",
        "DKIM": "verified",
        "DMARC": "verified",
    }
    assert record(answer.body, "Receiving")["found"] == [f"10 {HOST}"]
    assert record(answer.body, "DKIM")["found"] == [record(created, "DKIM")["value"]]
    assert dns.queried(record(created, "DKIM")["name"], "TXT") == 1  # asked our server
    assert (await client.get(created["id"])).body == answer.body
    row = await pool.fetchrow("SELECT * FROM domains WHERE id = $1::uuid", created["id"])
    assert (row["verified"], row["status"]) == (True, "verified")
    assert row["verified_at"] is not None and row["last_checked_at"] is not None
    # The MX now takes mail for the reply domain (RCPT routing reads the same row).
    routed = await directory.lookup_recipient(pool, f"inbound.{created['name']}", [])
    assert routed is not None and str(routed.domain_id) == created["id"]


async def test_a_wrong_dkim_key_fails_with_that_record_marked(
    client: DomainsApi, dns: LoopbackDNSServer, pool: Pool
) -> None:
    created = await receiving_domain(client)
    publish(dns.zone, created, skip=("DKIM",))
    dkim_record = record(created, "DKIM")
    other_key = dkim_keys.generate_key_pair().public_key
    dns.zone.add(dkim_record["name"], "TXT", dkim_keys.record_value(other_key))

    answer = await client.verify(created["id"])

    assert (answer.status, answer.body["status"]) == (200, "failed")
    assert statuses(answer.body) == {
        "Receiving": "verified",
        "SPF": "verified",
        "DKIM": "failed",
        "DMARC": "verified",
    }
    marked = record(answer.body, "DKIM")
    assert marked["found"] == [dkim_keys.record_value(other_key)]
    assert marked["reason"] == "the record's public key (p=) is not this domain's key"
    assert not await pool.fetchval(
        "SELECT verified FROM domains WHERE id = $1::uuid", created["id"]
    )


async def test_missing_records_fail_and_each_says_what_is_missing(
    client: DomainsApi, dns: LoopbackDNSServer
) -> None:
    created = await receiving_domain(client)
    publish(dns.zone, created, skip=("DKIM", "Receiving"))

    answer = await client.verify(created["id"])

    assert answer.body["status"] == "failed"
    assert record(answer.body, "DKIM")["reason"].startswith("no DKIM record at os")
    assert record(answer.body, "Receiving")["reason"] == (
        f"no MX record at inbound.{created['name']}, so mail for it does not come here"
    )
    assert record(answer.body, "SPF")["status"] == "verified"


async def test_a_domain_that_does_not_exist_fails_with_a_clear_message(
    client: DomainsApi,
) -> None:
    created = await receiving_domain(client)

    answer = await client.verify(created["id"])

    assert (answer.status, answer.body["status"]) == (200, "failed")
    reasons = {r["reason"] for r in answer.body["records"]}
    assert reasons == {f"{created['name']} does not exist in DNS (NXDOMAIN)"}


async def test_servfail_is_a_temporary_failure_that_keeps_a_verified_domain_verified(
    client: DomainsApi, dns: LoopbackDNSServer, pool: Pool
) -> None:
    created = await receiving_domain(client)
    publish(dns.zone, created)
    assert (await client.verify(created["id"])).body["status"] == "verified"
    dns.zone.fail(created["name"])  # SERVFAIL for every type at the domain

    answer = await client.verify(created["id"])

    assert (answer.status, answer.body["status"]) == (200, "temporary_failure")
    assert set(statuses(answer.body).values()) == {"temporary_failure"}
    assert "try again" in record(answer.body, "SPF")["reason"]
    row = await pool.fetchrow("SELECT * FROM domains WHERE id = $1::uuid", created["id"])
    assert (row["verified"], row["status"]) == (True, "temporary_failure")


async def test_one_servfail_among_good_answers_is_temporary_not_failed(
    client: DomainsApi, dns: LoopbackDNSServer, pool: Pool
) -> None:
    created = await receiving_domain(client)
    publish(dns.zone, created)
    dns.zone.fail(record(created, "DKIM")["name"], "TXT")

    answer = await client.verify(created["id"])

    assert answer.body["status"] == "temporary_failure"
    assert statuses(answer.body)["DKIM"] == "temporary_failure"
    assert statuses(answer.body)["SPF"] == "verified"
    assert not await pool.fetchval(
        "SELECT verified FROM domains WHERE id = $1::uuid", created["id"]
    )


async def test_dmarc_is_only_suggested(client: DomainsApi, dns: LoopbackDNSServer) -> None:
    created = await receiving_domain(client)
    publish(dns.zone, created, skip=("DMARC",))

    answer = await client.verify(created["id"])

    assert answer.body["status"] == "verified"
    assert "suggested, not required" in record(answer.body, "DMARC")["reason"]


async def test_a_sending_only_domain_needs_no_mx(
    client: DomainsApi, dns: LoopbackDNSServer
) -> None:
    created = await client.create(new_name())
    assert "Receiving" not in statuses(created)
    publish(dns.zone, created)

    assert (await client.verify(created["id"])).body["status"] == "verified"


async def test_fixing_a_record_and_verifying_again_verifies(
    client: DomainsApi, dns: LoopbackDNSServer
) -> None:
    created = await receiving_domain(client)
    publish(dns.zone, created, skip=("SPF",))
    dns.zone.add(created["name"], "TXT", "v=spf1 include:_spf.elsewhere.test ~all")
    first = await client.verify(created["id"])
    assert record(first.body, "SPF")["reason"] == (
        f"the SPF record does not authorise this server: add a:{HOST}"
    )
    dns.zone.remove(created["name"], "TXT")
    dns.zone.add(created["name"], "TXT", f"v=spf1 include:_spf.elsewhere.test a:{HOST} ~all")

    again = await client.verify(created["id"])

    assert again.body["status"] == "verified"
    assert "reason" not in record(again.body, "SPF")


async def test_turning_receiving_on_adds_an_mx_not_started_and_keeps_the_status(
    client: DomainsApi, dns: LoopbackDNSServer
) -> None:
    created = await client.create(new_name())
    publish(dns.zone, created)
    assert (await client.verify(created["id"])).body["status"] == "verified"

    patched = await client.patch(created["id"], {"receiving": True})

    assert patched.body["status"] == "verified"  # the last check's result until the next one
    assert statuses(patched.body) == {
        "Receiving": "not_started",
        "SPF": "verified",
        "DKIM": "verified",
        "DMARC": "verified",
    }
    failed = await client.verify(created["id"])  # the MX is not published
    assert (failed.body["status"], statuses(failed.body)["Receiving"]) == ("failed", "failed")


async def test_a_domain_made_without_a_key_gets_one_on_verify(
    client: DomainsApi, dns: LoopbackDNSServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    # A domain added before keys existed (migration 0002 adds the columns empty) has none.
    tenant = await make_tenant(verified=False)
    await pool.execute(
        "UPDATE domains SET dkim_private_key = NULL, dkim_public_key = NULL WHERE id = $1",
        tenant.domain.id,
    )
    assert (
        await pool.fetchval("SELECT dkim_private_key FROM domains WHERE id = $1", tenant.domain.id)
        is None
    )
    async with domains_api(client.url, await tenant.api_key()) as api:
        answer = await api.verify(str(tenant.domain.id))

    assert answer.status == 200
    dkim_record = record(answer.body, "DKIM")
    assert dkim_record["status"] == "failed"  # published nowhere yet, but now there is a key
    stored = await pool.fetchrow(
        "SELECT dkim_selector, dkim_public_key, dkim_private_key FROM domains WHERE id = $1",
        tenant.domain.id,
    )
    assert dkim_record["value"] == dkim_keys.record_value(stored["dkim_public_key"])
    assert dkim_keys.public_key_of(stored["dkim_private_key"]) == stored["dkim_public_key"]


async def test_the_published_key_verifies_a_message_signed_with_the_stored_private_key(
    client: DomainsApi, dns: LoopbackDNSServer, pool: Pool
) -> None:
    created = await client.create(new_name())
    publish(dns.zone, created)
    private_pem = await pool.fetchval(
        "SELECT dkim_private_key FROM domains WHERE id = $1::uuid", created["id"]
    )
    selector = re.match(r"(os\d{6})\._domainkey\.", record(created, "DKIM")["name"])
    assert selector is not None
    message = (
        f"From: Support <support@{created['name']}>\r\nTo: customer@example.net\r\n"
        "Subject: Signed\r\nMessage-ID: <1@opensend.test>\r\n\r\nHello.\r\n"
    ).encode()
    signed = (
        dkim.sign(
            message,
            selector.group(1).encode(),
            created["name"].encode(),
            private_pem.encode(),
            include_headers=[b"from", b"to", b"subject", b"message-id"],
        )
        + message
    )
    resolver = loopback_resolver(dns)

    def txt_from_loopback(name: bytes, timeout: float = 5) -> bytes | None:
        answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(b"".join(r.strings) for r in answer)

    # dkimpy asks synchronously; the DNS server runs on this event loop, so ask from a thread.
    verified = await asyncio.to_thread(dkim.verify, signed, dnsfunc=txt_from_loopback)

    assert verified
    assert dns.queried(record(created, "DKIM")["name"], "TXT") == 1


def loopback_resolver(server: LoopbackDNSServer) -> DnsResolver:
    """dnspython's blocking resolver (what dkimpy uses), asking the test's server only."""
    resolver = DnsResolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port
    resolver.lifetime = 5.0
    return resolver
