"""The MX's SMTP protocol edges, spoken over loopback by real clients and a byte-level one.

What an internet-facing MX must do whatever the client sends: advertise its extensions, enforce
its limits with the right replies, refuse (or normalise) bare line endings without ever ending
DATA at one, refuse relay probes, and shut down cleanly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import aiosmtplib
import pytest
from prometheus_client import REGISTRY

from mta.listeners import MXListener, start_mx
from mta.smtp.data import DataBudget
from mta.smtp.protocol import ConnectionGate, MXProtocol
from policy import replies
from policy.replies import Reply
from policy.settings import BareNewline
from policy.tokens import ReplyTokens
from storage.database import Pool
from tests.conftest import (
    MakeTenant,
    StartMX,
    TenantWorld,
    make_settings,
    message,
    received_rows,
    smtp_send,
)
from tests.support.queued_mail import poll_until
from tests.support.smtp import RawSMTP, SMTPReply
from tests.support.tls import ServerCertificate, server_certificate
from tests.support.tools import system_tool

HOST = "127.0.0.1"
MX_NAME = "mx.opensend.test"  # the hostname conftest gives every test MX
CLIENT_NAME = "client.example.net"
REPLY_TIMEOUT = 10.0  # a bound on every wait, so a broken server fails the test instead of hanging


# -- helpers ----------------------------------------------------------------------------------


def assert_reply(reply: SMTPReply, expected: Reply) -> None:
    assert (reply.code, reply.enhanced) == (expected.code, expected.enhanced), reply


def assert_refusal(error: aiosmtplib.SMTPResponseException, expected: Reply) -> None:
    assert (error.code, error.message.split(" ", 1)[0]) == (expected.code, expected.enhanced), (
        error.code,
        error.message,
    )


def queued_ids(reply: SMTPReply) -> list[UUID]:
    assert reply.code == replies.S250_QUEUED.code, reply
    return [UUID(part) for part in reply.text.split("queued as ", 1)[1].split()]


async def stored_count(pool: Pool, world: TenantWorld) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM received_emails WHERE tenant_id = $1", world.id
    )
    return count


@contextlib.asynccontextmanager
async def raw_session(port: int, *, ehlo: bool = True) -> AsyncIterator[RawSMTP]:
    """A byte-level client past the greeting (and EHLO unless told otherwise), always closed."""
    client, greeting = await RawSMTP.connect(HOST, port)
    try:
        assert greeting.code == replies.S220_READY.code, greeting
        if ehlo:
            assert (await client.command(f"EHLO {CLIENT_NAME}")).code == 250
        yield client
    finally:
        await client.close()


async def closed_by_server(client: RawSMTP) -> bool:
    """True when the server closes the connection without saying anything more."""
    try:
        rest = await asyncio.wait_for(client.reader.read(), REPLY_TIMEOUT)
    except ConnectionResetError:
        return True
    return rest == b""


async def open_transaction(client: RawSMTP, *recipients: str) -> None:
    """MAIL, the RCPTs (each accepted) and DATA up to the 354."""
    assert_reply(await client.command("MAIL FROM:<customer@example.net>"), replies.S250_SENDER_OK)
    for rcpt in recipients:
        assert_reply(await client.command(f"RCPT TO:<{rcpt}>"), replies.S250_RECIPIENT_OK)
    assert (await client.command("DATA")).code == replies.S354_DATA.code


def message_of_size(size: int, *, dotted_lines: bool = False) -> bytes:
    """A message of exactly `size` octets, CRLF included; optionally every body line starts '.'."""
    head = b"From: a@example.net\r\nSubject: sized\r\n\r\n"
    line = (b"." if dotted_lines else b"x") + b"y" * 70 + b"\r\n"
    lines = (size - len(head) - 2) // len(line)
    body = line * lines
    filler = size - len(head) - len(body) - 2
    assert filler >= 0
    content = head + body + b"z" * filler + b"\r\n"
    assert len(content) == size
    return content


# -- EHLO and AUTH ----------------------------------------------------------------------------


async def test_ehlo_advertises_the_mx_extensions_and_no_auth_or_starttls_without_a_certificate(
    mx: MXListener,
) -> None:
    async with raw_session(mx.port, ehlo=False) as client:
        reply = await client.command(f"EHLO {CLIENT_NAME}")

    assert reply.code == 250
    assert reply.lines[0] == MX_NAME
    keywords = {line.split()[0] for line in reply.lines[1:]}
    assert keywords == {"PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"}


async def test_ehlo_size_is_the_configured_message_size_limit(start_test_mx: StartMX) -> None:
    listener = await start_test_mx(OPENSEND_MAX_MESSAGE_SIZE="123456")
    async with raw_session(listener.port, ehlo=False) as client:
        reply = await client.command(f"EHLO {CLIENT_NAME}")
    assert "SIZE 123456" in reply.lines[1:]  # RFC 1870 section 4


@pytest.mark.parametrize(
    "command",
    [
        pytest.param("AUTH PLAIN AGFsaWNlAHNlY3JldA==", id="plain"),
        pytest.param("AUTH LOGIN", id="login"),
        pytest.param("AUTH CRAM-MD5", id="cram_md5"),
    ],
)
async def test_auth_is_refused_on_the_mx_with_a_permanent_5xx(mx: MXListener, command: str) -> None:
    async with raw_session(mx.port) as client:
        reply = await client.command(command)
        # The session goes on: a refused AUTH is not a reason to drop the client.
        assert_reply(await client.command("NOOP"), replies.S250_OK)

    assert_reply(reply, replies.S502_AUTH_NOT_HERE)  # names the ports where AUTH is


# -- message size -----------------------------------------------------------------------------


async def test_mail_from_with_size_over_the_limit_is_refused_552_and_at_the_limit_accepted(
    start_test_mx: StartMX,
) -> None:
    listener = await start_test_mx(OPENSEND_MAX_MESSAGE_SIZE="10000")
    async with raw_session(listener.port) as client:
        refused = await client.command("MAIL FROM:<a@example.net> SIZE=10001")
        accepted = await client.command("MAIL FROM:<a@example.net> SIZE=10000")

    assert_reply(refused, replies.S552_TOO_BIG)
    assert_reply(accepted, replies.S250_SENDER_OK)


async def test_oversize_message_is_read_to_its_end_refused_552_and_the_connection_goes_on(
    start_test_mx: StartMX, pool: Pool, make_tenant: MakeTenant
) -> None:
    listener = await start_test_mx(OPENSEND_MAX_MESSAGE_SIZE="10000")
    acme = await make_tenant(catch_all=True)
    rcpt = f"x@{acme.name}"
    # Dot-led lines and lines that look like commands: if the server stopped reading at the
    # limit, the rest would be taken as commands and the next transaction would go wrong.
    oversize = message_of_size(40_000, dotted_lines=True) + b"RSET\r\nQUIT\r\n"

    client = aiosmtplib.SMTP(hostname=HOST, port=listener.port, start_tls=False, timeout=30)
    await client.connect()
    try:
        await client.ehlo(hostname=CLIENT_NAME)
        await client.mail("a@example.net")  # no SIZE=, so only the data can tell
        await client.rcpt(rcpt)
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await client.data(oversize)
        assert_refusal(refused.value, replies.S552_TOO_BIG)

        _errors, response = await client.sendmail(
            "a@example.net", [rcpt], message(to=rcpt, subject="Normal size")
        )
    finally:
        await client.quit()

    ids = [UUID(part) for part in response.split("queued as ", 1)[1].split()]
    [row] = await received_rows(pool, ids)
    assert row["subject"] == "Normal size"
    assert await stored_count(pool, acme) == 1


@pytest.mark.parametrize(
    "dotted_lines",
    [
        pytest.param(False, id="plain_lines"),
        pytest.param(True, id="dot_stuffed_lines"),
    ],
)
async def test_message_of_exactly_the_size_limit_is_accepted_byte_for_byte(
    start_test_mx: StartMX, pool: Pool, make_tenant: MakeTenant, dotted_lines: bool
) -> None:
    listener = await start_test_mx(OPENSEND_MAX_MESSAGE_SIZE="10000")
    acme = await make_tenant(catch_all=True)
    content = message_of_size(10_000, dotted_lines=dotted_lines)

    sent = await smtp_send(listener.port, "a@example.net", [f"x@{acme.name}"], content)

    assert sent.data is not None and sent.data[0] == 250, sent.data
    [row] = await received_rows(pool, sent.stored_ids)
    assert bytes(row["raw"]) == content


async def test_a_large_message_and_a_small_one_at_the_same_time_are_both_stored_byte_for_byte(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    # Larger than a DATA block, than PARSE_IN_THREAD_BYTES and than STORE_ALONE_BYTES: read in
    # blocks, parsed in a thread and committed alone, while the small one takes the usual path.
    acme = await make_tenant(catch_all=True)
    large = message_of_size(3 * 1024 * 1024 + 7, dotted_lines=True)
    small = message(to=f"x@{acme.name}", subject="small")

    sent_large, sent_small = await asyncio.gather(
        smtp_send(mx.port, "a@example.net", [f"x@{acme.name}"], large),
        smtp_send(mx.port, "b@example.net", [f"x@{acme.name}"], small),
    )

    [large_row] = await received_rows(pool, sent_large.stored_ids)
    [small_row] = await received_rows(pool, sent_small.stored_ids)
    assert bytes(large_row["raw"]) == large
    assert large_row["subject"] == "sized"
    assert bytes(small_row["raw"]) == small
    assert small_row["subject"] == "small"


# -- recipient limit --------------------------------------------------------------------------


async def test_rcpt_past_the_recipient_limit_is_deferred_452_and_the_first_ones_are_stored(
    start_test_mx: StartMX, pool: Pool, make_tenant: MakeTenant
) -> None:
    listener = await start_test_mx(OPENSEND_MAX_RECIPIENTS="3")
    acme = await make_tenant(catch_all=True)
    recipients = [f"r{n}@{acme.name}" for n in range(1, 5)]

    sent = await smtp_send(listener.port, "a@example.net", recipients, message())

    assert [code for code, _ in sent.recipients.values()] == [250, 250, 250, 452]
    code, text = sent.recipients[recipients[3]]
    assert (code, text.split()[0]) == (
        replies.S452_TOO_MANY_RECIPIENTS.code,
        replies.S452_TOO_MANY_RECIPIENTS.enhanced,
    )
    [row] = await received_rows(pool, sent.stored_ids)
    assert row["rcpt_to"] == recipients[:3]


async def test_messages_past_the_listeners_memory_budget_are_deferred_452_4_3_1_until_it_frees(
    start_test_mx: StartMX, pool: Pool, make_tenant: MakeTenant
) -> None:
    """Many large messages at once cannot take all the process's memory: one that would pass
    OPENSEND_DATA_MEMORY is read to its end and deferred, and taken once the others are stored."""
    listener = await start_test_mx(
        OPENSEND_MAX_MESSAGE_SIZE="700000", OPENSEND_DATA_MEMORY="1000000"
    )
    assert listener.data_budget is not None
    acme = await make_tenant(catch_all=True)
    big = message_of_size(600_000)
    async with raw_session(listener.port) as first, raw_session(listener.port) as second:
        await open_transaction(first, f"x@{acme.name}")
        await first.send_raw(big[:-2])  # all but its last CRLF: in DATA, and held
        budget = listener.data_budget
        await poll_until(lambda: budget.held >= 590_000)

        await open_transaction(second, f"x@{acme.name}")
        await second.send_raw(big + b".\r\n")
        deferred = await second.read_reply(REPLY_TIMEOUT)
        assert_reply(await second.command("NOOP"), replies.S250_OK)  # the session goes on

        await first.send_raw(b"\r\n.\r\n")
        stored_first = await first.read_reply(REPLY_TIMEOUT)
        await open_transaction(second, f"x@{acme.name}")  # the client's retry
        await second.send_raw(big + b".\r\n")
        stored_retry = await second.read_reply(REPLY_TIMEOUT)

    assert_reply(deferred, replies.S452_DATA_MEMORY)
    assert len(await received_rows(pool, queued_ids(stored_first) + queued_ids(stored_retry))) == 2
    assert await stored_count(pool, acme) == 2
    assert listener.data_budget.held == 0


# -- bare CR and LF, SMTP smuggling -----------------------------------------------------------

# The end-of-data look-alikes that SMTP smuggling relies on (SEC Consult, December 2023): a
# server that took any of them for CRLF.CRLF would read what follows as a second message. By
# default (OPENSEND_BARE_NEWLINE=reject) a message holding any of them is refused whole; with
# Postfix 3.9's normalize (a bare LF taken as CRLF, a stray CR made a space) each is part of the
# one message, and what it becomes there is the second value.
FAKE_END_OF_DATA = [
    # A lone dot on a line ended by a bare LF is an ordinary line, unstuffed to an empty one.
    pytest.param(b"\n.\r\n", b"\r\n\r\n", id="bare_lf_before_dot"),
    pytest.param(b"\r\n.\n", b"\r\n\r\n", id="bare_lf_after_dot"),
    pytest.param(b"\n.\n", b"\r\n\r\n", id="bare_lf_around_dot"),
    # A CR outside CRLF ends no line: it becomes a space.
    pytest.param(b"\r.\r\n", b" .\r\n", id="bare_cr_before_dot"),
    pytest.param(b"\r\n.\r", b"\r\n ", id="bare_cr_after_dot"),
    pytest.param(b"\r.\r", b" . ", id="bare_cr_around_dot"),
]

BARE_LINE_ENDINGS = [
    pytest.param(
        b"Subject: a\nFrom: a@example.net\r\n\r\nbody\r\n",
        b"Subject: a\r\nFrom: a@example.net\r\n\r\nbody\r\n",
        id="bare_lf_in_header",
    ),
    pytest.param(
        b"Subject: a\rFrom: a@example.net\r\n\r\nbody\r\n",
        b"Subject: a From: a@example.net\r\n\r\nbody\r\n",
        id="bare_cr_in_header",
    ),
    pytest.param(
        b"Subject: a\r\n\r\nline one\nline two\r\n",
        b"Subject: a\r\n\r\nline one\r\nline two\r\n",
        id="bare_lf_in_body",
    ),
    pytest.param(
        b"Subject: a\r\n\r\nline one\n\rline two\r\n",
        b"Subject: a\r\n\r\nline one\r\n line two\r\n",
        id="lf_cr_in_body",
    ),
    pytest.param(
        b"Subject: a\r\n\r\nbody ends with a bare lf\n",
        b"Subject: a\r\n\r\nbody ends with a bare lf\r\n\r\n",
        id="bare_lf_at_end",
    ),
    pytest.param(
        b"Subject: a\n\n..dotted\nx\r\r\n",
        b"Subject: a\r\n\r\n.dotted\r\nx \r\n",
        id="script_with_lf_only",
    ),
]


@pytest.fixture(scope="module")
async def normalizing_mx(
    pool: Pool, tokens: ReplyTokens, session_tmp: Path
) -> AsyncIterator[MXListener]:
    """An MX configured as Postfix 3.9's default: bare line ends taken as CRLF."""
    settings = make_settings(session_tmp, OPENSEND_BARE_NEWLINE="normalize")
    listener = await start_mx(settings, pool, tokens)
    yield listener
    await listener.drain(grace=1.0)


