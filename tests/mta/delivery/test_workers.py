"""Delivery: queued mail reaches real SMTP hosts on loopback, found through a real DNS server.

Every recipient ends delivered (2xx), bounced (5xx, null MX, no such domain, too old) or
deferred (4xx, connection trouble, DNS trouble) and retried on the schedule; every transition is
an event row, and the email's status follows its recipients.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mta import metrics
from storage.database import Pool
from tests.support.delivery_world import delivery_workers, queue_database, sinks_on_one_port
from tests.support.dns_server import LoopbackDNSServer
from tests.support.queued_mail import (
    Sender,
    email_row,
    events,
    make_sender,
    poll_until,
    wait_until_final,
)
from tests.support.smtp_sink import Sink

Queue = tuple[str, Pool]


@pytest.fixture(scope="module")
async def queue(database_url: str) -> AsyncIterator[Queue]:
    async with queue_database(database_url) as made:
        yield made


@pytest.fixture
async def sender(queue: Queue) -> Sender:
    return await make_sender(queue[1])


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    started = await Sink.start()
    yield started
    await started.stop()


def transport(domain: str, sink: Sink) -> dict[str, str]:
    return {"OPENSEND_TRANSPORTS": f"{domain}={sink.host}:{sink.port}"}


def event_types(rows: list[dict[str, object]]) -> list[object]:
    return [row["type"] for row in rows]


def primary_and_backup(
    dns: LoopbackDNSServer, domain: str, primary: str, backup: str, port: int
) -> dict[str, str]:
    """`domain` with two MX hosts, mx1 (preference 10) at `primary` and mx2 (20) at `backup`,
    both listening on `port`; the workers' environment that reaches them."""
    dns.zone.add(domain, "MX", f"10 mx1.{domain}.", f"20 mx2.{domain}.")
    dns.zone.add(f"mx1.{domain}", "A", primary)
    dns.zone.add(f"mx2.{domain}", "A", backup)
    return {"OPENSEND_DNS_SERVERS": dns.address, "OPENSEND_SMTP_PORT": str(port)}


# -- MX routing through DNS (RFC 5321 section 5.1, RFC 7505) --------------------------------


async def test_mail_goes_to_the_most_preferred_mx_host(
    queue: Queue, sender: Sender, dns: LoopbackDNSServer, tmp_path: Path
) -> None:
    url, pool = queue
    async with sinks_on_one_port("127.0.0.2", "127.0.0.3") as (primary, backup):
        dns.zone.add("example.net", "MX", "10 mx1.example.net.", "20 mx2.example.net.")
        dns.zone.add("mx1.example.net", "A", "127.0.0.2")
        dns.zone.add("mx2.example.net", "A", "127.0.0.3")
        env = {"OPENSEND_DNS_SERVERS": dns.address, "OPENSEND_SMTP_PORT": str(primary.port)}
        async with delivery_workers(pool, url, tmp_path, **env):
            email_id = await sender.queue(["bob@example.net"])
            rows = await wait_until_final(pool, email_id)
        assert len(primary.received_by("bob@example.net")) == 1
        assert backup.messages == []
    row = rows["bob@example.net"]
    assert (row["status"], row["attempts"], row["last_code"]) == ("delivered", 1, 250)
    assert row["remote_host"] == f"mx1.example.net[127.0.0.2]:{primary.port}"
    assert row["finished_at"] is not None
    assert event_types(await events(pool, email_id)) == ["email.sent", "email.delivered"]
    assert await email_row(pool, email_id) == {
        "status": "delivered",
        "last_event": "email.delivered",
    }


