"""Stripped replies end to end: mail sent through the real MX, stripped by the real after-commit
worker (the auth checker's second job), shown by the real API beside the untouched bodies.

The module has a database of its own, so its worker sees only its own mail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any
from uuid import UUID

import aiohttp
import pytest

from mta.authcheck import Authenticator
from mta.authcheck_worker import AuthCheckOptions, AuthCheckWorkers
from mta.dns import BlockingResolver
from mta.server import MXListener
from policy.settings import HostPort
from storage.database import Pool
from tests.conftest import ApiServer, MakeTenant, StartApi, StartMX, TenantWorld, smtp_send
from tests.support.delivery_world import queue_database
from tests.support.dns_server import LoopbackDNSServer

AUTHSERV_ID = "mx.opensend.test"
SENDER = "ann@customer.example"
TEXT = (
    "Tuesday at ten works for me.\n\nAnn\n\n"
    "On Mon, 4 Mar 2024 at 09:12, Support <support@example.com> wrote:\n\n"
    "> Could we meet this week?\n> Support\n"
)
HTML = (
    '<div dir="ltr">Tuesday at ten works for me.<div><br></div><div>Ann</div></div><br>'
    '<div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Mon, 4 Mar 2024 at 09:12, '
    'Support &lt;support@example.com&gt; wrote:<br></div><blockquote class="gmail_quote">'
    "Could we meet this week?<br>Support</blockquote></div>"
)


@pytest.fixture(scope="module")
async def own_database(database_url: str) -> AsyncIterator[tuple[str, Pool]]:
    async with queue_database(database_url) as made:
        yield made


@pytest.fixture(scope="module")
def pool(own_database: tuple[str, Pool]) -> Pool:
    """Overrides the session pool: the MX, the API and the tenants of this module use it."""
    return own_database[1]


@pytest.fixture(autouse=True)
async def nothing_left_unchecked(pool: Pool) -> AsyncIterator[None]:
    """A test's unchecked mail is not the next test's to strip."""
    yield
    await pool.execute(
        "UPDATE auth_check_progress"
        " SET checked_through = (SELECT id FROM received_emails ORDER BY id DESC LIMIT 1)"
    )
    await pool.execute("UPDATE received_auth_results SET next_check_at = NULL")


@pytest.fixture
async def world(make_tenant: MakeTenant) -> TenantWorld:
    return await make_tenant(catch_all=True)


@pytest.fixture
async def mx(start_test_mx: StartMX) -> MXListener:
    return await start_test_mx()


@pytest.fixture
async def api(start_test_api: StartApi) -> ApiServer:
    return await start_test_api()


async def run_worker_once(pool: Pool, dns: LoopbackDNSServer) -> int | None:
    """The after-commit worker reads one batch, checks and strips it, and stops."""
    worker = AuthCheckWorkers(
        pool,
        Authenticator(
            BlockingResolver((HostPort(dns.host, dns.port),), lifetime=0.5),
            hostname=AUTHSERV_ID,
        ),
        authserv_id=AUTHSERV_ID,
        options=AuthCheckOptions(poll_seconds=0.05, backlog_seconds=0.05),
    )
    try:
        return await worker.run_once()
    finally:
        await worker.stop(grace=0.0)


def reply(text: str | None, html: str | None) -> bytes:
    message = EmailMessage()
    message["From"] = f"Ann <{SENDER}>"
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


async def receive(mx: MXListener, world: TenantWorld, content: bytes) -> UUID:
    sent = await smtp_send(mx.port, SENDER, [f"support@{world.name}"], content)
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


async def test_a_reply_is_stripped_after_its_commit_and_the_api_shows_both_versions(
    pool: Pool, dns: LoopbackDNSServer, world: TenantWorld, mx: MXListener, api: ApiServer
) -> None:
    email_id = await receive(mx, world, reply(TEXT, HTML))
    before = await detail(api, world, email_id)
    # Answered 250 with nothing stripped: the MX's path does no stripping.
    assert (before["stripped_text"], before["stripped_html"]) == (None, None)

    assert await run_worker_once(pool, dns) == 1

    after = await detail(api, world, email_id)
    assert after["stripped_text"] == "Tuesday at ten works for me.\n\nAnn"
    assert "Tuesday at ten works for me." in after["stripped_html"]
    assert "Could we meet" not in after["stripped_html"]
    assert "gmail_quote" not in after["stripped_html"]
    # The bodies as received stay beside them.
    assert (after["text"], after["html"]) == (before["text"], before["html"])
    assert "Could we meet this week?" in after["text"] and "gmail_quote" in after["html"]
    # The listing carries no bodies, and so no stripped ones either.
    assert after["authentication_results"] is not None


async def test_an_html_only_reply_gets_its_text_from_the_stripped_html(
    pool: Pool, dns: LoopbackDNSServer, world: TenantWorld, mx: MXListener, api: ApiServer
) -> None:
    email_id = await receive(mx, world, reply(None, HTML))
    await run_worker_once(pool, dns)
    body = await detail(api, world, email_id)
    assert body["text"] is None
    assert body["stripped_text"] == "Tuesday at ten works for me.\n\nAnn"


async def test_a_worker_that_died_before_the_results_strips_the_message_again(
    pool: Pool, dns: LoopbackDNSServer, world: TenantWorld, mx: MXListener, api: ApiServer
) -> None:
    email_id = await receive(mx, world, reply(TEXT, None))
    await run_worker_once(pool, dns)
    # As if the worker had written the stripped row and died before the results.
    await pool.execute("DELETE FROM received_auth_results WHERE received_id = $1", email_id)
    await pool.execute(
        "UPDATE received_stripped_bodies SET stripped_text = 'stale' WHERE received_id = $1",
        email_id,
    )
    assert await run_worker_once(pool, dns) == 1
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
    email_id = await receive(mx, world, reply("Short answer.\n\n" + hostile, None))
    assert await run_worker_once(pool, dns) == 1
    assert (await detail(api, world, email_id))["stripped_text"] == "Short answer."
