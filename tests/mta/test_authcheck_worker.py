"""Authentication results end to end: mail sent through the real MX, checked by the real workers
against a real DNS server, shown by the real API; DNS outages, dead workers and lost leases.

The module has a database of its own, so its workers claim only its own mail.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import UUID

import aiohttp
import pytest

from mta import metrics
from mta.authcheck import Authenticator
from mta.authcheck_worker import AuthCheckOptions, AuthCheckWorkers
from mta.dns import BlockingResolver
from mta.server import MXListener
from policy.authentication import RECHECK_SCHEDULE
from policy.dkim_keys import DkimKeyPair
from policy.settings import HostPort
from storage import authresults
from storage.database import Pool
from tests.conftest import ApiServer, MakeTenant, StartApi, StartMX, TenantWorld, smtp_send
from tests.support.delivery_world import queue_database
from tests.support.dns_server import LoopbackDNSServer
from tests.support.mail_auth import AuthSender, mail

AUTHSERV_ID = "mx.opensend.test"  # OPENSEND_HOSTNAME of the tests' settings
WAIT_SECONDS = 60.0  # only stops a hung test; no assertion depends on it


@pytest.fixture(scope="module")
async def own_database(database_url: str) -> AsyncIterator[tuple[str, Pool]]:
    async with queue_database(database_url) as made:
        yield made


@pytest.fixture(scope="module")
def pool(own_database: tuple[str, Pool]) -> Pool:
    """Overrides the session pool: the MX, the API and the tenants of this module use it."""
    return own_database[1]


@pytest.fixture(autouse=True)
async def nothing_left_due(pool: Pool) -> AsyncIterator[None]:
    """A test's unchecked mail is not the next test's to check (with the next test's DNS)."""
    yield
    await pool.execute("DELETE FROM received_auth_queue")


@pytest.fixture
def sender(dns: LoopbackDNSServer, dkim_key: DkimKeyPair) -> AuthSender:
    return AuthSender("sender-x.example", dns.zone, dkim_key)


@pytest.fixture
async def world(make_tenant: MakeTenant) -> TenantWorld:
    return await make_tenant(catch_all=True)


@pytest.fixture
async def mx(start_test_mx: StartMX) -> MXListener:
    return await start_test_mx()


@pytest.fixture
async def api(start_test_api: StartApi) -> ApiServer:
    return await start_test_api()


def workers(
    pool: Pool, dns_address: HostPort, *, options: AuthCheckOptions | None = None
) -> AuthCheckWorkers:
    resolver = BlockingResolver((dns_address,), lifetime=0.5)
    return AuthCheckWorkers(
        pool,
        Authenticator(resolver, hostname=AUTHSERV_ID),
        authserv_id=AUTHSERV_ID,
        options=options or AuthCheckOptions(poll_seconds=0.05, backlog_seconds=0.05),
    )


def at(dns: LoopbackDNSServer) -> HostPort:
    return HostPort(dns.host, dns.port)


async def receive(mx: MXListener, world: TenantWorld, content: bytes, mail_from: str) -> UUID:
    sent = await smtp_send(mx.port, mail_from, [f"support@{world.name}"], content)
    [stored] = sent.stored_ids
    return stored


async def detail(api: ApiServer, world: TenantWorld, email_id: UUID) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {await world.api_key()}"}
    async with (
        aiohttp.ClientSession(base_url=api.url, headers=headers) as http,
        http.get(f"/emails/receiving/{email_id}") as response,
    ):
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


async def raw(api: ApiServer, world: TenantWorld, email_id: UUID) -> bytes:
    headers = {"Authorization": f"Bearer {await world.api_key()}"}
    async with (
        aiohttp.ClientSession(base_url=api.url, headers=headers) as http,
        http.get(f"/emails/receiving/{email_id}/raw") as response,
    ):
        assert response.status == 200
        return await response.read()


async def auth_row(pool: Pool, email_id: UUID) -> dict[str, Any]:
    """The message's queue row and results row side by side (None where it has none)."""
    row = await pool.fetchrow(
        """
        SELECT q.received_id IS NOT NULL AS queued, q.due_at, q.lease_token, a.checks,
               a.checked_at, a.next_check_at, a.results, a.header
        FROM received_emails r
        LEFT JOIN received_auth_queue q ON q.received_id = r.id
        LEFT JOIN received_auth_results a ON a.received_id = r.id
        WHERE r.id = $1
        """,
        email_id,
    )
    assert row is not None
    return dict(row)


async def time_passes_until_due(pool: Pool, email_id: UUID) -> None:
    """The clock reaches the message's next check (a lease's end, a recheck's time), if it is
    still in the queue."""
    await pool.execute(
        "UPDATE received_auth_queue SET due_at = now() WHERE received_id = $1", email_id
    )


async def until(condition: Callable[[], Awaitable[bool]], every: float = 0.02) -> None:
    """For what no event announces (rows the workers write, a gauge set on a timer)."""
    for _ in range(int(WAIT_SECONDS / every)):
        if await condition():
            return
        await asyncio.sleep(every)
    raise AssertionError("the condition never held")


async def none_unchecked(pool: Pool, ids: list[UUID]) -> bool:
    checked = await pool.fetchval(
        "SELECT count(*) FROM received_auth_results WHERE received_id = ANY($1)", ids
    )
    unchecked = len(ids) - checked
    return unchecked == 0


async def backlog_gauge_is(value: float) -> bool:
    return bool(metrics.AUTHCHECK_BACKLOG._value.get() == value)


async def dns_was_asked(server: LoopbackDNSServer) -> bool:
    return bool(server.queries)


# -- the results, end to end -------------------------------------------------------------------


async def test_a_received_message_is_checked_after_its_commit_and_the_api_shows_the_results(
    pool: Pool,
    dns: LoopbackDNSServer,
    sender: AuthSender,
    world: TenantWorld,
    mx: MXListener,
    api: ApiServer,
) -> None:
    sender.publish(spf="v=spf1 ip4:127.0.0.1 -all", dmarc="v=DMARC1; p=reject")
    email_id = await receive(mx, world, sender.sign(mail(sender.address)), sender.address)
    # Stored, queued by the same statement, and answered 250 with no check made: the MX's path
    # has none.
    assert (await detail(api, world, email_id))["authentication_results"] is None
    assert (await auth_row(pool, email_id))["queued"]

    assert await workers(pool, at(dns)).run_once() == 1

    results = (await detail(api, world, email_id))["authentication_results"]
    assert results["spf"] == {
        "result": "pass",
        "domain": "sender-x.example",
        "scope": "mailfrom",
        "reason": "sender SPF authorized",
    }
    assert [(d["result"], d["domain"], d["selector"]) for d in results["dkim"]] == [
        ("pass", "sender-x.example", "s2026")
    ]
    assert results["dmarc"]["result"] == "pass" and results["dmarc"]["policy"] == "reject"
    assert results["arc"] == {"result": "none", "sets": 0, "reason": None}
    # header.b is quoted when the signature's first characters hold a "/" or "+".
    assert re.sub(r' header\.b="?[A-Za-z0-9+/]{8}"?;', ";", results["header"]) == (
        f"{AUTHSERV_ID}; spf=pass (sender SPF authorized) smtp.mailfrom=sender-x.example; "
        "dkim=pass header.d=sender-x.example header.s=s2026; "
        "dmarc=pass (p=reject) header.from=sender-x.example; arc=none"
    )
    assert results["checked_at"] is not None and results["next_check_at"] is None
    row = await auth_row(pool, email_id)
    assert (row["queued"], row["checks"]) == (False, 1)  # final: out of the queue


async def test_the_raw_message_carries_our_authentication_results_above_our_received_field(
    pool: Pool,
    dns: LoopbackDNSServer,
    sender: AuthSender,
    world: TenantWorld,
    mx: MXListener,
    api: ApiServer,
) -> None:
    content = mail(sender.address)
    email_id = await receive(mx, world, content, sender.address)
    before = await raw(api, world, email_id)
    assert before.startswith(b"Received: ") and before.endswith(content)
    await workers(pool, at(dns)).run_once()
    after = await raw(api, world, email_id)
    assert after.startswith(f"Authentication-Results: {AUTHSERV_ID};\r\n\tspf=none".encode())
    assert after.endswith(before)  # the Received field and the message, byte for byte
    field = after[: after.index(b"\r\nReceived: ")]
    assert all(len(line) <= 998 for line in field.split(b"\r\n"))


async def test_dmarc_failure_with_p_reject_is_stored_and_reported_never_refused(
    pool: Pool,
    dns: LoopbackDNSServer,
    sender: AuthSender,
    world: TenantWorld,
    mx: MXListener,
    api: ApiServer,
) -> None:
    sender.publish(spf="v=spf1 ip4:192.0.2.1 -all", dmarc="v=DMARC1; p=reject")
    forged = mail(sender.address)  # not signed, not from an SPF-authorized address
    email_id = await receive(mx, world, forged, sender.address)  # 250: the MX never judges
    await workers(pool, at(dns)).run_once()
    results = (await detail(api, world, email_id))["authentication_results"]
    assert (results["spf"]["result"], results["dkim"][0]["result"]) == ("fail", "none")
    assert results["dmarc"] == {
        "result": "fail",
        "domain": "sender-x.example",
        "policy": "reject",
        "spf_aligned": False,
        "dkim_aligned": False,
        "reason": None,
    }
    assert "dmarc=fail (p=reject) header.from=sender-x.example" in results["header"]


async def test_a_message_for_two_tenants_is_checked_for_each(
    pool: Pool,
    dns: LoopbackDNSServer,
    sender: AuthSender,
    make_tenant: MakeTenant,
    mx: MXListener,
) -> None:
    sender.publish(spf="v=spf1 ip4:127.0.0.1 -all")
    first, second = await make_tenant(catch_all=True), await make_tenant(catch_all=True)
    rcpts = [f"a@{first.name}", f"b@{second.name}"]
    sent = await smtp_send(mx.port, sender.address, rcpts, mail(sender.address))
    assert await workers(pool, at(dns)).run_once() == 2
    for email_id in sent.stored_ids:
        assert (await auth_row(pool, email_id))["results"]["spf"]["result"] == "pass"


async def test_mail_handed_over_by_a_provider_is_judged_by_dkim_not_by_the_providers_ip(
    pool: Pool,
    dns: LoopbackDNSServer,
    sender: AuthSender,
    world: TenantWorld,
    start_test_api: StartApi,
) -> None:
    # The sender's SPF would fail the provider's address; DKIM travels with the message.
    sender.publish(spf="v=spf1 ip4:192.0.2.1 -all", dmarc="v=DMARC1; p=reject")
    token = "ingest-" + "x" * 32
    api = await start_test_api(INGESTER_INBOUND_TOKEN=token)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{api.url}/events/inbound",
            data=sender.sign(mail(sender.address)),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "message/rfc822",
                "X-OpenSend-Recipients": f"support@{world.name}",
                "X-OpenSend-Mail-From": f"<{sender.address}>",
            },
        ) as response,
    ):
        assert response.status == 202
        [email_id] = [UUID(e["id"]) for e in (await response.json())["emails"]]
    await workers(pool, at(dns)).run_once()
    results = (await detail(api, world, email_id))["authentication_results"]
    assert results["spf"]["result"] == "none"
    assert results["spf"]["reason"] == "handed over by a provider: client unknown"
    assert (results["dkim"][0]["result"], results["dmarc"]["result"]) == ("pass", "pass")


