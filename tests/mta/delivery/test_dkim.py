"""DKIM on delivered mail (RFC 6376): signed at send time with the domain's key, verified by stock
dkimpy against the key record served by the test's DNS server."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import dkim
import dkim.crypto
import dns.resolver
import pytest
from dkim.util import parse_tag_value

from mta.delivery import dkim as signer
from policy.domains.dkim_keys import generate_key_pair, record_name, record_value
from storage.database import Pool
from storage.delivery.queue import INLINE_CONTENT_BYTES
from tests.support.delivery_world import delivery_workers, queue_database
from tests.support.dns_server import LoopbackDNSServer
from tests.support.queued_mail import Sender, make_sender, wait_until_final
from tests.support.smtp_sink import Sink

Queue = tuple[str, Pool]


@pytest.fixture(scope="module")
async def queue(database_url: str) -> AsyncIterator[Queue]:
    async with queue_database(database_url) as made:
        yield made


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    started = await Sink.start()
    yield started
    await started.stop()


def publish_key(dns: LoopbackDNSServer, sender: Sender) -> None:
    assert sender.dkim is not None
    name = record_name(sender.dkim.selector, sender.domain.name)
    dns.zone.add(name, "TXT", record_value(sender.dkim.public_key))


def txt_from(dns_server: LoopbackDNSServer) -> Callable[..., bytes]:
    """dkimpy's key lookup, asking the test's DNS server (blocking: run it in a thread)."""

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns_server.host]
        resolver.port = dns_server.port
        answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
        return b"".join(b"".join(r.strings) for r in answer)

    return lookup


def signature_tags(content: bytes) -> dict[bytes, bytes]:
    field = re.search(rb"^DKIM-Signature:(.*?)\r\n(?![ \t])", content, re.S | re.M)
    assert field is not None, content[:300]
    return parse_tag_value(re.sub(rb"\s+", b"", field.group(1)).replace(b";", b"; "))


async def test_delivered_mail_carries_a_signature_that_verifies_against_dns(
    queue: Queue, sink: Sink, dns: LoopbackDNSServer, tmp_path: Path
) -> None:
    url, pool = queue
    sender = await make_sender(pool)
    publish_key(dns, sender)
    env = {"OPENSEND_TRANSPORTS": f"example.net={sink.host}:{sink.port}"}
    async with delivery_workers(pool, url, tmp_path, **env):
        email_id = await sender.queue(["bob@example.net"])
        await wait_until_final(pool, email_id)
    content = sink.messages[0].content
    assert content.startswith(b"DKIM-Signature: ")
    assert await asyncio.to_thread(dkim.verify, content, dnsfunc=txt_from(dns))

    tags = signature_tags(content)
    assert sender.dkim is not None
    assert (tags[b"d"], tags[b"s"]) == (
        sender.domain.name.encode(),
        sender.dkim.selector.encode(),
    )
    assert (tags[b"a"], tags[b"c"]) == (b"rsa-sha256", b"relaxed/relaxed")
    signed = tags[b"h"].lower().split(b":")
    assert signed.count(b"from") == 2  # oversigned: a From added later breaks it
    for name in (b"to", b"subject", b"date", b"message-id", b"x-opensend-reply-token"):
        assert name in signed
    assert b"cc" not in signed  # absent fields are not listed


async def test_a_changed_reply_token_header_breaks_the_signature(
    queue: Queue, sink: Sink, dns: LoopbackDNSServer, tmp_path: Path
) -> None:
    url, pool = queue
    sender = await make_sender(pool)
    publish_key(dns, sender)
    env = {"OPENSEND_TRANSPORTS": f"example.net={sink.host}:{sink.port}"}
    async with delivery_workers(pool, url, tmp_path, **env):
        await wait_until_final(pool, await sender.queue(["bob@example.net"]))
    content = sink.messages[0].content
    forged = re.sub(rb"(?i)(X-OpenSend-Reply-Token:\s+osr_)\w+", rb"\1x", content)
    assert forged != content
    assert not await asyncio.to_thread(dkim.verify, forged, dnsfunc=txt_from(dns))


async def test_one_signature_is_shared_by_every_recipient_of_an_email(
    queue: Queue, dns: LoopbackDNSServer, tmp_path: Path
) -> None:
    url, pool = queue
    sender = await make_sender(pool)
    publish_key(dns, sender)
    one, two = await Sink.start(), await Sink.start()
    env = {
        "OPENSEND_TRANSPORTS": f"one.example=127.0.0.1:{one.port},two.example=127.0.0.1:{two.port}"
    }
    try:
        async with delivery_workers(pool, url, tmp_path, **env):
            await wait_until_final(pool, await sender.queue(["a@one.example", "b@two.example"]))
        assert one.messages[0].content == two.messages[0].content
    finally:
        await one.stop()
        await two.stop()


async def test_a_domain_without_a_key_sends_unsigned_and_warns_once(
    queue: Queue, sink: Sink, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, pool = queue
    sender = await make_sender(pool, dkim=False)
    env = {"OPENSEND_TRANSPORTS": f"example.net={sink.host}:{sink.port}"}
    with caplog.at_level(logging.WARNING, logger="mta.delivery.dkim"):
        async with delivery_workers(pool, url, tmp_path, **env):
            first = await sender.queue(["bob@example.net"])
            second = await sender.queue(["carl@example.net"])
            rows = {**await wait_until_final(pool, first), **await wait_until_final(pool, second)}
    assert {row["status"] for row in rows.values()} == {"delivered"}
    assert all(b"DKIM-Signature" not in m.content for m in sink.messages)
    warnings = [r for r in caplog.records if "unsigned" in r.getMessage()]
    assert len(warnings) == 1


def test_openssl_rsa_gives_the_same_signature_bytes_as_dkimpys_own() -> None:
    """PKCS #1 v1.5 is deterministic, so the two must agree exactly (RFC 8017 section 8.2)."""
    pair = generate_key_pair("s1")
    parsed = dkim.crypto.parse_pem_private_key(pair.private_key_pem.encode())
    stock = dkim.crypto.RSASSA_PKCS1_v1_5_sign(hashlib.sha256(b"message"), parsed)
    assert signer.rsa_sign(hashlib.sha256(b"message").digest(), pair.private_key_pem) == stock


