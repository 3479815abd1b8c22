"""The records a domain publishes, and one test per way DNS can answer for each of them."""

from __future__ import annotations

from typing import Any

import pytest

from policy.domains.records import (
    DMARC_SUGGESTION,
    Answer,
    DomainSetup,
    Purpose,
    RecordCheck,
    RecordSpec,
    Status,
    domain_status,
    judge,
    records_to_publish,
    with_last_results,
)

HOST = "mx.opensend.test"
KEY = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtest+key/value=="
SETUP = DomainSetup("example.com", True, "inbound.example.com", "os202611", KEY)


def specs(setup: DomainSetup = SETUP) -> dict[Purpose, RecordSpec]:
    return {spec.purpose: spec for spec in records_to_publish(setup, HOST)}


MX, SPF, DKIM, DMARC = (specs()[p] for p in Purpose)


def status_of(spec: RecordSpec, *values: str) -> tuple[Status, str | None]:
    check = judge(spec, Answer(values))
    return check.status, check.reason


# -- what to publish -------------------------------------------------------------------------


def test_receiving_domain_publishes_mx_spf_dkim_and_a_dmarc_suggestion() -> None:
    assert [
        (s.purpose, s.type, s.name, s.value, s.priority, s.required)
        for s in records_to_publish(SETUP, HOST)
    ] == [
        (Purpose.RECEIVING, "MX", "inbound.example.com", HOST, 10, True),
        (Purpose.SPF, "TXT", "example.com", f"v=spf1 a:{HOST} ~all", None, True),
        (
            Purpose.DKIM,
            "TXT",
            "os202611._domainkey.example.com",
            f"v=DKIM1; k=rsa; p={KEY}",
            None,
            True,
        ),
        (Purpose.DMARC, "TXT", "_dmarc.example.com", "v=DMARC1; p=none;", None, False),
    ]


def test_without_a_reply_domain_the_mx_is_the_domains_own() -> None:
    setup = DomainSetup("example.com", True, None, "os202611", KEY)
    assert specs(setup)[Purpose.RECEIVING].name == "example.com"


def test_a_sending_only_domain_publishes_no_mx() -> None:
    setup = DomainSetup("example.com", False, None, "os202611", KEY)
    assert Purpose.RECEIVING not in specs(setup)


def test_a_domain_without_a_key_yet_has_no_dkim_record() -> None:
    setup = DomainSetup("example.com", False, None, "opensend", None)
    assert [s.purpose for s in records_to_publish(setup, HOST)] == [Purpose.SPF, Purpose.DMARC]


def test_hostname_is_used_lowercase_without_the_root_dot() -> None:
    [mx, spf, *_] = records_to_publish(SETUP, "MX.OpenSend.test.")
    assert (mx.value, spf.value) == (HOST, f"v=spf1 a:{HOST} ~all")


# -- MX (RFC 5321 section 5.1, RFC 7505) -----------------------------------------------------


@pytest.mark.parametrize(
    ("values", "status", "says"),
    [
        pytest.param((f"10 {HOST}",), Status.VERIFIED, None, id="ours"),
        pytest.param(("10 MX.OPENSEND.TEST.",), Status.VERIFIED, None, id="case_and_root_dot"),
        pytest.param(
            (f"10 {HOST}", "20 backup.example.net"), Status.VERIFIED, None, id="with_a_backup"
        ),
        pytest.param((f"10 {HOST}", "10 mx2.example.net"), Status.VERIFIED, None, id="shared"),
        pytest.param((), Status.FAILED, "no MX record at inbound.example.com", id="none"),
        pytest.param(("0 .",), Status.FAILED, "null MX", id="null_mx"),
        pytest.param(
            ("10 mx.google.test",), Status.FAILED, "points at mx.google.test", id="elsewhere"
        ),
        pytest.param(
            ("5 mx.google.test", f"10 {HOST}"),
            Status.FAILED,
            "mx.google.test has a lower preference",
            id="another_host_is_preferred",
        ),
    ],
)
def test_mx(values: tuple[str, ...], status: Status, says: str | None) -> None:
    got, reason = status_of(MX, *values)
    assert got is status
    assert (reason is None) if says is None else (says in (reason or "")), reason


