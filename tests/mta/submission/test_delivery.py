"""A submitted message, delivered by the real workers to an aiosmtpd sink on loopback: DKIM-signed
with the From: domain's key (verified against the test's DNS server), reply tracking in place,
no Bcc field, and only the envelope's recipients sent to."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import dkim
import pytest

from policy import replies
from policy.domains.dkim_keys import DkimKeyPair, record_name, record_value
from policy.tokens import ReplyTokens
from storage.account import directory
from storage.database import Pool
from tests.conftest import DOMAIN_VIEW, StartSubmission, TenantWorld, message
from tests.mta.delivery.test_dkim import signature_tags, txt_from
from tests.mta.submission.test_pipeline import submit
from tests.mta.submission.test_swaks import login, swaks, verified_tls
from tests.support.delivery_world import delivery_workers, queue_database
from tests.support.dns_server import LoopbackDNSServer
from tests.support.queued_mail import wait_until_final
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


async def tenant_on(pool: Pool, tokens: ReplyTokens, key: DkimKeyPair) -> TenantWorld:
    """A tenant with a receiving, verified domain and a DKIM key, in the queue's database."""
    suffix = secrets.token_hex(4)
    tenant = await directory.create_tenant(pool, f"tenant-{suffix}")
    name = f"t{suffix}.test"
    domain = await directory.add_domain(
        pool,
        tenant.id,
        name,
        receiving=True,
        reply_domain=f"inbound.{name}",
        verified=True,
        dkim=key,
        event_data=DOMAIN_VIEW.event_data,
    )
    return TenantWorld(pool, tokens, tenant, domain)


async def signing_tenant(
    pool: Pool, tokens: ReplyTokens, key: DkimKeyPair, dns: LoopbackDNSServer
) -> TenantWorld:
    """A tenant as `tenant_on` makes it, its DKIM key published in the test's DNS."""
    world = await tenant_on(pool, tokens, key)
    dns.zone.add(record_name(key.selector, world.name), "TXT", record_value(key.public_key))
    return world


async def test_submitted_message_is_delivered_signed_tracked_to_envelope_recipients_only(
    queue: Queue,
    sink: Sink,
    dns: LoopbackDNSServer,
    tmp_path: Path,
    tokens: ReplyTokens,
    dkim_key: DkimKeyPair,
    start_test_submission: StartSubmission,
) -> None:
    url, pool = queue
    acme = await signing_tenant(pool, tokens, dkim_key, dns)
    server = await start_test_submission(on=pool)
    content = message(
        sender=f"Acme Support <support@{acme.name}>",
        to="bob@example.net, only-named@example.net",
        subject="Your order",
        headers={"Bcc": "boss@example.net", "In-Reply-To": "<earlier@mail.example.net>"},
    )
    client_id = message_from_bytes(content)["Message-ID"]

    env = {"OPENSEND_TRANSPORTS": f"example.net={sink.host}:{sink.port}"}
    async with delivery_workers(pool, url, tmp_path, **env):
        email_id = await submit(server, acme, content, ["bob@example.net", "boss@example.net"])
        final = await wait_until_final(pool, email_id)

    assert {recipient: row["status"] for recipient, row in final.items()} == {
        "bob@example.net": "delivered",
        "boss@example.net": "delivered",
    }
    delivered = sink.messages
    assert sorted(r for m in delivered for r in m.rcpt_tos) == [
        "bob@example.net",
        "boss@example.net",
    ]
    assert all(m.mail_from == f"support@{acme.name}" for m in delivered)
    content_seen = delivered[0].content
    assert all(m.content == content_seen for m in delivered)  # one copy, one signature

    assert await asyncio.to_thread(dkim.verify, content_seen, dnsfunc=txt_from(dns))
    tags = signature_tags(content_seen)
    assert (tags[b"d"], tags[b"s"]) == (acme.name.encode(), dkim_key.selector.encode())
    assert b"x-opensend-reply-token" in tags[b"h"].lower().split(b":")

    copy = message_from_bytes(content_seen, policy=default)
    row = await pool.fetchrow("SELECT * FROM emails WHERE id = $1", email_id)
    assert "Bcc" not in copy
    assert b"boss@example.net" not in content_seen
    assert copy["Message-ID"] == client_id
    assert copy["In-Reply-To"] == "<earlier@mail.example.net>"
    assert copy["Reply-To"] == row["reply_address"]
    assert copy["X-OpenSend-Reply-Token"] == row["reply_token"]
    assert copy["To"] == "bob@example.net, only-named@example.net"


