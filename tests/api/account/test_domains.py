"""/domains in Resend's shapes: create, list, get, update, delete; tenant isolation; key
permissions; the official SDK; and no answer or log line ever carrying a private key."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import resend

from storage.account import domains
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
from tests.conftest import DOMAIN_VIEW, ApiServer, MakeTenant, StartApi
from tests.support.dns_server import LoopbackDNSServer

RECORD_FIELDS = {"record", "name", "type", "ttl", "status", "value"}


@pytest.fixture
async def api(dns: LoopbackDNSServer, start_test_api: StartApi) -> ApiServer:
    """The API resolving through the test's DNS server, so no lookup ever leaves the machine."""
    return await start_test_api(OPENSEND_DNS_SERVERS=dns.address)


@pytest.fixture
async def client(api: ApiServer, make_tenant: MakeTenant) -> AsyncIterator[DomainsApi]:
    tenant = await make_tenant()
    async with domains_api(api, await tenant.api_key()) as client:
        yield client


async def test_create_answers_201_with_resends_domain_shape(client: DomainsApi) -> None:
    name = new_name()
    created = await client.create(name, receiving=True, reply_domain=f"inbound.{name}")

    assert set(created) == {
        "object",
        "id",
        "name",
        "status",
        "created_at",
        "region",
        "open_tracking",
        "click_tracking",
        "capabilities",
        "reply_domain",
        "last_checked_at",
        "records",
        "suggested_records",
        "deleted",
    }
    assert (created["object"], created["name"], created["status"]) == (
        "domain",
        name,
        "not_started",
    )
    assert (created["region"], created["reply_domain"]) == ("us-east-1", f"inbound.{name}")
    assert created["capabilities"] == {"sending": "enabled", "receiving": "enabled"}
    assert (created["open_tracking"], created["click_tracking"]) == (False, False)
    assert [(r["record"], r["type"], r["status"]) for r in all_records(created)] == [
        ("Receiving", "MX", "not_started"),
        ("SPF", "TXT", "not_started"),
        ("DKIM", "TXT", "not_started"),
        ("DMARC", "TXT", "not_started"),
    ]
    # Only the labels Resend's SDK types allow in `records`; the DMARC suggestion beside it.
    assert [r["record"] for r in created["suggested_records"]] == ["DMARC"]
    assert all(set(r) - {"priority"} == RECORD_FIELDS for r in all_records(created))
    assert all(r["ttl"] == "Auto" for r in all_records(created))
    mx = record(created, "Receiving")
    assert (mx["name"], mx["value"], mx["priority"]) == (f"inbound.{name}", HOST, 10)
    assert record(created, "SPF")["value"] == f"v=spf1 a:{HOST} ~all"
    assert record(created, "DMARC") | {"status": None} == {
        "record": "DMARC",
        "name": f"_dmarc.{name}",
        "type": "TXT",
        "ttl": "Auto",
        "status": None,
        "value": "v=DMARC1; p=none;",
    }


async def test_create_makes_a_dkim_key_pair_and_publishes_only_its_public_half(
    client: DomainsApi, pool: Pool
) -> None:
    created = await client.create(new_name())

    dkim = record(created, "DKIM")
    row = await pool.fetchrow("SELECT * FROM domains WHERE id = $1::uuid", created["id"])
    assert dkim["name"] == f"{row['dkim_selector']}._domainkey.{created['name']}"
    assert row["dkim_selector"].startswith("os") and len(row["dkim_selector"]) == 8
    assert dkim["value"] == f"v=DKIM1; k=rsa; p={row['dkim_public_key']}"
    assert row["dkim_private_key"].startswith("-----BEGIN PRIVATE KEY-----")


async def test_names_are_stored_lowercase_and_idna_encoded(client: DomainsApi) -> None:
    label = new_name("u").removesuffix(".test")
    upper = await client.create(f"{label.upper()}.TEST.")
    idn = await client.create(f"bücher-{label}.test")

    assert upper["name"] == f"{label}.test"
    # Python's own (IDNA 2003) codec agrees with IDNA 2008 on this name: an independent oracle.
    assert idn["name"] == f"bücher-{label}.test".encode("idna").decode()
    assert idn["name"].startswith("xn--bcher-")