# -- SPF (RFC 7208) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "status", "says"),
    [
        pytest.param((f"v=spf1 a:{HOST} ~all",), Status.VERIFIED, None, id="as_suggested"),
        pytest.param(
            (f"v=spf1 include:_spf.google.test a:{HOST} -all", "google-site-verification=x"),
            Status.VERIFIED,
            None,
            id="merged_beside_other_txt",
        ),
        pytest.param((f"V=SPF1 +A:{HOST.upper()} -ALL",), Status.VERIFIED, None, id="any_case"),
        pytest.param(("google-site-verification=x",), Status.FAILED, "no SPF record", id="none"),
        pytest.param(
            (f"v=spf10 a:{HOST}",), Status.FAILED, "no SPF record", id="v_spf10_is_not_spf"
        ),
        pytest.param(
            (f"v=spf1 a:{HOST} ~all", "v=spf1 include:other.test ~all"),
            Status.FAILED,
            "2 SPF records",
            id="two_records",
        ),
        pytest.param((f"v=spf1 -all a:{HOST}",), Status.FAILED, "ends at '-all'", id="after_all"),
        pytest.param(
            (f"v=spf1 ~a:{HOST} -all",), Status.FAILED, "does not pass", id="softfail_qualifier"
        ),
        pytest.param(
            ("v=spf1 include:_spf.google.test ~all",),
            Status.FAILED,
            f"add a:{HOST}",
            id="does_not_name_us",
        ),
    ],
)
def test_spf(values: tuple[str, ...], status: Status, says: str | None) -> None:
    got, reason = status_of(SPF, *values)
    assert got is status
    assert (reason is None) if says is None else (says in (reason or "")), reason


# -- DKIM (RFC 6376 section 3.6) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "status", "says"),
    [
        pytest.param((f"v=DKIM1; k=rsa; p={KEY}",), Status.VERIFIED, None, id="as_published"),
        pytest.param((f"p={KEY}",), Status.VERIFIED, None, id="v_and_k_are_optional"),
        pytest.param(
            (f"v=DKIM1;k=rsa; t=s; p={KEY[:20]} {KEY[20:]}",),
            Status.VERIFIED,
            None,
            id="folded_key_and_other_tags",
        ),
        pytest.param((), Status.FAILED, "no DKIM record", id="none"),
        pytest.param(
            ("v=DKIM1; k=rsa; p=MIIBIjANotOurs",), Status.FAILED, "not this domain's", id="other"
        ),
        pytest.param(("v=DKIM1; k=rsa; p=",), Status.FAILED, "revokes", id="revoked"),
        pytest.param((f"v=DKIM1; k=ed25519; p={KEY}",), Status.FAILED, "k=ed25519", id="k"),
        pytest.param((f"k=rsa; v=DKIM1; p={KEY}",), Status.FAILED, "v=DKIM1", id="v_not_first"),
        pytest.param(("v=spf1 -all",), Status.FAILED, "not a DKIM key record", id="not_dkim"),
        pytest.param(
            (f"v=DKIM1; k=rsa; p={KEY}", "v=DKIM1; k=rsa; p=MIIBold"),
            Status.FAILED,
            "2 TXT records",
            id="two_records",
        ),
    ],
)
def test_dkim(values: tuple[str, ...], status: Status, says: str | None) -> None:
    got, reason = status_of(DKIM, *values)
    assert got is status
    assert (reason is None) if says is None else (says in (reason or "")), reason


# -- DMARC (RFC 7489), a suggestion ----------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "status", "says"),
    [
        pytest.param((DMARC_SUGGESTION,), Status.VERIFIED, None, id="as_suggested"),
        pytest.param(
            ("v=DMARC1; p=reject; rua=mailto:d@example.com",), Status.VERIFIED, None, id="strict"
        ),
        pytest.param((), Status.FAILED, "suggested, not required", id="none"),
        pytest.param(("p=none; v=DMARC1",), Status.FAILED, "no DMARC record", id="v_not_first"),
        pytest.param(
            ("v=DMARC1; p=none", "v=DMARC1; p=reject"), Status.FAILED, "use none", id="two"
        ),
    ],
)
def test_dmarc(values: tuple[str, ...], status: Status, says: str | None) -> None:
    got, reason = status_of(DMARC, *values)
    assert got is status
    assert (reason is None) if says is None else (says in (reason or "")), reason


