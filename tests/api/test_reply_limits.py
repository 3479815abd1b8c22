"""The plan's monthly sending limit as an operator sets it: `opensend tenant set-limit`."""

from __future__ import annotations

from pathlib import Path

from storage.database import Pool
from tests.conftest import MakeTenant
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