# -- the queue and the results beside the message ---------------------------------------------


async def message_row_version(pool: Pool, email_id: UUID) -> tuple[str, str]:
    """Where the message's row version lives and which transaction wrote it: both change with
    any UPDATE of the row, HOT or not."""
    row = await pool.fetchrow(
        "SELECT ctid::text, xmin::text FROM received_emails WHERE id = $1", email_id
    )
    assert row is not None
    return row["ctid"], row["xmin"]


async def test_checks_rechecks_and_results_never_rewrite_the_messages_row(
    pool: Pool, dns: LoopbackDNSServer, sender: AuthSender, world: TenantWorld, mx: MXListener
) -> None:
    # The MX's INSERTs stay fast only while the checks leave received_emails alone: an UPDATE of
    # its wide row per claim and per result cost a burst of mail 15 to 35% of its rate.
    sender.publish(spf="v=spf1 ip4:127.0.0.1 -all")
    email_id = await receive(mx, world, mail(sender.address), sender.address)
    stored = await message_row_version(pool, email_id)
    async with LoopbackDNSServer() as outage:
        down = at(outage)
    assert await workers(pool, down).run_once() == 1  # claim, temperror, rescheduled
    await time_passes_until_due(pool, email_id)
    assert await workers(pool, at(dns)).run_once() == 1  # claim again, final result
    row = await auth_row(pool, email_id)
    assert (row["results"]["spf"]["result"], row["queued"]) == ("pass", False)
    assert await message_row_version(pool, email_id) == stored