async def test_an_unreachable_primary_mx_falls_back_to_the_next_one(
    queue: Queue, sender: Sender, dns: LoopbackDNSServer, tmp_path: Path
) -> None:
    url, pool = queue
    async with sinks_on_one_port("127.0.0.3") as (backup,):
        # Nothing listens on 127.0.0.4: the connection is refused.
        dns.zone.add("example.org", "MX", "10 dead.example.org.", "20 alive.example.org.")
        dns.zone.add("dead.example.org", "A", "127.0.0.4")
        dns.zone.add("alive.example.org", "A", "127.0.0.3")
        env = {"OPENSEND_DNS_SERVERS": dns.address, "OPENSEND_SMTP_PORT": str(backup.port)}
        async with delivery_workers(pool, url, tmp_path, **env):
            email_id = await sender.queue(["carol@example.org"])
            rows = await wait_until_final(pool, email_id)
        assert len(backup.messages) == 1
    assert rows["carol@example.org"]["remote_host"].startswith("alive.example.org[127.0.0.3]")


@pytest.mark.parametrize(
    "primary_says",
    ["rcpt", "data_end", "some_recipients"],
    ids=["greylisted_at_rcpt", "deferred_at_end_of_data", "one_recipient_deferred"],
)
async def test_recipients_the_primary_mx_defers_go_to_the_backup_in_the_same_attempt(
    queue: Queue, sender: Sender, dns: LoopbackDNSServer, tmp_path: Path, primary_says: str
) -> None:
    """RFC 5321 section 5.1, as Postfix does: a 4xx from the primary (greylisting, a full
    queue) hands the recipients it deferred to the next host, not to the next retry."""
    url, pool = queue
    recipients = ["erin@backup.example", "frank@backup.example"]
    async with sinks_on_one_port("127.0.0.8", "127.0.0.9") as (primary, backup):
        if primary_says == "rcpt":
            primary.handler.rcpt_replies = dict.fromkeys(recipients, "451 4.7.1 Greylisted")
        elif primary_says == "data_end":
            primary.handler.data_replies = ["451 4.3.0 Queue full, try later"]
        else:
            primary.handler.rcpt_replies = {"frank@backup.example": "452 4.2.2 Mailbox full"}
        env = primary_and_backup(dns, "backup.example", "127.0.0.8", "127.0.0.9", primary.port)
        handed_on = metrics.DELIVERY_BACKUP_RECIPIENTS._value.get()
        async with delivery_workers(pool, url, tmp_path, **env):
            email_id = await sender.queue(recipients)
            rows = await wait_until_final(pool, email_id)
        on_backup = {r for m in backup.messages for r in m.rcpt_tos}
        assert metrics.DELIVERY_BACKUP_RECIPIENTS._value.get() - handed_on == len(on_backup)
        on_primary = {r for m in primary.messages for r in m.rcpt_tos}
    if primary_says == "some_recipients":
        assert (on_primary, on_backup) == ({"erin@backup.example"}, {"frank@backup.example"})
    else:
        assert on_backup == set(recipients)
        # At the end of DATA the primary saw the message, and refused it.
        assert primary.handler.arrivals.qsize() == (primary_says == "data_end")
    for recipient in recipients:
        row = rows[recipient]
        assert (row["status"], row["attempts"]) == ("delivered", 1)
    assert rows["frank@backup.example"]["remote_host"].startswith("mx2.backup.example[")
    first_host = "mx1" if primary_says == "some_recipients" else "mx2"
    assert rows["erin@backup.example"]["remote_host"].startswith(f"{first_host}.backup.example[")


