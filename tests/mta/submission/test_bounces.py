"""Bounces we generate: a message accepted on the submission port that the remote refuses gets
a real RFC 3464 DSN, delivered from the null reverse-path to its envelope sender (here a loopback
sink standing for the sender's own server). API sends get events, not DSNs."""

from __future__ import annotations

from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from pathlib import Path
from uuid import UUID

from aiohttp import web

from api.app import make_app
from mta.dns import Resolver
from policy.domains.dkim_keys import DkimKeyPair
from policy.tokens import ReplyTokens
from storage.database import Pool
from tests.api.sending.emails_client import emails_api
from tests.conftest import StartSubmission, make_settings, message
from tests.mta.submission.test_delivery import queue, sink, tenant_on
from tests.mta.submission.test_pipeline import submit
from tests.support.delivery_world import delivery_workers
from tests.support.queued_mail import poll_until, wait_until_final
from tests.support.smtp_sink import Sink

Queue = tuple[str, Pool]
__all__ = ["queue", "sink"]  # fixtures: the queue's own database, and the loopback sink
GONE = "550 5.1.1 <gone@example.net>: no such user"


def report_parts(content: bytes) -> dict[str, Message]:
    report = message_from_bytes(content, policy=compat32)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    payload = report.get_payload()
    assert isinstance(payload, list)
    return {part.get_content_type(): part for part in payload}


async def test_submission_message_refused_by_the_remote_gets_a_dsn_to_its_sender(
    queue: Queue,
    sink: Sink,
    tmp_path: Path,
    tokens: ReplyTokens,
    dkim_key: DkimKeyPair,
    start_test_submission: StartSubmission,
) -> None:
    url, pool = queue
    sink.handler.rcpt_replies["gone@example.net"] = GONE
    acme = await tenant_on(pool, tokens, dkim_key)
    server = await start_test_submission(on=pool)
    transports = f"example.net={sink.host}:{sink.port},{acme.name}={sink.host}:{sink.port}"
    content = message(sender=f"support@{acme.name}", to="gone@example.net", subject="Order")
    async with delivery_workers(pool, url, tmp_path, OPENSEND_TRANSPORTS=transports):
        email_id = await submit(server, acme, content, ["gone@example.net"])
        final = await wait_until_final(pool, email_id)
        assert final["gone@example.net"]["status"] == "bounced"
        await poll_until(lambda: bool(sink.received_by(f"support@{acme.name}")))

    [dsn] = sink.received_by(f"support@{acme.name}")
    assert dsn.mail_from == "<>"  # RFC 3464 section 2: from the null reverse-path
    parsed = message_from_bytes(dsn.content, policy=compat32)
    assert parsed["Auto-Submitted"] == "auto-replied"
    parts = report_parts(dsn.content)
    status = parts["message/delivery-status"].get_payload()
    assert isinstance(status, list)
    per_recipient = status[1]
    assert per_recipient["Final-Recipient"] == "rfc822; gone@example.net"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert "no such user" in per_recipient["Diagnostic-Code"]
    returned = parts["text/rfc822-headers"].get_payload()
    assert isinstance(returned, str)
    assert str(message_from_bytes(content)["Message-ID"]) in returned
    # The DSN is an email of the tenant, and never gets a DSN itself.
    sources = await pool.fetch(
        "SELECT source, from_address FROM emails WHERE tenant_id = $1 ORDER BY created_at", acme.id
    )
    assert [(r["source"], r["from_address"]) for r in sources] == [
        ("smtp", f"support@{acme.name}"),
        ("dsn", ""),
    ]


async def test_api_send_that_bounces_gets_events_and_no_dsn(
    queue: Queue,
    sink: Sink,
    tmp_path: Path,
    tokens: ReplyTokens,
    dkim_key: DkimKeyPair,
) -> None:
    url, pool = queue
    sink.handler.rcpt_replies["gone@example.net"] = GONE
    acme = await tenant_on(pool, tokens, dkim_key)
    transports = f"example.net={sink.host}:{sink.port},{acme.name}={sink.host}:{sink.port}"
    settings = make_settings(tmp_path)
    runner = web.AppRunner(make_app(pool, settings, tokens, Resolver(settings.dns_servers)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        async with (
            delivery_workers(pool, url, tmp_path, OPENSEND_TRANSPORTS=transports),
            emails_api(f"http://127.0.0.1:{runner.addresses[0][1]}", await acme.api_key()) as api,
        ):
            sent = await api.sent_id(
                {"from": f"support@{acme.name}", "to": ["gone@example.net"], "text": "y"}
                | {"subject": "x"}
            )
            final = await wait_until_final(pool, UUID(sent))
    finally:
        await runner.cleanup()
    assert final["gone@example.net"]["status"] == "bounced"
    count = await pool.fetchval("SELECT count(*) FROM emails WHERE tenant_id = $1", acme.id)
    assert count == 1
    assert sink.received_by(f"support@{acme.name}") == []
