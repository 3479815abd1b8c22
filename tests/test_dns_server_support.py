"""The loopback DNS server the suite resolves against, checked with dnspython's own clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from tests.support.dns_server import LoopbackDNSServer, ZoneData, dns_server, make_resolver

DKIM_KEY = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "x" * 350 + "IDAQAB"


@pytest.fixture
async def server() -> AsyncIterator[LoopbackDNSServer]:
    async for started in dns_server():
        yield started


@pytest.fixture
def resolver(server: LoopbackDNSServer) -> dns.asyncresolver.Resolver:
    return make_resolver(server)


def texts(answer: dns.resolver.Answer) -> list[str]:
    return sorted(rdata.to_text() for rdata in answer)


async def test_address_is_host_and_port_on_loopback(server: LoopbackDNSServer) -> None:
    assert server.port > 0
    assert server.address == f"127.0.0.1:{server.port}"


async def test_a_and_aaaa(server: LoopbackDNSServer, resolver: dns.asyncresolver.Resolver) -> None:
    server.zone.add("mx1.example.net", "A", "127.0.0.2", "127.0.0.3")
    server.zone.add("mx1.example.net", "AAAA", "::1")

    a = await resolver.resolve("mx1.example.net", "A")
    aaaa = await resolver.resolve("mx1.example.net.", "AAAA")

    assert texts(a) == ["127.0.0.2", "127.0.0.3"]
    assert texts(aaaa) == ["::1"]
    assert a.response.flags & dns.flags.AA
    assert server.queries == [("mx1.example.net", "A"), ("mx1.example.net", "AAAA")]
    assert server.queried("MX1.Example.NET.", "a") == 1


async def test_names_are_case_insensitive(
    server: LoopbackDNSServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone.add("Mixed.Example.NET.", "A", "127.0.0.9")

    answer = await resolver.resolve("mIXED.example.net", "A")

    assert texts(answer) == ["127.0.0.9"]
    assert server.zone.get("mixed.example.net", "a") == ["127.0.0.9"]


async def test_mx_records_sort_by_preference(
    server: LoopbackDNSServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone.add("example.net", "MX", "20 mx2.example.net.", "10 mx1.example.net")
    server.zone.add("example.net", "MX", "30 mx3.example.net.")

    answer = await resolver.resolve("example.net", "MX")

    ordered = sorted(answer, key=lambda mx: mx.preference)
    assert [(mx.preference, mx.exchange.to_text()) for mx in ordered] == [
        (10, "mx1.example.net."),
        (20, "mx2.example.net."),
        (30, "mx3.example.net."),
    ]


async def test_null_mx(server: LoopbackDNSServer, resolver: dns.asyncresolver.Resolver) -> None:
    server.zone.add("nomail.example.net", "MX", "0 .")

    answer = await resolver.resolve("nomail.example.net", "MX")

    (mx,) = list(answer)
    assert mx.preference == 0
    assert mx.exchange == dns.name.root


async def test_long_txt_is_split_into_255_byte_strings(
    server: LoopbackDNSServer, resolver: dns.asyncresolver.Resolver
) -> None:
    value = f"v=DKIM1; k=rsa; p={DKIM_KEY}"
    assert len(value) > 255
    server.zone.add("sel._domainkey.example.com", "TXT", f'"{value}"')
    server.zone.add("example.com", "TXT", "v=spf1 ip4:127.0.0.1 -all")

    dkim = await resolver.resolve("sel._domainkey.example.com", "TXT")
    spf = await resolver.resolve("example.com", "TXT")

    (record,) = list(dkim)
    assert len(record.strings) == 2
    assert all(len(s) <= 255 for s in record.strings)
    assert len(record.strings[0]) == 255
    assert b"".join(record.strings).decode() == value
    (spf_record,) = list(spf)
    assert spf_record.strings == (b"v=spf1 ip4:127.0.0.1 -all",)


async def test_txt_keeps_several_quoted_strings(
    server: LoopbackDNSServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone.add("multi.example.com", "TXT", '"first part" "second \\"part\\""')

    (record,) = list(await resolver.resolve("multi.example.com", "TXT"))

    assert record.strings == (b"first part", b'second "part"')


async def test_cname_is_followed_within_the_zone(
    server: LoopbackDNSServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone.add("alias.example.net", "CNAME", "mid.example.net.")
    server.zone.add("mid.example.net", "CNAME", "mx1.example.net.")
    server.zone.add("mx1.example.net", "A", "127.0.0.2")

    answer = await resolver.resolve("alias.example.net", "A")

    assert texts(answer) == ["127.0.0.2"]
    assert answer.canonical_name.to_text() == "mx1.example.net."
    assert [rrset.rdtype for rrset in answer.response.answer] == [
        dns.rdatatype.CNAME,
        dns.rdatatype.CNAME,
        dns.rdatatype.A,
    ]
    assert server.queries == [("alias.example.net", "A")]  # one round trip


async def test_cname_cannot_share_a_name(server: LoopbackDNSServer) -> None:
    server.zone.add("alias.example.net", "CNAME", "mx1.example.net.")
    with pytest.raises(ValueError, match="CNAME"):
        server.zone.add("alias.example.net", "MX", "10 mx1.example.net.")


async def test_nxdomain(server: LoopbackDNSServer, resolver: dns.asyncresolver.Resolver) -> None:
    server.zone.add("example.net", "MX", "10 mx1.example.net.")

    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver.resolve("missing.example.net", "MX")
    with pytest.raises(dns.resolver.NXDOMAIN):  # nothing added at all: still authoritative
        await resolver.resolve("1.0.0.127.in-addr.arpa", "PTR")


async def test_nodata_when_the_name_has_other_types(
    server: LoopbackDNSServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone.add("a.only.example.net", "A", "127.0.0.2")

    with pytest.raises(dns.resolver.NoAnswer):
        await resolver.resolve("a.only.example.net", "MX")
    with pytest.raises(dns.resolver.NoAnswer):  # an empty non-terminal exists too
        await resolver.resolve("only.example.net", "MX")

    response = await dns.asyncquery.udp(
        dns.message.make_query("a.only.example.net", "MX"), "127.0.0.1", port=server.port
    )
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert not response.answer
    assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]


async def test_servfail_raises_no_nameservers(
    server: LoopbackDNSServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone.add("flaky.example.net", "MX", "10 mx1.example.net.")
    server.zone.add("flaky.example.net", "A", "127.0.0.2")
    server.zone.fail("flaky.example.net", "MX")

    with pytest.raises(dns.resolver.NoNameservers):
        await resolver.resolve("flaky.example.net", "MX")
    assert texts(await resolver.resolve("flaky.example.net", "A")) == ["127.0.0.2"]

    server.zone.heal("flaky.example.net")
    assert len(await resolver.resolve("flaky.example.net", "MX")) == 1


async def test_fail_every_type_with_another_rcode(server: LoopbackDNSServer) -> None:
    server.zone.fail("refused.example.net", rcode="REFUSED")

    response = await dns.asyncquery.udp(
        dns.message.make_query("refused.example.net", "TXT"), "127.0.0.1", port=server.port
    )

    assert response.rcode() == dns.rcode.REFUSED


async def test_names_outside_explicit_origins_are_refused() -> None:
    zone = ZoneData("example.net")
    zone.add("example.net", "MX", "10 mx1.example.net.")
    with pytest.raises(ValueError, match="outside"):
        zone.add("example.org", "A", "127.0.0.1")

    async with LoopbackDNSServer(zone) as server:
        outside = await dns.asyncquery.udp(
            dns.message.make_query("example.org", "A"), "127.0.0.1", port=server.port
        )
        apex = await dns.asyncquery.udp(
            dns.message.make_query("example.net", "SOA"), "127.0.0.1", port=server.port
        )

    assert outside.rcode() == dns.rcode.REFUSED
    assert not outside.flags & dns.flags.AA
    assert apex.rcode() == dns.rcode.NOERROR
    assert apex.answer[0].rdtype == dns.rdatatype.SOA


async def test_timeout(server: LoopbackDNSServer) -> None:
    server.zone.add("slow.example.net", "MX", "10 mx1.example.net.")
    server.zone.delay("slow.example.net")

    with pytest.raises(dns.resolver.LifetimeTimeout):
        await make_resolver(server, lifetime=0.3).resolve("slow.example.net", "MX")
    assert server.queried("slow.example.net", "MX") >= 1


async def test_a_short_delay_still_answers(server: LoopbackDNSServer) -> None:
    server.zone.add("late.example.net", "A", "127.0.0.2")
    server.zone.delay("late.example.net", 0.05)

    answer = await make_resolver(server, lifetime=10).resolve("late.example.net", "A")

    assert texts(answer) == ["127.0.0.2"]


async def test_truncated_udp_falls_back_to_tcp(
    server: LoopbackDNSServer, resolver: dns.asyncresolver.Resolver
) -> None:
    addresses = [f"127.0.{i // 250}.{i % 250 + 1}" for i in range(100)]
    server.zone.add("big.example.net", "A", *addresses)

    plain = await dns.asyncquery.udp(
        dns.message.make_query("big.example.net", "A"), "127.0.0.1", port=server.port
    )
    assert plain.flags & dns.flags.TC
    assert len(plain.to_wire()) <= 512

    edns = await dns.asyncquery.udp(
        dns.message.make_query("big.example.net", "A", use_edns=0, payload=4096),
        "127.0.0.1",
        port=server.port,
    )
    assert not edns.flags & dns.flags.TC
    assert len(edns.answer[0]) == 100

    server.tcp_queries.clear()
    answer = await resolver.resolve("big.example.net", "A")
    assert sorted(texts(answer)) == sorted(addresses)
    assert server.tcp_queries == [("big.example.net", "A")]


async def test_tcp_query(server: LoopbackDNSServer) -> None:
    server.zone.add("example.net", "MX", "10 mx1.example.net.")

    response = await dns.asyncquery.tcp(
        dns.message.make_query("example.net", "MX"), "127.0.0.1", timeout=5, port=server.port
    )

    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert response.answer[0][0].to_text() == "10 mx1.example.net."
    assert server.tcp_queries == [("example.net", "MX")]


async def test_several_queries_on_one_tcp_connection(server: LoopbackDNSServer) -> None:
    server.zone.add("one.example.net", "A", "127.0.0.1")
    server.zone.add("two.example.net", "A", "127.0.0.2")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        answers = []
        for name in ("one.example.net", "two.example.net", "three.example.net"):
            query = dns.message.make_query(name, "A")
            writer.write(query.to_wire(prepend_length=True))
            await writer.drain()
            length = int.from_bytes(await reader.readexactly(2), "big")
            response = dns.message.from_wire(await reader.readexactly(length))
            assert response.id == query.id
            answers.append(response)
    finally:
        writer.close()
        await writer.wait_closed()

    assert [r.rcode() for r in answers] == [
        dns.rcode.NOERROR,
        dns.rcode.NOERROR,
        dns.rcode.NXDOMAIN,
    ]
    assert answers[1].answer[0][0].to_text() == "127.0.0.2"


async def test_garbage_is_ignored(server: LoopbackDNSServer) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=("127.0.0.1", server.port)
    )
    transport.sendto(b"\x00not dns")
    transport.close()
    server.zone.add("after.example.net", "A", "127.0.0.2")

    answer = await make_resolver(server).resolve("after.example.net", "A")

    assert texts(answer) == ["127.0.0.2"]


async def test_remove_and_clear(
    server: LoopbackDNSServer, resolver: dns.asyncresolver.Resolver
) -> None:
    zone = server.zone
    zone.add("example.net", "MX", "10 mx1.example.net.", "20 mx2.example.net.")
    zone.add("example.net", "A", "127.0.0.2")

    zone.remove("example.net", "MX", "20 mx2.example.net")
    assert zone.get("example.net", "MX") == ["10 mx1.example.net."]
    zone.remove("example.net", "MX")
    with pytest.raises(dns.resolver.NoAnswer):
        await resolver.resolve("example.net", "MX")

    zone.fail("example.net")
    zone.clear()
    assert zone.records == {}
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver.resolve("example.net", "A")


async def test_stop_releases_the_port() -> None:
    server = await LoopbackDNSServer().start()
    port = server.port
    await server.stop()
    with pytest.raises(RuntimeError):
        _ = server.port

    again = await LoopbackDNSServer().start(port=port)
    try:
        assert again.port == port
    finally:
        await again.stop()


async def test_stop_with_an_open_tcp_connection_and_a_held_answer() -> None:
    server = await LoopbackDNSServer().start()
    server.zone.delay("held.example.net", 3600)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await dns.asyncquery.udp(
        dns.message.make_query("other.example.net", "A"), "127.0.0.1", port=server.port
    )
    udp_query = dns.message.make_query("held.example.net", "A")
    with pytest.raises(dns.exception.Timeout):
        await dns.asyncquery.udp(udp_query, "127.0.0.1", timeout=0.1, port=server.port)

    await server.stop()

    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
