"""Property-based fuzz of the real SMTP listeners: the MX (port 25) and submission (587, 465).

Hypothesis writes sessions no client would: random command sequences, random bytes, over-long
lines, pipelined garbage, DATA with smuggling look-alikes, and sessions cut mid-command or
mid-DATA. Whatever it sends, every session ends, every reply is a well-formed RFC 5321 reply
(section 4.2) from the catalogue with basic and enhanced codes of one class, no exception
escapes to aiosmtpd, and the next good session is served.

Run alone: .venv/bin/python -m pytest -q tests/mta/smtp/test_fuzz.py
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mta.listeners import MXListener
from policy import replies
from tests.conftest import SUBMISSION_HOST, MakeTenant, StartSubmission

HOST = "127.0.0.1"
SERVER_NAME = "mx.opensend.test"  # the hostname conftest gives every test server
# Bounds, not expectations: a session that is still open after this long without a byte has
# hung, and the test fails instead of waiting for ever.
SOCKET_TIMEOUT = 30.0
# Examples per listener: a few ms each on loopback; the four fuzz tests take some 10 to 30 s
# on two busy cores.
EXAMPLES = 150

# -- what a reply may be -------------------------------------------------------------------------

_LINE = re.compile(rb"(\d{3})([ -])([\t\x20-\x7e]*)")
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")


def _pattern(text: str) -> re.Pattern[str]:
    """A catalogue text as a pattern: each `{placeholder}` stands for any non-empty text."""
    parts = re.split(r"\{[a-z_]+\}", text)
    return re.compile(".+".join(re.escape(part) for part in parts))


CATALOGUE = [(reply, _pattern(reply.text)) for reply in replies.CATALOGUE.values()]

# Replies that carry protocol data instead of a status text, so no enhanced code and no
# catalogue text: the greeting (RFC 5321 section 4.3.1 puts the server's name first), the EHLO
# keyword list (section 4.1.1.1) and an AUTH challenge (RFC 4954 section 4).
GREETING = re.compile(rf"{re.escape(SERVER_NAME)} ESMTP OpenSend")
EHLO_KEYWORD = re.compile(r"[A-Z0-9][A-Z0-9-]*(?: [\x21-\x7e]+)*")
AUTH_CHALLENGE = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def reply_problem(code: int, lines: list[str]) -> str | None:
    """Why a complete reply is not one this server may send, or None."""
    if code == 220 and len(lines) == 1 and GREETING.fullmatch(lines[0]):
        return None
    if code == 250 and len(lines) > 1:  # the EHLO reply
        if lines[0] != SERVER_NAME or not all(EHLO_KEYWORD.fullmatch(line) for line in lines[1:]):
            return "malformed EHLO reply"
        return None
    if code == 334 and len(lines) == 1 and AUTH_CHALLENGE.fullmatch(lines[0]):
        return None
    if len(lines) != 1:
        return "unexpected multiline reply"
    enhanced, _, text = lines[0].partition(" ")
    if code == replies.S354_DATA.code:  # RFC 2034 section 3: no enhanced code on 354
        enhanced, text = "", lines[0]
    elif not _ENHANCED.fullmatch(enhanced) or enhanced[0] != str(code)[0]:
        return "enhanced code missing or of another class"
    for reply, pattern in CATALOGUE:
        if (reply.code, reply.enhanced) == (code, enhanced) and pattern.fullmatch(text):
            return None
    return "not in the catalogue"


def replies_in(stream: bytes, *, complete: bool) -> Iterator[tuple[int, list[str], str | None]]:
    """Each reply in what the server wrote, with its problem; `complete` when the server closed
    cleanly, so a final line without CRLF is a problem rather than a cut."""
    lines = stream.split(b"\r\n")
    tail = lines.pop()
    if tail and complete:
        yield 0, [tail.decode("latin-1")], "line without CRLF"
    current: list[str] = []
    code = 0
    for raw in lines:
        found = _LINE.fullmatch(raw)
        if found is None:
            yield 0, [raw.decode("latin-1")], "not a reply line (RFC 5321 section 4.2)"
            current = []
            continue
        line_code = int(found.group(1))
        if current and line_code != code:
            yield code, current, "multiline reply changes its code"
            current = []
        code = line_code
        current.append(found.group(3).decode("ascii"))
        if found.group(2) == b" ":
            yield code, current, reply_problem(code, current)
            current = []
    if current and complete:
        yield code, current, "multiline reply never ended"


# -- what a client may send ----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    port: int
    tls: ssl.SSLContext | None  # TLS from the first byte (port 465)
    domain: str  # a domain the server takes mail for (the MX) or sends from (submission)
    login: bytes | None  # EHLO and AUTH sent first, so the fuzz reaches MAIL, RCPT and DATA


ENDINGS = st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r", b""])
VERBS = st.sampled_from(
    [
        "EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP",
        "STARTTLS", "AUTH", "BDAT", "ETRN", "XCLIENT", "mail", "Rcpt",
    ]
)  # fmt: skip


def arguments(domain: str) -> st.SearchStrategy[bytes]:
    useful = [
        "client.example.net",
        "FROM:<a@example.net>",
        f"FROM:<support@{domain}>",
        "FROM:<>",
        "FROM:<a@example.net> SMTPUTF8",
        "FROM:<a@example.net> SIZE=1000 BODY=8BITMIME",
        "FROM:<a@example.net> SIZE=99999999999",
        "FROM:<zoë@bücher.example>",
        "FROM:<@route:a@example.net>",
        f"TO:<x@{domain}>",
        f"TO:<zoë@{domain}>",
        f"TO:<x@{domain}> NOTIFY=NEVER",
        'TO:<"x@other.example"@' + domain + ">",
        "TO:<bob@example.net>",
        "TO:<postmaster>",
        "PLAIN",
        "LOGIN",
        "PLAIN " + base64.b64encode(b"\0user\0wrong").decode(),
        "CRAM-MD5",
    ]
    return st.one_of(
        st.sampled_from(useful).map(str.encode),
        st.text(max_size=40).map(lambda text: text.encode("utf-8", "surrogatepass")),
        st.binary(max_size=40),
    )


def commands(domain: str) -> st.SearchStrategy[bytes]:
    verb = VERBS.map(str.encode)
    with_argument = st.tuples(verb, arguments(domain), ENDINGS).map(
        lambda parts: parts[0] + b" " + parts[1] + parts[2]
    )
    alone = st.tuples(verb, ENDINGS).map(lambda parts: parts[0] + parts[1])
    return st.one_of(with_argument, alone)


def body_lines(domain: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from(
            [
                f"From: support@{domain}\r\n".encode(),
                b"Subject: fuzz\r\n",
                b"From: a@example.net\r\n",
                b"\r\n",
                b".\r\n.",  # a lone dot is the end of the message
                b"..\r\n",
                b"\n.\n",
                b"\r\n.\n",
                b"\n.\r\n",
                b"\r.\r",
                b"MAIL FROM:<ceo@example.com>\r\n",
                b"Received: from x by y\r\n",
                b"From : other@example.com\r\n",
            ]
        ),
        st.binary(max_size=80),
        st.integers(min_value=990, max_value=3000).map(lambda n: b"L" * n + b"\r\n"),
    )


def data_blocks(domain: str) -> st.SearchStrategy[bytes]:
    """A whole transaction, pipelined: MAIL, RCPT, DATA, and a body that may or may not end."""
    envelope = f"MAIL FROM:<support@{domain}>\r\nRCPT TO:<x@{domain}>\r\nDATA\r\n".encode()
    return st.tuples(st.lists(body_lines(domain), max_size=8), st.booleans()).map(
        lambda parts: envelope + b"".join(parts[0]) + (b"\r\n.\r\n" if parts[1] else b"")
    )


def chunks(domain: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        commands(domain),
        commands(domain),
        st.lists(commands(domain), min_size=2, max_size=6).map(b"".join),  # pipelined
        st.binary(min_size=1, max_size=200),
        st.integers(min_value=500, max_value=6000).map(lambda n: b"NOOP " + b"x" * n + b"\r\n"),
        data_blocks(domain),
    )


@dataclass(frozen=True)
class Script:
    chunks: list[bytes]
    cut: int | None  # None: end the session politely; else close after this many bytes


def scripts(target: Target) -> st.SearchStrategy[Script]:
    return st.lists(chunks(target.domain), min_size=1, max_size=8).flatmap(
        lambda parts: st.builds(
            Script,
            st.just(parts),
            st.one_of(st.none(), st.integers(0, max(0, len(b"".join(parts)) - 1))),
        )
    )


# After the script: whatever state the session is in (mid-line, mid-DATA, inside an AUTH
# exchange), this ends it and asks the server to close.
FAREWELL = b"\r\n.\r\nQUIT\r\nQUIT\r\nQUIT\r\n"


def connect(target: Target) -> socket.socket:
    sock = socket.create_connection((HOST, target.port), timeout=SOCKET_TIMEOUT)
    if target.tls is not None:
        return target.tls.wrap_socket(sock, server_hostname=SUBMISSION_HOST)
    return sock


# After this reply the server waits for a TLS handshake this client never starts (it sent on in
# the clear, and RFC 3207 section 4.2 has the server discard that): the client hangs up.
TLS_GO_AHEAD = f"\r\n{replies.S220_READY_TLS}\r\n".encode()


def read_to_end(sock: socket.socket) -> tuple[bytes, bool]:
    """What the server writes until it closes; True when it closed cleanly. A recv that waits
    SOCKET_TIMEOUT raises TimeoutError: the session did not end."""
    received = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            return bytes(received), False
        if not chunk:
            return bytes(received), True
        received += chunk
        if TLS_GO_AHEAD in received:
            return bytes(received), False


def play(target: Target, script: Script) -> list[tuple[int, list[str], str | None]]:
    data = (target.login or b"") + b"".join(script.chunks)
    with connect(target) as sock:
        try:
            if script.cut is not None:
                sock.sendall(data[: len(target.login or b"") + script.cut])
                # Some cuts end with a reset instead of a FIN (SO_LINGER 0).
                if script.cut % 2:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                return []
            sock.sendall(data + FAREWELL)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the server closed first (421, STARTTLS garbage): read what it said
        stream, clean = read_to_end(sock)
    return list(replies_in(stream, complete=clean))


def good_session(target: Target) -> None:
    """The next well-behaved client is served: greeting, EHLO, NOOP, QUIT, in order."""
    with connect(target) as sock:
        sock.sendall(b"EHLO client.example.net\r\nNOOP\r\nQUIT\r\n")
        stream, clean = read_to_end(sock)
    seen = list(replies_in(stream, complete=clean))
    assert [(code, problem) for code, _lines, problem in seen] == [
        (220, None),
        (250, None),
        (250, None),
        (221, None),
    ], seen


def fuzz(target: Target, examples: int, caplog: pytest.LogCaptureFixture) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(script=scripts(target))
    def session(script: Script) -> None:
        before = len(escaped_exceptions(caplog))
        seen = play(target, script)
        problems = [(code, lines, problem) for code, lines, problem in seen if problem]
        assert problems == [], (script, seen)
        # The reply aiosmtpd's handle_exception would give an escaped exception: never.
        local_error = (replies.S451_LOCAL_ERROR.code, [str(replies.S451_LOCAL_ERROR)[4:]])
        assert local_error not in [(code, lines) for code, lines, _ in seen], (script, seen)
        good_session(target)
        # Logged by the server's loop while it served the two sessions: so Hypothesis can
        # shrink a script that makes one to its smallest form.
        assert escaped_exceptions(caplog)[before:] == [], script

    session()


def escaped_exceptions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.ERROR and record.name.startswith("mta")
    ]


# -- the listeners -------------------------------------------------------------------------------


async def test_mx_answers_any_input_from_the_catalogue_and_serves_the_next_session(
    mx: MXListener, make_tenant: MakeTenant, caplog: pytest.LogCaptureFixture
) -> None:
    acme = await make_tenant(catch_all=True)
    target = Target(mx.port, None, acme.name, None)
    await asyncio.to_thread(fuzz, target, EXAMPLES, caplog)
    assert escaped_exceptions(caplog) == []


async def test_submission_in_the_clear_answers_any_input_from_the_catalogue(
    start_test_submission: StartSubmission, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_test_submission()
    target = Target(server.starttls_port, None, "example.com", None)
    await asyncio.to_thread(fuzz, target, EXAMPLES, caplog)
    assert escaped_exceptions(caplog) == []


async def test_submission_in_tls_before_login_answers_any_input_from_the_catalogue(
    start_test_submission: StartSubmission, caplog: pytest.LogCaptureFixture
) -> None:
    """Port 465 before AUTH: the SASL exchanges (334 challenges) get the random lines."""
    server = await start_test_submission()
    target = Target(server.implicit_port, server.client_context(), "example.com", None)
    await asyncio.to_thread(fuzz, target, EXAMPLES, caplog)
    assert escaped_exceptions(caplog) == []


async def test_submission_after_login_answers_any_input_from_the_catalogue(
    start_test_submission: StartSubmission,
    make_tenant: MakeTenant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await start_test_submission()
    acme = await make_tenant()
    key = await acme.api_key()
    login = (
        b"EHLO client.example.net\r\nAUTH PLAIN "
        + base64.b64encode(b"\0me\0" + key.encode())
        + b"\r\n"
    )
    target = Target(server.implicit_port, server.client_context(), acme.name, login)
    await asyncio.to_thread(fuzz, target, EXAMPLES, caplog)
    assert escaped_exceptions(caplog) == []


# -- what the fuzz found, each held by its own test ---------------------------------------------


def session_replies(target: Target, data: bytes) -> list[tuple[int, list[str], str | None]]:
    with connect(target) as sock:
        sock.sendall(data)
        stream, clean = read_to_end(sock)
    return list(replies_in(stream, complete=clean))


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"NOOP\rQUIT", id="bare_cr_inside"),
        pytest.param(b"\x00VRFY", id="nul"),
        pytest.param(b"SUBJECT: x", id="header_as_command"),
    ],
)
async def test_an_unknown_command_is_answered_without_echoing_it(
    mx: MXListener, line: bytes
) -> None:
    """aiosmtpd echoed the command: a CR in it split the reply into a line no client can read."""
    target = Target(mx.port, None, "example.com", None)
    seen = await asyncio.to_thread(session_replies, target, line + b"\r\nQUIT\r\n")
    unknown = replies.S500_UNKNOWN_COMMAND
    assert seen[1] == (unknown.code, [f"{unknown.enhanced} {unknown.text}"], None)


async def test_vrfy_of_bytes_that_are_not_utf8_is_answered_252(mx: MXListener) -> None:
    """aiosmtpd echoed the argument; bytes that are not UTF-8 made that reply raise, and the
    session got the 451 of an escaped exception."""
    target = Target(mx.port, None, "example.com", None)
    seen = await asyncio.to_thread(
        session_replies, target, b"EHLO c.example\r\nVRFY <\xff\xfe@x>\r\nQUIT\r\n"
    )
    vrfy = replies.S252_CANNOT_VRFY
    assert seen[2] == (vrfy.code, [f"{vrfy.enhanced} {vrfy.text}"], None)


async def test_auth_without_a_mechanism_is_a_syntax_error_inside_tls(
    start_test_submission: StartSubmission,
) -> None:
    """A bare "AUTH" reached the mechanism parser as None: an AttributeError, answered 451."""
    server = await start_test_submission()
    target = Target(server.implicit_port, server.client_context(), "example.com", None)
    seen = await asyncio.to_thread(session_replies, target, b"EHLO c.example\r\nAUTH\r\nQUIT\r\n")
    syntax = replies.S501_AUTH_SYNTAX
    assert seen[2] == (syntax.code, [f"{syntax.enhanced} {syntax.text}"], None)


async def test_commands_pipelined_after_the_server_closed_a_tls_session_raise_nothing(
    start_test_submission: StartSubmission, caplog: pytest.LogCaptureFixture
) -> None:
    """After "502 too many unrecognized commands" the server closes the TLS transport, while
    the engine still holds commands it read: asyncio's closed TLS transport raised
    AttributeError when the next reply was written, or MAIL asked for the TLS version."""
    server = await start_test_submission()
    target = Target(server.implicit_port, server.client_context(), "example.com", None)
    data = b"XX\r\n" * 6 + b"NOOP\r\nMAIL FROM:<a@example.com>\r\n" * 20
    seen = await asyncio.to_thread(session_replies, target, data)
    goodbye = replies.S502_TOO_MANY_UNKNOWN
    assert (goodbye.code, [f"{goodbye.enhanced} {goodbye.text}"], None) in seen
    assert escaped_exceptions(caplog) == []


async def test_an_error_in_a_session_already_closed_ends_it_without_a_fault(
    start_test_submission: StartSubmission, caplog: pytest.LogCaptureFixture
) -> None:
    """Found on port 465: between the TLS transport's close and the session hearing of it, a
    buffered MAIL asked for the TLS version and asyncio raised AttributeError, which reached the
    handler as an unexpected error. Such an error now ends the session as a lost connection."""
    server = await start_test_submission()
    reader, writer = await asyncio.open_connection(
        HOST, server.implicit_port, ssl=server.client_context(), server_hostname=SUBMISSION_HOST
    )
    try:
        assert (await reader.readline()).startswith(b"220 ")
        [session] = server.listeners.implicit_tls.protocols
        assert session.transport is not None
        session.transport.close()
        with pytest.raises(asyncio.CancelledError):
            await session.handle_exception(AttributeError("no attribute '_get_extra_info'"))
    finally:
        writer.close()
    assert escaped_exceptions(caplog) == []