# -- lookups that failed ---------------------------------------------------------------------


@pytest.mark.parametrize("spec", [MX, SPF, DKIM, DMARC], ids=lambda s: s.purpose.name.lower())
def test_an_unanswered_lookup_is_a_temporary_failure_never_failed(spec: RecordSpec) -> None:
    check = judge(spec, Answer(temporary=True))
    assert check.status is Status.TEMPORARY_FAILURE
    assert "try again" in (check.reason or "")


def test_a_domain_that_does_not_exist_fails_every_record_saying_so() -> None:
    check = judge(SPF, Answer(missing_domain="example.com"))
    assert check.status is Status.FAILED
    assert check.reason == "example.com does not exist in DNS (NXDOMAIN)"


# -- the domain's status ---------------------------------------------------------------------

V, F, T, N = Status.VERIFIED, Status.FAILED, Status.TEMPORARY_FAILURE, Status.NOT_STARTED


@pytest.mark.parametrize(
    ("mx", "spf", "dkim", "dmarc", "expected"),
    [
        pytest.param(V, V, V, V, V, id="all_verified"),
        pytest.param(V, V, V, F, V, id="dmarc_is_only_suggested"),
        pytest.param(F, V, V, V, F, id="mx_required_when_receiving"),
        pytest.param(V, V, F, V, F, id="dkim_required"),
        pytest.param(V, T, V, V, T, id="unanswered_lookup"),
        pytest.param(T, T, T, T, T, id="resolver_down"),
        pytest.param(V, T, F, V, F, id="a_definite_failure_wins"),
        pytest.param(N, V, V, V, N, id="new_record_not_checked_yet"),
    ],
)
def test_domain_status(
    mx: Status, spf: Status, dkim: Status, dmarc: Status, expected: Status
) -> None:
    statuses = (mx, spf, dkim, dmarc)
    checks = [RecordCheck(s, st) for s, st in zip((MX, SPF, DKIM, DMARC), statuses, strict=True)]
    assert domain_status(checks) is expected


# -- as stored and shown ---------------------------------------------------------------------


def test_json_has_resends_fields_priority_only_for_mx_and_no_findings_before_a_check() -> None:
    assert RecordCheck(MX, Status.NOT_STARTED).as_json() == {
        "record": "MX",
        "name": "inbound.example.com",
        "type": "MX",
        "ttl": "Auto",
        "status": "not_started",
        "value": HOST,
        "priority": 10,
    }
    checked = judge(DKIM, Answer(("v=DKIM1; k=rsa; p=other",))).as_json()
    assert "priority" not in checked
    assert checked["found"] == ["v=DKIM1; k=rsa; p=other"]
    assert checked["reason"] == "the record's public key (p=) is not this domain's key"


def stored(*checks: RecordCheck) -> list[dict[str, Any]]:
    return [check.as_json() for check in checks]


def test_last_results_apply_to_unchanged_records_only() -> None:
    last = stored(
        judge(SPF, Answer((SPF.value,))),
        judge(MX, Answer(("10 elsewhere.test",))),
    )
    moved = DomainSetup("example.com", True, "replies.example.com", "os202611", KEY)
    current = with_last_results(records_to_publish(moved, HOST), last)
    assert [(c.spec.purpose, c.status) for c in current] == [
        (Purpose.RECEIVING, Status.NOT_STARTED),  # a new reply domain: a new record
        (Purpose.SPF, Status.VERIFIED),
        (Purpose.DKIM, Status.NOT_STARTED),
        (Purpose.DMARC, Status.NOT_STARTED),
    ]
    assert current[1].found == (SPF.value,)


def test_unreadable_stored_results_count_as_not_started() -> None:
    garbage: list[dict[str, Any]] = [
        {"record": "SPF", "type": "TXT", "name": "example.com", "value": SPF.value},
        {"record": "SPF", "type": "TXT", "name": "example.com", "value": 7, "status": "verified"},
        {**stored(judge(DKIM, Answer((DKIM.value,))))[0], "status": "bogus"},
    ]
    assert {c.status for c in with_last_results([SPF, DKIM], garbage)} == {Status.NOT_STARTED}
