"""`opensend domain add` and `opensend domain verify` as an operator runs them: a subprocess that
resolves through the test's DNS server on loopback (OPENSEND_DNS_SERVERS). Exit 0 only when the
domain is verified; otherwise 1, with every record's finding on stdout and a summary on stderr."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from policy.domains import dkim_keys
from storage.account import directory
from storage.database import Pool
from tests.conftest import DOMAIN_VIEW
from tests.support.dns_server import LoopbackDNSServer, ZoneData
from tests.support.opensend_cli import Completed, opensend_env, run_opensend

HOSTNAME = "mx.opensend.test"


@pytest.fixture
def env(tmp_path: Path, database_url: str, dns: LoopbackDNSServer) -> dict[str, str]:
    return opensend_env(
        tmp_path, database_url, OPENSEND_HOSTNAME=HOSTNAME, OPENSEND_DNS_SERVERS=dns.address
    )


@pytest.fixture
async def tenant(pool: Pool) -> directory.Tenant:
    return await directory.create_tenant(pool, f"acme-{secrets.token_hex(4)}")


def new_name() -> str:
    return f"acme-{secrets.token_hex(4)}.test"


async def add(env: dict[str, str], tenant: directory.Tenant, name: str, *extra: str) -> Any:
    added = await run_opensend(
        "domain", "add", name, "--tenant", tenant.name, "--receiving",
        "--reply-domain", f"inbound.{name}", *extra, "--json", env=env,
    )  # fmt: skip
    return added.json()


def publish(zone: ZoneData, records: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> None:
    for record in records:
        if record["record"] in skip:
            continue
        if record["type"] == "MX":
            zone.add(record["name"], "MX", f"{record['priority']} {record['value']}.")
        else:
            zone.add(record["name"], "TXT", record["value"])


def by_label(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {record["record"]: record for record in records}


def no_private_key(*results: Completed) -> None:
    for result in results:
        assert "PRIVATE KEY" not in result.stdout + result.stderr


async def test_domain_add_generates_a_key_and_prints_its_dkim_record(
    env: dict[str, str], tenant: directory.Tenant, pool: Pool
) -> None:
    name = new_name()

    text = await run_opensend("domain", "add", name, "--tenant", tenant.name, env=env)

    assert text.returncode == 0, text
    row = await pool.fetchrow("SELECT * FROM domains WHERE name = $1", name)
    record_name = dkim_keys.record_name(row["dkim_selector"], name)
    record_value = dkim_keys.record_value(row["dkim_public_key"])
    assert f"TXT  {record_name}  {record_value}" in text.stdout
    assert f"opensend domain verify {name}" in text.stdout
    assert dkim_keys.public_key_of(row["dkim_private_key"]) == row["dkim_public_key"]
    no_private_key(text)


async def test_domain_add_verified_also_generates_a_key(
    env: dict[str, str], tenant: directory.Tenant, pool: Pool
) -> None:
    name = new_name()

    added = await add(env, tenant, name, "--verified")

    assert (added["verified"], added["status"]) == (True, "verified")
    assert by_label(added["records"])["DKIM"]["value"].startswith("v=DKIM1; k=rsa; p=MIIB")
    assert "dkim_private_key" not in added
    assert await pool.fetchval("SELECT dkim_private_key FROM domains WHERE name = $1", name)


async def test_domain_add_refuses_a_name_that_is_not_a_domain(
    env: dict[str, str], tenant: directory.Tenant
) -> None:
    refused = await run_opensend("domain", "add", "192.0.2.1", "--tenant", tenant.name, env=env)

    assert refused.returncode == 1
    assert "bad domain" in refused.stderr and "IP address" in refused.stderr


async def test_verify_exits_0_once_the_printed_records_are_published(
    env: dict[str, str], tenant: directory.Tenant, dns: LoopbackDNSServer, pool: Pool
) -> None:
    name = new_name()
    added = await add(env, tenant, name)
    publish(dns.zone, added["records"])

    verified = await run_opensend("domain", "verify", name, "--json", env=env)

    checked = verified.json()
    assert (checked["status"], checked["verified"]) == ("verified", True)
    assert {r["status"] for r in checked["records"]} == {"verified"}
    assert by_label(checked["records"])["MX"]["found"] == [f"10 {HOSTNAME}"]
    assert dns.queried(f"inbound.{name}", "MX") == 1
    assert await pool.fetchval("SELECT verified FROM domains WHERE name = $1", name)
    no_private_key(verified)


async def test_verify_of_a_name_two_tenants_claimed_verifies_the_one_whose_key_is_published(
    env: dict[str, str], tenant: directory.Tenant, dns: LoopbackDNSServer, pool: Pool
) -> None:
    """A claim holds nothing until verified (migration 0020): the squatter claimed the name
    first, the owner published its records, and the operator's verify finds the owner's."""
    name = new_name()
    squatter = await directory.create_tenant(pool, f"squatter-{secrets.token_hex(4)}")
    await add(env, squatter, name)
    owned = await add(env, tenant, name)
    publish(dns.zone, owned["records"])

    verified = await run_opensend("domain", "verify", name, "--json", env=env)

    assert verified.json()["id"] == owned["id"]
    rows = await pool.fetch("SELECT tenant_id, verified FROM domains WHERE name = $1", name)
    assert {row["tenant_id"]: row["verified"] for row in rows} == {
        tenant.id: True,
        squatter.id: False,
    }


async def test_verify_exits_1_naming_the_wrong_record_and_what_was_found(
    env: dict[str, str], tenant: directory.Tenant, dns: LoopbackDNSServer
) -> None:
    name = new_name()
    added = await add(env, tenant, name)
    publish(dns.zone, added["records"], skip=("DKIM",))
    dkim_name = by_label(added["records"])["DKIM"]["name"]
    wrong = dkim_keys.record_value(dkim_keys.generate_key_pair().public_key)
    dns.zone.add(dkim_name, "TXT", wrong)

    as_json = await run_opensend("domain", "verify", name, "--json", env=env)
    as_text = await run_opensend("domain", "verify", name, env=env)

    assert as_json.returncode == 1
    records = by_label(json.loads(as_json.stdout)["records"])
    assert records["DKIM"]["status"] == "failed"
    assert records["DKIM"]["found"] == [wrong]
    assert records["SPF"]["status"] == "verified"
    assert as_json.stderr.strip() == f"opensend: {name} is not verified: fix DKIM at {dkim_name}"
    assert as_text.returncode == 1
    assert f"{name}: failed" in as_text.stdout
    assert f"FAIL TXT  {dkim_name}" in as_text.stdout
    assert f"found: {wrong}" in as_text.stdout
    assert "the record's public key (p=) is not this domain's key" in as_text.stdout
    no_private_key(as_json, as_text)


async def test_verify_of_a_domain_missing_from_dns_says_so(
    env: dict[str, str], tenant: directory.Tenant
) -> None:
    name = new_name()
    await add(env, tenant, name)

    result = await run_opensend("domain", "verify", name, env=env)

    assert result.returncode == 1
    assert f"{name} does not exist in DNS (NXDOMAIN)" in result.stdout
    assert "is not verified" in result.stderr


async def test_verify_during_a_dns_outage_exits_1_as_temporary(
    env: dict[str, str], tenant: directory.Tenant, dns: LoopbackDNSServer, pool: Pool
) -> None:
    name = new_name()
    added = await add(env, tenant, name, "--verified")
    publish(dns.zone, added["records"])
    dns.zone.fail(name)

    result = await run_opensend("domain", "verify", name, "--json", env=env)

    assert result.returncode == 1
    assert json.loads(result.stdout)["status"] == "temporary_failure"
    assert "try again later" in result.stderr
    row = await pool.fetchrow("SELECT verified, status FROM domains WHERE name = $1", name)
    assert (row["verified"], row["status"]) == (True, "temporary_failure")


async def test_verify_gives_a_keyless_domain_a_key(
    env: dict[str, str], tenant: directory.Tenant, pool: Pool
) -> None:
    name = new_name()
    await directory.add_domain(
        pool,
        tenant.id,
        name,
        receiving=False,
        reply_domain=None,
        verified=False,
        event_data=DOMAIN_VIEW.event_data,
    )

    result = await run_opensend("domain", "verify", name, "--json", env=env)

    assert result.returncode == 1  # nothing is published
    row = await pool.fetchrow("SELECT * FROM domains WHERE name = $1", name)
    assert row["dkim_private_key"] is not None
    dkim = by_label(json.loads(result.stdout)["records"])["DKIM"]
    assert dkim["value"] == dkim_keys.record_value(row["dkim_public_key"])


async def test_verify_of_an_unknown_domain_exits_1(env: dict[str, str]) -> None:
    result = await run_opensend("domain", "verify", new_name(), env=env)

    assert result.returncode == 1
    assert "no domain named" in result.stderr and result.stdout == ""
