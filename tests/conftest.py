"""Fixtures: a real PostgreSQL, the real MX on an ephemeral loopback port, tenants made with the
same storage code the `opensend` command uses. Nothing here fakes a component of ours."""

from __future__ import annotations

import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any
from uuid import UUID

import aiosmtplib
import pytest
from aiohttp import web

from api.app import make_app
from mta.dns import Resolver
from mta.listeners import MXListener, SubmissionListeners, start_mx, start_submission
from mta.smtp.tls import submission_tls_context
from policy.domains.dkim_keys import DkimKeyPair, generate_key_pair
from policy.domains.public import DomainView
from policy.settings import Settings, load_settings
from policy.tokens import ReplyToken, ReplyTokens
from storage.account import directory
from storage.database import Pool, open_pool
from storage.migrate import migrate
from storage.sending.outbound import TrackedEmail, insert_tracked_email, new_email_id
from tests.support.dns_server import LoopbackDNSServer, ZoneData
from tests.support.postgres import session_database
from tests.support.tls import ServerCertificate, server_certificate

TEST_SECRET = "test-secret-" + "0123456789abcdef" * 3
HOSTNAME = "mx.opensend.test"
# How the server of make_settings shows domains: what storage writes domain.* events with.
DOMAIN_VIEW = DomainView(HOSTNAME)


def make_settings(tmp: Path, **env: str) -> Settings:
    """Settings as the server reads them, from an environment the test writes."""
    base = {
        "OPENSEND_DATA_DIR": str(tmp),
        "OPENSEND_HOSTNAME": HOSTNAME,
        "OPENSEND_REPLY_TOKEN_SECRET": TEST_SECRET,
        "OPENSEND_MX_LISTEN": "127.0.0.1:0",
        "OPENSEND_LOG_LEVEL": "WARNING",
    }
    base.update(env)
    return load_settings(base)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with session_database() as url:
        yield url


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[Pool]:
    await migrate(database_url)
    pool = await open_pool(database_url, max_size=10)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def tokens() -> ReplyTokens:
    return ReplyTokens(TEST_SECRET.encode())


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("opensend")


StartMX = Callable[..., Awaitable[MXListener]]


@pytest.fixture
async def start_test_mx(pool: Pool, tokens: ReplyTokens, tmp_path: Path) -> AsyncIterator[StartMX]:
    """Start an MX with settings of the test's choosing; stopped when the test ends."""
    started: list[MXListener] = []

    async def start(**env: str) -> MXListener:
        listener = await start_mx(make_settings(tmp_path, **env), pool, tokens)
        started.append(listener)
        return listener

    yield start
    for listener in started:
        await listener.drain(grace=1.0)


@pytest.fixture(scope="session")
async def mx(pool: Pool, tokens: ReplyTokens, session_tmp: Path) -> AsyncIterator[MXListener]:
    """The MX with default settings, shared by the tests that do not change them."""
    listener = await start_mx(make_settings(session_tmp), pool, tokens)
    yield listener
    await listener.drain(grace=1.0)


SUBMISSION_HOST = "mx.opensend.test"  # the name make_settings gives every test server


@pytest.fixture(scope="session")
def submission_certificate(session_tmp: Path) -> ServerCertificate:
    """A trustme certificate for the submission ports: the server name and 127.0.0.1, so
    clients that check the address they dialled (smtplib, swaks) verify it too."""
    directory = session_tmp / "submission-tls"
    directory.mkdir()
    return server_certificate(directory, SUBMISSION_HOST, "127.0.0.1")


@dataclass
class SubmissionServer:
    """The real submission listeners (587 STARTTLS, 465 implicit TLS) on ephemeral ports."""

    listeners: SubmissionListeners
    certificate: ServerCertificate
    settings: Settings

    @property
    def starttls_port(self) -> int:
        return self.listeners.starttls.port

    @property
    def implicit_port(self) -> int:
        return self.listeners.implicit_tls.port

    def client_context(self) -> ssl.SSLContext:
        return self.certificate.client_context()


