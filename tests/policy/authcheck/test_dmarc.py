"""DMARC (RFC 7489): policy discovery, record parsing, alignment and the verdict, with the DNS
question answered from a table (the lookup is policy's own interface, `TxtLookup`)."""

from __future__ import annotations

import pytest

from policy.authcheck.dmarc import (
    DmarcRecord,
    DmarcRecordError,
    aligned,
    discover,
    evaluate,
    organizational_domain,
    parse_record,
)
from policy.authcheck.verdicts import DkimVerdict, SpfVerdict
from policy.dns import DnsTemporaryError


class Zone:
    """TXT records by name; a name in `failing` answers with a temporary DNS failure."""

    def __init__(self, records: dict[str, list[str]], failing: tuple[str, ...] = ()) -> None:
        self.records = records
        self.failing = failing
        self.asked: list[str] = []

    def __call__(self, name: str) -> list[str]:
        self.asked.append(name)
        if name in self.failing:
            raise DnsTemporaryError(name)
        return self.records.get(name, [])


SPF_NONE = SpfVerdict("none", "sender.example", "mailfrom")
NOT_SIGNED = [DkimVerdict("none")]


def spf_pass(domain: str) -> SpfVerdict:
    return SpfVerdict("pass", domain, "mailfrom")


def dkim_pass(domain: str) -> list[DkimVerdict]:
    return [DkimVerdict("pass", domain, "s1", "abcdefgh")]


@pytest.mark.parametrize(
    ("domain", "organizational"),
    [
        pytest.param("sender-x.example", "sender-x.example", id="hyphenated"),
        pytest.param("mail.sender-x.example", "sender-x.example", id="hyphenated_subdomain"),
        pytest.param("a.b.example.co.uk", "example.co.uk", id="two_label_suffix"),
        pytest.param("user.github.io", "user.github.io", id="private_suffix"),
        pytest.param("co.uk", "co.uk", id="a_suffix_stands_for_itself"),
    ],
)
def test_organizational_domain_is_the_public_suffix_plus_one_label(
    domain: str, organizational: str
) -> None:
    assert organizational_domain(domain) == organizational


@pytest.mark.parametrize(
    ("from_domain", "authenticated", "mode", "expected"),
    [
        pytest.param("example.com", "example.com", "s", True, id="strict_same"),
        pytest.param("example.com", "mail.example.com", "s", False, id="strict_subdomain"),
        pytest.param("example.com", "mail.example.com", "r", True, id="relaxed_subdomain"),
        pytest.param("news.example.com", "example.com", "r", True, id="relaxed_parent"),
        pytest.param("a-b.example", "a.example", "r", False, id="relaxed_other_org"),
        pytest.param("example.co.uk", "co.uk", "r", False, id="relaxed_never_a_suffix"),
        pytest.param("one.github.io", "two.github.io", "r", False, id="private_suffix_siblings"),
    ],
)
def test_alignment_strict_and_relaxed(
    from_domain: str, authenticated: str, mode: str, expected: bool
) -> None:
    assert aligned(from_domain, authenticated, mode) is expected


def test_a_record_gives_its_policy_and_alignment_modes() -> None:
    record = parse_record("v=DMARC1; p=reject; sp=quarantine; adkim=s; aspf=r; rua=mailto:d@x")
    assert record == DmarcRecord("reject", "quarantine", "s", "r")


def test_defaults_stand_in_for_missing_or_bad_optional_tags() -> None:
    assert parse_record("v=DMARC1; p=none; adkim=x; fo=9") == DmarcRecord("none", None, "r", "r")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("v=DMARC1; rua=nothing", id="no_policy"),
        pytest.param("v=DMARC1; p=block", id="unknown_policy"),
        pytest.param("v=DMARC1; p=reject; sp=later", id="unknown_subdomain_policy"),
    ],
)
def test_a_record_without_a_usable_policy_is_an_error(text: str) -> None:
    with pytest.raises(DmarcRecordError):
        parse_record(text)


def test_a_bad_policy_with_a_report_address_counts_as_p_none() -> None:
    # RFC 7489 section 6.6.3 step 6.1.
    record = parse_record("v=DMARC1; p=bogus; rua=mailto:reports@example.com")
    assert record.policy == "none"


