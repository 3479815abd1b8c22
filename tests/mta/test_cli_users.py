"""`opensend user create EMAIL --tenant T`: a dashboard user whose password is read from
standard input by scripts, stored only as an argon2id hash, who can then sign in."""

from __future__ import annotations

import secrets
from pathlib import Path
from uuid import UUID

import pyotp
import pytest

from storage.database import Pool
from tests.api.dashboard.support import reader, session
from tests.conftest import ApiServer, MakeTenant, StartApi
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


async def test_two_factor_turned_on_needs_a_fresh_code_and_a_code_counts_once(
    env: dict[str, str], start_test_api: StartApi, make_tenant: MakeTenant
) -> None:
    # An API of its own: the failures it counts must not lock other tests' logins out.
    api = await start_test_api(OPENSEND_AUTH_FAILURE_DELAY="0")
    world = await make_tenant()
    email = f"ops-{secrets.token_hex(4)}@{world.name}"
    await run_opensend(
        "user", "create", email, "--tenant", world.tenant.name, env=env,
        input=f"{PASSWORD}\n".encode(),
    )  # fmt: skip
    on = (await run_opensend("user", "totp", email, "--json", env=env)).json()
    assert on["uri"].startswith("otpauth://totp/OpenSend:")
    code = pyotp.TOTP(on["secret"]).now()

    async with session() as http:
        me = reader(api.url, http)
        form = {"email": email, "password": PASSWORD}
        without = await me.post("/dashboard/login", form)
        wrong = await me.post(
            "/dashboard/login", {**form, "code": "000000" if code != "000000" else "111111"}
        )
        right = await me.post("/dashboard/login", {**form, "code": code})
        replayed = await me.post("/dashboard/login", {**form, "code": code})
        off = await run_opensend("user", "totp", email, "--off", env=env)
        plain = await me.post("/dashboard/login", form)
    assert (without.status, wrong.status, right.status, replayed.status) == (401, 401, 303, 401)
    assert off.returncode == 0
    assert plain.status == 303