async def test_deleting_a_message_takes_its_queue_row_and_results_with_it(
    pool: Pool, dns: LoopbackDNSServer, sender: AuthSender, world: TenantWorld, mx: MXListener
) -> None:
    checked = await receive(mx, world, mail(sender.address), sender.address)
    await workers(pool, at(dns)).run_once()
    queued = await receive(mx, world, mail(sender.address), sender.address)
    assert (await auth_row(pool, checked))["results"] is not None
    assert (await auth_row(pool, queued))["queued"]
    ids = [checked, queued]
    await pool.execute("DELETE FROM received_emails WHERE id = ANY($1::uuid[])", ids)
    left = await pool.fetchval(
        "SELECT (SELECT count(*) FROM received_auth_queue WHERE received_id = ANY($1::uuid[]))"
        " + (SELECT count(*) FROM received_auth_results WHERE received_id = ANY($1::uuid[]))",
        ids,
    )
    assert left == 0


# -- DNS trouble: recorded, looked at again, never lost ---------------------------------------


async def test_a_dns_outage_is_recorded_as_temperror_and_checked_again_later(
    pool: Pool,
    dns: LoopbackDNSServer,
    sender: AuthSender,
    world: TenantWorld,
    mx: MXListener,
    api: ApiServer,
) -> None:
    sender.publish(spf="v=spf1 ip4:127.0.0.1 -all", dmarc="v=DMARC1; p=none")
    email_id = await receive(mx, world, sender.sign(mail(sender.address)), sender.address)
    async with LoopbackDNSServer() as outage:
        down = at(outage)
    # The server has stopped: nothing answers on its port.
    assert await workers(pool, down).run_once() == 1

    results = (await detail(api, world, email_id))["authentication_results"]
    assert (results["spf"]["result"], results["dkim"][0]["result"]) == ("temperror", "temperror")
    assert results["dmarc"]["result"] == "temperror"
    assert results["next_check_at"] is not None  # RECHECK_SCHEDULE[0] from now
    row = await auth_row(pool, email_id)
    assert row["queued"] and row["lease_token"] is None and row["due_at"] == row["next_check_at"]
    waited = (row["next_check_at"] - row["checked_at"]).total_seconds()
    assert waited == pytest.approx(RECHECK_SCHEDULE[0], abs=1)
    assert await workers(pool, at(dns)).run_once() == 0  # not before its time

    await time_passes_until_due(pool, email_id)
    assert await workers(pool, at(dns)).run_once() == 1
    results = (await detail(api, world, email_id))["authentication_results"]
    assert (results["spf"]["result"], results["dmarc"]["result"]) == ("pass", "pass")
    assert results["next_check_at"] is None
    row = await auth_row(pool, email_id)
    assert (row["queued"], row["checks"]) == (False, 2)


