"""PIPELINING (RFC 2920) on delivery sessions: MAIL, RCPT and DATA in one write, each recipient
answered as it would be one command at a time, and the session reusable afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from mta.delivery.routes import Hop
from mta.delivery.smtp_client import SmtpSession, Timeouts
from mta.delivery.smtp_pipelining import Replies, data_block, path
from policy.delivery.result import Stage
from tests.support.smtp_sink import Sink

MESSAGE = b"From: a@sender.example\r\nSubject: hi\r\n\r\n.leading dot\r\nbody\r\n"


@dataclass
class StrictPeer:
    """A server that answers nothing of a command group until DATA has arrived, then all of it
    in one write: a client that waits for each reply before the next command never gets one."""

    rcpt_replies: dict[bytes, bytes] = field(default_factory=dict)
    mail_reply: bytes = b"250 2.1.0 Ok"
    final_reply: bytes = b"250 2.0.0 Ok: queued"
    groups: list[bytes] = field(default_factory=list)
    contents: list[bytes] = field(default_factory=list)
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 strict.example ESMTP\r\n")
        await reader.readuntil(b"\r\n")  # EHLO
        writer.write(b"250-strict.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        while line := await reader.readuntil(b"\r\n"):
            if line.startswith((b"RSET", b"QUIT")):
                writer.write(b"250 2.0.0 Ok\r\n" if line.startswith(b"RSET") else b"221 Bye\r\n")
                if line.startswith(b"QUIT"):
                    break
                continue
            group = line if line == b"DATA\r\n" else line + await reader.readuntil(b"DATA\r\n")
            self.groups.append(group)
            replies = [self.mail_reply]
            accepted = 0
            for command in group.split(b"\r\n")[1:-2]:
                reply = self.rcpt_replies.get(command[len(b"RCPT TO:") :], b"250 2.1.5 Ok")
                accepted += reply.startswith(b"250")
                replies.append(reply)
            go = self.mail_reply.startswith(b"250") and accepted
            replies.append(b"354 End data with <CR><LF>.<CR><LF>" if go else b"554 5.5.1 No rcpt")
            writer.write(b"".join(r + b"\r\n" for r in replies))  # one segment, many replies
            if go:
                self.contents.append(await reader.readuntil(b"\r\n.\r\n"))
                writer.write(self.final_reply + b"\r\n")
        writer.close()


@pytest.fixture
async def strict() -> AsyncIterator[StrictPeer]:
    peer = StrictPeer()
    server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
    peer.port = server.sockets[0].getsockname()[1]
    yield peer
    server.close()
    await server.wait_closed()


async def session_to(port: int) -> SmtpSession:
    hop = Hop(host="127.0.0.1", address="127.0.0.1", port=port)
    return await SmtpSession.open(hop, helo="mx.opensend.test", timeouts=Timeouts(command=10.0))


async def test_the_commands_go_as_one_group_and_every_recipient_is_answered(
    strict: StrictPeer,
) -> None:
    strict.rcpt_replies = {b"<gone@x.example>": b"550 5.1.1 No such user"}
    session = await session_to(strict.port)
    try:
        answers = await session.send("a@sender.example", ["b@x.example", "gone@x.example"], MESSAGE)
    finally:
        await session.close()
    assert strict.groups == [
        b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<b@x.example>\r\n"
        b"RCPT TO:<gone@x.example>\r\nDATA\r\n"
    ]
    assert (answers["b@x.example"].code, answers["b@x.example"].stage) == (250, Stage.DATA)
    assert (answers["gone@x.example"].code, answers["gone@x.example"].stage) == (550, Stage.RCPT)
    assert (answers["gone@x.example"].enhanced, answers["gone@x.example"].text) == (
        "5.1.1",
        "No such user",
    )
    assert strict.contents == [MESSAGE.replace(b"\r\n.leading", b"\r\n..leading") + b".\r\n"]


async def test_a_refused_sender_answers_for_every_recipient_and_the_session_goes_on(
    strict: StrictPeer,
) -> None:
    strict.mail_reply = b"451 4.3.0 Try later"
    session = await session_to(strict.port)
    try:
        refused = await session.send("a@sender.example", ["b@x.example", "c@x.example"], MESSAGE)
        assert {(a.code, a.stage) for a in refused.values()} == {(451, Stage.MAIL)}
        assert await session.ready_for_reuse()
        strict.mail_reply = b"250 2.1.0 Ok"
        again = await session.send("a@sender.example", ["b@x.example"], MESSAGE)
    finally:
        await session.close()
    assert again["b@x.example"].code == 250
    assert len(strict.contents) == 1


async def test_no_recipient_accepted_sends_no_content(strict: StrictPeer) -> None:
    strict.rcpt_replies = {b"<gone@x.example>": b"550 5.1.1 No such user"}
    session = await session_to(strict.port)
    try:
        answers = await session.send("", ["gone@x.example"], MESSAGE)
    finally:
        await session.close()
    assert strict.groups[0].startswith(b"MAIL FROM:<>\r\n")  # the null reverse-path
    assert answers["gone@x.example"].code == 550
    assert strict.contents == []


async def test_a_refused_final_dot_answers_the_accepted_recipients(strict: StrictPeer) -> None:
    strict.final_reply = b"552 5.3.4 Message too big"
    session = await session_to(strict.port)
    try:
        answers = await session.send("a@sender.example", ["b@x.example"], MESSAGE)
    finally:
        await session.close()
    assert (answers["b@x.example"].code, answers["b@x.example"].stage) == (552, Stage.DATA)


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one_at_a_time"])
async def test_both_ways_give_the_same_answers(pipelining: bool) -> None:
    """Against aiosmtpd, offering PIPELINING or not: the same messages, the same answers."""
    sink = await Sink.start()
    sink.handler.pipelining = pipelining
    sink.handler.rcpt_replies = {"gone@x.example": "550 5.1.1 No such user"}
    session = await session_to(sink.port)
    try:
        first = await session.send("a@sender.example", ["b@x.example", "gone@x.example"], MESSAGE)
        second = await session.send("a@sender.example", ["c@x.example"], MESSAGE)
    finally:
        await session.close()
        await sink.stop()
    assert [(a.code, a.stage) for a in first.values()] == [(550, Stage.RCPT), (250, Stage.DATA)]
    assert second["c@x.example"].code == 250
    assert [m.rcpt_tos for m in sink.messages] == [["b@x.example"], ["c@x.example"]]
    assert sink.messages[0].content == MESSAGE


def feed(chunks: list[bytes]) -> Replies:
    replies = Replies(asyncio.Protocol())
    for chunk in chunks:
        replies.data_received(chunk)
    return replies


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param([b"250 a\r\n250-b1\r\n250 b2\r\n354 go\r\n"], id="one_segment"),
        pytest.param([b"25", b"0 a\r\n250-b", b"1\r\n250 b2\r", b"\n354 go\r\n"], id="split"),
    ],
)
async def test_replies_are_read_whole_and_in_order(chunks: list[bytes]) -> None:
    replies = feed(chunks)
    assert [await replies.reply() for _ in range(3)] == [
        (250, "a"),
        (250, "b1\nb2"),
        (354, "go"),
    ]
    assert not replies.pending


async def test_a_line_that_is_no_reply_ends_the_reading() -> None:
    replies = feed([b"250 a\r\nhello\r\n"])
    assert await replies.reply() == (250, "a")
    with pytest.raises(Exception, match="not an SMTP reply"):
        await replies.reply()


async def test_a_lost_connection_wakes_the_reader() -> None:
    replies = Replies(asyncio.Protocol())
    waiting = asyncio.ensure_future(replies.reply())
    await asyncio.sleep(0)
    replies.connection_lost(None)
    with pytest.raises(ConnectionResetError):
        await waiting


@pytest.mark.parametrize(
    ("message", "sent"),
    [
        pytest.param(b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n", id="plain"),
        pytest.param(b"a\nb", b"a\r\nb\r\n.\r\n", id="bare_lf_no_end"),
        pytest.param(b".a\r\n.\r\nb\r\n", b"..a\r\n..\r\nb\r\n.\r\n", id="dots"),
        pytest.param(b"a\rb\r\n", b"a\r\nb\r\n.\r\n", id="bare_cr"),
    ],
)
def test_the_data_block_is_transparent(message: bytes, sent: bytes) -> None:
    """RFC 5321 section 4.5.2: a line that starts with a dot gets one more."""
    assert data_block(message) == sent


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("", b"<>"),
        ("bob@example.net", b"<bob@example.net>"),
        ("Bob <bob@example.net>", b"<bob@example.net>"),
    ],
)
def test_paths(address: str, expected: bytes) -> None:
    assert path(address, "ascii") == expected


@pytest.mark.parametrize(
    "address", ["bob@example.net>\r\nRCPT TO:<x@y", "bob@example.net\r\nRSET", "a b@example.net"]
)
def test_an_address_never_puts_a_second_command_on_the_line(address: str) -> None:
    try:
        sent = path(address, "ascii")
    except ValueError:
        return  # refused, as aiosmtplib refuses it
    assert b"\r" not in sent and b"\n" not in sent and sent.count(b"<") == 1


def test_pipelining_on_uvloop_as_serve_runs_it() -> None:
    """`opensend serve` runs on uvloop (mta/event_loop.py), whose transports are not
    asyncio.Transport subclasses: the group still goes at once there."""
    uvloop = pytest.importorskip("uvloop")

    async def run() -> tuple[StrictPeer, dict[str, int]]:
        peer = StrictPeer()
        server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
        peer.port = server.sockets[0].getsockname()[1]
        session = await session_to(peer.port)
        try:
            answers = await session.send("a@sender.example", ["b@x.example"], MESSAGE)
        finally:
            await session.close()
            server.close()
        return peer, {r: a.code for r, a in answers.items() if a.code is not None}

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        peer, codes = runner.run(run())
    assert codes == {"b@x.example": 250}
    assert len(peer.groups) == 1 and len(peer.contents) == 1
