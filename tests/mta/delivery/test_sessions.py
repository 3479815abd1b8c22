"""SMTP sessions of the delivery workers: TLS, relay login, connection reuse and the caps."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mta.delivery import smtp_pool
from mta.delivery.hops import transact
from mta.delivery.routes import DestinationClass, Hop, Route
from mta.delivery.smtp_client import SessionFailed
from mta.delivery.smtp_pool import SmtpPool
from storage.database import Pool
from tests.support.delivery_world import delivery_workers, queue_database
from tests.support.queued_mail import Sender, make_sender, wait_until_final
from tests.support.smtp_sink import Sink
from tests.support.tls import ServerCertificate, server_certificate

Queue = tuple[str, Pool]
HELO = "mx.opensend.test"  # tests.conftest.make_settings's OPENSEND_HOSTNAME
MESSAGE = b"From: a@b.example\r\nTo: erin@x.example\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
async def queue(database_url: str) -> AsyncIterator[Queue]:
    async with queue_database(database_url) as made:
        yield made


@pytest.fixture
async def sender(queue: Queue) -> Sender:
    return await make_sender(queue[1], dkim=False)


@pytest.fixture
def certificate(tmp_path: Path) -> ServerCertificate:
    return server_certificate(tmp_path, "127.0.0.1")


def server_context(certificate: ServerCertificate) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert, certificate.key)
    return context


def ca_file(certificate: ServerCertificate, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    certificate.ca.cert_pem.write_to_path(str(path))
    return path


async def test_starttls_is_used_when_offered_even_with_a_certificate_nobody_trusts(
    queue: Queue, sender: Sender, certificate: ServerCertificate, tmp_path: Path
) -> None:
    """Opportunistic TLS between MTAs is not verified (RFC 7435): encrypted beats plain."""
    url, pool = queue
    sink = await Sink.start(tls_context=server_context(certificate))
    try:
        env = {"OPENSEND_TRANSPORTS": f"tls.example=127.0.0.1:{sink.port}"}
        async with delivery_workers(pool, url, tmp_path, **env):
            rows = await wait_until_final(pool, await sender.queue(["ann@tls.example"]))
        assert rows["ann@tls.example"]["status"] == "delivered"
        assert sink.messages[0].tls
    finally:
        await sink.stop()


async def test_relay_login_happens_inside_verified_starttls(
    queue: Queue, sender: Sender, certificate: ServerCertificate, tmp_path: Path
) -> None:
    url, pool = queue
    sink = await Sink.start(
        tls_context=server_context(certificate), credentials=("relayuser", "s3cret/pw")
    )
    try:
        relay = (
            f"smtp+starttls://relayuser:s3cret%2Fpw@127.0.0.1:{sink.port}"
            f"?cafile={ca_file(certificate, tmp_path)}"
        )
        async with delivery_workers(pool, url, tmp_path, OPENSEND_RELAY=relay):
            rows = await wait_until_final(pool, await sender.queue(["bo@anywhere.example"]))
        assert rows["bo@anywhere.example"]["status"] == "delivered"
        assert sink.messages[0].tls
    finally:
        await sink.stop()


async def test_relay_over_implicit_tls(
    queue: Queue, sender: Sender, certificate: ServerCertificate, tmp_path: Path
) -> None:
    url, pool = queue
    sink = await Sink.start(
        tls_context=server_context(certificate), implicit_tls=True, credentials=("u", "p")
    )
    try:
        relay = f"smtps://u:p@127.0.0.1:{sink.port}?cafile={ca_file(certificate, tmp_path)}"
        async with delivery_workers(pool, url, tmp_path, OPENSEND_RELAY=relay):
            rows = await wait_until_final(pool, await sender.queue(["cy@anywhere.example"]))
        assert rows["cy@anywhere.example"]["status"] == "delivered"
    finally:
        await sink.stop()


async def test_relay_credentials_are_never_sent_without_tls(
    queue: Queue, sender: Sender, tmp_path: Path
) -> None:
    url, pool = queue
    sink = await Sink.start()  # no STARTTLS on offer
    try:
        relay = f"smtp://relayuser:secret@127.0.0.1:{sink.port}"
        async with delivery_workers(pool, url, tmp_path, OPENSEND_RELAY=relay):
            email_id = await sender.queue(["di@anywhere.example"])
            rows = await wait_until_final(pool, email_id, statuses=("deferred",))
        row = rows["di@anywhere.example"]
        assert (row["last_code"], row["last_enhanced"]) == (451, "4.7.0")
        assert sink.messages == []
    finally:
        await sink.stop()


async def test_a_relay_that_does_not_verify_is_not_trusted(
    queue: Queue, sender: Sender, certificate: ServerCertificate, tmp_path: Path
) -> None:
    """Required TLS is verified: a certificate from an unknown CA defers, it does not send."""
    url, pool = queue
    sink = await Sink.start(tls_context=server_context(certificate), credentials=("u", "p"))
    try:
        relay = f"smtp+starttls://u:p@127.0.0.1:{sink.port}"  # no cafile: the test CA is unknown
        async with delivery_workers(pool, url, tmp_path, OPENSEND_RELAY=relay):
            email_id = await sender.queue(["ed@anywhere.example"])
            rows = await wait_until_final(pool, email_id, statuses=("deferred",))
        assert rows["ed@anywhere.example"]["last_code"] == 451
        assert sink.messages == []
    finally:
        await sink.stop()


async def test_a_refused_relay_login_defers_and_bounces_nothing(
    queue: Queue, sender: Sender, certificate: ServerCertificate, tmp_path: Path
) -> None:
    url, pool = queue
    sink = await Sink.start(tls_context=server_context(certificate), credentials=("u", "right"))
    try:
        relay = (
            f"smtp+starttls://u:wrong@127.0.0.1:{sink.port}?cafile={ca_file(certificate, tmp_path)}"
        )
        async with delivery_workers(pool, url, tmp_path, OPENSEND_RELAY=relay):
            email_id = await sender.queue(["flo@anywhere.example"])
            rows = await wait_until_final(pool, email_id, statuses=("deferred",))
        assert rows["flo@anywhere.example"]["last_code"] == 535
        assert rows["flo@anywhere.example"]["last_enhanced"] == "5.7.8"
    finally:
        await sink.stop()


async def test_one_connection_carries_message_after_message(
    queue: Queue, sender: Sender, tmp_path: Path
) -> None:
    url, pool = queue
    sink = await Sink.start()
    try:
        env = {"OPENSEND_TRANSPORTS": f"reuse.example=127.0.0.1:{sink.port}"}
        async with delivery_workers(pool, url, tmp_path, **env):
            for n in range(5):
                await wait_until_final(pool, await sender.queue([f"u{n}@reuse.example"]))
        assert len(sink.messages) == 5
        assert sink.connections == 1
    finally:
        await sink.stop()


async def test_an_idle_connection_is_probed_with_rset_and_replaced_when_dead(
    queue: Queue, sender: Sender, tmp_path: Path
) -> None:
    url, pool = queue
    sink = await Sink.start()
    smtp = SmtpPool(helo=HELO, idle_seconds=60.0)
    try:
        env = {"OPENSEND_TRANSPORTS": f"idle.example=127.0.0.1:{sink.port}"}
        async with delivery_workers(pool, url, tmp_path, smtp=smtp, **env):
            await wait_until_final(pool, await sender.queue(["gus@idle.example"]))
            await asyncio.sleep(1.1)  # idle long enough to be probed before reuse
            await wait_until_final(pool, await sender.queue(["hal@idle.example"]))
            assert sink.connections == 1
            sink.hang_up()  # the server drops the idle session; we find out at the next use
            await asyncio.sleep(1.1)
            rows = await wait_until_final(pool, await sender.queue(["ida@idle.example"]))
        assert rows["ida@idle.example"]["attempts"] == 1  # no deferral: a fresh connection
        assert sink.connections == 2
    finally:
        await sink.stop()


async def test_connections_per_destination_host_are_capped(
    queue: Queue, sender: Sender, tmp_path: Path
) -> None:
    url, pool = queue
    sink = await Sink.start()
    sink.handler.gate = asyncio.Event()  # hold every DATA until the test has looked
    smtp = SmtpPool(helo=HELO, per_host=2)
    try:
        env = {"OPENSEND_TRANSPORTS": f"capped.example=127.0.0.1:{sink.port}"}
        async with delivery_workers(pool, url, tmp_path, smtp=smtp, **env):
            ids = [await sender.queue([f"p{n}@capped.example"]) for n in range(8)]
            async with asyncio.timeout(30):
                for _ in range(2):
                    await sink.handler.arrivals.get()
            await asyncio.sleep(0.2)  # time for a third connection, were the cap not holding
            assert sink.active == 2
            assert smtp.open_count(("127.0.0.1", sink.port)) == 2
            sink.handler.gate.set()
            for email_id in ids:
                await wait_until_final(pool, email_id)
        assert len(sink.messages) == 8
        assert sink.max_active == 2
        assert sink.connections == 2
    finally:
        await sink.stop()


async def test_the_total_connection_cap_holds_across_hosts(
    queue: Queue, sender: Sender, tmp_path: Path
) -> None:
    url, pool = queue
    sinks = [await Sink.start() for _ in range(3)]
    gate, arrivals = asyncio.Event(), asyncio.Queue[list[str]]()
    for sink in sinks:
        sink.handler.gate, sink.handler.arrivals = gate, arrivals
    smtp = SmtpPool(helo=HELO, total=2)
    try:
        routes = ",".join(f"h{n}.example=127.0.0.1:{s.port}" for n, s in enumerate(sinks))
        async with delivery_workers(pool, url, tmp_path, smtp=smtp, OPENSEND_TRANSPORTS=routes):
            ids = [await sender.queue([f"x@h{n}.example"]) for n in range(3)]
            async with asyncio.timeout(30):
                for _ in range(2):
                    await arrivals.get()
            await asyncio.sleep(0.2)  # time for a third connection, were the cap not holding
            assert sum(s.active for s in sinks) == 2
            assert arrivals.empty()
            gate.set()
            for email_id in ids:
                await wait_until_final(pool, email_id)
        assert sum(len(s.messages) for s in sinks) == 3
    finally:
        for sink in sinks:
            await sink.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_host_that_failed_to_connect_is_remembered_for_a_while_then_tried_first_again() -> (
    None
):
    """SmtpPool.unreachable: a refused connection puts the host last for `unreachable_seconds`,
    a connection that succeeds clears it at once."""
    sink = await Sink.start()
    port = sink.port
    await sink.stop()  # nothing listens on the port now: connections are refused
    hop = Hop("gone.example", "127.0.0.1", port)
    clock = Clock()
    smtp = SmtpPool(helo=HELO, unreachable_seconds=60.0, clock=clock)
    try:
        assert not smtp.unreachable(hop)
        with pytest.raises(SessionFailed):
            await smtp.acquire(hop)
        assert smtp.unreachable(hop)
        clock.now += 61.0
        assert not smtp.unreachable(hop)
        with pytest.raises(SessionFailed):
            await smtp.acquire(hop)
        assert smtp.unreachable(hop)
        back = await Sink.start(port=port)
        try:
            session, reused = await smtp.acquire(hop)
            assert not reused and not smtp.unreachable(hop)
            await smtp.release(session)
        finally:
            await back.stop()
    finally:
        await smtp.close()


async def test_the_hosts_remembered_as_unreachable_are_bounded_oldest_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(smtp_pool, "UNREACHABLE_REMEMBERED", 3)
    smtp = SmtpPool(helo=HELO, clock=Clock())
    hops = [Hop(f"h{n}.example", "127.0.0.1", closed_port()) for n in range(5)]
    try:
        for hop in hops:
            with pytest.raises(SessionFailed):
                await smtp.acquire(hop)
        assert [smtp.unreachable(hop) for hop in hops] == [False, False, True, True, True]
    finally:
        await smtp.close()


async def test_a_stop_while_the_backup_is_due_keeps_the_primarys_answers() -> None:
    """The primary took one recipient and deferred the other; the pool closes before the
    backup is asked. The accepted recipient must keep its 250 (given back, it would be sent
    twice), the deferred one its 4xx."""
    primary, backup = await Sink.start(), await Sink.start()
    primary.handler.rcpt_replies = {"frank@x.example": "452 4.2.2 Mailbox full"}
    primary.handler.gate = asyncio.Event()
    route = Route(
        DestinationClass.MX,
        (
            Hop("mx1.x.example", "127.0.0.1", primary.port),
            Hop("mx2.x.example", "127.0.0.1", backup.port),
        ),
    )
    smtp = SmtpPool(helo=HELO)
    try:
        sending = asyncio.create_task(
            transact(smtp, route, "a@b.example", ["erin@x.example", "frank@x.example"], MESSAGE)
        )
        async with asyncio.timeout(30):
            await primary.handler.arrivals.get()
        await smtp.stop_waiting()  # stopping: no session is handed out any more
        primary.handler.gate.set()
        answers, hosts = await sending
        assert (answers["erin@x.example"].code, answers["frank@x.example"].code) == (250, 452)
        assert set(hosts.values()) == {f"mx1.x.example[127.0.0.1]:{primary.port}"}
        assert backup.connections == 0
    finally:
        await smtp.close()
        await primary.stop()
        await backup.stop()