def refused_for_bare_newline() -> float:
    sample = REGISTRY.get_sample_value(
        "opensend_mx_messages_refused_total", {"reason": "bare_newline"}
    )
    return sample or 0.0


async def send_smuggling_attempt(
    port: int, acme: TenantWorld, content: bytes
) -> tuple[SMTPReply, SMTPReply]:
    """The reply to DATA holding `content`, and the reply to the QUIT sent right after it."""
    async with raw_session(port) as client:
        await open_transaction(client, f"x@{acme.name}")
        await client.send_raw(content + b".\r\n")
        reply = await client.read_reply(REPLY_TIMEOUT)
        # The very next reply answers QUIT: no reply to a smuggled MAIL, RCPT or DATA is queued.
        bye = await client.command("QUIT")
    return reply, bye


def smuggling_attempt(victim: TenantWorld) -> tuple[bytes, bytes]:
    """(an innocent message's start, what a fake end of data is followed by): MAIL, RCPT and
    DATA of a second message for `victim`, which a server fooled by the fake end stores apart."""
    smuggled = (
        b"MAIL FROM:<ceo@" + victim.name.encode() + b">\r\n"
        b"RCPT TO:<accounts@" + victim.name.encode() + b">\r\n"
        b"DATA\r\n"
        b"From: ceo@" + victim.name.encode() + b"\r\nSubject: smuggled\r\n\r\n"
        b"Please pay the attached invoice.\r\n"
    )
    return b"From: a@example.net\r\nSubject: innocent\r\n\r\nhello", smuggled


