"""Idempotency-Key on POST /emails and /emails/batch, Resend's rules, and what happens when two
requests with one key meet: replay, conflicting body, in flight at once, failed, abandoned.

To hold a request in flight, the test locks table `domains` (ACCESS EXCLUSIVE) for a moment:
a request that has claimed its key then waits in its sender-domain lookup, before it builds or
stores anything. (A request already in its insert statement holds the key's row lock, so a
repeat waits those few milliseconds for its outcome and replays it instead of a 409.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from storage.database import Pool
from storage.sending import idempotency
from tests.api.sending.emails_client import Answer, EmailsApi, count_emails, email, emails_api
from tests.conftest import ApiServer, MakeTenant, StartApi

POLL_ATTEMPTS = 500  # only stops a hung test


@asynccontextmanager
async def domains_locked(database_url: str) -> AsyncIterator[None]:
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE domains IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()


async def until_waiting_on_a_lock(pool: Pool, count: int = 1) -> None:
    for _ in range(POLL_ATTEMPTS):
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the request never reached its insert")


async def test_repeat_with_the_same_body_replays_the_first_answer_and_sends_once(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    body = email(acme)
    reordered = dict(reversed(list(body.items())))  # same JSON, other key order
    async with emails_api(api, await acme.api_key()) as client:
        first = await client.send(body, idempotency_key="order-1234")
        second = await client.send(body, idempotency_key="order-1234")
        third = await client.send(reordered, idempotency_key="order-1234")
    assert first.status == second.status == third.status == 200
    assert first.body == second.body == third.body
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert await count_emails(pool, acme) == 1


async def test_same_key_with_another_body_or_endpoint_is_409_invalid_idempotent_request(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        await client.send(email(acme), idempotency_key="k")
        changed = await client.send(email(acme, subject="Other"), idempotency_key="k")
        batch = await client.batch([email(acme)], idempotency_key="k")
    for answer in (changed, batch):
        assert (answer.status, answer.name) == (409, "invalid_idempotent_request")
        assert answer.message == "Same idempotency key used with a different request payload."
    assert await count_emails(pool, acme) == 1


async def test_key_of_257_characters_or_none_is_400_invalid_idempotency_key(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        long = await client.send(email(acme), idempotency_key="k" * 257)
        empty = await client.send(email(acme), idempotency_key="")
        longest = await client.send(email(acme), idempotency_key="k" * 256)
    for answer in (long, empty):
        assert (answer.status, answer.name) == (400, "invalid_idempotency_key")
        assert answer.message == "The key must be between 1-256 chars."
    assert longest.status == 200
    assert await count_emails(pool, acme) == 1


async def test_failed_request_releases_its_key_so_a_corrected_retry_is_sent(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        failed = await client.send(email(acme, to="bob@"), idempotency_key="retry-me")
        fixed = await client.send(email(acme), idempotency_key="retry-me")
        replay = await client.send(email(acme), idempotency_key="retry-me")
    assert failed.status == 400
    assert fixed.status == 200 and replay.body == fixed.body
    assert await count_emails(pool, acme) == 1


async def test_keys_belong_to_their_tenant(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        mine = await client.send(email(acme), idempotency_key="shared")
    async with emails_api(api, await globex.api_key()) as client:
        theirs = await client.send(email(globex), idempotency_key="shared")
    assert mine.status == theirs.status == 200 and mine.body != theirs.body
    assert await count_emails(pool, acme) == await count_emails(pool, globex) == 1


async def test_two_simultaneous_requests_one_sends_the_other_is_409_concurrent(
    api: ApiServer, pool: Pool, database_url: str, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        async with domains_locked(database_url):
            first = asyncio.create_task(client.send(email(acme), idempotency_key="twice"))
            await until_waiting_on_a_lock(pool)
            second = await client.send(email(acme), idempotency_key="twice")
        sent = await first
        later = await client.send(email(acme), idempotency_key="twice")
    assert (second.status, second.name) == (409, "concurrent_idempotent_requests")
    assert second.message == (
        "Same idempotency key used while original request is still in progress."
    )
    assert sent.status == 200 and later.body == sent.body
    assert await count_emails(pool, acme) == 1


async def test_many_simultaneous_requests_with_one_key_send_exactly_once(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        answers = await asyncio.gather(
            *(client.send(email(acme), idempotency_key="burst") for _ in range(20))
        )
    ids = {a.body["id"] for a in answers if a.status == 200}
    others = {(a.status, a.name) for a in answers if a.status != 200}
    assert len(ids) == 1
    assert others <= {(409, "concurrent_idempotent_requests")}
    assert await count_emails(pool, acme) == 1


async def test_abandoned_claim_is_taken_over_and_its_owner_cannot_send_after(
    api: ApiServer, pool: Pool, database_url: str, make_tenant: MakeTenant
) -> None:
    """A claim left in flight past a minute belongs to a request that died: a retry takes it.
    Should the first request still be alive, its insert finds the claim gone and stores
    nothing, so the email is sent once either way."""
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        async with domains_locked(database_url):
            first = asyncio.create_task(client.send(email(acme), idempotency_key="slow"))
            await until_waiting_on_a_lock(pool)
            await pool.execute(
                "UPDATE idempotency_keys SET created_at = now() - interval '2 minutes' "
                "WHERE tenant_id = $1 AND key = 'slow'",
                acme.id,
            )
            second = asyncio.create_task(client.send(email(acme), idempotency_key="slow"))
            await until_waiting_on_a_lock(pool, 2)
        answers: list[Answer] = [await first, await second]
    assert sorted(a.status for a in answers) == [200, 409]
    assert answers[0].name == "concurrent_idempotent_requests"
    assert await count_emails(pool, acme) == 1


async def test_key_older_than_24_hours_is_forgotten(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        first = await client.send(email(acme), idempotency_key="yesterday")
        await pool.execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' "
            "WHERE tenant_id = $1",
            acme.id,
        )
        again = await client.send(email(acme, subject="New"), idempotency_key="yesterday")
    assert first.status == again.status == 200 and first.body != again.body
    assert await count_emails(pool, acme) == 2


async def test_batch_replays_its_whole_answer(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    emails: list[dict[str, Any]] = [email(acme), email(acme, to="x@example.org")]
    async with emails_api(api, await acme.api_key()) as client:
        client_: EmailsApi = client
        first = await client_.batch(emails, idempotency_key="b1")
        again = await client_.batch(emails, idempotency_key="b1")
        permissive = await client_.batch(
            emails, idempotency_key="b1", batch_validation="permissive"
        )
    assert first.status == again.status == 200 and first.body == again.body
    assert len(first.body["data"]) == 2
    # The validation mode is part of the request: another mode is another payload.
    assert (permissive.status, permissive.name) == (409, "invalid_idempotent_request")
    assert await count_emails(pool, acme) == 2


async def test_expired_keys_can_be_swept(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    async with emails_api(api, await acme.api_key()) as client:
        await client.send(email(acme), idempotency_key="old")
        await client.send(email(acme), idempotency_key="new")
    await pool.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' "
        "WHERE tenant_id = $1 AND key = 'old'",
        acme.id,
    )
    assert await idempotency.delete_expired(pool) >= 1
    keys = await pool.fetch("SELECT key FROM idempotency_keys WHERE tenant_id = $1", acme.id)
    assert [r["key"] for r in keys] == ["new"]


async def test_expired_idempotency_keys_are_swept_when_the_api_starts(
    pool: Pool, start_test_api: StartApi, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    await pool.execute(
        "INSERT INTO idempotency_keys (tenant_id, key, endpoint, request_hash, state, created_at)"
        " VALUES ($1, 'old', 'POST /emails', 'h', 'done', now() - interval '25 hours'),"
        "        ($1, 'new', 'POST /emails', 'h', 'done', now())",
        acme.id,
    )
    await start_test_api()  # the sweep runs once at start, then hourly
    for _ in range(200):
        left = await pool.fetch(
            "SELECT key FROM idempotency_keys WHERE tenant_id = $1 ORDER BY key", acme.id
        )
        if [r["key"] for r in left] == ["new"]:
            break
        await asyncio.sleep(0.02)
    assert [r["key"] for r in left] == ["new"]
