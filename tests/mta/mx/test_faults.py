"""The MX under faults: 250 only after COMMIT; storage trouble is 451 4.x.x, never 5xx.

The database is stopped in the middle of SMTP transactions (and once in the middle of the
MX's own database transaction); the server process is killed right after a 250 and before its
commit, and terminated during a DATA; many sessions commit together. Whatever happens, a message
is either stored exactly once or refused with a temporary reply, so the sender keeps it and
tries again.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email import message_from_bytes
from pathlib import Path
from uuid import UUID

import asyncpg
import pytest

from mta.listeners import MXListener, start_mx
from policy import replies
from policy.tokens import ReplyTokens
from storage.account import directory
from storage.database import Pool, open_pool
from storage.migrate import migrate
from tests.conftest import (
    DOMAIN_VIEW,
    TEST_SECRET,
    MakeTenant,
    TenantWorld,
    make_settings,
    message,
    received_rows,
    smtp_send,
)
from tests.support.databases import Cluster, disposable_cluster
from tests.support.opensend_cli import opensend_server, server_env
from tests.support.smtp import RawSMTP, SMTPReply

# Bounds that only stop a hung test (polling the database for a lock wait).
POLL_ATTEMPTS = 300
CONCURRENT_SESSIONS = 40


# -- the conversation, byte for byte --------------------------------------------------------


def assert_reply(reply: SMTPReply, expected: replies.Reply) -> None:
    """Both codes, so a 451 with a 5.x.x enhanced code (or the reverse) fails (RFC 3463)."""
    assert (reply.code, reply.enhanced) == (expected.code, expected.enhanced), reply.text


def data_block(content: bytes) -> bytes:
    """The message as sent after 354: dot-stuffed and ended by CRLF.CRLF (RFC 5321 4.5.2)."""
    stuffed = content.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def queued_ids(reply: SMTPReply) -> list[UUID]:
    assert reply.code == 250, reply.text
    return [UUID(part) for part in reply.lines[-1].split("queued as ", 1)[1].split()]


def message_id_of(content: bytes) -> str:
    return str(message_from_bytes(content)["Message-ID"]).strip().strip("<>")


async def open_transaction(port: int, sender: str, recipients: list[str]) -> RawSMTP:
    """EHLO, MAIL and RCPT, each accepted: a transaction ready for DATA."""
    client, banner = await RawSMTP.connect("127.0.0.1", port)
    assert banner.code == 220, banner.text
    assert (await client.command("EHLO client.example.net")).code == 250
    assert (await client.command(f"MAIL FROM:<{sender}>")).code == 250
    for rcpt in recipients:
        accepted = await client.command(f"RCPT TO:<{rcpt}>")
        assert accepted.code == 250, accepted.text
    return client


async def send_data(client: RawSMTP, content: bytes) -> SMTPReply:
    ready = await client.command("DATA")
    assert ready.code == 354, ready.text
    await client.send_raw(data_block(content))
    return await client.read_reply()


# -- an MX whose database the test may stop --------------------------------------------------


@dataclass
class IsolatedMX:
    """The real MX in the test's loop, on a cluster of its own that the test stops and starts."""

    cluster: Cluster
    pool: Pool
    listener: MXListener
    tokens: ReplyTokens

    @property
    def port(self) -> int:
        return self.listener.port

    async def tenant(self, *, catch_all: bool = False) -> TenantWorld:
        """As the `make_tenant` fixture makes them, on this cluster."""
        suffix = secrets.token_hex(4)
        tenant = await directory.create_tenant(self.pool, f"tenant-{suffix}")
        name = f"t{suffix}.test"
        domain = await directory.add_domain(
            self.pool,
            tenant.id,
            name,
            receiving=True,
            reply_domain=f"inbound.{name}",
            verified=True,
            event_data=DOMAIN_VIEW.event_data,
        )
        world = TenantWorld(self.pool, self.tokens, tenant, domain)
        if catch_all:
            await world.route(f"*@{name}")
        return world

    async def rows_for(self, *tenants: TenantWorld) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT * FROM received_emails WHERE tenant_id = ANY($1::uuid[]) ORDER BY tenant_id",
            [t.id for t in tenants],
        )
        return rows