async def test_region_is_kept(client: DomainsApi) -> None:
    created = await client.create(new_name(), region="eu-west-1")
    assert (await client.get(created["id"])).body["region"] == "eu-west-1"


async def test_get_answers_the_domain_as_created(client: DomainsApi) -> None:
    created = await client.create(new_name())
    answer = await client.get(created["id"])
    assert (answer.status, answer.body) == (200, created)


async def test_list_is_resends_list_newest_first_with_whole_domains(client: DomainsApi) -> None:
    first = await client.create(new_name())
    second = await client.create(new_name(), receiving=True)

    answer = await client.call("GET", "/domains")

    assert answer.status == 200
    assert (answer.body["object"], answer.body["has_more"]) == ("list", False)
    listed = answer.body["data"]
    assert [d["id"] for d in listed][:2] == [second["id"], first["id"]]
    # Each item is the domain as GET /domains/{id} shows it (Resend's Python SDK types it so).
    assert listed[0] == second
    assert listed[0]["capabilities"] == {"sending": "enabled", "receiving": "enabled"}


async def test_list_pages_with_limit_after_and_before(client: DomainsApi) -> None:
    ids = [(await client.create(new_name()))["id"] for _ in range(3)]
    newest_first = await client.call("GET", "/domains")
    order = [d["id"] for d in newest_first.body["data"]]
    assert order[:3] == ids[::-1]

    page1 = await client.call("GET", "/domains", params={"limit": "2"})
    page2 = await client.call("GET", "/domains", params={"limit": "2", "after": order[1]})
    back = await client.call("GET", "/domains", params={"limit": "1", "before": order[2]})

    assert ([d["id"] for d in page1.body["data"]], page1.body["has_more"]) == (order[:2], True)
    assert [d["id"] for d in page2.body["data"]] == order[2:4]
    assert ([d["id"] for d in back.body["data"]], back.body["has_more"]) == ([order[1]], True)


async def test_patch_turns_receiving_on_with_a_reply_domain_and_off_again(
    client: DomainsApi,
) -> None:
    created = await client.create(new_name())
    assert "Receiving" not in {r["record"] for r in created["records"]}
    reply = f"inbound.{created['name']}"

    on = await client.patch(created["id"], {"receiving": True, "reply_domain": reply})
    off = await client.patch(created["id"], {"capabilities": {"receiving": "disabled"}})
    back_on = await client.patch(created["id"], {"capabilities": {"receiving": "enabled"}})

    assert on.status == 200
    assert on.body["capabilities"]["receiving"] == "enabled"
    assert record(on.body, "Receiving")["name"] == reply
    assert off.body["capabilities"]["receiving"] == "disabled"
    assert "Receiving" not in {r["record"] for r in off.body["records"]}
    assert back_on.body["reply_domain"] == reply  # kept while receiving was off
    assert (await client.get(created["id"])).body == back_on.body


async def test_patch_with_resends_tracking_fields_set_to_what_we_do_changes_nothing(
    client: DomainsApi,
) -> None:
    created = await client.create(new_name())
    body = {"open_tracking": False, "click_tracking": False, "tls": "opportunistic"}
    answer = await client.patch(created["id"], body)
    assert (answer.status, answer.body) == (200, created)


async def test_patch_removes_the_reply_domain(client: DomainsApi) -> None:
    name = new_name()
    created = await client.create(name, receiving=True, reply_domain=f"inbound.{name}")
    answer = await client.patch(created["id"], {"reply_domain": None})
    assert answer.body["reply_domain"] is None
    assert record(answer.body, "Receiving")["name"] == name


async def test_delete_answers_resends_shape_and_the_domain_is_gone(client: DomainsApi) -> None:
    created = await client.create(new_name())

    deleted = await client.delete(created["id"])

    # Resend's {object, id, deleted}, and the rest of the domain that was (Python SDK's type).
    assert (deleted.status, deleted.body) == (200, {**created, "deleted": True})
    assert (await client.get(created["id"])).status == 404
    assert (await client.delete(created["id"])).status == 404
    again = await client.create(created["name"])  # the name is free again
    assert again["id"] != created["id"]


