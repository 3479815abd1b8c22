"""Authentication results end to end: mail sent through the real MX, checked by the real checker
against a real DNS server, shown by the real API; DNS outages, late commits, dead checkers and
the lock that keeps a second one out; and the same worker's stripping of quoted history.

The module has a database of its own, so its checkers see only its own mail.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from typing import Any
from uuid import UUID

import aiohttp
import pytest

from mta import metrics
from mta.authcheck.checks import Authenticator, Evidence
from mta.authcheck.worker import AuthCheckOptions, AuthCheckWorkers
from mta.dns import BlockingResolver
from mta.listeners import MXListener
from policy.authcheck.verdicts import RECHECK_SCHEDULE, AuthenticationResults
from policy.domains.dkim_keys import DkimKeyPair
from policy.settings import HostPort
from storage.authcheck import results as authresults
from storage.database import Pool
from storage.ids import uuid7
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
    """A test's unchecked mail is not the next test's to check (with the next test's DNS): as
    migration 0010 leaves mail from before it, below the watermark and never checked."""
    yield
    await pool.execute(
        "UPDATE auth_check_progress"
        " SET checked_through = (SELECT id FROM received_emails ORDER BY id DESC LIMIT 1)"
    )
    await pool.execute("UPDATE received_auth_results SET next_check_at = NULL")


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


async def check_once(
    pool: Pool, dns_address: HostPort, *, options: AuthCheckOptions | None = None
) -> int | None:
    """A checker that reads one batch, checks it, moves the watermark, and stops (giving up the
    lock): how many messages it read, None if another checker held the lock."""
    checker = workers(pool, dns_address, options=options)
    try:
        return await checker.run_once()
    finally:
        await checker.stop(grace=0.0)


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
    """The message's results row (all None while it has none)."""
    row = await pool.fetchrow(
        """
        SELECT a.checks, a.checked_at, a.next_check_at, a.results, a.header
        FROM received_emails r
        LEFT JOIN received_auth_results a ON a.received_id = r.id
        WHERE r.id = $1
        """,
        email_id,
    )
    assert row is not None
    return dict(row)


async def time_passes_until_due(pool: Pool, email_id: UUID) -> None:
    """The clock reaches the message's recheck, if it has one."""
    await pool.execute(
        "UPDATE received_auth_results SET next_check_at = now()"
        " WHERE received_id = $1 AND next_check_at IS NOT NULL",
        email_id,
    )


async def commit_late(pool: Pool, like: UUID, minted: UUID) -> UUID:
    """A copy of message `like` committed now under id `minted`, minted earlier: what an MX
    process whose commit waited (group commit, a slow disk) stores after later ids did."""
    await pool.execute(
        """
        INSERT INTO received_emails
        SELECT (jsonb_populate_record(NULL::received_emails,
                                      to_jsonb(r) || jsonb_build_object('id', $2::uuid))).*
        FROM received_emails r WHERE r.id = $1
        """,
        like,
        minted,
    )
    return minted


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


class CountingAuthenticator(Authenticator):
    """The real checks, counting how many large messages are being checked at once."""

    def __init__(self, resolver: BlockingResolver, *, large: int) -> None:
        super().__init__(resolver, hostname=AUTHSERV_ID)
        self._large = large
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0

    def check(self, evidence: Evidence) -> AuthenticationResults:
        if len(evidence.raw) < self._large:
            return super().check(evidence)
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            return super().check(evidence)
        finally:
            with self._lock:
                self.now -= 1


async def test_large_messages_are_read_and_checked_a_few_at_a_time(
    pool: Pool, dns: LoopbackDNSServer, sender: AuthSender, world: TenantWorld, mx: MXListener
) -> None:
    sender.publish(spf="v=spf1 ip4:127.0.0.1 -all", dmarc="v=DMARC1; p=none")
    large = authresults.INLINE_CONTENT_BYTES + 1
    body = ("x" * 70 + "\n") * (large // 71 + 1)
    content = mail(sender.address, body=body)
    ids = [await receive(mx, world, content, sender.address) for _ in range(4)]
    authenticator = CountingAuthenticator(BlockingResolver((at(dns),), lifetime=0.5), large=large)
    checker = AuthCheckWorkers(
        pool, authenticator, authserv_id=AUTHSERV_ID, options=AuthCheckOptions(large_at_once=1)
    )
    try:
        assert await checker.run_once() == 4
    finally:
        await checker.stop(grace=0.0)
    assert await none_unchecked(pool, ids)
    assert authenticator.most == 1


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
    # Stored and answered 250 with no check made, and nothing written for the checks: the MX's
    # path has none.
    assert (await detail(api, world, email_id))["authentication_results"] is None
    assert (await auth_row(pool, email_id))["checks"] is None

    assert await check_once(pool, at(dns)) == 1

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
    assert (row["checks"], row["next_check_at"]) == (1, None)  # final
    assert await check_once(pool, at(dns)) == 0  # and not checked again


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
    await check_once(pool, at(dns))
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
    await check_once(pool, at(dns))
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
    assert await check_once(pool, at(dns)) == 2
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
    await check_once(pool, at(dns))
    results = (await detail(api, world, email_id))["authentication_results"]
    assert results["spf"]["result"] == "none"
    assert results["spf"]["reason"] == "handed over by a provider: client unknown"
    assert (results["dkim"][0]["result"], results["dmarc"]["result"]) == ("pass", "pass")


# -- the results beside the message -----------------------------------------------------------


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
    # its wide row per check and per result cost a burst of mail 15 to 35% of its rate.
    sender.publish(spf="v=spf1 ip4:127.0.0.1 -all")
    email_id = await receive(mx, world, mail(sender.address), sender.address)
    stored = await message_row_version(pool, email_id)
    async with LoopbackDNSServer() as outage:
        down = at(outage)
    assert await check_once(pool, down) == 1  # temperror, a recheck set
    await time_passes_until_due(pool, email_id)
    assert await check_once(pool, at(dns)) == 1  # the recheck, final result
    row = await auth_row(pool, email_id)
    assert (row["results"]["spf"]["result"], row["next_check_at"]) == ("pass", None)
    assert await message_row_version(pool, email_id) == stored


async def test_deleting_a_message_takes_its_results_with_it(
    pool: Pool, dns: LoopbackDNSServer, sender: AuthSender, world: TenantWorld, mx: MXListener
) -> None:
    checked = await receive(mx, world, mail(sender.address), sender.address)
    await check_once(pool, at(dns))
    assert (await auth_row(pool, checked))["results"] is not None
    await pool.execute("DELETE FROM received_emails WHERE id = $1", checked)
    left = await pool.fetchval(
        "SELECT count(*) FROM received_auth_results WHERE received_id = $1", checked
    )
    assert left == 0


async def test_a_message_deleted_while_it_is_checked_gets_no_results_and_no_error(
    pool: Pool, dns: LoopbackDNSServer, sender: AuthSender, world: TenantWorld, mx: MXListener
) -> None:
    sender.publish(spf="v=spf1 ip4:127.0.0.1 -all")
    kept, deleted = [await receive(mx, world, mail(sender.address), sender.address) for _ in "ab"]
    checked = await authresults.to_check(pool, limit=10)
    await pool.execute("DELETE FROM received_emails WHERE id = $1", deleted)
    await authresults.record_results(
        pool, [authresults.CheckedMessage(p.id, 1, {"spf": {}}, "x; none", None) for p in checked]
    )
    assert (await auth_row(pool, kept))["checks"] == 1


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
    assert await check_once(pool, down) == 1

    results = (await detail(api, world, email_id))["authentication_results"]
    assert (results["spf"]["result"], results["dkim"][0]["result"]) == ("temperror", "temperror")
    assert results["dmarc"]["result"] == "temperror"
    assert results["next_check_at"] is not None  # RECHECK_SCHEDULE[0] from now
    row = await auth_row(pool, email_id)
    waited = (row["next_check_at"] - row["checked_at"]).total_seconds()
    assert waited == pytest.approx(RECHECK_SCHEDULE[0], abs=1)
    assert await check_once(pool, at(dns)) == 0  # not before its time

    await time_passes_until_due(pool, email_id)
    assert await check_once(pool, at(dns)) == 1
    results = (await detail(api, world, email_id))["authentication_results"]
    assert (results["spf"]["result"], results["dmarc"]["result"]) == ("pass", "pass")
    assert results["next_check_at"] is None
    row = await auth_row(pool, email_id)
    assert (row["next_check_at"], row["checks"]) == (None, 2)


async def test_a_temperror_stands_once_the_recheck_schedule_is_used_up(
    pool: Pool, sender: AuthSender, world: TenantWorld, mx: MXListener
) -> None:
    email_id = await receive(mx, world, mail(sender.address), sender.address)
    async with LoopbackDNSServer() as outage:
        down = at(outage)
    for _ in range(len(RECHECK_SCHEDULE) + 1):
        await time_passes_until_due(pool, email_id)
        assert await check_once(pool, down) == 1
    row = await auth_row(pool, email_id)
    assert row["results"]["spf"]["result"] == "temperror"
    assert row["next_check_at"] is None  # final: no more checks
    assert row["checks"] == len(RECHECK_SCHEDULE) + 1


# -- new mail found by id: late commits, the watermark ------------------------------------------


async def watermark(pool: Pool) -> UUID | None:
    return await authresults.watermark(pool)


async def test_a_message_committed_late_under_an_earlier_id_is_still_checked(
    pool: Pool,
    dns: LoopbackDNSServer,
    sender: AuthSender,
    world: TenantWorld,
    mx: MXListener,
) -> None:
    sender.publish(spf="v=spf1 ip4:127.0.0.1 -all")
    minted = uuid7()  # by an MX process whose commit is slow
    ids = [await receive(mx, world, mail(sender.address), sender.address) for _ in range(2)]
    assert minted < min(ids)
    assert await check_once(pool, at(dns)) == 2  # the later ids, checked; the watermark moved
    assert await watermark(pool) < minted  # up only to ids older than the settle window

    late = await commit_late(pool, ids[0], minted)
    assert await check_once(pool, at(dns)) == 1
    assert (await auth_row(pool, late))["results"]["spf"]["result"] == "pass"


async def test_the_watermark_stops_below_the_first_message_not_checked_yet(
    pool: Pool,
    dns: LoopbackDNSServer,
    sender: AuthSender,
    world: TenantWorld,
    mx: MXListener,
) -> None:
    settled = AuthCheckOptions(settle_seconds=0.0)  # every id minted so far counts as settled
    first = await receive(mx, world, mail(sender.address), sender.address)
    assert await check_once(pool, at(dns), options=settled) == 1
    reached = await watermark(pool)
    assert reached is not None and reached > first  # through the cutoff: nothing unchecked

    later = [await receive(mx, world, mail(sender.address), sender.address) for _ in range(3)]
    # The first and the last checked, the middle one not (being checked, or committed late).
    await authresults.record_results(
        pool,
        [authresults.CheckedMessage(i, 1, {"spf": {}}, "x; none", None) for i in later[::2]],
    )
    await authresults.advance_watermark(pool, authresults.settled_cutoff(0.0))
    assert await watermark(pool) == later[0]  # just below the first gap

    assert await check_once(pool, at(dns), options=settled) == 1  # the middle one
    assert await watermark(pool) > later[2]


# -- checkers that die, the lock that keeps a second one out ------------------------------------


async def test_messages_of_a_checker_that_died_mid_batch_are_checked_by_the_next(
    pool: Pool,
    dns: LoopbackDNSServer,
    sender: AuthSender,
    world: TenantWorld,
    mx: MXListener,
) -> None:
    sender.publish(spf="v=spf1 ip4:127.0.0.1 -all")
    ids = [await receive(mx, world, mail(sender.address), sender.address) for _ in range(3)]
    # The checker that dies: it read all three and wrote the results of one.
    read = await authresults.to_check(pool, limit=10)
    assert [p.id for p in read] == ids
    done = read[0]
    await authresults.record_results(
        pool, [authresults.CheckedMessage(done.id, 1, {"spf": {}}, "x; none", None)]
    )

    assert await check_once(pool, at(dns)) == 2
    rows = [await auth_row(pool, email_id) for email_id in ids]
    assert [row["checks"] for row in rows] == [1, 1, 1]
    assert [row["results"]["spf"].get("result") for row in rows] == [None, "pass", "pass"]


async def test_two_checkers_never_both_run(
    pool: Pool, dns: LoopbackDNSServer, sender: AuthSender, world: TenantWorld, mx: MXListener
) -> None:
    first, second = workers(pool, at(dns)), workers(pool, at(dns))
    try:
        assert await first.run_once() == 0  # it holds the lock from now on
        email_id = await receive(mx, world, mail(sender.address), sender.address)
        assert await second.run_once() is None  # waits: reads nothing, checks nothing
        assert (await auth_row(pool, email_id))["checks"] is None
        await first.stop(grace=0.0)  # gives the lock up
        assert await second.run_once() == 1
        assert first.holds_lock is False and second.holds_lock is True
    finally:
        await first.stop(grace=0.0)
        await second.stop(grace=0.0)


async def test_a_checker_that_lost_its_lock_stops_and_the_next_checks_everything(
    pool: Pool,
    sender: AuthSender,
    world: TenantWorld,
    mx: MXListener,
    dns: LoopbackDNSServer,
) -> None:
    sender.publish(spf="v=spf1 ip4:127.0.0.1 -all")
    # A DNS server that never answers keeps the lost checker's one thread busy.
    async with LoopbackDNSServer() as slow:
        slow.zone.delay("sender-x.example")
        slow.zone.delay("_dmarc.sender-x.example")
        ids = [await receive(mx, world, mail(sender.address), sender.address) for _ in range(3)]
        one_thread = AuthCheckOptions(
            threads=1, poll_seconds=0.05, backlog_seconds=60, lock_retry_seconds=60
        )
        lost = workers(pool, at(slow), options=one_thread)
        await lost.start()
        try:
            await until(lambda: dns_was_asked(slow))  # its first check is under way
            # Its session ends (a network cut, an administrator): PostgreSQL drops the lock.
            await pool.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks"
                " WHERE locktype = 'advisory' AND objid = $1 AND granted",
                authresults.CHECKER_LOCK_ID & 0xFFFFFFFF,
            )
            await until(lambda: not_holding(lost))
            assert await check_once(pool, at(dns)) == 3
        finally:
            await lost.stop(grace=0.0)
    rows = [await auth_row(pool, email_id) for email_id in ids]
    assert [row["results"]["spf"]["result"] for row in rows] == ["pass"] * 3


async def not_holding(checker: AuthCheckWorkers) -> bool:
    return not checker.holds_lock


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


async def test_a_running_checker_finds_a_late_commit_below_where_it_has_read(
    pool: Pool,
    dns: LoopbackDNSServer,
    sender: AuthSender,
    world: TenantWorld,
    mx: MXListener,
) -> None:
    sender.publish(spf="v=spf1 ip4:127.0.0.1 -all")
    # Reads go on from the newest id read; a sweep from the watermark (here every 0.1 s, by
    # default every 5 s) finds what committed below it afterwards.
    sweeping = AuthCheckOptions(poll_seconds=0.05, backlog_seconds=60, watermark_seconds=0.1)
    running = workers(pool, at(dns), options=sweeping)
    minted = uuid7()
    await running.start()
    try:
        ids = [await receive(mx, world, mail(sender.address), sender.address) for _ in range(2)]
        running.wake()
        await until(lambda: none_unchecked(pool, ids))
        late = await commit_late(pool, ids[0], minted)
        await until(lambda: none_unchecked(pool, [late]))
    finally:
        await running.stop(grace=5.0)
    assert (await auth_row(pool, late))["results"]["spf"]["result"] == "pass"


async def test_stopping_leaves_messages_not_checked_yet_for_the_next_checker(
    pool: Pool,
    dns: LoopbackDNSServer,
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
    assert running.holds_lock is False
    rows = [await auth_row(pool, email_id) for email_id in ids]
    assert all(row["results"] is None for row in rows)
    assert (await authresults.backlog(pool)).messages == 3
    assert await check_once(pool, at(dns)) == 3  # the lock is free, the messages there


async def test_the_backlog_counts_messages_waiting_for_their_check(
    pool: Pool, dns: LoopbackDNSServer, sender: AuthSender, world: TenantWorld, mx: MXListener
) -> None:
    assert (await authresults.backlog(pool)).messages == 0
    for _ in range(2):
        await receive(mx, world, mail(sender.address), sender.address)
    waiting = await authresults.backlog(pool)
    assert waiting.messages == 2 and waiting.oldest_due_seconds >= 0
    await check_once(pool, at(dns))
    assert await authresults.backlog(pool) == authresults.Backlog(0, 0.0)


async def test_old_mail_below_the_watermark_is_never_checked(
    pool: Pool, dns: LoopbackDNSServer, sender: AuthSender, world: TenantWorld, mx: MXListener
) -> None:
    email_id = await receive(mx, world, mail(sender.address), sender.address)
    # What migration 0010 does for messages stored before it: the watermark at the newest.
    await pool.execute("UPDATE auth_check_progress SET checked_through = $1", email_id)
    assert await check_once(pool, at(dns)) == 0
    assert (await auth_row(pool, email_id))["checks"] is None


# -- the stripped text, end to end: the same worker's second job -------------------------------

REPLY_FROM = "ann@customer.example"
REPLY_TEXT = (
    "Tuesday at ten works for me.\n\nAnn\n\n"
    "On Mon, 4 Mar 2024 at 09:12, Support <support@example.com> wrote:\n\n"
    "> Could we meet this week?\n> Support\n"
)
REPLY_HTML = (
    '<div dir="ltr">Tuesday at ten works for me.<div><br></div><div>Ann</div></div><br>'
    '<div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Mon, 4 Mar 2024 at 09:12, '
    'Support &lt;support@example.com&gt; wrote:<br></div><blockquote class="gmail_quote">'
    "Could we meet this week?<br>Support</blockquote></div>"
)


def reply(text: str | None, html: str | None) -> bytes:
    message = EmailMessage()
    message["From"] = f"Ann <{REPLY_FROM}>"
    message["To"] = "support@receiver.test"
    message["Subject"] = "Re: Meeting"
    if text is not None:
        message.set_content(text)
    if html is not None:
        if text is None:
            message.set_content(html, subtype="html")
        else:
            message.add_alternative(html, subtype="html")
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


async def receive_reply(mx: MXListener, world: TenantWorld, content: bytes) -> UUID:
    return await receive(mx, world, content, REPLY_FROM)


async def test_a_reply_is_stripped_after_its_commit_and_the_api_shows_both_versions(
    pool: Pool, dns: LoopbackDNSServer, world: TenantWorld, mx: MXListener, api: ApiServer
) -> None:
    email_id = await receive_reply(mx, world, reply(REPLY_TEXT, REPLY_HTML))
    before = await detail(api, world, email_id)
    # Answered 250 with nothing stripped: the MX's path does no stripping.
    assert (before["stripped_text"], before["stripped_html"]) == (None, None)

    assert await check_once(pool, at(dns)) == 1

    after = await detail(api, world, email_id)
    assert after["stripped_text"] == "Tuesday at ten works for me.\n\nAnn"
    assert "Tuesday at ten works for me." in after["stripped_html"]
    assert "Could we meet" not in after["stripped_html"]
    assert "gmail_quote" not in after["stripped_html"]
    # The bodies as received stay beside them.
    assert (after["text"], after["html"]) == (before["text"], before["html"])
    assert "Could we meet this week?" in after["text"] and "gmail_quote" in after["html"]
    # The same pass of the worker checked it.
    assert after["authentication_results"] is not None


async def test_an_html_only_reply_gets_its_text_from_the_stripped_html(
    pool: Pool, dns: LoopbackDNSServer, world: TenantWorld, mx: MXListener, api: ApiServer
) -> None:
    email_id = await receive_reply(mx, world, reply(None, REPLY_HTML))
    await check_once(pool, at(dns))
    body = await detail(api, world, email_id)
    assert body["text"] is None
    assert body["stripped_text"] == "Tuesday at ten works for me.\n\nAnn"


async def test_a_worker_that_died_before_the_results_strips_the_message_again(
    pool: Pool, dns: LoopbackDNSServer, world: TenantWorld, mx: MXListener, api: ApiServer
) -> None:
    email_id = await receive_reply(mx, world, reply(REPLY_TEXT, None))
    await check_once(pool, at(dns))
    # As if the worker had written the stripped row and died before the results.
    await pool.execute("DELETE FROM received_auth_results WHERE received_id = $1", email_id)
    await pool.execute(
        "UPDATE received_stripped_bodies SET stripped_text = 'stale' WHERE received_id = $1",
        email_id,
    )
    assert await check_once(pool, at(dns)) == 1
    assert (await detail(api, world, email_id))["stripped_text"] == (
        "Tuesday at ten works for me.\n\nAnn"
    )
    rows = await pool.fetchval(
        "SELECT count(*) FROM received_stripped_bodies WHERE received_id = $1", email_id
    )
    assert rows == 1


async def test_a_megabyte_of_quote_marks_through_the_mx_is_stripped_and_shown(
    pool: Pool, dns: LoopbackDNSServer, world: TenantWorld, mx: MXListener, api: ApiServer
) -> None:
    hostile = "On 1 Jan 2024, A <a@example.com> wrote:\n" + ("> " * 400 + "\n") * 1300
    email_id = await receive_reply(mx, world, reply("Short answer.\n\n" + hostile, None))
    assert await check_once(pool, at(dns)) == 1
    assert (await detail(api, world, email_id))["stripped_text"] == "Short answer."