@pytest.mark.parametrize(("fake_end", "becomes"), FAKE_END_OF_DATA)
async def test_a_smuggling_attempt_is_refused_whole_550_5_5_2_and_nothing_is_stored(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant, fake_end: bytes, becomes: bytes
) -> None:
    del becomes
    acme = await make_tenant(catch_all=True)
    victim = await make_tenant(catch_all=True)
    head, smuggled = smuggling_attempt(victim)

    reply, bye = await send_smuggling_attempt(mx.port, acme, head + fake_end + smuggled)

    assert_reply(reply, replies.S550_BARE_NEWLINE)
    assert bye.code == replies.S221_BYE.code, bye
    assert await stored_count(pool, acme) == 0
    assert await stored_count(pool, victim) == 0


@pytest.mark.parametrize(("fake_end", "becomes"), FAKE_END_OF_DATA)
async def test_normalized_a_smuggled_second_message_stays_inside_the_first(
    normalizing_mx: MXListener,
    pool: Pool,
    make_tenant: MakeTenant,
    fake_end: bytes,
    becomes: bytes,
) -> None:
    acme = await make_tenant(catch_all=True)
    victim = await make_tenant(catch_all=True)
    head, smuggled = smuggling_attempt(victim)

    reply, bye = await send_smuggling_attempt(normalizing_mx.port, acme, head + fake_end + smuggled)

    [row] = await received_rows(pool, queued_ids(reply))
    assert bytes(row["raw"]) == head + becomes + smuggled
    assert row["subject"] == "innocent"
    assert bye.code == replies.S221_BYE.code, bye
    assert await stored_count(pool, acme) == 1
    assert await stored_count(pool, victim) == 0