@pytest.fixture
async def isolated(tmp_path: Path, tokens: ReplyTokens) -> AsyncIterator[IsolatedMX]:
    async with disposable_cluster() as cluster:
        await migrate(cluster.url)
        pool = await open_pool(cluster.url, min_size=1, max_size=4)
        try:
            listener = await start_mx(make_settings(tmp_path), pool, tokens)
            try:
                yield IsolatedMX(cluster, pool, listener, tokens)
            finally:
                await listener.drain(grace=1.0)
        finally:
            pool.terminate()  # its server may be down: close without waiting on it


# -- the database goes away ------------------------------------------------------------------


async def test_data_while_the_database_is_down_is_deferred_451_4_3_0_and_stored_once_on_retry(
    isolated: IsolatedMX,
) -> None:
    acme = await isolated.tenant()
    email, token = await acme.sent_email()
    reply_address = token.address(acme.reply_domain)
    content = message(to=reply_address, subject="Re: Your order")

    client = await open_transaction(isolated.port, "customer@example.net", [reply_address])
    await isolated.cluster.stop()
    deferred = await send_data(client, content)
    await client.close()

    assert_reply(deferred, replies.S451_TEMP_STORAGE)

    # The sender retries the same message once the database is back: stored once, matched.
    await isolated.cluster.start()
    retried = await smtp_send(isolated.port, "customer@example.net", [reply_address], content)
    assert retried.data is not None and retried.data[0] == 250, retried.data
    [row] = await isolated.pool.fetch(
        "SELECT * FROM received_emails WHERE message_id = $1", message_id_of(content)
    )
    assert [row["id"]] == retried.stored_ids
    assert row["tenant_id"] == acme.id
    assert bytes(row["raw"]) == content
    assert row["reply_match_status"] == "matched"
    assert row["reply_to_email_id"] == email.id
    assert row["thread_id"] == email.thread_id


async def test_rcpt_while_the_database_is_down_is_deferred_451_4_4_3_and_the_session_recovers(
    isolated: IsolatedMX,
) -> None:
    acme = await isolated.tenant(catch_all=True)
    client, _ = await RawSMTP.connect("127.0.0.1", isolated.port)
    assert (await client.command("EHLO client.example.net")).code == 250
    assert (await client.command("MAIL FROM:<customer@example.net>")).code == 250

    await isolated.cluster.stop()
    ours = await client.command(f"RCPT TO:<x@{acme.name}>")
    # Without the database the MX cannot know this domain is not ours: no 550 relay denied.
    unknown = await client.command("RCPT TO:<someone@elsewhere.example>")

    assert_reply(ours, replies.S451_TEMP_LOOKUP)
    assert_reply(unknown, replies.S451_TEMP_LOOKUP)

    # The same session goes on once the database is back.
    await isolated.cluster.start()
    accepted = await client.command(f"RCPT TO:<x@{acme.name}>")
    assert accepted.code == 250, accepted.text
    stored = await send_data(client, message(to=f"x@{acme.name}"))
    await client.close()
    [row] = await received_rows(isolated.pool, queued_ids(stored))
    assert row["tenant_id"] == acme.id
    assert row["rcpt_to"] == [f"x@{acme.name}"]


async def test_first_message_after_a_quiet_database_restart_is_stored(
    isolated: IsolatedMX,
) -> None:
    acme = await isolated.tenant(catch_all=True)
    warm = await smtp_send(isolated.port, "c@example.net", [f"x@{acme.name}"], message())
    assert warm.data is not None and warm.data[0] == 250

    # Every pooled connection dies with the server while no mail arrives (a nightly restart).
    await isolated.cluster.stop()
    await isolated.cluster.start()
    after = await smtp_send(isolated.port, "c@example.net", [f"x@{acme.name}"], message())

    assert after.recipients[f"x@{acme.name}"][0] == 250
    assert after.data is not None and after.data[0] == 250, after.data
    assert len(await received_rows(isolated.pool, after.stored_ids)) == 1