def test_discovery_falls_back_to_the_organizational_domain() -> None:
    zone = Zone({"_dmarc.example.com": ["v=DMARC1; p=reject; sp=quarantine"]})
    found = discover("news.example.com", zone)
    assert found is not None and found.at == "example.com"
    assert zone.asked == ["_dmarc.news.example.com", "_dmarc.example.com"]


def test_discovery_ignores_other_txt_records_and_stops_at_two_dmarc_records() -> None:
    zone = Zone({"_dmarc.example.com": ["google-site-verification=x", "v=DMARC1; p=none"]})
    assert discover("example.com", zone) is not None
    zone.records["_dmarc.example.com"].append("v=DMARC1; p=reject")
    assert discover("example.com", zone) is None


def test_version_tag_must_come_first_and_is_case_sensitive() -> None:
    zone = Zone({"_dmarc.example.com": ["p=reject; v=DMARC1", "v=dmarc1; p=reject"]})
    assert discover("example.com", zone) is None


def test_hyphenated_from_domain_is_looked_up_under_its_whole_name() -> None:
    zone = Zone({"_dmarc.sender-x.example": ["v=DMARC1; p=reject"]})
    verdict = evaluate(["sender-x.example"], SPF_NONE, dkim_pass("sender-x.example"), zone)
    assert zone.asked == ["_dmarc.sender-x.example"]
    assert (verdict.result, verdict.domain) == ("pass", "sender-x.example")
    assert verdict.policy == "reject"
    assert verdict.dkim_aligned and not verdict.spf_aligned


def test_an_aligned_spf_pass_passes() -> None:
    zone = Zone({"_dmarc.example.com": ["v=DMARC1; p=reject"]})
    verdict = evaluate(["example.com"], spf_pass("bounces.example.com"), NOT_SIGNED, zone)
    assert verdict.result == "pass" and verdict.spf_aligned


def test_a_pass_for_another_domain_fails_and_reports_the_published_policy() -> None:
    zone = Zone({"_dmarc.example.com": ["v=DMARC1; p=reject"]})
    verdict = evaluate(["example.com"], spf_pass("esp.example"), dkim_pass("esp.example"), zone)
    assert (verdict.result, verdict.policy) == ("fail", "reject")
    assert not verdict.spf_aligned and not verdict.dkim_aligned


def test_strict_alignment_refuses_a_subdomain_pass() -> None:
    zone = Zone({"_dmarc.example.com": ["v=DMARC1; p=quarantine; adkim=s; aspf=s"]})
    dkim = dkim_pass("mail.example.com")
    verdict = evaluate(["example.com"], spf_pass("mail.example.com"), dkim, zone)
    assert verdict.result == "fail"


def test_a_subdomain_gets_the_organizational_domains_subdomain_policy() -> None:
    zone = Zone({"_dmarc.example.com": ["v=DMARC1; p=reject; sp=none"]})
    verdict = evaluate(["news.example.com"], SPF_NONE, NOT_SIGNED, zone)
    assert (verdict.result, verdict.policy) == ("fail", "none")


def test_no_record_is_none() -> None:
    verdict = evaluate(["example.com"], SPF_NONE, NOT_SIGNED, Zone({}))
    assert (verdict.result, verdict.policy) == ("none", None)


def test_a_dns_failure_is_temperror() -> None:
    zone = Zone({}, failing=("_dmarc.example.com",))
    assert evaluate(["example.com"], SPF_NONE, NOT_SIGNED, zone).result == "temperror"


def test_an_spf_temperror_without_another_pass_is_temperror() -> None:
    zone = Zone({"_dmarc.example.com": ["v=DMARC1; p=reject"]})
    spf = SpfVerdict("temperror", "example.com", "mailfrom")
    assert evaluate(["example.com"], spf, NOT_SIGNED, zone).result == "temperror"
    assert evaluate(["example.com"], spf, dkim_pass("example.com"), zone).result == "pass"


def test_a_broken_record_is_permerror() -> None:
    zone = Zone({"_dmarc.example.com": ["v=DMARC1; p=everything"]})
    assert evaluate(["example.com"], SPF_NONE, NOT_SIGNED, zone).result == "permerror"


@pytest.mark.parametrize(
    "from_domains",
    [pytest.param([], id="no_from"), pytest.param(["a.example", "b.example"], id="two_domains")],
)
def test_no_single_author_domain_is_permerror(from_domains: list[str]) -> None:
    zone = Zone({})
    assert evaluate(from_domains, SPF_NONE, NOT_SIGNED, zone).result == "permerror"
    assert zone.asked == []