# -- lines over 998 octets (RFC 5322 section 2.1.1), sent by a real client -------------------

LONG_TEXT = "All work and no play makes Jack a dull boy. " * 40  # 1,760 octets, one line


def long_line_message(sender: str, kind: str) -> tuple[bytes, str]:
    """A message as a script or a careless client writes it, and the text whose meaning must
    survive: `kind` says where the long line is."""
    head = f"From: {sender}\r\nTo: bob@example.net\r\nSubject: long lines\r\n"
    if kind == "text_plain":
        return (head + f"\r\nHello,\r\n{LONG_TEXT}\r\n").encode(), LONG_TEXT
    html = f"<html><body><p>{LONG_TEXT}</p></body></html>"
    if kind == "html":
        mime = 'MIME-Version: 1.0\r\nContent-Type: text/html; charset="utf-8"\r\n'
        return (head + mime + f"\r\n{html}\r\n").encode(), html
    assert kind == "multipart_one_part"
    body = (
        'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="sep"\r\n\r\n'
        '--sep\r\nContent-Type: text/plain; charset="utf-8"\r\n\r\nShort and sweet.\r\n'
        f'--sep\r\nContent-Type: text/html; charset="utf-8"\r\n\r\n{html}\r\n--sep--\r\n'
    )
    return (head + body).encode(), html


@pytest.mark.parametrize("kind", ["text_plain", "multipart_one_part", "html"])
async def test_a_long_line_from_swaks_is_re_encoded_signed_and_delivered(
    queue: Queue,
    sink: Sink,
    dns: LoopbackDNSServer,
    tmp_path: Path,
    tokens: ReplyTokens,
    dkim_key: DkimKeyPair,
    start_test_submission: StartSubmission,
    kind: str,
) -> None:
    url, pool = queue
    acme = await signing_tenant(pool, tokens, dkim_key, dns)
    server = await start_test_submission(on=pool)
    content, meaning = long_line_message(f"support@{acme.name}", kind)
    data = tmp_path / "message.eml"
    data.write_bytes(content)

    env = {"OPENSEND_TRANSPORTS": f"example.net={sink.host}:{sink.port}"}
    async with delivery_workers(pool, url, tmp_path, **env):
        sent = await swaks(
            "--port", str(server.starttls_port), "--tls", *verified_tls(server, tmp_path),
            *login("PLAIN", await acme.api_key()),
            "--from", f"support@{acme.name}", "--to", "bob@example.net", "--data", f"@{data}",
        )  # fmt: skip
        assert sent.returncode == 0, sent.output
        final = await wait_until_final(pool, sent.queued_id)

    assert final["bob@example.net"]["status"] == "delivered"
    [delivered] = sink.messages
    seen = delivered.content
    assert max(len(line) for line in seen.split(b"\r\n")) <= 998
    assert await asyncio.to_thread(dkim.verify, seen, dnsfunc=txt_from(dns))
    copy = message_from_bytes(seen.replace(b"\r\n", b"\n"), policy=default)
    assert isinstance(copy, EmailMessage)
    leaf = copy.get_body(("html", "plain"))
    assert leaf is not None
    assert leaf["Content-Transfer-Encoding"] == "quoted-printable"
    assert meaning in leaf.get_content()
    if kind == "multipart_one_part":  # the short part is as the client wrote it
        assert (
            b'--sep\r\nContent-Type: text/plain; charset="utf-8"\r\n\r\nShort and sweet.\r\n'
            in seen
        )


async def test_a_header_line_over_998_octets_is_refused_554_5_6_0_and_nothing_stored(
    queue: Queue,
    tmp_path: Path,
    tokens: ReplyTokens,
    dkim_key: DkimKeyPair,
    start_test_submission: StartSubmission,
) -> None:
    _url, pool = queue
    acme = await tenant_on(pool, tokens, dkim_key)
    server = await start_test_submission(on=pool)

    sent = await swaks(
        "--port", str(server.starttls_port), "--tls", *verified_tls(server, tmp_path),
        *login("PLAIN", await acme.api_key()),
        "--from", f"support@{acme.name}", "--to", "bob@example.net",
        "--header", "X-Long: " + "y" * 1000,
    )  # fmt: skip

    refusal = replies.S554_HEADER_LINE_TOO_LONG
    assert f"{refusal.code} {refusal.enhanced} {refusal.text}" in sent.output
    assert await pool.fetchval("SELECT count(*) FROM emails WHERE tenant_id = $1", acme.id) == 0