# -- isolation -------------------------------------------------------------------------------


async def test_another_tenants_domain_is_404_everywhere_and_never_listed(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    owner, intruder = await make_tenant(), await make_tenant()
    async with (
        domains_api(api, await owner.api_key()) as mine,
        domains_api(api, await intruder.api_key()) as theirs,
    ):
        created = await mine.create(new_name())
        domain_id = created["id"]
        answers = [
            await theirs.get(domain_id),
            await theirs.verify(domain_id),
            await theirs.patch(domain_id, {"receiving": True}),
            await theirs.delete(domain_id),
        ]
        listed = await theirs.call("GET", "/domains", params={"limit": "100"})
        still = await mine.get(domain_id)

    for answer in answers:
        assert (answer.status, answer.body) == (
            404,
            {"statusCode": 404, "name": "not_found", "message": "Domain not found."},
        )
    assert domain_id not in {d["id"] for d in listed.body["data"]}
    assert (still.status, still.body) == (200, created)


async def test_a_name_another_tenant_holds_is_refused_saying_only_that_it_is_in_use(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    owner, intruder = await make_tenant(), await make_tenant()
    async with domains_api(api, await intruder.api_key()) as theirs:
        as_domain = await theirs.call("POST", "/domains", {"name": owner.name})
        as_reply = await theirs.call("POST", "/domains", {"name": owner.reply_domain})
        mine = await theirs.create(new_name(), receiving=True)
        as_my_reply = await theirs.patch(
            mine["id"], {"reply_domain": owner.reply_domain.replace(owner.name, mine["name"])}
        )

    assert (as_domain.status, as_domain.body) == (
        403,
        {
            "statusCode": 403,
            "name": "validation_error",
            "message": f"{owner.name} is already in use.",
        },
    )
    assert as_reply.body["message"] == f"{owner.reply_domain} is already in use."
    assert str(owner.id) not in str(as_domain.body) + str(as_reply.body)
    assert as_my_reply.status == 200  # a subdomain of one's own domain is one's own


async def test_a_name_claimed_but_not_verified_does_not_keep_it_from_its_owner(
    api: ApiServer, make_tenant: MakeTenant, pool: Pool, dns: LoopbackDNSServer
) -> None:
    """A claim holds nothing until it is verified: the squatter's key is not the one published,
    so the owner verifies, and from then on the name is the owner's alone."""
    name = new_name()
    squatter, owner, late = await make_tenant(), await make_tenant(), await make_tenant()
    async with (
        domains_api(api, await squatter.api_key()) as theirs,
        domains_api(api, await owner.api_key()) as mine,
        domains_api(api, await late.api_key()) as latecomer,
    ):
        claims = await asyncio.gather(
            theirs.call("POST", "/domains", {"name": name}),
            mine.call("POST", "/domains", {"name": name}),
        )
        squatted, owned = (claim.body for claim in claims)
        publish(dns.zone, owned)  # only the owner controls the zone
        verified = await mine.verify(owned["id"])
        refused = await theirs.verify(squatted["id"])
        after = await latecomer.call("POST", "/domains", {"name": name})
        again = await mine.call("POST", "/domains", {"name": name})

    assert [claim.status for claim in claims] == [201, 201]
    assert verified.body["status"] == "verified"
    # The squatter's own record is not there: its check fails, as any unpublished domain's.
    assert refused.status == 200 and refused.body["status"] == "failed"
    assert (after.status, after.body["message"]) == (403, f"{name} is already in use.")
    assert again.status == 403  # one claim of a name per tenant
    rows = await pool.fetch(
        "SELECT tenant_id, verified FROM domains WHERE name = $1 ORDER BY verified DESC", name
    )
    assert [(row["tenant_id"], row["verified"]) for row in rows] == [
        (owner.id, True),
        (squatter.id, False),
    ]


async def test_two_tenants_verifying_one_name_at_once_leave_it_verified_for_one(
    make_tenant: MakeTenant, pool: Pool
) -> None:
    """Both keys cannot be published at one selector; this is the race the table lock and the
    partial unique index close, storage against storage."""
    name = new_name()
    first, second = await make_tenant(), await make_tenant()
    ids = []
    for tenant in (first, second):
        claim = await domains.insert_domain(
            pool,
            tenant.id,
            name,
            receiving=False,
            reply_domain=None,
            event_data=DOMAIN_VIEW.event_data,
        )
        ids.append((tenant.id, claim.id))
    outcomes = await asyncio.gather(
        *(
            domains.record_check(
                pool,
                tenant_id,
                domain_id,
                status="verified",
                verified=True,
                records=[],
                event_data=DOMAIN_VIEW.event_data,
            )
            for tenant_id, domain_id in ids
        ),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "DomainDetails"]
    count = await pool.fetchval("SELECT count(*) FROM domains WHERE name = $1 AND verified", name)
    assert count == 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("POST", "/domains", {"name": "x.test"}, id="create"),
        pytest.param("GET", "/domains", None, id="list"),
        pytest.param("GET", "/domains/{id}", None, id="get"),
        pytest.param("PATCH", "/domains/{id}", {"receiving": True}, id="update"),
        pytest.param("POST", "/domains/{id}/verify", None, id="verify"),
        pytest.param("DELETE", "/domains/{id}", None, id="delete"),
    ],
)
async def test_a_sending_access_key_cannot_manage_domains(
    api: ApiServer, make_tenant: MakeTenant, method: str, path: str, body: Any
) -> None:
    tenant = await make_tenant()
    async with domains_api(api, await tenant.api_key("sending_access")) as client:
        answer = await client.call(method, path.format(id=tenant.domain.id), body)
    assert (answer.status, answer.body["name"]) == (401, "restricted_api_key")


