"""The checks of one received message against a real DNS server on loopback: SPF records,
DKIM keys and DMARC policies a test publishes, messages signed and sealed by stock dkimpy.

The checker blocks on DNS, so each check runs in a thread while the test's loop serves DNS.
"""

from __future__ import annotations

import asyncio
import socket

import authres
import pytest

from mta.authcheck.checks import Authenticator, Evidence, from_domains
from mta.dns import BlockingResolver
from policy.authcheck.verdicts import AuthenticationResults
from policy.domains.dkim_keys import DkimKeyPair
from policy.settings import HostPort
from tests.support.dns_server import LoopbackDNSServer, ZoneData
from tests.support.mail_auth import AuthSender, mail

CLIENT_IP = "127.0.0.1"  # where the tests' SMTP clients connect from
HELO = "client.sender.example"


@pytest.fixture
def sender(dns: LoopbackDNSServer, dkim_key: DkimKeyPair) -> AuthSender:
    return AuthSender("sender-x.example", dns.zone, dkim_key)


def authenticator(dns: LoopbackDNSServer, lifetime: float = 3.0) -> Authenticator:
    resolver = BlockingResolver((HostPort(dns.host, dns.port),), lifetime=lifetime)
    return Authenticator(resolver, hostname="mx.opensend.test")


async def check(
    dns: LoopbackDNSServer,
    raw: bytes,
    *,
    mail_from: str = "sam@sender-x.example",
    ip: str | None = CLIENT_IP,
    helo: str = HELO,
    lifetime: float = 3.0,
) -> AuthenticationResults:
    evidence = Evidence(ip, helo, mail_from, raw)
    return await asyncio.to_thread(authenticator(dns, lifetime).check, evidence)


# -- SPF (RFC 7208) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        pytest.param("v=spf1 ip4:127.0.0.1 -all", "pass", id="pass"),
        pytest.param("v=spf1 ip4:192.0.2.1 -all", "fail", id="fail"),
        pytest.param("v=spf1 ip4:192.0.2.1 ~all", "softfail", id="softfail"),
        pytest.param("v=spf1 ?all", "neutral", id="neutral"),
        pytest.param(None, "none", id="none"),
        pytest.param("v=spf1 ip4:127.0.0.1 -all|v=spf1 -all", "permerror", id="two_records"),
        pytest.param("v=spf1 include:nowhere.sender.example -all", "permerror", id="bad_include"),
    ],
)
async def test_spf_judges_the_connecting_ip_for_the_mail_from_domain(
    dns: LoopbackDNSServer, sender: AuthSender, record: str | None, expected: str
) -> None:
    for text in (record or "").split("|"):
        if text:
            dns.zone.add(sender.domain, "TXT", text)
    results = await check(dns, mail(sender.address))
    assert (results.spf.result, results.spf.domain, results.spf.scope) == (
        expected,
        "sender-x.example",
        "mailfrom",
    )
    assert f"spf={expected}" in results.header_value("mx.opensend.test")


async def test_spf_follows_includes_and_mx(dns: LoopbackDNSServer, sender: AuthSender) -> None:
    dns.zone.add(sender.domain, "TXT", "v=spf1 include:_spf.esp.example -all")
    dns.zone.add("_spf.esp.example", "TXT", "v=spf1 mx -all")
    dns.zone.add("_spf.esp.example", "MX", "10 out.esp.example.")
    dns.zone.add("out.esp.example", "A", CLIENT_IP)
    assert (await check(dns, mail(sender.address))).spf.result == "pass"


async def test_the_null_sender_is_checked_by_its_helo_name(dns: LoopbackDNSServer) -> None:
    dns.zone.add(HELO, "TXT", "v=spf1 a -all")
    dns.zone.add(HELO, "A", CLIENT_IP)
    results = await check(dns, mail("mailer-daemon@sender-x.example"), mail_from="")
    assert (results.spf.result, results.spf.domain, results.spf.scope) == ("pass", HELO, "helo")
    assert f"smtp.helo={HELO}" in results.header_value("mx.opensend.test")


async def test_spf_of_mail_without_a_client_ip_is_none(dns: LoopbackDNSServer) -> None:
    results = await check(dns, mail("sam@sender-x.example"), ip=None)
    assert results.spf.result == "none"
    assert ("sender-x.example", "TXT") not in dns.queries


async def test_spf_when_dns_fails_is_temperror_without_our_resolver_in_the_reason(
    dns: LoopbackDNSServer, sender: AuthSender
) -> None:
    dns.zone.fail(sender.domain)  # SERVFAIL, as a resolver says when the sender's DNS is down
    results = await check(dns, mail(sender.address))
    assert results.spf.result == "temperror" and results.temporary
    assert results.spf.reason == "DNS did not answer"