async def test_a_lost_end_of_data_is_not_sent_to_the_backup_and_two_hosts_at_most_are_asked(
    queue: Queue, sender: Sender, dns: LoopbackDNSServer, tmp_path: Path
) -> None:
    """A primary that went silent after the message may have taken it: another copy to the
    backup would be a duplicate, so the recipient waits for the retry. And a deferral goes
    to one more host, not to every host of the domain (Postfix's smtp_mx_session_limit)."""
    url, pool = queue
    hosts = ("127.0.0.10", "127.0.0.11", "127.0.0.12")
    async with sinks_on_one_port(*hosts) as sinks:
        dns.zone.add("three.example", "MX", *(f"{10 * n} mx{n}.three.example." for n in (1, 2, 3)))
        for n, host in enumerate(hosts, start=1):
            dns.zone.add(f"mx{n}.three.example", "A", host)
        env = {"OPENSEND_DNS_SERVERS": dns.address, "OPENSEND_SMTP_PORT": str(sinks[0].port)}
        sinks[0].handler.drop_on_data = True
        async with delivery_workers(pool, url, tmp_path, **env):
            lost = await sender.queue(["gina@three.example"])
            rows = await wait_until_final(pool, lost, statuses=("deferred",))
            assert [s.handler.arrivals.qsize() for s in sinks] == [1, 0, 0]
            sinks[0].handler.drop_on_data = False
            for sink in sinks[:2]:
                sink.handler.rcpt_replies = {"hank@three.example": "450 4.2.1 Try later"}
            deferred = await sender.queue(["hank@three.example"])
            later = await wait_until_final(pool, deferred, statuses=("deferred",))
        assert sinks[2].connections == 0
    assert rows["gina@three.example"]["last_code"] == 451
    assert later["hank@three.example"]["last_code"] == 450
    assert later["hank@three.example"]["remote_host"].startswith("mx2.three.example[")


async def test_a_primary_that_would_not_greet_goes_last_for_the_next_messages(
    queue: Queue, sender: Sender, dns: LoopbackDNSServer, tmp_path: Path
) -> None:
    """A host that failed to connect is remembered: the next messages to its domain go to the
    backup first, instead of each waiting out the primary's failure again."""
    url, pool = queue
    accepted: list[int] = []

    def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    async with sinks_on_one_port("127.0.0.14") as (backup,):
        primary = await asyncio.start_server(hang_up, "127.0.0.13", backup.port)
        async with primary:
            env = primary_and_backup(dns, "down.example", "127.0.0.13", "127.0.0.14", backup.port)
            marked = metrics.DELIVERY_UNREACHABLE_HOSTS._value.get()
            async with delivery_workers(pool, url, tmp_path, **env):
                for n in range(3):
                    email_id = await sender.queue([f"ivy{n}@down.example"])
                    await wait_until_final(pool, email_id)
        assert len(backup.messages) == 3
    assert len(accepted) == 1
    assert metrics.DELIVERY_UNREACHABLE_HOSTS._value.get() - marked == 1


async def test_a_domain_without_mx_gets_mail_at_its_address_record(
    queue: Queue, sender: Sender, dns: LoopbackDNSServer, tmp_path: Path
) -> None:
    url, pool = queue
    async with sinks_on_one_port("127.0.0.5") as (host,):
        dns.zone.add("a-only.example", "A", "127.0.0.5")
        env = {"OPENSEND_DNS_SERVERS": dns.address, "OPENSEND_SMTP_PORT": str(host.port)}
        async with delivery_workers(pool, url, tmp_path, **env):
            email_id = await sender.queue(["dave@a-only.example"])
            rows = await wait_until_final(pool, email_id)
        assert len(host.messages) == 1
    assert rows["dave@a-only.example"]["status"] == "delivered"
    assert dns.queried("a-only.example", "MX") >= 1


async def test_equal_preference_mx_hosts_share_the_mail(
    queue: Queue, sender: Sender, dns: LoopbackDNSServer, tmp_path: Path
) -> None:
    """RFC 5321 section 5.1: hosts of equal preference are tried in random order."""
    url, pool = queue
    async with sinks_on_one_port("127.0.0.6", "127.0.0.7") as (one, two):
        dns.zone.add("shared.example", "MX", "10 a.shared.example.", "10 b.shared.example.")
        dns.zone.add("a.shared.example", "A", "127.0.0.6")
        dns.zone.add("b.shared.example", "A", "127.0.0.7")
        env = {"OPENSEND_DNS_SERVERS": dns.address, "OPENSEND_SMTP_PORT": str(one.port)}
        async with delivery_workers(pool, url, tmp_path, **env):
            ids = [await sender.queue([f"user{n}@shared.example"]) for n in range(30)]
            for email_id in ids:
                await wait_until_final(pool, email_id)
        assert len(one.messages) + len(two.messages) == 30
        assert one.messages and two.messages  # 2**-29 odds of a false failure