async def test_a_temperror_stands_once_the_recheck_schedule_is_used_up(
    pool: Pool, sender: AuthSender, world: TenantWorld, mx: MXListener
) -> None:
    email_id = await receive(mx, world, mail(sender.address), sender.address)
    async with LoopbackDNSServer() as outage:
        down = at(outage)
    for _ in range(len(RECHECK_SCHEDULE) + 1):
        await time_passes_until_due(pool, email_id)
        assert await workers(pool, down).run_once() == 1
    row = await auth_row(pool, email_id)
    assert row["results"]["spf"]["result"] == "temperror"
    assert (row["queued"], row["next_check_at"]) == (False, None)  # final: no more checks
    assert row["checks"] == len(RECHECK_SCHEDULE) + 1


# -- workers that die, leases that run out -----------------------------------------------------


async def test_messages_of_a_worker_that_died_mid_batch_are_checked_when_its_lease_ends(
    pool: Pool,
    dns: LoopbackDNSServer,
    sender: AuthSender,
    world: TenantWorld,
    mx: MXListener,
) -> None:
    sender.publish(spf="v=spf1 ip4:127.0.0.1 -all")
    ids = [await receive(mx, world, mail(sender.address), sender.address) for _ in range(3)]
    # The worker that dies: it claimed all three and wrote the results of one.
    claimed = await authresults.claim(pool, limit=10, lease_seconds=300)
    assert sorted(p.id for p in claimed) == sorted(ids)
    survivor = workers(pool, at(dns))
    assert await survivor.run_once() == 0  # leased to a worker that may still be alive
    done = claimed[0]
    written = await authresults.record_results(
        pool, [authresults.CheckedMessage(done.id, done.token, {"spf": {}}, "x; none", None)]
    )
    assert written == {done.id}

    for pending in claimed:
        await time_passes_until_due(pool, pending.id)  # a finished one is not due again
    assert await survivor.run_once() == 2
    for email_id in ids:
        row = await auth_row(pool, email_id)
        assert not row["queued"] and row["results"] is not None
    assert [(await auth_row(pool, p.id))["checks"] for p in claimed] == [1, 2, 2]


