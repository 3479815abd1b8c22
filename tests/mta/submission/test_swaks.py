"""swaks, the SMTP test tool operators reach for, against the submission ports: AUTH PLAIN over
STARTTLS on 587, AUTH LOGIN over implicit TLS on 465, each verifying our certificate against the
test CA; a wrong key, no TLS and a foreign From: field refused with their codes."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pytest

from storage.database import Pool
from tests.conftest import MakeTenant, StartSubmission, SubmissionServer, TenantWorld
from tests.support.tools import system_tool

# Only stops a hung swaks; no assertion depends on it.
SWAKS_BOUND_SECONDS = 60.0
QUEUED = re.compile(r"250 2\.0\.0 Ok: queued as ([0-9a-f-]{36})")


@dataclass(frozen=True)
class Swaks:
    returncode: int
    output: str

    @property
    def queued_id(self) -> UUID:
        found = QUEUED.search(self.output)
        assert found is not None, self.output
        return UUID(found.group(1))


async def swaks(*args: str) -> Swaks:
    process = await asyncio.create_subprocess_exec(
        system_tool("swaks"),
        "--server",
        "127.0.0.1",
        "--ehlo",
        "laptop.example.net",
        "--timeout",
        "30",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), SWAKS_BOUND_SECONDS)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Swaks(process.returncode, output.decode("utf-8", "replace"))


def verified_tls(server: SubmissionServer, tmp_path: Path) -> list[str]:
    return ["--tls-verify", "--tls-ca-path", str(server.certificate.ca_file(tmp_path))]


def login(mechanism: str, password: str) -> list[str]:
    return ["--auth", mechanism, "--auth-user", "swaks", "--auth-password", password]


def envelope(world: TenantWorld) -> list[str]:
    return [
        "--from",
        f"support@{world.name}",
        "--to",
        "bob@example.net",
        "--header",
        "Subject: sent with swaks",
    ]


@pytest.fixture
async def server(start_test_submission: StartSubmission) -> SubmissionServer:
    return await start_test_submission()


async def stored(pool: Pool, email_id: UUID) -> dict[str, object]:
    row = await pool.fetchrow(
        "SELECT source, subject, tenant_id FROM emails WHERE id = $1", email_id
    )
    assert row is not None
    return dict(row)


async def test_swaks_auth_plain_over_starttls_on_587(
    server: SubmissionServer, make_tenant: MakeTenant, pool: Pool, tmp_path: Path
) -> None:
    acme = await make_tenant()
    key = await acme.api_key()

    sent = await swaks(
        "--port",
        str(server.starttls_port),
        "--tls",
        *verified_tls(server, tmp_path),
        *login("PLAIN", key),
        *envelope(acme),
    )

    assert sent.returncode == 0, sent.output
    assert "235 2.7.0 Authentication successful" in sent.output
    assert await stored(pool, sent.queued_id) == {
        "source": "smtp",
        "subject": "sent with swaks",
        "tenant_id": acme.id,
    }


async def test_swaks_auth_login_over_implicit_tls_on_465(
    server: SubmissionServer, make_tenant: MakeTenant, pool: Pool, tmp_path: Path
) -> None:
    acme = await make_tenant()
    key = await acme.api_key()

    sent = await swaks(
        "--port",
        str(server.implicit_port),
        "--tls-on-connect",
        *verified_tls(server, tmp_path),
        *login("LOGIN", key),
        *envelope(acme),
    )

    assert sent.returncode == 0, sent.output
    assert (await stored(pool, sent.queued_id))["tenant_id"] == acme.id


async def test_swaks_with_a_wrong_key_is_refused_535_5_7_8(
    server: SubmissionServer, make_tenant: MakeTenant, tmp_path: Path
) -> None:
    acme = await make_tenant()

    refused = await swaks(
        "--port",
        str(server.starttls_port),
        "--tls",
        *verified_tls(server, tmp_path),
        *login("PLAIN", "re_not-a-real-key"),
        *envelope(acme),
    )

    assert refused.returncode != 0
    assert "535 5.7.8 Authentication credentials invalid" in refused.output


async def test_swaks_without_tls_is_offered_no_auth_and_refused_530_5_7_0(
    server: SubmissionServer, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()

    # --auth-optional: swaks goes on to MAIL FROM when AUTH is not offered, as a careless
    # client would; the server offers none in the clear and refuses the mail.
    refused = await swaks(
        "--port",
        str(server.starttls_port),
        "--auth-optional",
        "--auth-user",
        "swaks",
        "--auth-password",
        "irrelevant",
        *envelope(acme),
    )

    assert refused.returncode != 0
    assert "530 5.7.0 Must issue a STARTTLS command first" in refused.output
    assert "250-AUTH" not in refused.output


async def test_swaks_with_a_foreign_from_field_is_refused_553_5_7_1(
    server: SubmissionServer, make_tenant: MakeTenant, pool: Pool, tmp_path: Path
) -> None:
    acme = await make_tenant()
    globex = await make_tenant()
    key = await acme.api_key()

    refused = await swaks(
        "--port",
        str(server.implicit_port),
        "--tls-on-connect",
        *verified_tls(server, tmp_path),
        *login("PLAIN", key),
        *envelope(acme),
        "--header",
        f"From: CEO <ceo@{globex.name}>",
    )

    assert refused.returncode != 0
    assert "553 5.7.1 Message refused" in refused.output
    count = await pool.fetchval("SELECT count(*) FROM emails WHERE tenant_id = $1", acme.id)
    assert count == 0