@pytest.mark.parametrize("through", ["mx", "implicit_mx"])
async def test_a_failing_aaaa_lookup_does_not_throw_away_a_good_a_record(
    queue: Queue, sender: Sender, dns: LoopbackDNSServer, sink: Sink, tmp_path: Path, through: str
) -> None:
    """Servers that SERVFAIL (or time out) on AAAA are common: the IPv4 address still serves.
    Both lookups lost, the mail was deferred for days and then bounced."""
    url, pool = queue
    domain = f"v4only-{through.replace('_', '-')}.example"
    host = f"mx.{domain}" if through == "mx" else domain
    if through == "mx":
        dns.zone.add(domain, "MX", f"10 {host}.")
    dns.zone.add(host, "A", sink.host)
    dns.zone.fail(host, "AAAA")
    env = {"OPENSEND_DNS_SERVERS": dns.address, "OPENSEND_SMTP_PORT": str(sink.port)}
    async with delivery_workers(pool, url, tmp_path, **env):
        email_id = await sender.queue([f"ann@{domain}"])
        rows = await wait_until_final(pool, email_id)
    assert rows[f"ann@{domain}"]["status"] == "delivered"
    assert len(sink.messages) == 1


async def test_a_message_with_nothing_to_send_is_a_failure_not_a_bounce(
    queue: Queue, sender: Sender, dns: LoopbackDNSServer, sink: Sink, tmp_path: Path
) -> None:
    """Resend's email.failed: our side could not send it; no recipient's server said no."""
    url, pool = queue
    email_id = await sender.queue(["frank@example.com"])
    await pool.execute("UPDATE emails SET raw = NULL WHERE id = $1", email_id)
    env = {"OPENSEND_DNS_SERVERS": dns.address, **transport("example.com", sink)}
    async with delivery_workers(pool, url, tmp_path, **env):
        rows = await wait_until_final(pool, email_id)
    assert sink.messages == []
    row = rows["frank@example.com"]
    assert (row["status"], row["last_code"], row["last_enhanced"]) == ("bounced", 554, "5.6.0")
    failed = (await events(pool, email_id))[-1]
    assert failed["type"] == "email.failed"
    assert failed["data"]["reason"] == "The message has no content"
    assert await email_row(pool, email_id) == {"status": "bounced", "last_event": "email.failed"}


async def test_null_mx_bounces_at_once_with_556_5_1_10(
    queue: Queue, sender: Sender, dns: LoopbackDNSServer, tmp_path: Path
) -> None:
    url, pool = queue
    dns.zone.add("nomail.example", "MX", "0 .")
    dns.zone.add("nomail.example", "A", "127.0.0.8")  # never used: RFC 7505 section 3.2
    async with delivery_workers(pool, url, tmp_path, OPENSEND_DNS_SERVERS=dns.address):
        email_id = await sender.queue(["eve@nomail.example"])
        rows = await wait_until_final(pool, email_id)
    row = rows["eve@nomail.example"]
    assert (row["status"], row["attempts"], row["last_code"], row["last_enhanced"]) == (
        "bounced",
        1,
        556,
        "5.1.10",
    )
    bounced = (await events(pool, email_id))[-1]
    assert bounced["type"] == "email.bounced"
    assert (bounced["data"]["code"], bounced["data"]["enhanced_code"]) == (556, "5.1.10")
    assert not bounced["data"]["remote"]
    assert (await email_row(pool, email_id))["status"] == "bounced"
    assert dns.queried("nomail.example", "A") == 0


async def test_a_domain_that_does_not_exist_bounces_5_1_2(
    queue: Queue, sender: Sender, dns: LoopbackDNSServer, tmp_path: Path
) -> None:
    url, pool = queue
    async with delivery_workers(pool, url, tmp_path, OPENSEND_DNS_SERVERS=dns.address):
        email_id = await sender.queue(["frank@no-such-domain.example"])
        rows = await wait_until_final(pool, email_id)
    row = rows["frank@no-such-domain.example"]
    assert (row["status"], row["last_code"], row["last_enhanced"]) == ("bounced", 550, "5.1.2")
    assert "does not exist" in row["last_response"]