# -- secrets ---------------------------------------------------------------------------------


async def test_no_answer_and_no_log_line_carries_a_private_key(
    client: DomainsApi, pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    name = new_name()
    created = await client.create(name, receiving=True, reply_domain=f"inbound.{name}")
    await client.get(created["id"])
    await client.call("GET", "/domains")
    await client.patch(created["id"], {"receiving": False})
    await client.verify(created["id"])
    private = await pool.fetchval(
        "SELECT dkim_private_key FROM domains WHERE id = $1::uuid", created["id"]
    )
    await client.delete(created["id"])

    body_lines = private.strip().splitlines()[1:-1]  # the base64 between the PEM markers
    everything = "\n".join(client.bodies) + caplog.text
    assert len(client.bodies) == 6
    assert "PRIVATE KEY" not in everything
    assert not any(line in everything for line in body_lines)


# -- the official SDK ------------------------------------------------------------------------


def sdk_round_trip(url: str, key: str, name: str) -> dict[str, Any]:
    """Every domains call of the `resend` package, as an application would make them."""
    resend.api_url, resend.api_key = url, key
    created = resend.Domains.create({"name": name, "region": "sa-east-1"})
    return {
        "created": created,
        "got": resend.Domains.get(created["id"]),
        "listed": resend.Domains.list(),
        "updated": resend.Domains.update({"id": created["id"], "open_tracking": False}),
        "verified": resend.Domains.verify(created["id"]),
        "removed": resend.Domains.remove(created["id"]),
    }


async def test_the_resend_sdk_manages_domains_unchanged(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    name = new_name()
    # The SDK is synchronous and the server runs on this loop: call it from a thread.
    calls = await asyncio.to_thread(sdk_round_trip, api.url, await tenant.api_key(), name)

    created = calls["created"]
    assert (created["name"], created["region"], created["status"]) == (
        name,
        "sa-east-1",
        "not_started",
    )
    assert {r["record"] for r in all_records(created)} == {"SPF", "DKIM", "DMARC"}
    assert calls["got"]["id"] == created["id"]
    assert created["id"] in {d["id"] for d in calls["listed"]["data"]}
    assert calls["updated"]["id"] == created["id"]
    assert calls["verified"]["status"] == "failed"  # nothing published: NXDOMAIN
    assert calls["removed"]["deleted"] is True