async def test_an_spf_explanation_from_the_sender_cannot_forge_a_result(
    dns: LoopbackDNSServer, sender: AuthSender
) -> None:
    # RFC 7208 section 6.2: exp= names a TXT record whose text the receiver may show.
    dns.zone.add(sender.domain, "TXT", "v=spf1 -all exp=explain.sender-x.example")
    dns.zone.add("explain.sender-x.example", "TXT", "x); dkim=pass header.d=bank.example; (y")
    results = await check(dns, mail(sender.address))
    header = authres.AuthenticationResultsHeader.parse_value(
        results.header_value("mx.opensend.test")
    )
    assert [(r.method, r.result) for r in header.results] == [
        ("spf", "fail"),
        ("dkim", "none"),
        ("dmarc", "none"),
        ("arc", "none"),
    ]


# -- DKIM (RFC 6376) ------------------------------------------------------------------------


async def test_a_message_signed_with_a_published_key_passes(
    dns: LoopbackDNSServer, sender: AuthSender
) -> None:
    sender.publish()
    results = await check(dns, sender.sign(mail(sender.address)))
    [signature] = results.dkim
    assert (signature.result, signature.domain, signature.selector) == (
        "pass",
        "sender-x.example",
        "s2026",
    )
    assert signature.signature is not None and len(signature.signature) == 8


async def test_a_tampered_body_fails(dns: LoopbackDNSServer, sender: AuthSender) -> None:
    sender.publish()
    signed = sender.sign(mail(sender.address, body="Pay 10 EUR.\n"))
    results = await check(dns, signed.replace(b"Pay 10 EUR.", b"Pay 99 EUR."))
    assert results.dkim[0].result == "fail"
    assert results.dkim[0].reason == "body hash mismatch"


async def test_a_tampered_signed_header_fails(dns: LoopbackDNSServer, sender: AuthSender) -> None:
    sender.publish()
    signed = sender.sign(mail(sender.address))
    results = await check(dns, signed.replace(b"Subject: Authenticated?", b"Subject: Changed"))
    assert results.dkim[0].result == "fail"


async def test_unsigned_mail_is_dkim_none(dns: LoopbackDNSServer, sender: AuthSender) -> None:
    results = await check(dns, mail(sender.address))
    assert [(v.result, v.reason) for v in results.dkim] == [("none", "message not signed")]
    assert "dkim=none" in results.header_value("mx.opensend.test")


async def test_a_signature_without_a_published_key_is_permerror(
    dns: LoopbackDNSServer, sender: AuthSender
) -> None:
    results = await check(dns, sender.sign(mail(sender.address)))
    assert results.dkim[0].result == "permerror"
    assert results.dkim[0].reason == "no usable key: missing public key"


async def test_a_revoked_key_is_permerror(dns: LoopbackDNSServer, sender: AuthSender) -> None:
    dns.zone.add(f"{sender.selector}._domainkey.{sender.domain}", "TXT", "v=DKIM1; k=rsa; p=")
    results = await check(dns, sender.sign(mail(sender.address)))
    assert results.dkim[0].result == "permerror"


async def test_a_key_lookup_dns_failure_is_temperror(
    dns: LoopbackDNSServer, sender: AuthSender
) -> None:
    dns.zone.fail(f"{sender.selector}._domainkey.{sender.domain}")
    results = await check(dns, sender.sign(mail(sender.address)))
    assert results.dkim[0].result == "temperror" and results.temporary


async def test_every_signature_gets_its_own_verdict(
    dns: LoopbackDNSServer, sender: AuthSender, dkim_key: DkimKeyPair
) -> None:
    sender.publish()
    relay = AuthSender("relay.example", dns.zone, dkim_key, selector="r1")  # key not published
    signed = relay.sign(sender.sign(mail(sender.address)))
    results = await check(dns, signed)
    assert [(v.result, v.domain) for v in results.dkim] == [
        ("permerror", "relay.example"),
        ("pass", "sender-x.example"),
    ]
    assert results.dmarc.dkim_aligned is False  # no DMARC record: nothing to align with


# -- DMARC (RFC 7489) -----------------------------------------------------------------------


async def test_dmarc_passes_with_an_aligned_signature_for_a_hyphenated_domain(
    dns: LoopbackDNSServer, sender: AuthSender
) -> None:
    sender.publish(dmarc="v=DMARC1; p=reject")
    results = await check(dns, sender.sign(mail(sender.address)), ip="192.0.2.10")
    assert (results.dmarc.result, results.dmarc.domain, results.dmarc.policy) == (
        "pass",
        "sender-x.example",
        "reject",
    )
    assert ("_dmarc.sender-x.example", "TXT") in dns.queries