async def test_a_dns_failure_defers_and_never_bounces(
    queue: Queue, sender: Sender, dns: LoopbackDNSServer, tmp_path: Path
) -> None:
    url, pool = queue
    dns.zone.fail("flaky.example")  # SERVFAIL
    async with delivery_workers(pool, url, tmp_path, OPENSEND_DNS_SERVERS=dns.address):
        email_id = await sender.queue(["gina@flaky.example"])
        rows = await wait_until_final(pool, email_id, statuses=("deferred",))
    row = rows["gina@flaky.example"]
    assert (row["last_code"], row["last_enhanced"]) == (451, "4.4.3")
    assert row["next_attempt_at"] > row["last_attempt_at"]
    delayed = (await events(pool, email_id))[-1]
    assert delayed["type"] == "email.delivery_delayed"
    assert delayed["data"]["retry_in_seconds"] == 60
    assert await email_row(pool, email_id) == {
        "status": "delivery_delayed",
        "last_event": "email.delivery_delayed",
    }


# -- what the remote host answers ------------------------------------------------------------


async def test_greylisting_4xx_is_retried_on_the_schedule_then_delivered(
    queue: Queue, sender: Sender, sink: Sink, tmp_path: Path
) -> None:
    url, pool = queue
    sink.handler.data_replies = ["451 4.7.1 Greylisted, come back in a second"]
    env = {**transport("grey.example", sink), "OPENSEND_RETRY_SCHEDULE": "1s"}
    async with delivery_workers(pool, url, tmp_path, **env):
        email_id = await sender.queue(["hank@grey.example"])
        rows = await wait_until_final(pool, email_id)
    row = rows["hank@grey.example"]
    assert (row["status"], row["attempts"]) == ("delivered", 2)
    assert len(sink.messages) == 1
    trail = await events(pool, email_id)
    assert event_types(trail) == ["email.sent", "email.delivery_delayed", "email.delivered"]
    assert trail[1]["data"]["code"] == 451 and trail[1]["data"]["enhanced_code"] == "4.7.1"
    assert trail[1]["data"]["response"] == "Greylisted, come back in a second"


async def test_5xx_after_data_bounces_with_the_remotes_words(
    queue: Queue, sender: Sender, sink: Sink, tmp_path: Path
) -> None:
    url, pool = queue
    sink.handler.data_replies = ["554 5.7.1 Message rejected as spam"]
    async with delivery_workers(pool, url, tmp_path, **transport("strict.example", sink)):
        email_id = await sender.queue(["ivy@strict.example"])
        rows = await wait_until_final(pool, email_id)
    row = rows["ivy@strict.example"]
    assert (row["status"], row["last_code"], row["last_enhanced"]) == ("bounced", 554, "5.7.1")
    assert row["last_response"] == "Message rejected as spam"
    bounced = (await events(pool, email_id))[-1]
    assert bounced["data"]["remote"] and bounced["data"]["stage"] == "data"


async def test_recipients_at_one_host_share_one_transaction_each_with_its_own_outcome(
    queue: Queue, sender: Sender, sink: Sink, tmp_path: Path
) -> None:
    url, pool = queue
    sink.handler.rcpt_replies = {"gone@team.example": "550 5.1.1 No such user"}
    async with delivery_workers(pool, url, tmp_path, **transport("team.example", sink)):
        email_id = await sender.queue(
            ["amy@team.example", "gone@team.example"], cc=["ben@team.example"]
        )
        rows = await wait_until_final(pool, email_id)
    assert {r: row["status"] for r, row in rows.items()} == {
        "amy@team.example": "delivered",
        "gone@team.example": "bounced",
        "ben@team.example": "delivered",
    }
    assert rows["gone@team.example"]["last_enhanced"] == "5.1.1"
    assert len(sink.messages) == 1
    assert sorted(sink.messages[0].rcpt_tos) == ["amy@team.example", "ben@team.example"]
    assert (await email_row(pool, email_id))["status"] == "partially_bounced"


