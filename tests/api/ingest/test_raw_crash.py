"""What the ingester answered 202 for survives the API process being killed at once after."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from pathlib import Path

import aiohttp

from storage.account import directory
from tests.conftest import DOMAIN_VIEW, message
from tests.support.delivery_world import queue_database
from tests.support.opensend_cli import OPENSEND, free_loopback_port, server_env

READY_ATTEMPTS = 600  # 0.1 s apart: only stops a hung test; no assertion depends on it


async def test_events_answered_202_are_there_after_the_api_is_killed(
    database_url: str, tmp_path: Path
) -> None:
    async with queue_database(database_url) as (url, pool):
        tenant = await directory.create_tenant(pool, f"crash-{secrets.token_hex(3)}")
        domain = f"crash{secrets.token_hex(3)}.test"
        await directory.add_domain(
            pool,
            tenant.id,
            domain,
            receiving=True,
            reply_domain=None,
            verified=True,
            event_data=DOMAIN_VIEW.event_data,
        )
        await directory.add_route(pool, tenant.id, f"*@{domain}", None)
        port = free_loopback_port()
        env = server_env(tmp_path / "data", url, OPENSEND_API_LISTEN=f"127.0.0.1:{port}")
        with (tmp_path / "api.log").open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                str(OPENSEND), "serve", "--only", "api", env=env, stdout=log, stderr=log
            )
        try:
            base = f"http://127.0.0.1:{port}"
            accepted: list[str] = []
            async with aiohttp.ClientSession() as http:
                for _ in range(READY_ATTEMPTS):
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"{base}/healthz") as ready:
                            if ready.status == 200:
                                break
                    await asyncio.sleep(0.1)
                for n in range(20):
                    event = {
                        "raw_mime": message(to=f"x@{domain}", subject=f"n{n}").decode(),
                        "recipients": [f"x@{domain}"],
                        "event_id": f"crash-{n}",
                    }
                    async with http.post(f"{base}/events/inbound", json=event) as response:
                        assert response.status == 202, await response.text()
                        accepted += [e["id"] for e in (await response.json())["emails"]]
            process.kill()  # SIGKILL: no shutdown, no flush of anything
            await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        stored = await pool.fetch(
            "SELECT id::text FROM received_emails WHERE tenant_id = $1", tenant.id
        )
    assert sorted(r["id"] for r in stored) == sorted(accepted)
    assert len(accepted) == 20