async def _backend_blocked_by(pool: Pool, holder: asyncpg.Connection) -> asyncpg.Record:
    """The session waiting for a lock `holder` holds, once there is one (polled, bounded).

    Asked through `pool`, outside the holder's transaction: pg_stat_activity is a snapshot
    taken once per transaction.
    """
    for _ in range(POLL_ATTEMPTS):
        waiting = await pool.fetchrow(
            "SELECT pid, backend_xid, query FROM pg_stat_activity"
            " WHERE $1 = ANY(pg_blocking_pids(pid))",
            holder.get_server_pid(),
        )
        if waiting is not None:
            return waiting
        await asyncio.sleep(0.02)
    raise AssertionError("the MX never reached the locked row")


async def test_database_stopped_mid_commit_stores_nothing_for_any_tenant(
    isolated: IsolatedMX,
) -> None:
    acme = await isolated.tenant(catch_all=True)
    globex = await isolated.tenant(catch_all=True)
    recipients = [f"team@{acme.name}", f"team@{globex.name}"]
    content = message(to=", ".join(recipients), subject="For both of you")
    client = await open_transaction(isolated.port, "c@example.net", recipients)

    # Hold globex's tenant row, so the MX's transaction writes acme's row, then waits on the
    # foreign key of globex's: the database stops while that transaction is half done.
    blocker = await asyncpg.connect(isolated.cluster.url)
    holding = blocker.transaction()
    await holding.start()
    await blocker.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", globex.id)
    assert (await client.command("DATA")).code == 354
    await client.send_raw(data_block(content))
    waiting = await _backend_blocked_by(isolated.pool, blocker)
    assert "received_emails" in waiting["query"]
    assert waiting["backend_xid"] is not None  # it has written already

    await isolated.cluster.stop()
    deferred = await client.read_reply()
    await client.close()
    blocker.terminate()

    assert_reply(deferred, replies.S451_TEMP_STORAGE)
    await isolated.cluster.start()
    assert await isolated.rows_for(acme, globex) == []

    # Retried, the message is stored once for each tenant.
    retried = await smtp_send(isolated.port, "c@example.net", recipients, content)
    rows = await isolated.rows_for(acme, globex)
    assert sorted(r["id"] for r in rows) == sorted(retried.stored_ids)
    assert {r["tenant_id"] for r in rows} == {acme.id, globex.id}


async def test_two_tenant_message_while_the_database_is_down_stores_nothing(
    isolated: IsolatedMX,
) -> None:
    acme = await isolated.tenant(catch_all=True)
    globex = await isolated.tenant(catch_all=True)
    recipients = [f"team@{acme.name}", f"team@{globex.name}"]
    client = await open_transaction(isolated.port, "c@example.net", recipients)

    await isolated.cluster.stop()
    deferred = await send_data(client, message(to=", ".join(recipients)))
    await client.close()

    assert_reply(deferred, replies.S451_TEMP_STORAGE)
    await isolated.cluster.start()
    assert await isolated.rows_for(acme, globex) == []


# -- the server process goes away ------------------------------------------------------------


@pytest.fixture
def serve_env(tmp_path: Path, database_url: str, pool: Pool) -> dict[str, str]:
    """`opensend serve --only mta` on the session database (migrated by `pool`)."""
    return server_env(tmp_path, database_url, OPENSEND_REPLY_TOKEN_SECRET=TEST_SECRET)