StartSubmission = Callable[..., Awaitable[SubmissionServer]]


@pytest.fixture
async def start_test_submission(
    pool: Pool, tokens: ReplyTokens, tmp_path: Path, submission_certificate: ServerCertificate
) -> AsyncIterator[StartSubmission]:
    """Start both submission ports with settings of the test's choosing, on `on` (a pool of
    the test's choosing) or the session database. Each start has its own login failure records;
    failures are answered without delay unless OPENSEND_AUTH_FAILURE_DELAY says otherwise."""
    started: list[SubmissionListeners] = []

    async def start(*, on: Pool | None = None, **env: str) -> SubmissionServer:
        settings = make_settings(
            tmp_path,
            **{
                "OPENSEND_SUBMISSION_LISTEN": "127.0.0.1:0",
                "OPENSEND_SUBMISSIONS_LISTEN": "127.0.0.1:0",
                "OPENSEND_TLS_CERT": str(submission_certificate.cert),
                "OPENSEND_TLS_KEY": str(submission_certificate.key),
                "OPENSEND_AUTH_FAILURE_DELAY": "0",
                **env,
            },
        )
        tls = submission_tls_context(settings)
        listeners = await start_submission(settings, on or pool, tokens, tls)
        started.append(listeners)
        return SubmissionServer(listeners, submission_certificate, settings)

    yield start
    for listeners in started:
        await listeners.drain(grace=1.0)


@pytest.fixture
async def dns() -> AsyncIterator[LoopbackDNSServer]:
    """A real authoritative DNS server on loopback; its `.zone` is the test's to fill.

    Point the server under test at it with OPENSEND_DNS_SERVERS=dns.address.
    """
    async with LoopbackDNSServer(ZoneData()) as server:
        yield server


@dataclass
class ApiServer:
    """The real HTTP API on an ephemeral loopback port."""

    url: str
    runner: web.AppRunner


StartApi = Callable[..., Awaitable[ApiServer]]


@pytest.fixture
async def start_test_api(
    pool: Pool, tokens: ReplyTokens, tmp_path: Path
) -> AsyncIterator[StartApi]:
    """Start the API with settings of the test's choosing (e.g. OPENSEND_DNS_SERVERS)."""
    started: list[web.AppRunner] = []

    async def start(**env: str) -> ApiServer:
        settings = make_settings(tmp_path, **env)
        app = make_app(pool, settings, tokens, Resolver(settings.dns_servers))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        started.append(runner)
        port = runner.addresses[0][1]
        return ApiServer(f"http://127.0.0.1:{port}", runner)

    yield start
    for runner in started:
        await runner.cleanup()


@pytest.fixture(scope="session")
async def api(pool: Pool, tokens: ReplyTokens, session_tmp: Path) -> AsyncIterator[ApiServer]:
    """The API with default settings, shared by the tests that do not change them."""
    settings = make_settings(session_tmp)
    app = make_app(pool, settings, tokens, Resolver(settings.dns_servers))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield ApiServer(f"http://127.0.0.1:{runner.addresses[0][1]}", runner)
    await runner.cleanup()


@dataclass
class TenantWorld:
    """A tenant with a verified receiving domain, made through the admin code paths."""

    pool: Pool
    tokens: ReplyTokens
    tenant: directory.Tenant
    domain: directory.Domain
    routes: list[str] = field(default_factory=list)

    @property
    def id(self) -> UUID:
        return self.tenant.id

    @property
    def name(self) -> str:
        return self.domain.name

    @property
    def reply_domain(self) -> str:
        return self.domain.effective_reply_domain

    async def api_key(
        self, permission: str = "full_access", *, domain_id: UUID | None = None
    ) -> str:
        """A real API key of this tenant, made by the same code as `opensend apikey create`
        (a sending_access key may be limited to one domain, as POST /api-keys can)."""
        _key, token = await directory.create_api_key(
            self.pool, self.tenant.id, "test", permission, domain_id
        )
        return token

    async def route(self, address: str, to: str | None = None) -> None:
        await directory.add_route(self.pool, self.tenant.id, address, to)
        self.routes.append(address)

    async def sent_email(
        self, to: str = "customer@example.net", subject: str = "Your order"
    ) -> tuple[TrackedEmail, ReplyToken]:
        """An outbound tracked email as the sending path stores it: thread, token, address."""
        email_id = new_email_id()
        token = self.tokens.mint(self.tenant.id, email_id, self.reply_domain)
        email = await insert_tracked_email(
            self.pool,
            email_id=email_id,
            tenant_id=self.tenant.id,
            thread_id=None,
            from_address=f"support@{self.name}",
            to=[to],
            subject=subject,
            message_id=f"{token}@{self.name}",
            reply_token=str(token),
            reply_address=token.address(self.reply_domain),
            reply_domain=self.reply_domain,
        )
        return email, token