@pytest.mark.parametrize(("content", "stored"), BARE_LINE_ENDINGS)
async def test_a_message_with_bare_line_endings_is_refused_550_5_5_2_and_the_session_goes_on(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant, content: bytes, stored: bytes
) -> None:
    """RFC 5321 section 2.3.8; the refusal counts, and the client's next message is taken."""
    del stored
    acme = await make_tenant(catch_all=True)
    refused_before = refused_for_bare_newline()
    async with raw_session(mx.port) as client:
        await open_transaction(client, f"x@{acme.name}")
        await client.send_raw(content + (b"" if content.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        refused = await client.read_reply(REPLY_TIMEOUT)
        await open_transaction(client, f"x@{acme.name}")
        await client.send_raw(b"Subject: fixed\r\n\r\nCRLF only\r\n.\r\n")
        accepted = await client.read_reply(REPLY_TIMEOUT)

    assert_reply(refused, replies.S550_BARE_NEWLINE)
    assert refused_for_bare_newline() == refused_before + 1
    [row] = await received_rows(pool, queued_ids(accepted))
    assert row["subject"] == "fixed"
    assert await stored_count(pool, acme) == 1


@pytest.mark.parametrize(("content", "stored"), BARE_LINE_ENDINGS)
async def test_normalized_a_message_with_bare_line_endings_is_stored_with_crlf_line_endings(
    normalizing_mx: MXListener, pool: Pool, make_tenant: MakeTenant, content: bytes, stored: bytes
) -> None:
    """A script writing \\n is sloppy but harmless: Postfix 3.9 takes it (normalize)."""
    acme = await make_tenant(catch_all=True)
    async with raw_session(normalizing_mx.port) as client:
        await open_transaction(client, f"x@{acme.name}")
        await client.send_raw(content + (b"" if content.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        reply = await client.read_reply(REPLY_TIMEOUT)
        assert_reply(await client.command("NOOP"), replies.S250_OK)

    [row] = await received_rows(pool, queued_ids(reply))
    assert bytes(row["raw"]) == stored


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"Subject: a\r\n\r\nbare\nshort\r\n", "bare", id="bare_alone"),
        pytest.param(
            b"Subject: a\r\n\r\nearly bare\n" + b"x" * 20_000 + b"\r\n", "size", id="bare_first"
        ),
        pytest.param(
            b"Subject: a\r\n\r\n" + b"x" * 20_000 + b"\r\nlate bare\nend\r\n",
            "size",
            id="size_first",
        ),
    ],
)
async def test_too_big_is_the_answer_whatever_else_and_every_refusal_is_logged(
    start_test_mx: StartMX,
    make_tenant: MakeTenant,
    caplog: pytest.LogCaptureFixture,
    content: bytes,
    expected: str,
) -> None:
    listener = await start_test_mx(OPENSEND_MAX_MESSAGE_SIZE="10000")
    acme = await make_tenant(catch_all=True)
    with caplog.at_level("INFO", logger="mta.smtp.protocol"):
        async with raw_session(listener.port) as client:
            await open_transaction(client, f"x@{acme.name}")
            await client.send_raw(content + b".\r\n")
            reply = await client.read_reply(REPLY_TIMEOUT)

    if expected == "bare":
        assert_reply(reply, replies.S550_BARE_NEWLINE)
    else:
        assert_reply(reply, replies.S552_TOO_BIG)
    [record] = [r for r in caplog.records if r.getMessage() == "message refused after DATA"]
    reason = "bare_newline" if expected == "bare" else "size"
    assert (record.reason, record.peer, record.mail_from) == (  # type: ignore[attr-defined]
        reason,
        HOST,
        "customer@example.net",
    )


@pytest.mark.parametrize("bare_newline", ["reject", "normalize"])
async def test_a_dot_after_a_bare_lf_does_not_end_data(
    start_test_mx: StartMX, pool: Pool, make_tenant: MakeTenant, bare_newline: str
) -> None:
    """Only CRLF.CRLF ends DATA: the NOOP after LF.LF is message content, never a command."""
    server = await start_test_mx(OPENSEND_BARE_NEWLINE=bare_newline)
    acme = await make_tenant(catch_all=True)
    async with raw_session(server.port) as client:
        await open_transaction(client, f"x@{acme.name}")
        await client.send_raw(b"Subject: a\r\n\r\nbody\n.\nNOOP\r\n.\r\nQUIT\r\n")
        reply = await client.read_reply(REPLY_TIMEOUT)
        bye = await client.read_reply(REPLY_TIMEOUT)

    assert bye.code == replies.S221_BYE.code, bye
    if bare_newline == "reject":
        assert_reply(reply, replies.S550_BARE_NEWLINE)
        assert await stored_count(pool, acme) == 0
    else:
        [row] = await received_rows(pool, queued_ids(reply))
        assert bytes(row["raw"]) == b"Subject: a\r\n\r\nbody\r\n\r\nNOOP\r\n"


# -- loop detection ---------------------------------------------------------------------------


def with_received_headers(count: int) -> bytes:
    trace = b"".join(
        f"Received: from hop{n}.example.net by hop{n + 1}.example.net; "
        f"Mon, 1 Jan 2024 00:00:{n:02d} +0000\r\n".encode()
        for n in range(count)
    )
    return trace + message(subject=f"{count} hops")


async def test_message_with_received_headers_at_the_limit_is_accepted(
    start_test_mx: StartMX, pool: Pool, make_tenant: MakeTenant
) -> None:
    listener = await start_test_mx(OPENSEND_MAX_RECEIVED_HEADERS="5")
    acme = await make_tenant(catch_all=True)
    sent = await smtp_send(
        listener.port, "a@example.net", [f"x@{acme.name}"], with_received_headers(5)
    )
    [row] = await received_rows(pool, sent.stored_ids)
    assert row["subject"] == "5 hops"


async def test_message_with_more_received_headers_than_the_limit_is_refused_554_as_a_loop(
    start_test_mx: StartMX, pool: Pool, make_tenant: MakeTenant
) -> None:
    listener = await start_test_mx(OPENSEND_MAX_RECEIVED_HEADERS="5")
    acme = await make_tenant(catch_all=True)
    sent = await smtp_send(
        listener.port, "a@example.net", [f"x@{acme.name}"], with_received_headers(6)
    )
    assert sent.data is not None
    code, text = sent.data
    assert (code, text.split()[0]) == (replies.S554_LOOP.code, replies.S554_LOOP.enhanced)
    assert await stored_count(pool, acme) == 0


# -- connection cap and idle timeout ----------------------------------------------------------


async def test_connection_past_the_cap_gets_421_and_is_closed_until_a_slot_frees(
    start_test_mx: StartMX,
) -> None:
    listener = await start_test_mx(OPENSEND_MAX_CONNECTIONS="2")
    opened: list[RawSMTP] = []
    try:
        for _ in range(2):
            client, greeting = await RawSMTP.connect(HOST, listener.port)
            opened.append(client)
            assert greeting.code == replies.S220_READY.code

        # Past the cap, every attempt is turned away, and a turned-away one takes no slot.
        for _ in range(2):
            turned_away, refused = await RawSMTP.connect(HOST, listener.port)
            opened.append(turned_away)
            assert_reply(refused, replies.S421_TOO_MANY_CONNECTIONS)
            assert await closed_by_server(turned_away)

        first = opened[0]
        assert (await first.command("QUIT")).code == replies.S221_BYE.code
        assert await closed_by_server(first)

        # The server let go of the slot before it closed the socket, so no wait is needed here.
        newcomer, greeting = await RawSMTP.connect(HOST, listener.port)
        opened.append(newcomer)
        assert greeting.code == replies.S220_READY.code
        assert (await newcomer.command(f"EHLO {CLIENT_NAME}")).code == 250
    finally:
        for client in opened:
            await client.close()


async def test_idle_connection_gets_421_4_4_2_and_is_closed(start_test_mx: StartMX) -> None:
    listener = await start_test_mx(OPENSEND_COMMAND_TIMEOUT="1")
    async with raw_session(listener.port, ehlo=False) as client:
        # Say nothing after the greeting.
        reply = await client.read_reply(REPLY_TIMEOUT)
        assert_reply(reply, replies.S421_TIMEOUT)
        assert await closed_by_server(client)


# -- PIPELINING -------------------------------------------------------------------------------


async def test_pipelined_envelope_gets_its_replies_in_order_and_stores_the_accepted_recipients(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")
    await acme.route(f"sales@{acme.name}")
    # RFC 2920 section 3.1: EHLO ends a group of its own; MAIL through DATA is the next group.
    group = (
        "MAIL FROM:<customer@example.net>\r\n"
        f"RCPT TO:<support@{acme.name}>\r\n"
        f"RCPT TO:<nobody@{acme.name}>\r\n"
        f"RCPT TO:<sales@{acme.name}>\r\n"
        "DATA\r\n"
    ).encode()

    async with raw_session(mx.port) as client:
        await client.send_raw(group)
        answers = [await client.read_reply(REPLY_TIMEOUT) for _ in range(5)]
        # The end of data and the next command may share a write too.
        await client.send_raw(message(subject="Pipelined") + b".\r\nQUIT\r\n")
        stored = await client.read_reply(REPLY_TIMEOUT)
        bye = await client.read_reply(REPLY_TIMEOUT)

    expected = [
        replies.S250_SENDER_OK,
        replies.S250_RECIPIENT_OK,
        replies.S550_NO_SUCH_USER,
        replies.S250_RECIPIENT_OK,
    ]
    for answer, reply in zip(answers, expected, strict=False):
        assert_reply(answer, reply)
    assert answers[4].code == replies.S354_DATA.code
    assert bye.code == replies.S221_BYE.code
    [row] = await received_rows(pool, queued_ids(stored))
    assert row["subject"] == "Pipelined"
    assert row["rcpt_to"] == [f"support@{acme.name}", f"sales@{acme.name}"]


# -- SMTPUTF8 and 8BITMIME --------------------------------------------------------------------


async def test_smtputf8_addresses_and_8bit_body_are_accepted_and_stored_unchanged(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    sender = "jörg@bücher.example"
    rcpt = f"ñandú@{acme.name}"
    content = (
        "From: Jörg <jörg@bücher.example>\r\n"
        f"To: {rcpt}\r\n"
        "Subject: Grüße\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        "Grüße aus Köln, 10 € pro Stück 📨\r\n"
    ).encode()

    client = aiosmtplib.SMTP(hostname=HOST, port=mx.port, start_tls=False, timeout=30)
    await client.connect()
    try:
        await client.ehlo(hostname=CLIENT_NAME)
        errors, response = await client.sendmail(
            sender, [rcpt], content, mail_options=["SMTPUTF8", "BODY=8BITMIME"]
        )
    finally:
        await client.quit()

    assert errors == {}
    ids = [UUID(part) for part in response.split("queued as ", 1)[1].split()]
    [row] = await received_rows(pool, ids)
    assert bytes(row["raw"]) == content
    assert row["mail_from"] == sender
    assert row["rcpt_to"] == [rcpt]
    assert row["text_body"].strip() == "Grüße aus Köln, 10 € pro Stück 📨"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        pytest.param("MAIL FROM:<zoë@bücher.example>", replies.S553_NON_ASCII_ADDRESS, id="mail"),
        pytest.param("RCPT TO:<zoë@{domain}>", replies.S553_NON_ASCII_ADDRESS, id="rcpt"),
        # Bytes that are not UTF-8 make no address, SMTPUTF8 or not (RFC 6531 section 3.3).
        pytest.param(
            "MAIL FROM:<z\udcffe@example.net> SMTPUTF8", replies.S501_SYNTAX_SENDER, id="latin1"
        ),
    ],
)
async def test_non_ascii_address_without_smtputf8_is_refused_553_5_6_7(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant, command: str, expected: Reply
) -> None:
    acme = await make_tenant(catch_all=True)
    async with raw_session(mx.port) as client:
        if command.startswith("RCPT"):
            assert_reply(await client.command("MAIL FROM:<a@example.net>"), replies.S250_SENDER_OK)
        line = command.replace("{domain}", acme.name).encode("utf-8", "surrogateescape")
        await client.send_raw(line + b"\r\n")
        reply = await client.read_reply(REPLY_TIMEOUT)
        # The refusal leaves the session usable: the same address with SMTPUTF8 goes through.
        assert_reply(await client.command("RSET"), replies.S250_OK)
        assert_reply(
            await client.command("MAIL FROM:<zoë@bücher.example> SMTPUTF8"),
            replies.S250_SENDER_OK,
        )
        assert_reply(await client.command(f"RCPT TO:<zoë@{acme.name}>"), replies.S250_RECIPIENT_OK)

    assert (reply.code, reply.enhanced, reply.text) == (
        expected.code,
        expected.enhanced,
        f"{expected.enhanced} {expected.text}",
    )
    assert await stored_count(pool, acme) == 0


# -- STARTTLS ---------------------------------------------------------------------------------


@pytest.fixture
async def tls_mx(start_test_mx: StartMX, tmp_path: Path) -> tuple[MXListener, ServerCertificate]:
    directory = tmp_path / "tls"
    directory.mkdir()
    certificate = server_certificate(directory, MX_NAME)
    listener = await start_test_mx(
        OPENSEND_TLS_CERT=str(certificate.cert), OPENSEND_TLS_KEY=str(certificate.key)
    )
    return listener, certificate


async def test_starttls_is_advertised_with_a_certificate_and_the_message_is_stored_as_tls(
    tls_mx: tuple[MXListener, ServerCertificate], pool: Pool, make_tenant: MakeTenant
) -> None:
    listener, certificate = tls_mx
    acme = await make_tenant(catch_all=True)
    rcpt = f"x@{acme.name}"

    client = aiosmtplib.SMTP(hostname=HOST, port=listener.port, start_tls=False, timeout=30)
    await client.connect()
    try:
        await client.ehlo(hostname=CLIENT_NAME)
        offered_in_clear = client.supports_extension("starttls")
        await client.starttls(server_hostname=MX_NAME, tls_context=certificate.client_context())
        negotiated = client.get_transport_info("ssl_object").version()
        await client.ehlo(hostname=CLIENT_NAME)
        offered_in_tls = client.supports_extension("starttls")
        _errors, response = await client.sendmail("a@example.net", [rcpt], message(to=rcpt))
    finally:
        await client.quit()

    assert offered_in_clear
    assert not offered_in_tls  # RFC 3207 section 4.2: not offered again once in TLS
    ids = [UUID(part) for part in response.split("queued as ", 1)[1].split()]
    [row] = await received_rows(pool, ids)
    assert row["tls"] is True
    assert negotiated in ("TLSv1.2", "TLSv1.3")
    assert row["tls_version"] == negotiated
    assert f"with ESMTPS ({negotiated})" in row["received_header"]  # RFC 3848


async def test_quit_ends_the_session_and_commands_pipelined_after_it_are_not_read(
    mx: MXListener,
) -> None:
    """RFC 5321 section 4.1.1.10: the server sends 221 and closes; a MAIL sent after QUIT in
    the same write gets no reply."""
    async with raw_session(mx.port) as client:
        await client.send_raw(b"QUIT\r\nMAIL FROM:<after@example.net>\r\n")
        bye = await client.read_reply(REPLY_TIMEOUT)
        assert_reply(bye, replies.S221_BYE)
        assert await closed_by_server(client)


async def test_commands_pipelined_after_starttls_in_the_clear_are_discarded(
    tls_mx: tuple[MXListener, ServerCertificate],
) -> None:
    listener, certificate = tls_mx
    async with raw_session(listener.port) as client:
        # RFC 3207 section 4.2 (CVE-2011-0411): nothing sent in the clear after STARTTLS counts.
        await client.send_raw(b"STARTTLS\r\nNOOP\r\nMAIL FROM:<injected@example.net>\r\n")
        ready = await client.read_reply(REPLY_TIMEOUT)
        assert ready.code == 220, ready
        await client.writer.start_tls(certificate.client_context(), server_hostname=MX_NAME)

        # The first reply in TLS answers the first command sent in TLS, and the session is new.
        mail_before_ehlo = await client.command("MAIL FROM:<a@example.net>")
        ehlo = await client.command(f"EHLO {CLIENT_NAME}")

    assert mail_before_ehlo.code == replies.S503_BAD_SEQUENCE.code, mail_before_ehlo
    assert ehlo.code == 250
    assert ehlo.lines[0] == MX_NAME
    assert "STARTTLS" not in ehlo.lines[1:]


# -- relay probes -----------------------------------------------------------------------------

# What open-relay scanners send to an MX: every form names a domain other than ours, directly or
# through an old routing convention, and every one must be refused even with a catch-all.
RELAY_PROBES = [
    pytest.param("user@other.example", id="foreign_domain"),
    pytest.param("user@other.example.", id="foreign_domain_trailing_dot"),
    pytest.param('"user@other.example"@{domain}', id="quoted_local_part"),
    pytest.param("user%other.example@{domain}", id="percent_hack"),
    pytest.param("@{domain}:user@other.example", id="source_route"),
    pytest.param("user!other.example@{domain}", id="bang_path_user_first"),
    pytest.param("other.example!user@{domain}", id="bang_path_host_first"),
    pytest.param("user@other.example@{domain}", id="two_at_signs"),
    pytest.param("user@[192.0.2.1]", id="address_literal"),
]


@pytest.mark.parametrize("probe", RELAY_PROBES)
async def test_relay_probe_is_refused_5xx_even_with_a_catch_all(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant, probe: str
) -> None:
    acme = await make_tenant(catch_all=True)
    address = probe.format(domain=acme.name)

    async with raw_session(mx.port) as client:
        assert_reply(await client.command("MAIL FROM:<a@example.net>"), replies.S250_SENDER_OK)
        refused = await client.command(f"RCPT TO:<{address}>")
        data = await client.command("DATA")
        # The catch-all itself works: an ordinary address at the domain is accepted.
        assert_reply(await client.command("RSET"), replies.S250_OK)
        assert_reply(await client.command("MAIL FROM:<a@example.net>"), replies.S250_SENDER_OK)
        assert_reply(await client.command(f"RCPT TO:<user@{acme.name}>"), replies.S250_RECIPIENT_OK)

    assert 500 <= refused.code < 600, refused
    assert refused.enhanced is not None and refused.enhanced.startswith("5."), refused
    assert_reply(data, replies.S554_NO_VALID_RECIPIENTS)
    assert await stored_count(pool, acme) == 0


async def test_a_valid_api_key_buys_no_relaying_on_port_25_even_inside_tls(
    tls_mx: tuple[MXListener, ServerCertificate], pool: Pool, make_tenant: MakeTenant
) -> None:
    # Port 25 has no authenticated mode at all: a tenant's own key, offered inside TLS, is
    # refused, and every relay form stays refused after it.
    listener, certificate = tls_mx
    acme = await make_tenant(catch_all=True)
    key = await acme.api_key()
    plain = base64.b64encode(f"\0{acme.name}\0{key}".encode()).decode()
    async with raw_session(listener.port) as client:
        assert (await client.command("STARTTLS")).code == 220
        await client.writer.start_tls(certificate.client_context(), server_hostname=MX_NAME)
        ehlo = await client.command(f"EHLO {CLIENT_NAME}")
        auth = await client.command(f"AUTH PLAIN {plain}")
        assert_reply(await client.command("MAIL FROM:<a@example.net>"), replies.S250_SENDER_OK)
        probes = []
        for probe in RELAY_PROBES:
            address = str(probe.values[0]).format(domain=acme.name)
            probes.append((address, await client.command(f"RCPT TO:<{address}>")))

    assert not any(line.upper().startswith("AUTH") for line in ehlo.lines[1:])
    assert_reply(auth, replies.S502_AUTH_NOT_HERE)
    refused = [(address, reply.code, reply.enhanced) for address, reply in probes]
    assert all(
        500 <= code < 600 and str(enhanced).startswith("5.") for _, code, enhanced in refused
    )
    assert await stored_count(pool, acme) == 0


# The open-relay probes, sent by swaks as a scanner sends them (one session each).
SWAKS_PROBES = [
    pytest.param("user@other.example", id="foreign_domain"),
    pytest.param('"user@other.example"@{domain}', id="quoted_local_part"),
    pytest.param("user%other.example@{domain}", id="percent_hack"),
    pytest.param("@{domain}:user@other.example", id="source_route"),
]


@pytest.mark.parametrize("probe", SWAKS_PROBES)
async def test_swaks_relay_probe_is_refused_at_rcpt(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant, probe: str
) -> None:
    acme = await make_tenant(catch_all=True)
    process = await asyncio.create_subprocess_exec(
        system_tool("swaks"),
        "--server",
        f"{HOST}:{mx.port}",
        "--from",
        "probe@scanner.example",
        "--to",
        probe.format(domain=acme.name),
        "--timeout",
        "30",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    text = output.decode("utf-8", "replace")

    assert process.returncode != 0, text
    rcpt_reply = text.split("RCPT TO:", 1)[1].splitlines()[1]
    assert re.search(r"<\*\* +5\d\d 5\.", rcpt_reply), text
    assert "354" not in text  # never got as far as DATA
    assert await stored_count(pool, acme) == 0


# -- every reply's two codes agree ------------------------------------------------------------

# A session of good and bad commands, each with the basic code it must get. Every reply after
# EHLO, 354 aside (RFC 2034 section 3), must carry an enhanced code of the same class.
SESSION: list[tuple[bytes, int]] = [
    (b"NOOP", 250),
    (b"HELP", 214),
    (b"HELP MAIL", 214),
    (b"HELP FROB", 214),
    (b"VRFY <someone@example.net>", 252),
    (b"VRFY", 501),
    (b"EXPN staff", 502),
    (b"FROB", 500),
    (b"", 500),
    (b"NOOP " + b"x" * 600, 500),
    (b"NOOP " + b"x" * 3000, 500),
    (b"STARTTLS", 454),
    (b"AUTH PLAIN", 502),
    (b"RCPT TO:<x@{domain}>", 503),
    (b"DATA", 503),  # no MAIL yet: a sequence error (RFC 5321 section 4.1.4)
    (b"MAIL", 501),
    (b"MAIL FROM <a@example.net>", 501),
    (b"MAIL FROM:<a@example.net> SIZE=99999999999", 552),
    (b"MAIL FROM:<a@example.net> FROB=1", 555),
    (b"MAIL FROM:<a@example.net> BODY=9BIT", 501),
    (b"MAIL FROM:<a@example.net>", 250),
    (b"MAIL FROM:<b@example.net>", 503),
    (b"DATA", 554),
    (b"RCPT TO:", 501),
    (b"RCPT TO:<x@other.example>", 550),
    (b'RCPT TO:<"x@other.example"@{domain}>', 501),
    (b"RCPT TO:<x@{domain}> NOTIFY=NEVER", 555),
    (b"RCPT TO:<x@{domain}>", 250),
    (b"DATA now", 501),
    (b"DATA", 354),
    (b"Subject: one\r\n\r\nfine\r\n.", 250),
    (b"MAIL FROM:<a@example.net>", 250),
    (b"RCPT TO:<x@{domain}>", 250),
    (b"DATA", 354),
    (b"Subject: two\r\n\r\nbare\nlf\r\n.", 550),
    (b"MAIL FROM:<a@example.net>", 250),
    (b"RCPT TO:<x@{domain}>", 250),
    (b"DATA", 354),
    (b"Subject: three\r\n\r\nfine\r\n.", 250),
    (b"RSET now", 501),
    (b"RSET", 250),
    (b"HELO client.example.net", 250),
    (b"QUIT", 221),
]


async def test_every_reply_after_ehlo_has_an_enhanced_code_of_the_same_class(
    mx: MXListener, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    seen: list[tuple[bytes, SMTPReply]] = []
    async with raw_session(mx.port) as client:
        for line, _code in SESSION:
            await client.send_raw(line.replace(b"{domain}", acme.name.encode()) + b"\r\n")
            seen.append((line, await client.read_reply(REPLY_TIMEOUT)))

    assert [(line, reply.code) for line, reply in seen] == [(line, code) for line, code in SESSION]
    disagreeing = [
        (line, reply.lines[-1])
        for line, reply in seen
        if reply.code != replies.S354_DATA.code
        and (reply.enhanced is None or reply.enhanced[0] != str(reply.code)[0])
    ]
    assert disagreeing == []


# -- graceful drain ---------------------------------------------------------------------------


async def test_drain_lets_the_message_in_data_finish_and_turns_new_connections_away(
    start_test_mx: StartMX, pool: Pool, make_tenant: MakeTenant
) -> None:
    listener = await start_test_mx()
    port = listener.port  # the listening socket is gone once the drain begins
    acme = await make_tenant(catch_all=True)

    async with raw_session(port) as client:
        await open_transaction(client, f"x@{acme.name}")
        # The server marks the transaction as in DATA before the client can read the 354.
        drain = asyncio.create_task(listener.drain(grace=REPLY_TIMEOUT))
        for _ in range(100):
            if listener.gate.draining:
                break
            await asyncio.sleep(0)
        assert listener.gate.draining

        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(HOST, port)

        await client.send_raw(message(subject="In flight") + b".\r\n")
        stored = await client.read_reply(REPLY_TIMEOUT)
        goodbye = await client.read_reply(REPLY_TIMEOUT)
        assert await closed_by_server(client)
    await asyncio.wait_for(drain, REPLY_TIMEOUT)

    [row] = await received_rows(pool, queued_ids(stored))
    assert row["subject"] == "In flight"
    assert_reply(goodbye, replies.S421_SHUTTING_DOWN)


async def test_directory_harvest_is_cut_off_after_twenty_refused_recipients(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    await acme.route(f"real@{acme.name}")
    client, greeting = await RawSMTP.connect("127.0.0.1", mx.port)
    try:
        assert greeting.code == 220
        await client.command("EHLO harvester.example")
        await client.command("MAIL FROM:<h@example.net>")
        for n in range(20):
            reply = await client.command(f"RCPT TO:<guess{n}@{acme.name}>")
            assert reply.code == replies.S550_NO_SUCH_USER.code
        reply = await client.command(f"RCPT TO:<guess20@{acme.name}>")
        assert (reply.code, reply.enhanced) == (
            replies.S421_TOO_MANY_ERRORS.code,
            replies.S421_TOO_MANY_ERRORS.enhanced,
        )
        assert await client.reader.read() == b""  # the server closed the connection
    finally:
        await client.close()


async def test_the_same_recipient_twice_is_stored_once(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    await acme.route(f"support@{acme.name}")
    await acme.route(f"help@{acme.name}", to=f"support@{acme.name}")
    sent = await smtp_send(
        mx.port,
        "c@example.net",
        [f"support@{acme.name}", f"SUPPORT@{acme.name}", f"help@{acme.name}"],
        message(),
    )
    [row] = await received_rows(pool, sent.stored_ids)
    assert row["rcpt_to"] == [f"support@{acme.name}"]


class _DataHookFails:
    """A handler of ours whose DATA hook raises: the one part faked, to reach the engine's path."""

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        raise RuntimeError("a bug in a DATA hook")

    async def handle_exception(self, error: Exception) -> str:
        return str(replies.S451_TEMP_STORAGE)


@contextlib.asynccontextmanager
async def engine_serving(handler: object) -> AsyncIterator[int]:
    """The protocol engine on loopback with `handler` (one of these tests' own); its port."""
    loop = asyncio.get_running_loop()
    protocols: set[MXProtocol] = set()
    server = await loop.create_server(
        lambda: MXProtocol(
            handler,
            gate=ConnectionGate(10),
            registry=protocols,
            data_timeout=30.0,
            data_size_limit=1_000_000,
            data_budget=DataBudget(10_000_000),
            bare_newline=BareNewline.REJECT,
            hostname="mx.opensend.test",
            ident="OpenSend",
            tls_context=None,
            timeout=30.0,
            loop=loop,
        ),
        host="127.0.0.1",
        port=0,
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_after_a_data_hook_fails_451_the_next_mail_starts_a_new_transaction() -> None:
    """Not "503 nested MAIL": the failed transaction is over, as after any DATA reply."""
    async with engine_serving(_DataHookFails()) as port:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30, start_tls=False)
        try:
            await client.connect()
            await client.ehlo(hostname="client.example.net")
            for _ in range(2):
                assert (await client.mail("a@example.net")).code == 250
                assert (await client.rcpt("x@example.com")).code == 250
                with pytest.raises(aiosmtplib.SMTPDataError) as refused:
                    await client.data(message())
                assert refused.value.code == replies.S451_TEMP_STORAGE.code
            await client.quit()
        finally:
            client.close()


class _RcptHookFails:
    """A RCPT hook that raises `error`, and an exception hook that raises too when told."""

    def __init__(self, error: Exception, *, exception_hook_fails: bool = False) -> None:
        self.error = error
        self.exception_hook_fails = exception_hook_fails

    async def handle_RCPT(
        self, server: object, session: object, envelope: object, address: str, options: object
    ) -> str:
        raise self.error

    async def handle_exception(self, error: Exception) -> str:
        if self.exception_hook_fails:
            raise RuntimeError("a bug in the exception hook")
        return str(replies.S451_TEMP_STORAGE)


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        # A service the hook uses refused it: the client is still here, and is answered.
        pytest.param(
            _RcptHookFails(ConnectionRefusedError("a service refused")),
            replies.S451_TEMP_STORAGE,
            id="connection_refused_inside_the_hook",
        ),
        pytest.param(
            _RcptHookFails(RuntimeError("a bug"), exception_hook_fails=True),
            replies.S451_LOCAL_ERROR,
            id="the_exception_hook_raises_too",
        ),
    ],
)
async def test_a_command_whose_hook_raises_is_answered_451_and_the_session_goes_on(
    handler: _RcptHookFails, expected: Reply
) -> None:
    async with engine_serving(handler) as port, raw_session(port) as client:
        assert (await client.command("MAIL FROM:<a@example.net>")).code == 250
        assert_reply(await client.command("RCPT TO:<x@example.com>"), expected)
        assert_reply(await client.command("NOOP"), replies.S250_OK)


@pytest.mark.parametrize(
    "line",
    [
        # Within the reader's line limit, past RFC 5321 section 4.5.3.1.4's 512 octets.
        pytest.param(b"NOOP " + b"x" * 700, id="past_512_octets"),
        # Past the reader's own limit: dropped as it comes, in several reads.
        pytest.param(b"NOOP " + b"x" * 300_000, id="far_past_the_reader_limit"),
        pytest.param(b"MAIL FROM:<" + b"a" * 2000 + b"@example.net>", id="mail_past_its_limit"),
    ],
)
async def test_an_over_long_command_line_is_refused_500_5_5_2_and_the_session_goes_on(
    mx: MXListener, line: bytes
) -> None:
    async with raw_session(mx.port) as client:
        await client.send_raw(line + b"\r\n")
        assert_reply(await client.read_reply(), replies.S500_COMMAND_TOO_LONG)
        assert_reply(await client.command("NOOP"), replies.S250_OK)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc3\x89HLO client.example", id="verb_not_ascii"),
        pytest.param(b" NOOP", id="leading_space"),
    ],
)
async def test_an_unreadable_command_line_is_refused_500_5_5_2_and_the_session_goes_on(
    mx: MXListener, line: bytes
) -> None:
    async with raw_session(mx.port) as client:
        await client.send_raw(line + b"\r\n")
        assert_reply(await client.read_reply(), replies.S500_SYNTAX_ERROR)
        assert_reply(await client.command("NOOP"), replies.S250_OK)


async def test_the_fifth_unknown_command_closes_the_session_with_502_5_5_1(
    mx: MXListener,
) -> None:
    async with raw_session(mx.port) as client:
        for _ in range(4):
            assert_reply(await client.command("XYZZY"), replies.S500_UNKNOWN_COMMAND)
        await client.send_raw(b"XYZZY\r\nNOOP\r\n")  # what follows the fifth is not read
        assert_reply(await client.read_reply(), replies.S502_TOO_MANY_UNKNOWN)
        assert await closed_by_server(client)


async def test_commands_in_lower_case_with_arguments_in_utf8_are_read(mx: MXListener) -> None:
    async with raw_session(mx.port) as client:
        assert_reply(await client.command("noop"), replies.S250_OK)
        assert (await client.command("vrfy <jürgen@example.net>")).code == 252


async def test_a_client_that_hangs_up_mid_line_ends_its_session_without_a_fault(
    mx: MXListener, caplog: pytest.LogCaptureFixture
) -> None:
    async with raw_session(mx.port) as client:
        await client.send_raw(b"MAIL FROM:<half")
    await poll_until(lambda: not mx.protocols)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