async def test_bcc_recipients_get_the_message_without_a_bcc_header(
    queue: Queue, sender: Sender, sink: Sink, tmp_path: Path
) -> None:
    url, pool = queue
    async with delivery_workers(pool, url, tmp_path, **transport("team.example", sink)):
        email_id = await sender.queue(["amy@team.example"], bcc=["boss@team.example"])
        await wait_until_final(pool, email_id)
    assert sorted(sink.messages[0].rcpt_tos) == ["amy@team.example", "boss@team.example"]
    assert b"\nbcc:" not in sink.messages[0].content.lower()


async def test_an_email_without_content_bounces_554_5_6_0_and_nothing_is_sent(
    queue: Queue, sender: Sender, sink: Sink, tmp_path: Path
) -> None:
    url, pool = queue
    email_id = await sender.queue(["void@empty.example"])
    await pool.execute("UPDATE emails SET raw = NULL WHERE id = $1", email_id)
    async with delivery_workers(pool, url, tmp_path, **transport("empty.example", sink)):
        rows = await wait_until_final(pool, email_id)
    row = rows["void@empty.example"]
    assert (row["status"], row["last_code"], row["last_enhanced"]) == ("bounced", 554, "5.6.0")
    assert sink.connections == 0


async def test_a_connection_dropped_mid_data_is_deferred_not_bounced(
    queue: Queue, sender: Sender, sink: Sink, tmp_path: Path
) -> None:
    url, pool = queue
    sink.handler.drop_on_data = True
    async with delivery_workers(pool, url, tmp_path, **transport("drops.example", sink)):
        email_id = await sender.queue(["jack@drops.example"])
        rows = await wait_until_final(pool, email_id, statuses=("deferred",))
    row = rows["jack@drops.example"]
    assert (row["last_code"], row["last_enhanced"]) == (451, "4.4.2")
    assert sink.messages == []
    delayed = (await events(pool, email_id))[-1]
    assert (delayed["type"], delayed["data"]["stage"]) == ("email.delivery_delayed", "data")


async def test_a_host_nobody_answers_on_is_deferred_4_4_1(
    queue: Queue, sender: Sender, tmp_path: Path
) -> None:
    url, pool = queue
    async with sinks_on_one_port("127.0.0.9") as (closed,):
        port = closed.port
    # The sink is gone: its port refuses connections now.
    env = {"OPENSEND_TRANSPORTS": f"down.example=127.0.0.9:{port}"}
    async with delivery_workers(pool, url, tmp_path, **env):
        email_id = await sender.queue(["kim@down.example"])
        rows = await wait_until_final(pool, email_id, statuses=("deferred",))
    assert (rows["kim@down.example"]["last_code"], rows["kim@down.example"]["last_enhanced"]) == (
        451,
        "4.4.1",
    )


async def test_a_host_that_greets_with_554_is_skipped_and_the_mail_deferred(
    queue: Queue, sender: Sender, tmp_path: Path
) -> None:
    """Postfix's smtp_skip_5xx_greeting: a 5xx banner says nothing about the message."""
    url, pool = queue

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"554 5.7.1 No SMTP service here\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        env = {"OPENSEND_TRANSPORTS": f"rude.example=127.0.0.1:{port}"}
        async with delivery_workers(pool, url, tmp_path, **env):
            email_id = await sender.queue(["ty@rude.example"])
            rows = await wait_until_final(pool, email_id, statuses=("deferred",))
    finally:
        server.close()
    row = rows["ty@rude.example"]
    assert (row["last_code"], row["last_enhanced"]) == (554, "5.7.1")
    delayed = (await events(pool, email_id))[-1]
    assert (delayed["type"], delayed["data"]["stage"]) == ("email.delivery_delayed", "greeting")


