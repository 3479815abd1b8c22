"""The verification procedure against a fake of our own DnsLookup interface; the API and CLI
tests run it against a real DNS server on loopback."""

from __future__ import annotations

from dataclasses import dataclass, field

from policy.dns import DnsTemporaryError, MxRecord
from policy.domains.check import check_domain
from policy.domains.records import DomainSetup, Purpose, Status, records_to_publish

HOST = "mx.opensend.test"
KEY = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtest"
SETUP = DomainSetup("example.com", True, "inbound.example.com", "os202611", KEY)
SPECS = records_to_publish(SETUP, HOST)


@dataclass
class FakeDns:
    """Answers from dicts; a name in `failing` raises as a resolver outage would."""

    mx_records: dict[str, list[MxRecord]] = field(default_factory=dict)
    txt_records: dict[str, list[str]] = field(default_factory=dict)
    missing: bool = False
    failing: set[str] = field(default_factory=set)
    asked: list[str] = field(default_factory=list)

    def _ask(self, name: str) -> None:
        self.asked.append(name)
        if name in self.failing:
            raise DnsTemporaryError(f"SERVFAIL for {name}")

    async def mx(self, domain: str) -> list[MxRecord] | None:
        self._ask(domain)
        return self.mx_records.get(domain)

    async def addresses(self, host: str) -> list[str]:
        raise AssertionError("verification never asks for addresses")

    async def txt(self, name: str) -> list[str]:
        self._ask(name)
        return self.txt_records.get(name, [])

    async def exists(self, domain: str) -> bool:
        self._ask(domain)
        return not self.missing


def published() -> FakeDns:
    return FakeDns(
        mx_records={"inbound.example.com": [MxRecord(10, HOST)]},
        txt_records={spec.name: [spec.value] for spec in SPECS if spec.type == "TXT"},
    )


async def test_every_record_published_verifies_the_domain() -> None:
    check = await check_domain(published(), "example.com", SPECS)
    assert check.status is Status.VERIFIED
    assert [c.status for c in check.records] == [Status.VERIFIED] * 4
    assert check.problems == []


async def test_a_missing_domain_fails_every_record_with_one_reason_and_no_more_lookups() -> None:
    dns = FakeDns(missing=True)
    check = await check_domain(dns, "example.com", SPECS)
    assert check.status is Status.FAILED
    assert {c.reason for c in check.records} == {"example.com does not exist in DNS (NXDOMAIN)"}
    assert dns.asked == ["example.com"]


async def test_a_resolver_outage_is_temporary_for_every_record() -> None:
    dns = FakeDns(failing={"example.com"})
    check = await check_domain(dns, "example.com", SPECS)
    assert check.status is Status.TEMPORARY_FAILURE
    assert {c.status for c in check.records} == {Status.TEMPORARY_FAILURE}


async def test_one_unanswered_lookup_makes_only_its_record_temporary() -> None:
    dns = published()
    dns.failing.add("os202611._domainkey.example.com")
    check = await check_domain(dns, "example.com", SPECS)
    assert check.status is Status.TEMPORARY_FAILURE
    by_purpose = {c.spec.purpose: c.status for c in check.records}
    assert by_purpose[Purpose.DKIM] is Status.TEMPORARY_FAILURE
    assert by_purpose[Purpose.SPF] is Status.VERIFIED


async def test_a_null_mx_is_shown_as_published() -> None:
    dns = published()
    dns.mx_records["inbound.example.com"] = [MxRecord(0, "")]
    check = await check_domain(dns, "example.com", SPECS)
    [mx] = [c for c in check.records if c.spec.purpose is Purpose.RECEIVING]
    assert (mx.status, mx.found) == (Status.FAILED, ("0 .",))
    assert check.problems == [mx]


async def test_records_found_are_listed_in_one_order_however_the_name_server_rotates_them() -> None:
    """Round-robin answers (RFC 1794) must not make a check that found the same records look
    like a change (the domain.updated event compares what was found)."""
    dns = published()
    spf = next(spec.name for spec in SPECS if spec.purpose is Purpose.SPF)
    dns.mx_records["inbound.example.com"] = [MxRecord(20, "b.example"), MxRecord(10, HOST)]
    dns.txt_records[spf] = ["v=other", *dns.txt_records[spf]]
    first = await check_domain(dns, "example.com", SPECS)
    dns.mx_records["inbound.example.com"].reverse()
    dns.txt_records[spf].reverse()
    second = await check_domain(dns, "example.com", SPECS)
    assert [c.found for c in first.records] == [c.found for c in second.records]
    [mx] = [c for c in second.records if c.spec.purpose is Purpose.RECEIVING]
    assert mx.found == (f"10 {HOST}", "20 b.example")
