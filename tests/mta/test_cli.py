"""The `opensend` command as an operator meets it: a subprocess, an environment, exit codes.

Exit codes are a contract with systemd and scripts: 0 done, 1 the operation failed (the message
says why), 2 bad configuration (systemd does not restart on it). Output with `--json` is for
scripts; the text says what to do next.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import signal
import stat
from pathlib import Path
from uuid import UUID

import pytest

from policy.tokens import ReplyTokens
from storage.account import directory
from storage.database import Pool
from storage.local_secret import SECRET_FILE, load_or_create_secret
from tests.conftest import DOMAIN_VIEW, MakeTenant, message, received_rows, smtp_send
from tests.support.opensend_cli import (
    Completed,
    opensend_env,
    opensend_server,
    run_opensend,
    server_env,
)

HOSTNAME = "mx.opensend.test"  # what opensend_env sets OPENSEND_HOSTNAME to


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return opensend_env(tmp_path, database_url, OPENSEND_HOSTNAME=HOSTNAME)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def failed_with(result: Completed, code: int) -> str:
    """The one-line error an operator reads; no traceback, nothing on stdout."""
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "", result.stdout
    return result.stderr


# -- configuration errors: exit 2, naming the variable ---------------------------------------

BAD_SETTINGS = [
    pytest.param({"OPENSEND_ENV": "prod"}, "OPENSEND_ENV", id="unknown_environment"),
    pytest.param(
        {"OPENSEND_MX_LISTEN": "nonsense:99999"}, "OPENSEND_MX_LISTEN", id="port_out_of_range"
    ),
    pytest.param(
        {"OPENSEND_MX_LISTEN": "127.0.0.1"}, "OPENSEND_MX_LISTEN", id="listen_without_port"
    ),
    pytest.param(
        {"OPENSEND_MAX_RECIPIENTS": "zero"}, "OPENSEND_MAX_RECIPIENTS", id="limit_not_a_number"
    ),
    pytest.param({"OPENSEND_MAX_RECIPIENTS": "0"}, "OPENSEND_MAX_RECIPIENTS", id="limit_zero"),
    pytest.param(
        {"OPENSEND_ENV": "production"},
        "OPENSEND_REPLY_TOKEN_SECRET",
        id="production_without_secret",
    ),
    pytest.param(
        {"OPENSEND_REPLY_TOKEN_SECRET": "too-short"},
        "OPENSEND_REPLY_TOKEN_SECRET",
        id="secret_too_short",
    ),
    pytest.param(
        {"OPENSEND_TLS_CERT": "{cert}"}, "OPENSEND_TLS_KEY", id="tls_certificate_without_key"
    ),
    pytest.param(
        {"OPENSEND_TLS_CERT": "{tmp}/missing.pem", "OPENSEND_TLS_KEY": "{cert}"},
        "OPENSEND_TLS_CERT",
        id="tls_certificate_missing",
    ),
    pytest.param({"OPENSEND_LOG_LEVEL": "loud"}, "OPENSEND_LOG_LEVEL", id="unknown_log_level"),
]


@pytest.mark.parametrize(("settings", "variable"), BAD_SETTINGS)
async def test_bad_setting_exits_2_naming_the_variable(
    env: dict[str, str], tmp_path: Path, settings: dict[str, str], variable: str
) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not checked before the key is\n")
    for name, value in settings.items():
        env[name] = value.format(cert=cert, tmp=tmp_path)

    refused = await run_opensend("migrate", env=env)

    assert variable in failed_with(refused, 2)


async def test_serve_with_a_bad_setting_exits_2_before_listening(
    env: dict[str, str], tmp_path: Path
) -> None:
    env.update(OPENSEND_ENV="production", OPENSEND_MX_LISTEN="127.0.0.1:0")

    refused = await run_opensend("serve", "--only", "mta", env=env)

    assert "OPENSEND_REPLY_TOKEN_SECRET" in failed_with(refused, 2)


# -- administration --------------------------------------------------------------------------


async def test_tenant_create_prints_the_new_tenant_as_json(env: dict[str, str], pool: Pool) -> None:
    name = unique("acme")

    created = (await run_opensend("tenant", "create", name, "--json", env=env)).json()

    assert created["name"] == name
    stored = await directory.find_tenant(pool, name)
    assert stored is not None and stored.id == UUID(created["id"])


async def test_domain_add_prints_the_records_with_an_mx_for_the_reply_domain(
    env: dict[str, str], pool: Pool
) -> None:
    tenant = await directory.create_tenant(pool, unique("acme"))
    name = f"{unique('acme')}.test"

    added = await run_opensend(
        "domain", "add", name, "--tenant", tenant.name, "--receiving",
        "--reply-domain", f"inbound.{name}", "--verified", "--json", env=env,
    )  # fmt: skip

    domain = added.json()
    assert (domain["name"], domain["reply_domain"]) == (name, f"inbound.{name}")
    assert (domain["verified"], domain["receiving_enabled"]) == (True, True)
    assert domain["tenant_id"] == str(tenant.id)
    [mx] = [record for record in domain["records"] if record["record"] == "MX"]
    # Reply addresses live at the reply domain, so that is the name whose MX must point here.
    assert (mx["name"], mx["value"]) == (f"inbound.{name}", HOSTNAME)
    stored = await directory.find_domain(pool, name)
    assert stored is not None and stored.id == UUID(domain["id"])


async def test_domain_add_by_tenant_id_without_verification_is_not_verified(
    env: dict[str, str], pool: Pool
) -> None:
    tenant = await directory.create_tenant(pool, unique("acme"))
    name = f"{unique('acme')}.test"

    added = await run_opensend(
        "domain", "add", name, "--tenant", str(tenant.id), "--receiving", "--json", env=env
    )

    domain = added.json()
    assert domain["verified"] is False
    [mx] = [record for record in domain["records"] if record["record"] == "MX"]
    assert mx["name"] == name  # no reply domain: replies come to the domain itself


@pytest.fixture
async def tenant_with_domain(pool: Pool) -> tuple[directory.Tenant, directory.Domain]:
    tenant = await directory.create_tenant(pool, unique("acme"))
    name = f"{unique('acme')}.test"
    domain = await directory.add_domain(
        pool,
        tenant.id,
        name,
        receiving=True,
        reply_domain=f"inbound.{name}",
        verified=True,
        event_data=DOMAIN_VIEW.event_data,
    )
    return tenant, domain


async def test_route_add_makes_exact_alias_and_catch_all_routes(
    env: dict[str, str], pool: Pool, tenant_with_domain: tuple[directory.Tenant, directory.Domain]
) -> None:
    tenant, domain = tenant_with_domain
    routes = []
    for args in (
        (f"Support@{domain.name}",),
        (f"sales@{domain.name}", "--to", f"support@{domain.name}"),
        (f"*@{domain.name}",),
    ):
        added = await run_opensend(
            "route", "add", *args, "--tenant", tenant.name, "--json", env=env
        )
        routes.append(added.json())

    assert [(r["kind"], r["address"], r["target"]) for r in routes] == [
        ("exact", f"support@{domain.name}", None),
        ("alias", f"sales@{domain.name}", f"support@{domain.name}"),
        ("catch_all", f"*@{domain.name}", None),
    ]
    stored = await pool.fetch(
        "SELECT kind, address, target FROM routes WHERE domain_id = $1 ORDER BY address",
        domain.id,
    )
    assert sorted((r["kind"], r["address"], r["target"]) for r in routes) == sorted(
        tuple(r) for r in stored
    )


async def test_apikey_create_prints_the_key_once_and_stores_only_its_hash(
    env: dict[str, str], pool: Pool, tenant_with_domain: tuple[directory.Tenant, directory.Domain]
) -> None:
    tenant, _ = tenant_with_domain

    created = await run_opensend(
        "apikey", "create", "--tenant", tenant.name, "--name", "ci", "--json", env=env
    )

    key = created.json()
    token = key["token"]
    assert created.stdout.count(token) == 1
    stored = await pool.fetchrow("SELECT * FROM api_keys WHERE id = $1", UUID(key["id"]))
    assert stored["tenant_id"] == tenant.id and stored["name"] == "ci"
    assert bytes(stored["key_hash"]) == hashlib.sha256(token.encode()).digest()
    tables = await pool.fetch(
        "SELECT quote_ident(table_name) AS t FROM information_schema.tables"
        " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    for table in tables:
        found = await pool.fetchval(
            f"SELECT count(*) FROM {table['t']} row WHERE strpos(row::text, $1) > 0", token
        )
        assert found == 0, f"the API key appears in table {table['t']}"


async def test_apikey_create_without_json_says_it_is_shown_once(
    env: dict[str, str], tenant_with_domain: tuple[directory.Tenant, directory.Domain]
) -> None:
    tenant, _ = tenant_with_domain

    created = await run_opensend("apikey", "create", "--tenant", tenant.name, env=env)

    assert created.returncode == 0, created
    assert "shown once" in created.stdout
    assert created.stdout.count("re_") == 1


async def test_adding_a_domain_twice_exits_1_saying_it_is_in_use(
    env: dict[str, str], tenant_with_domain: tuple[directory.Tenant, directory.Domain]
) -> None:
    tenant, domain = tenant_with_domain

    again = await run_opensend("domain", "add", domain.name, "--tenant", tenant.name, env=env)

    message_text = failed_with(again, 1)
    assert domain.name in message_text
    assert "already in use" in message_text


async def test_another_tenants_domain_cannot_be_taken(
    env: dict[str, str],
    pool: Pool,
    tenant_with_domain: tuple[directory.Tenant, directory.Domain],
) -> None:
    owner, domain = tenant_with_domain
    intruder = await directory.create_tenant(pool, unique("intruder"))

    as_domain = await run_opensend(
        "domain", "add", domain.name, "--tenant", intruder.name, "--receiving", "--verified",
        env=env,
    )  # fmt: skip
    as_reply_domain = await run_opensend(
        "domain", "add", f"{unique('other')}.test", "--tenant", intruder.name, "--receiving",
        "--reply-domain", domain.effective_reply_domain, "--verified", env=env,
    )  # fmt: skip
    reply_domain_as_domain = await run_opensend(
        "domain", "add", domain.effective_reply_domain, "--tenant", intruder.name, env=env
    )
    route = await run_opensend(
        "route", "add", f"*@{domain.name}", "--tenant", intruder.name, env=env
    )

    assert "already in use" in failed_with(as_domain, 1)
    assert "already in use" in failed_with(as_reply_domain, 1)
    assert "already in use" in failed_with(reply_domain_as_domain, 1)
    assert "not a domain of this tenant" in failed_with(route, 1)
    assert await directory.list_domains(pool, intruder.id) == []
    owned = await pool.fetchval("SELECT tenant_id FROM domains WHERE name = $1", domain.name)
    assert owned == owner.id
    taken = await pool.fetchval("SELECT count(*) FROM routes WHERE tenant_id = $1", intruder.id)
    assert taken == 0


async def test_unknown_tenant_exits_1_saying_how_to_create_it(env: dict[str, str]) -> None:
    missing = unique("nobody")

    refused = await run_opensend("apikey", "create", "--tenant", missing, env=env)

    text = failed_with(refused, 1)
    assert missing in text
    assert "opensend tenant create" in text


# -- the development reply-token secret ------------------------------------------------------


def test_development_secret_is_created_owner_only_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    first = load_or_create_secret(data_dir)
    again = load_or_create_secret(data_dir)

    path = data_dir / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert again == first


@pytest.mark.slow
async def test_serve_in_development_without_a_secret_persists_one_and_uses_it(
    tmp_path: Path, database_url: str, pool: Pool, make_tenant: MakeTenant
) -> None:
    data_dir = tmp_path / "data"
    env = server_env(data_dir, database_url)
    assert "OPENSEND_REPLY_TOKEN_SECRET" not in env

    async with opensend_server(env, tmp_path / "serve.log") as server:
        path = data_dir / SECRET_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        secret = load_or_create_secret(data_dir)  # what the next start will read
        # A token minted with the persisted secret is one this server accepts as genuine.
        acme = dataclasses.replace(await make_tenant(), tokens=ReplyTokens(secret))
        email, token = await acme.sent_email()
        address = token.address(acme.reply_domain)
        sent = await smtp_send(server.mx_port, "c@example.net", [address], message(to=address))
        server.signal(signal.SIGTERM)
        assert await server.exit_code() == 0, server.output()

    [row] = await received_rows(pool, sent.stored_ids)
    assert row["reply_match_status"] == "matched"
    assert row["reply_to_email_id"] == email.id
    assert path.read_bytes().strip() == secret
