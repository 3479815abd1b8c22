"""`opensend serve` and the submission ports, as an operator starts them: production refuses to
listen without a certificate (exit 2); development makes a self-signed one and serves 587 and 465
with it, end to end through to delivery."""

from __future__ import annotations

import asyncio
import signal
import smtplib
import ssl
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from policy.domains.dkim_keys import DkimKeyPair
from policy.tokens import ReplyTokens
from storage.database import Pool
from tests.conftest import TEST_SECRET, message
from tests.mta.submission.test_delivery import tenant_on
from tests.support.delivery_world import queue_database
from tests.support.opensend_cli import opensend_env, opensend_server, run_opensend, server_env
from tests.support.smtp_sink import Sink

HOSTNAME = "mx.opensend.test"  # what opensend_env sets OPENSEND_HOSTNAME to


def port_of(env: dict[str, str], name: str) -> int:
    return int(env[name].rsplit(":", 1)[1])


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    started = await Sink.start()
    yield started
    await started.stop()


async def test_serve_in_production_without_a_certificate_exits_2_and_admin_commands_run(
    tmp_path: Path, database_url: str, pool: Pool
) -> None:
    env = opensend_env(
        tmp_path,
        database_url,
        OPENSEND_ENV="production",
        OPENSEND_REPLY_TOKEN_SECRET=TEST_SECRET,
        OPENSEND_MX_LISTEN="127.0.0.1:0",
    )

    refused = await run_opensend("serve", "--only", "mta", env=env)
    migrated = await run_opensend("migrate", env=env)

    assert refused.returncode == 2, refused
    assert "Traceback" not in refused.stderr
    assert "OPENSEND_TLS_CERT and OPENSEND_TLS_KEY: required" in refused.stderr
    assert migrated.returncode == 0, migrated  # only serving the ports needs the certificate


@pytest.mark.slow
async def test_serve_in_development_makes_a_certificate_and_submission_delivers(
    tmp_path: Path,
    database_url: str,
    sink: Sink,
    tokens: ReplyTokens,
    dkim_key: DkimKeyPair,
) -> None:
    # A database of its own: the server's delivery workers must find only this test's mail.
    async with queue_database(database_url) as (url, queue_pool):
        acme = await tenant_on(queue_pool, tokens, dkim_key)
        await submit_and_deliver(tmp_path, url, await acme.api_key(), acme.name, sink)


async def submit_and_deliver(tmp_path: Path, url: str, key: str, domain: str, sink: Sink) -> None:
    data_dir = tmp_path / "data"
    env = server_env(
        data_dir,
        url,
        OPENSEND_REPLY_TOKEN_SECRET=TEST_SECRET,
        OPENSEND_TRANSPORTS=f"example.net={sink.host}:{sink.port}",
    )
    sender = f"support@{domain}"

    async with opensend_server(env, tmp_path / "serve.log") as server:
        cert = data_dir / "tls" / "development.crt"
        trust = ssl.create_default_context(cadata=cert.read_text())
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=port_of(env, "OPENSEND_SUBMISSION_LISTEN"),
            start_tls=False,
            timeout=30,
        )
        await client.connect()
        await client.ehlo()
        await client.starttls(server_hostname=HOSTNAME, tls_context=trust)
        await client.ehlo()
        await client.auth_plain("dev", key)
        await client.sendmail(sender, ["bob@example.net"], message(sender=sender))
        await client.quit()

        # Port 465 with the same certificate, verified for the loopback address it names.
        def implicit_tls() -> None:
            port = port_of(env, "OPENSEND_SUBMISSIONS_LISTEN")
            with smtplib.SMTP_SSL("127.0.0.1", port, context=trust, timeout=30) as implicit:
                implicit.login("dev", key)
                implicit.sendmail(sender, ["carol@example.net"], message(sender=sender))

        await asyncio.to_thread(implicit_tls)

        await sink.wait_for(lambda: len(sink.messages) >= 2)
        server.signal(signal.SIGTERM)
        assert await server.exit_code() == 0, server.output()

    key_file = data_dir / "tls" / "development.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "self-signed development certificate" in server.output()
    assert sorted(r for m in sink.messages for r in m.rcpt_tos) == [
        "bob@example.net",
        "carol@example.net",
    ]
    assert all(m.content.startswith(b"DKIM-Signature:") for m in sink.messages)
