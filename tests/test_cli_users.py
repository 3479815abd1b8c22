"""`opensend user create EMAIL --tenant T`: a dashboard user whose password is read from
standard input by scripts, stored only as an argon2id hash, who can then sign in."""

from __future__ import annotations

import secrets
from pathlib import Path
from uuid import UUID

import pytest

from storage.database import Pool
from tests.api.dashboard.support import reader, session
from tests.conftest import ApiServer, MakeTenant
from tests.support.opensend_cli import opensend_env, run_opensend

PASSWORD = "a long enough passphrase"


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return opensend_env(tmp_path, database_url)


async def test_user_create_reads_the_password_from_stdin_and_the_user_can_sign_in(
    env: dict[str, str], pool: Pool, api: ApiServer, make_tenant: MakeTenant
) -> None:
    world = await make_tenant()
    email = f"ops-{secrets.token_hex(4)}@{world.name}"

    created = await run_opensend(
        "user", "create", email, "--tenant", world.tenant.name, "--json",
        env=env, input=f"{PASSWORD}\n".encode(),
    )  # fmt: skip

    user = created.json()
    assert (user["email"], user["tenant_id"]) == (email, str(world.id))
    stored = await pool.fetchval(
        "SELECT password_hash FROM dashboard_users WHERE id = $1", UUID(user["id"])
    )
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    async with session() as http:
        page = await reader(api.url, http).post(
            "/dashboard/login", {"email": email, "password": PASSWORD}
        )
    assert page.status == 303


async def test_user_create_refuses_a_short_password_and_a_taken_address(
    env: dict[str, str], make_tenant: MakeTenant
) -> None:
    world = await make_tenant()
    email = f"ops-{secrets.token_hex(4)}@{world.name}"
    args = ("user", "create", email, "--tenant", world.tenant.name)

    short = await run_opensend(*args, env=env, input=b"short\n")
    first = await run_opensend(*args, env=env, input=f"{PASSWORD}\n".encode())
    again = await run_opensend(*args, env=env, input=f"{PASSWORD}\n".encode())

    assert short.returncode == 1 and "at least 10 characters" in short.stderr
    assert first.returncode == 0 and "dashboard user" in first.stdout
    assert again.returncode == 1 and "not created" in again.stderr
    assert "Traceback" not in short.stderr + again.stderr
