"""Authentication verdicts into the Authentication-Results field (RFC 8601) and the API's JSON,
and when a temperror is looked at again."""

from __future__ import annotations

import authres
import pytest

from policy.authcheck.verdicts import (
    RECHECK_SCHEDULE,
    ArcVerdict,
    AuthenticationResults,
    DkimVerdict,
    DmarcVerdict,
    SpfVerdict,
    clean_reason,
    recheck_in,
)

AUTHSERV_ID = "mx.opensend.test"


def results(
    *,
    spf: SpfVerdict | None = None,
    dkim: tuple[DkimVerdict, ...] | None = None,
    dmarc: DmarcVerdict | None = None,
    arc: ArcVerdict | None = None,
) -> AuthenticationResults:
    return AuthenticationResults(
        spf or SpfVerdict("pass", "sender.example", "mailfrom"),
        dkim or (DkimVerdict("pass", "sender.example", "s1", "AbCd+/12"),),
        dmarc or DmarcVerdict("pass", "sender.example", "reject", True, True),
        arc or ArcVerdict("none"),
    )


def parsed(header_value: str) -> list[tuple[str, str, dict[str, str]]]:
    """The field as a reader (authres) sees it: method, result, properties."""
    header = authres.AuthenticationResultsHeader.parse_value(header_value)
    assert header.authserv_id == AUTHSERV_ID
    return [
        (r.method, r.result, {f"{p.type}.{p.name}": p.value for p in r.properties})
        for r in header.results
    ]


def test_the_header_names_every_method_with_its_identities() -> None:
    value = results().header_value(AUTHSERV_ID)
    assert parsed(value) == [
        ("spf", "pass", {"smtp.mailfrom": "sender.example"}),
        ("dkim", "pass", {"header.d": "sender.example", "header.s": "s1", "header.b": "AbCd+/12"}),
        ("dmarc", "pass", {"header.from": "sender.example"}),
        ("arc", "none", {}),
    ]
    assert "dmarc=pass (p=reject)" in value


def test_unsigned_mail_is_dkim_none() -> None:
    value = results(dkim=(DkimVerdict("none", reason="message not signed"),)).header_value(
        AUTHSERV_ID
    )
    assert "dkim=none (message not signed)" in value


def test_the_null_sender_is_reported_by_its_helo_name() -> None:
    spf = SpfVerdict("pass", "client.sender.example", "helo")
    assert parsed(results(spf=spf).header_value(AUTHSERV_ID))[0] == (
        "spf",
        "pass",
        {"smtp.helo": "client.sender.example"},
    )


def test_each_signature_has_its_own_clause() -> None:
    signatures = (
        DkimVerdict("pass", "sender.example", "s1", "AAAAAAAA"),
        DkimVerdict("fail", "esp.example", "k2", "BBBBBBBB", "body hash mismatch"),
    )
    clauses = parsed(results(dkim=signatures).header_value(AUTHSERV_ID))
    assert [(m, r) for m, r, _ in clauses if m == "dkim"] == [("dkim", "pass"), ("dkim", "fail")]


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param("you@x; dkim=pass header.d=bank.example", id="semicolon_result"),
        pytest.param("a) dmarc=pass (b", id="closing_comment"),
        pytest.param('quote" dkim=pass', id="quote"),
        pytest.param("line\r\nX-Injected: yes", id="line_break"),
    ],
)
def test_a_reason_from_the_sender_cannot_forge_a_result(hostile: str) -> None:
    # An SPF exp= text is the sender's to write (RFC 7208 section 6.2).
    forged = results(
        spf=SpfVerdict("fail", "sender.example", "mailfrom", hostile),
        dkim=(DkimVerdict("none", reason=hostile),),
        dmarc=DmarcVerdict("fail", "sender.example", "reject", reason=hostile),
    )
    value = forged.header_value(AUTHSERV_ID)
    assert "\r" not in value and "\n" not in value
    assert [(m, r) for m, r, _ in parsed(value)] == [
        ("spf", "fail"),
        ("dkim", "none"),
        ("dmarc", "fail"),
        ("arc", "none"),
    ]


def test_a_name_that_is_not_a_domain_is_left_out_of_the_properties() -> None:
    odd = results(
        spf=SpfVerdict("none", "not a domain", "mailfrom"),
        dkim=(DkimVerdict("permerror", "bad;d=x", "s 1", "!!"),),
    )
    assert [props for _, _, props in parsed(odd.header_value(AUTHSERV_ID))][:2] == [{}, {}]


def test_a_reason_is_one_short_line() -> None:
    reason = clean_reason("x" * 500 + "\n(y)")
    assert reason is not None and len(reason) <= 160 and reason.endswith("...")


def test_the_json_has_every_method() -> None:
    body = results().as_json()
    assert body["spf"] == {
        "result": "pass",
        "domain": "sender.example",
        "scope": "mailfrom",
        "reason": None,
    }
    assert body["dkim"] == [
        {
            "result": "pass",
            "domain": "sender.example",
            "selector": "s1",
            "signature": "AbCd+/12",
            "reason": None,
        }
    ]
    assert body["dmarc"]["policy"] == "reject" and body["dmarc"]["dkim_aligned"] is True
    assert body["arc"] == {"result": "none", "sets": 0, "reason": None}


def test_an_unknown_result_name_is_refused() -> None:
    with pytest.raises(ValueError, match="softpass"):
        results(spf=SpfVerdict("softpass", None, "mailfrom"))


def test_final_results_are_not_checked_again() -> None:
    assert recheck_in(results(), checks_made=1) is None


def test_a_temperror_is_checked_again_on_the_schedule_until_it_runs_out() -> None:
    temporary = results(spf=SpfVerdict("temperror", "sender.example", "mailfrom"))
    assert temporary.temporary
    waits = [recheck_in(temporary, checks) for checks in range(1, len(RECHECK_SCHEDULE) + 2)]
    assert waits == [*RECHECK_SCHEDULE, None]


def test_method_results_count_each_signature() -> None:
    two = (DkimVerdict("pass", "a.example"), DkimVerdict("fail", "b.example"))
    assert list(results(dkim=two).method_results()) == [
        ("spf", "pass"),
        ("dkim", "pass"),
        ("dkim", "fail"),
        ("dmarc", "pass"),
        ("arc", "none"),
    ]
