"""The plan's monthly sending limit as an operator sets it (`opensend tenant set-limit`), and
POST /emails and its batch past it (replies past it: test_reply_errors.py; submission: 450
4.7.1 in tests/mta/submission/test_protocol.py)."""

from __future__ import annotations

from pathlib import Path

from storage.database import Pool
from storage.sending.replies import set_sending_limit
from tests.api.sending.emails_client import count_emails, email, emails_api
from tests.conftest import ApiServer, MakeTenant
from tests.support.opensend_cli import opensend_env, run_opensend


async def limit_of(pool: Pool, name: str) -> int | None:
    value: int | None = await pool.fetchval(
        "SELECT monthly_send_limit FROM tenants WHERE name = $1", name
    )
    return value


async def test_set_limit_stores_a_number_and_none_clears_it(
    tmp_path: Path, database_url: str, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    env = opensend_env(tmp_path, database_url)
    name = acme.tenant.name

    shown = (await run_opensend("tenant", "set-limit", name, "1000", "--json", env=env)).json()
    assert shown == {"tenant_id": str(acme.id), "monthly_send_limit": 1000}
    assert await limit_of(pool, name) == 1000

    cleared = await run_opensend("tenant", "set-limit", str(acme.id), "none", env=env)
    assert cleared.returncode == 0, cleared
    assert "unlimited" in cleared.stdout
    assert await limit_of(pool, name) is None


async def test_set_limit_refuses_what_is_not_a_count(
    tmp_path: Path, database_url: str, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    env = opensend_env(tmp_path, database_url)
    refused = await run_opensend("tenant", "set-limit", acme.tenant.name, "-5", env=env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    unknown = await run_opensend("tenant", "set-limit", "no-such-tenant", "5", env=env)
    assert unknown.returncode != 0 and "no tenant named" in unknown.stderr


async def test_sends_past_the_monthly_limit_are_429_and_a_replayed_key_still_answers(
    api: ApiServer, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    await set_sending_limit(pool, acme.id, 2)
    async with (
        emails_api(api, await acme.api_key()) as client,
        emails_api(api, await globex.api_key()) as other,
    ):
        first = await client.send(email(acme, subject="one"), idempotency_key="k-one")
        second = await client.send(email(acme, subject="two"))
        over = await client.send(email(acme, subject="three"))
        batch = await client.batch([email(acme, subject="four")])
        replayed = await client.send(email(acme, subject="one"), idempotency_key="k-one")
        unlimited = await other.send(email(globex))  # another tenant's limit is its own
    assert (first.status, second.status) == (200, 200)
    for refused in (over, batch):
        assert (refused.status, refused.name) == (429, "monthly_quota_exceeded"), refused.body
        assert refused.message == "You have reached your monthly email sending quota."
    assert replayed.status == 200 and replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.body == first.body
    assert unlimited.status == 200
    assert await count_emails(pool, acme) == 2