async def test_a_message_older_than_the_maximum_age_is_bounced_at_its_next_failure(
    queue: Queue, sender: Sender, sink: Sink, tmp_path: Path
) -> None:
    url, pool = queue
    sink.handler.data_replies = ["451 4.3.0 Try again"] * 10
    env = {
        **transport("slow.example", sink),
        "OPENSEND_RETRY_SCHEDULE": "1s",
        "OPENSEND_MAX_QUEUE_AGE": "1s",
    }
    async with delivery_workers(pool, url, tmp_path, **env):
        email_id = await sender.queue(["lee@slow.example"])
        rows = await wait_until_final(pool, email_id)
    row = rows["lee@slow.example"]
    assert (row["status"], row["attempts"], row["last_code"]) == ("bounced", 2, 451)
    trail = await events(pool, email_id)
    assert event_types(trail) == ["email.sent", "email.delivery_delayed", "email.bounced"]
    assert trail[-1]["data"]["expired"] is True
    assert trail[-1]["data"]["response"] == "Try again"


async def test_a_static_transport_wins_over_the_relay_and_dns(
    queue: Queue, sender: Sender, sink: Sink, dns: LoopbackDNSServer, tmp_path: Path
) -> None:
    url, pool = queue
    dns.zone.add("routed.example", "MX", "10 mx.elsewhere.example.")
    env = {
        **transport("routed.example", sink),
        "OPENSEND_RELAY": "smtp://127.0.0.1:1",  # would refuse every connection
        "OPENSEND_DNS_SERVERS": dns.address,
    }
    async with delivery_workers(pool, url, tmp_path, **env):
        email_id = await sender.queue(["mo@routed.example"])
        rows = await wait_until_final(pool, email_id)
    assert rows["mo@routed.example"]["status"] == "delivered"
    assert dns.queried("routed.example", "MX") == 0


async def test_the_relay_takes_mail_for_every_other_domain(
    queue: Queue, sender: Sender, sink: Sink, dns: LoopbackDNSServer, tmp_path: Path
) -> None:
    url, pool = queue
    env = {"OPENSEND_RELAY": f"smtp://{sink.host}:{sink.port}", "OPENSEND_DNS_SERVERS": dns.address}
    async with delivery_workers(pool, url, tmp_path, **env):
        email_id = await sender.queue(["ned@one.example", "ola@two.example"])
        rows = await wait_until_final(pool, email_id)
    assert {row["status"] for row in rows.values()} == {"delivered"}
    assert len(sink.messages) == 1  # one route, one transaction
    assert sorted(sink.messages[0].rcpt_tos) == ["ned@one.example", "ola@two.example"]
    assert dns.queries == []


async def test_a_scheduled_email_waits_and_its_first_claim_emits_email_sent_once(
    queue: Queue, sender: Sender, sink: Sink, tmp_path: Path
) -> None:
    url, pool = queue
    when = await pool.fetchval("SELECT now() + interval '1 second'")
    async with delivery_workers(pool, url, tmp_path, **transport("later.example", sink)):
        email_id = await sender.queue(
            ["pat@later.example", "quinn@later.example"], scheduled_at=when
        )
        assert (await email_row(pool, email_id))["status"] == "scheduled"
        rows = await wait_until_final(pool, email_id)
    assert min(row["last_attempt_at"] for row in rows.values()) >= when
    assert event_types(await events(pool, email_id)) == [
        "email.scheduled",
        "email.sent",
        "email.delivered",
        "email.delivered",
    ]


async def test_queue_gauges_show_depth_and_attempts_count_by_result(
    queue: Queue, sender: Sender, tmp_path: Path
) -> None:
    url, pool = queue
    env = {"OPENSEND_TRANSPORTS": "stuck.example=127.0.0.1:1"}
    deferred_before = metrics.DELIVERY_ATTEMPTS.labels("deferred")._value.get()
    async with delivery_workers(pool, url, tmp_path, **env):
        email_id = await sender.queue(["rae@stuck.example"])
        await wait_until_final(pool, email_id, statuses=("deferred",))
        await poll_until(lambda: metrics.DELIVERY_QUEUE_DEPTH.labels("deferred")._value.get() >= 1)
    assert metrics.DELIVERY_ATTEMPTS.labels("deferred")._value.get() == deferred_before + 1
    assert metrics.DELIVERY_LATENCY.labels("transport")._sum.get() > 0