MakeTenant = Callable[..., Awaitable[TenantWorld]]


@pytest.fixture(scope="session")
def dkim_key() -> DkimKeyPair:
    """One DKIM key pair for every test tenant: real keys, generated once (about 45 ms each)."""
    return generate_key_pair()


@pytest.fixture
def make_tenant(pool: Pool, tokens: ReplyTokens, dkim_key: DkimKeyPair) -> MakeTenant:
    async def make(
        *,
        receiving: bool = True,
        reply_subdomain: bool = True,
        verified: bool = True,
        catch_all: bool = False,
    ) -> TenantWorld:
        suffix = secrets.token_hex(4)
        tenant = await directory.create_tenant(pool, f"tenant-{suffix}")
        name = f"t{suffix}.test"
        domain = await directory.add_domain(
            pool,
            tenant.id,
            name,
            receiving=receiving,
            reply_domain=f"inbound.{name}" if reply_subdomain else None,
            verified=verified,
            dkim=dkim_key,
            event_data=DOMAIN_VIEW.event_data,
        )
        world = TenantWorld(pool, tokens, tenant, domain)
        if catch_all:
            await world.route(f"*@{name}")
        return world

    return make


def message(
    *,
    sender: str = "customer@example.net",
    to: str = "support@example.com",
    subject: str = "Hello",
    body: str = "Hi there,\nthis is a test.\n",
    headers: dict[str, str] | None = None,
) -> bytes:
    """A well-formed message as a mail client would write it, CRLF line endings."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="example.net")
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


@dataclass
class Delivery:
    """What an SMTP client saw: each recipient's reply and the reply to the message."""

    recipients: dict[str, tuple[int, str]]
    data: tuple[int, str] | None

    @property
    def stored_ids(self) -> list[UUID]:
        assert self.data is not None and self.data[0] == 250, self.data
        return [UUID(part) for part in self.data[1].split("queued as ", 1)[1].split()]


async def smtp_send(
    port: int, sender: str, recipients: list[str], content: bytes, host: str = "127.0.0.1"
) -> Delivery:
    """Send one message with aiosmtplib, a real client, and report every reply."""
    client = aiosmtplib.SMTP(hostname=host, port=port, timeout=30, start_tls=False)
    await client.connect()
    try:
        await client.ehlo(hostname="client.example.net")
        await client.mail(sender)
        replies: dict[str, tuple[int, str]] = {}
        for rcpt in recipients:
            try:
                response = await client.rcpt(rcpt)
                replies[rcpt] = (response.code, response.message)
            except aiosmtplib.SMTPRecipientRefused as refused:
                replies[rcpt] = (refused.code, refused.message)
        if not any(code == 250 for code, _ in replies.values()):
            await client.rset()
            return Delivery(replies, None)
        try:
            response = await client.data(content)
            data = (response.code, response.message)
        except aiosmtplib.SMTPDataError as refused:
            data = (refused.code, refused.message)
        return Delivery(replies, data)
    finally:
        try:
            await client.quit()
        except aiosmtplib.SMTPException:
            client.close()


async def received_rows(pool: Pool, ids: list[UUID]) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT * FROM received_emails WHERE id = ANY($1::uuid[]) ORDER BY id", ids
    )
    return [dict(r) for r in rows]