async def test_a_large_message_is_signed_off_the_event_loop_and_still_verifies(
    dns: LoopbackDNSServer,
) -> None:
    pair = generate_key_pair("big")
    dns.zone.add(record_name("big", "big.example"), "TXT", record_value(pair.public_key))
    body = b"".join(b"line %d of a long attachment\r\n" % n for n in range(20_000))
    message = b"From: a@big.example\r\nTo: b@example.net\r\nSubject: big\r\n\r\n" + body
    assert len(message) > signer.EXECUTOR_THRESHOLD_BYTES
    signed = await signer.DkimSigner().sign(
        message, domain="big.example", selector="big", private_key=pair.private_key_pem
    )
    assert await asyncio.to_thread(dkim.verify, signed, dnsfunc=txt_from(dns))


async def test_a_message_too_large_to_ride_with_its_claim_is_read_signed_and_delivered(
    queue: Queue, sink: Sink, dns: LoopbackDNSServer, tmp_path: Path
) -> None:
    url, pool = queue
    sender = await make_sender(pool)
    publish_key(dns, sender)
    body = "".join(f"line {n} of a long report\n" for n in range(20_000))
    env = {"OPENSEND_TRANSPORTS": f"example.net={sink.host}:{sink.port}"}
    async with delivery_workers(pool, url, tmp_path, **env):
        email_id = await sender.queue(["big@example.net"], body=body)
        rows = await wait_until_final(pool, email_id)
    assert rows["big@example.net"]["status"] == "delivered"
    content = sink.messages[0].content
    assert len(content) > INLINE_CONTENT_BYTES
    assert await asyncio.to_thread(dkim.verify, content, dnsfunc=txt_from(dns))