async def test_results_of_a_worker_whose_lease_was_taken_over_are_not_written(
    pool: Pool,
    dns: LoopbackDNSServer,
    sender: AuthSender,
    world: TenantWorld,
    mx: MXListener,
) -> None:
    email_id = await receive(mx, world, mail(sender.address), sender.address)
    [slow] = await authresults.claim(pool, limit=10, lease_seconds=300)
    await time_passes_until_due(pool, email_id)  # it hung past its lease
    assert await workers(pool, at(dns)).run_once() == 1
    taken_over = await auth_row(pool, email_id)
    late = authresults.CheckedMessage(slow.id, slow.token, {"late": True}, "late; none", 60)
    assert await authresults.record_results(pool, [late]) == set()
    assert await auth_row(pool, email_id) == taken_over


# -- the workers running on their own ----------------------------------------------------------


async def test_running_workers_check_new_mail_count_results_and_stop_cleanly(
    pool: Pool,
    dns: LoopbackDNSServer,
    sender: AuthSender,
    world: TenantWorld,
    mx: MXListener,
) -> None:
    sender.publish(spf="v=spf1 ip4:127.0.0.1 -all", dmarc="v=DMARC1; p=none")
    passes = metrics.AUTHCHECK_RESULTS.labels("spf", "pass")._value.get()
    running = workers(pool, at(dns))
    await running.start()
    try:
        ids = [await receive(mx, world, mail(sender.address), sender.address) for _ in range(5)]
        running.wake()
        await until(lambda: none_unchecked(pool, ids))
        await until(lambda: backlog_gauge_is(0))
    finally:
        await running.stop(grace=5.0)
    assert metrics.AUTHCHECK_RESULTS.labels("spf", "pass")._value.get() == passes + 5
    assert metrics.AUTHCHECK_DURATION._sum.get() > 0


async def test_stopping_gives_back_messages_not_checked_yet(
    pool: Pool,
    sender: AuthSender,
    world: TenantWorld,
    mx: MXListener,
) -> None:
    # A DNS server that never answers keeps the one thread busy until its lifetime ends.
    async with LoopbackDNSServer() as slow:
        slow.zone.delay("sender-x.example")
        slow.zone.delay("_dmarc.sender-x.example")
        ids = [await receive(mx, world, mail(sender.address), sender.address) for _ in range(3)]
        one_thread = AuthCheckOptions(threads=1, poll_seconds=0.05, backlog_seconds=60)
        running = workers(pool, at(slow), options=one_thread)
        await running.start()
        await until(lambda: dns_was_asked(slow))  # the first check is under way
        await running.stop(grace=0.0)
    rows = [await auth_row(pool, email_id) for email_id in ids]
    assert all(row["queued"] and row["lease_token"] is None for row in rows)
    assert all(row["results"] is None for row in rows)
    backlog = await authresults.backlog(pool)
    assert backlog.messages == 3  # due again at once, for any worker


async def test_the_backlog_counts_messages_waiting_for_their_check(
    pool: Pool, dns: LoopbackDNSServer, sender: AuthSender, world: TenantWorld, mx: MXListener
) -> None:
    assert (await authresults.backlog(pool)).messages == 0
    for _ in range(2):
        await receive(mx, world, mail(sender.address), sender.address)
    waiting = await authresults.backlog(pool)
    assert waiting.messages == 2 and waiting.oldest_due_seconds >= 0
    await workers(pool, at(dns)).run_once()
    assert await authresults.backlog(pool) == authresults.Backlog(0, 0.0)


async def test_old_mail_from_before_the_checks_existed_is_never_claimed(
    pool: Pool, dns: LoopbackDNSServer, sender: AuthSender, world: TenantWorld, mx: MXListener
) -> None:
    email_id = await receive(mx, world, mail(sender.address), sender.address)
    # What migration 0010 leaves for messages stored before it: no queue row.
    await pool.execute("DELETE FROM received_auth_queue WHERE received_id = $1", email_id)
    assert await workers(pool, at(dns)).run_once() == 0