@pytest.mark.slow
async def test_message_acknowledged_250_survives_sigkill_right_after(
    serve_env: dict[str, str], tmp_path: Path, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    content = message(to=f"x@{acme.name}", subject="Acknowledged, then killed")

    async with opensend_server(serve_env, tmp_path / "serve.log") as server:
        client = await open_transaction(server.mx_port, "c@example.net", [f"x@{acme.name}"])
        stored = await send_data(client, content)
        server.signal(signal.SIGKILL)  # before QUIT, before anything else can happen
        assert await server.exit_code() == -signal.SIGKILL
        await client.close()

    [row] = await received_rows(pool, queued_ids(stored))
    assert row["tenant_id"] == acme.id
    assert bytes(row["raw"]) == content


@pytest.mark.slow
async def test_process_killed_before_its_commit_sent_no_250_and_stored_nothing(
    serve_env: dict[str, str], tmp_path: Path, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    content = message(to=f"x@{acme.name}", subject="Killed while committing")

    async with (
        opensend_server(serve_env, tmp_path / "serve.log") as server,
        pool.acquire() as blocker,
    ):
        client = await open_transaction(server.mx_port, "c@example.net", [f"x@{acme.name}"])
        # The server's INSERT waits on the tenant row's lock: its COMMIT cannot be sent yet.
        async with blocker.transaction():
            await blocker.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", acme.id)
            assert (await client.command("DATA")).code == 354
            await client.send_raw(data_block(content))
            await _backend_blocked_by(pool, blocker)
            server.signal(signal.SIGKILL)
            assert await server.exit_code() == -signal.SIGKILL
        with pytest.raises(ConnectionError):
            await client.read_reply()  # the connection closed without a reply
        await client.close()

    assert (
        await pool.fetchval("SELECT count(*) FROM received_emails WHERE tenant_id = $1", acme.id)
        == 0
    )


@pytest.mark.slow
async def test_sigterm_during_data_lets_the_transaction_finish_then_exits_0(
    serve_env: dict[str, str], tmp_path: Path, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    content = message(to=f"x@{acme.name}", body="A line of the message.\n" * 200)
    block = data_block(content)

    async with opensend_server(serve_env, tmp_path / "serve.log") as server:
        idle, _ = await RawSMTP.connect("127.0.0.1", server.mx_port)
        assert (await idle.command("EHLO idle.example.net")).code == 250
        client = await open_transaction(server.mx_port, "c@example.net", [f"x@{acme.name}"])
        assert (await client.command("DATA")).code == 354
        await client.send_raw(block[: len(block) // 2])

        server.signal(signal.SIGTERM)
        await server.wait_listener_closed()  # the drain has begun
        shut_out = await idle.read_reply()
        await client.send_raw(block[len(block) // 2 :])
        stored = await client.read_reply()
        exit_code = await server.exit_code()
        await idle.close()
        await client.close()

    assert_reply(shut_out, replies.S421_SHUTTING_DOWN)
    assert stored.code == 250, stored.text
    assert exit_code == 0, server.output()
    [row] = await received_rows(pool, queued_ids(stored))
    assert bytes(row["raw"]) == content


# -- many sessions committing together -------------------------------------------------------


async def test_concurrent_messages_are_each_stored_once_with_their_own_content(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    sessions = range(CONCURRENT_SESSIONS)
    contents = [
        message(to=f"x{i}@{acme.name}", subject=f"message {i}", body=f"body {i}\n")
        for i in sessions
    ]

    sent = await asyncio.gather(
        *(
            smtp_send(mx.port, f"c{i}@example.net", [f"x{i}@{acme.name}"], contents[i])
            for i in sessions
        )
    )

    assert [d.data[0] if d.data else None for d in sent] == [250] * CONCURRENT_SESSIONS
    ids = [delivery.stored_ids for delivery in sent]
    assert all(len(one) == 1 for one in ids)
    flat = [one[0] for one in ids]
    assert len(set(flat)) == CONCURRENT_SESSIONS
    rows = {row["id"]: row for row in await received_rows(pool, flat)}
    for i, record_id in enumerate(flat):
        # Each 250 names the row holding that session's own message and envelope.
        assert bytes(rows[record_id]["raw"]) == contents[i]
        assert rows[record_id]["rcpt_to"] == [f"x{i}@{acme.name}"]
        assert rows[record_id]["mail_from"] == f"c{i}@example.net"
    total = await pool.fetchval(
        "SELECT count(*) FROM received_emails WHERE tenant_id = $1", acme.id
    )
    assert total == CONCURRENT_SESSIONS


# -- a failure that is not temporary ---------------------------------------------------------


async def test_message_with_an_over_long_message_id_is_stored_not_deferred_forever(
    mx: MXListener, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    # Past what one btree index row holds (2704 bytes); random hex, so it does not compress.
    content = (
        b"From: a@example.net\r\nSubject: long id\r\n"
        b"Message-ID: <" + secrets.token_hex(1500).encode() + b"@example.net>\r\n\r\nbody\r\n"
    )

    sent = await smtp_send(mx.port, "a@example.net", [f"x@{acme.name}"], content)

    # A 451 here would be answered again to every retry until the sender gives up.
    assert sent.data is not None and sent.data[0] == 250, sent.data
    [row] = await received_rows(pool, sent.stored_ids)
    assert bytes(row["raw"]) == content
