"""The submission ports under faults: the database stops in the middle of a session. Every answer
is then a 4xx of the same class in both codes, so the client keeps the message and tries again;
nothing half-written, and the retry stores the message once."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email import message_from_bytes

import pytest

from policy import replies
from policy.tokens import ReplyTokens
from storage.account import directory
from storage.database import Pool, open_pool
from storage.migrate import migrate
from tests.conftest import (
    DOMAIN_VIEW,
    SUBMISSION_HOST,
    StartSubmission,
    SubmissionServer,
    TenantWorld,
    message,
)
from tests.mta.mx.test_faults import assert_reply, data_block
from tests.mta.submission.test_pipeline import submit
from tests.support.databases import Cluster, disposable_cluster
from tests.support.smtp import RawSMTP

CLIENT_NAME = "laptop.example.net"


@dataclass
class Isolated:
    """Submission on a cluster of its own, which the test stops and starts."""

    cluster: Cluster
    pool: Pool
    server: SubmissionServer
    acme: TenantWorld
    key: str

    async def emails(self) -> int:
        count: int = await self.pool.fetchval(
            "SELECT count(*) FROM emails WHERE tenant_id = $1", self.acme.id
        )
        return count


@pytest.fixture
async def isolated(
    tokens: ReplyTokens, start_test_submission: StartSubmission
) -> AsyncIterator[Isolated]:
    async with disposable_cluster() as cluster:
        await migrate(cluster.url)
        pool = await open_pool(cluster.url, min_size=1, max_size=4)
        try:
            suffix = secrets.token_hex(4)
            tenant = await directory.create_tenant(pool, f"tenant-{suffix}")
            domain = await directory.add_domain(
                pool,
                tenant.id,
                f"t{suffix}.test",
                receiving=True,
                reply_domain=f"inbound.t{suffix}.test",
                verified=True,
                event_data=DOMAIN_VIEW.event_data,
            )
            acme = TenantWorld(pool, tokens, tenant, domain)
            server = await start_test_submission(on=pool, OPENSEND_AUTH_MAX_FAILURES="1")
            yield Isolated(cluster, pool, server, acme, await acme.api_key())
        finally:
            pool.terminate()  # its server may be down: close without waiting on it


async def logged_in_raw(isolated: Isolated) -> RawSMTP:
    """A byte-level session on port 587: STARTTLS, EHLO again, AUTH PLAIN with the key."""
    client, banner = await RawSMTP.connect("127.0.0.1", isolated.server.starttls_port)
    assert banner.code == 220, banner
    assert (await client.command(f"EHLO {CLIENT_NAME}")).code == 250
    assert (await client.command("STARTTLS")).code == 220
    await client.writer.start_tls(isolated.server.client_context(), server_hostname=SUBMISSION_HOST)
    assert (await client.command(f"EHLO {CLIENT_NAME}")).code == 250
    secret = base64.b64encode(f"\0laptop\0{isolated.key}".encode()).decode()
    logged_in = await client.command(f"AUTH PLAIN {secret}")
    assert logged_in.code == 235, logged_in
    return client


async def test_database_stopped_mid_data_is_deferred_451_and_the_retry_is_stored_once(
    isolated: Isolated,
) -> None:
    sender = f"support@{isolated.acme.name}"
    content = message(sender=sender, to="bob@example.net", body="A line.\n" * 200)
    block = data_block(content)
    client = await logged_in_raw(isolated)
    assert (await client.command(f"MAIL FROM:<{sender}>")).code == 250
    assert (await client.command("RCPT TO:<bob@example.net>")).code == 250
    assert (await client.command("DATA")).code == 354
    await client.send_raw(block[: len(block) // 2])

    await isolated.cluster.stop()
    await client.send_raw(block[len(block) // 2 :])
    deferred = await client.read_reply()
    await client.close()

    assert_reply(deferred, replies.S451_TEMP_STORAGE)
    await isolated.cluster.start()
    assert await isolated.emails() == 0

    email_id = await submit(isolated.server, isolated.acme, content, ["bob@example.net"])
    [row] = await isolated.pool.fetch(
        "SELECT id, message_id FROM emails WHERE tenant_id = $1", isolated.acme.id
    )
    assert row["id"] == email_id
    assert row["message_id"] == message_from_bytes(content)["Message-ID"].strip("<>")
    queued = await isolated.pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE email_id = $1", email_id
    )
    assert queued == 1


async def test_mail_from_while_the_database_is_down_is_deferred_451_4_4_3(
    isolated: Isolated,
) -> None:
    client = await logged_in_raw(isolated)
    await isolated.cluster.stop()
    deferred = await client.command(f"MAIL FROM:<support@{isolated.acme.name}>")
    await client.close()

    assert_reply(deferred, replies.S451_TEMP_SENDER_LOOKUP)


async def test_login_while_the_database_is_down_is_454_and_never_counts_as_a_failure(
    isolated: Isolated,
) -> None:
    # OPENSEND_AUTH_MAX_FAILURES is 1 here: one counted failure would lock the address out.
    await isolated.cluster.stop()
    client, _ = await RawSMTP.connect("127.0.0.1", isolated.server.starttls_port)
    assert (await client.command(f"EHLO {CLIENT_NAME}")).code == 250
    assert (await client.command("STARTTLS")).code == 220
    await client.writer.start_tls(isolated.server.client_context(), server_hostname=SUBMISSION_HOST)
    assert (await client.command(f"EHLO {CLIENT_NAME}")).code == 250
    unknown_key = base64.b64encode(b"\0laptop\0re_unknown-while-down").decode()
    unchecked = await client.command(f"AUTH PLAIN {unknown_key}")
    await client.close()
    await isolated.cluster.start()

    assert_reply(unchecked, replies.S454_AUTH_TEMPORARY)
    client = await logged_in_raw(isolated)  # asserts the 235: not locked out
    await client.close()