async def test_dmarc_fails_with_p_reject_when_nothing_aligned_passes(
    dns: LoopbackDNSServer, sender: AuthSender
) -> None:
    sender.publish(spf="v=spf1 ip4:192.0.2.1 -all", dmarc="v=DMARC1; p=reject")
    signed = sender.sign(mail(sender.address, body="Pay 10 EUR.\n"))
    results = await check(dns, signed.replace(b"10 EUR", b"99 EUR"))
    assert (results.spf.result, results.dkim[0].result) == ("fail", "fail")
    assert (results.dmarc.result, results.dmarc.policy) == ("fail", "reject")
    assert "dmarc=fail (p=reject) header.from=sender-x.example" in results.header_value(
        "mx.opensend.test"
    )


async def test_dmarc_passes_on_spf_alone_when_the_bounce_domain_aligns(
    dns: LoopbackDNSServer, sender: AuthSender
) -> None:
    sender.publish(dmarc="v=DMARC1; p=quarantine", dkim_key=False)
    dns.zone.add("bounces.sender-x.example", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    results = await check(dns, mail(sender.address), mail_from="b@bounces.sender-x.example")
    assert results.spf.result == "pass"
    assert (results.dmarc.result, results.dmarc.spf_aligned) == ("pass", True)


async def test_dmarc_without_a_record_is_none(dns: LoopbackDNSServer, sender: AuthSender) -> None:
    results = await check(dns, mail(sender.address))
    assert (results.dmarc.result, results.dmarc.domain) == ("none", "sender-x.example")


def test_from_domains_reads_every_from_address_in_a_labels() -> None:
    raw = (
        b"From: =?utf-8?q?S=C3=A4m?= <sam@Sender-X.example>, Bo <bo@b\xc3\xbccher.example>\r\n"
        b'From: "odd@display" <real@mail.sender-x.example>\r\n\r\nbody\r\n'
    )
    assert from_domains(raw) == [
        "sender-x.example",
        "xn--bcher-kva.example",
        "mail.sender-x.example",
    ]


# -- ARC (RFC 8617) -------------------------------------------------------------------------


async def test_mail_without_arc_sets_is_arc_none(
    dns: LoopbackDNSServer, sender: AuthSender
) -> None:
    assert (await check(dns, mail(sender.address))).arc.result == "none"


async def test_a_chain_sealed_by_an_intermediary_passes(
    dns: LoopbackDNSServer, sender: AuthSender, dkim_key: DkimKeyPair
) -> None:
    sender.publish()
    forwarder = AuthSender("lists.forwarder.example", dns.zone, dkim_key, selector="arc1")
    forwarder.publish()
    sealed = forwarder.arc_seal(
        sender.sign(mail(sender.address)),
        authserv_id="lists.forwarder.example",
        results="spf=pass smtp.mailfrom=sender-x.example; dkim=pass header.d=sender-x.example",
    )
    results = await check(dns, sealed)
    assert (results.arc.result, results.arc.sets) == ("pass", 1)
    assert "arc=pass" in results.header_value("mx.opensend.test")


async def test_a_chain_broken_after_sealing_fails(
    dns: LoopbackDNSServer, sender: AuthSender, dkim_key: DkimKeyPair
) -> None:
    forwarder = AuthSender("lists.forwarder.example", dns.zone, dkim_key, selector="arc1")
    forwarder.publish()
    sealed = forwarder.arc_seal(
        mail(sender.address, body="Original.\n"),
        authserv_id="lists.forwarder.example",
        results="dkim=none",
    )
    results = await check(dns, sealed.replace(b"Original.", b"Modified."))
    assert results.arc.result == "fail"


async def test_an_arc_key_lookup_dns_failure_is_temperror(
    dns: LoopbackDNSServer, sender: AuthSender, dkim_key: DkimKeyPair
) -> None:
    forwarder = AuthSender("lists.forwarder.example", dns.zone, dkim_key, selector="arc1")
    sealed = forwarder.arc_seal(
        mail(sender.address), authserv_id="lists.forwarder.example", results="dkim=none"
    )
    dns.zone.fail("arc1._domainkey.lists.forwarder.example")
    assert (await check(dns, sealed)).arc.result == "temperror"


# -- DNS down --------------------------------------------------------------------------------


def silent_udp_port() -> int:
    """A loopback UDP port nothing listens on: queries sent there are never answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_dns_server_that_does_not_answer_makes_every_lookup_a_temperror(
    dkim_key: DkimKeyPair,
) -> None:
    sender = AuthSender("sender-x.example", ZoneData(), dkim_key)
    silent = BlockingResolver((HostPort("127.0.0.1", silent_udp_port()),), lifetime=0.5)
    evidence = Evidence(CLIENT_IP, HELO, sender.address, sender.sign(mail(sender.address)))
    results = await asyncio.to_thread(
        Authenticator(silent, hostname="mx.opensend.test").check, evidence
    )
    assert (results.spf.result, results.dkim[0].result, results.dmarc.result) == (
        "temperror",
        "temperror",
        "temperror",
    )
    assert results.temporary
