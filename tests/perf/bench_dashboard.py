"""Dashboard benchmark: render time of an email's page whose conversation holds 50 messages.

    .venv/bin/python tests/perf/bench_dashboard.py [--requests 300] [--messages 50]

One process, loopback only: a disposable PostgreSQL (or OPENSEND_DATABASE_URL, where a database
of its own is created and dropped), the MX and the API (with the dashboard) started as the test
suite starts them. A tenant sends one tracked email; `--messages - 1` replies are sent to its
reply address through the MX (real SMTP, matched and stored as any reply). A dashboard user signs
in over HTTP. Then `--requests` GETs of /dashboard/emails/{id}, one at a time on one kept-open
connection after `--warmup` unmeasured ones: each is timed from the request to the last byte of
the page. Every answer must be a 200 holding all the messages, or the run fails. Prints p50, p99
and the mean in milliseconds and writes them as JSON to tests/perf/results/ (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from smtp_load import quantile  # noqa: E402

from api.app import make_app  # noqa: E402
from mta import memory  # noqa: E402
from mta.dns import Resolver  # noqa: E402
from mta.listeners import start_mx  # noqa: E402
from policy.dashboard.passwords import hash_password  # noqa: E402
from policy.tokens import ReplyTokens  # noqa: E402
from storage.account import directory  # noqa: E402
from storage.dashboard import users  # noqa: E402
from storage.database import open_pool  # noqa: E402
from storage.migrate import migrate  # noqa: E402
from storage.sending.outbound import insert_tracked_email, new_email_id  # noqa: E402
from tests.api.dashboard.support import reply_message  # noqa: E402
from tests.conftest import DOMAIN_VIEW, TEST_SECRET, make_settings, smtp_send  # noqa: E402
from tests.support.postgres import session_database  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PASSWORD = "benchmark password"


async def run(args: argparse.Namespace, url: str, work: Path) -> dict[str, float | int]:
    await migrate(url)
    pool = await open_pool(url, max_size=10)
    tokens = ReplyTokens(TEST_SECRET.encode())
    settings = make_settings(work, OPENSEND_API_LISTEN="127.0.0.1:0")
    mx = await start_mx(settings, pool, tokens)
    runner = web.AppRunner(make_app(pool, settings, tokens, Resolver(settings.dns_servers)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    memory.settle_heap()  # as `opensend serve` does once it has started
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        tenant = await directory.create_tenant(pool, "bench")
        domain = await directory.add_domain(
            pool, tenant.id, "bench.test", receiving=True, reply_domain="inbound.bench.test",
            verified=True, event_data=DOMAIN_VIEW.event_data,
        )  # fmt: skip
        email_id = new_email_id()
        token = tokens.mint(tenant.id, email_id, domain.effective_reply_domain)
        address = token.address(domain.effective_reply_domain)
        await insert_tracked_email(
            pool, email_id=email_id, tenant_id=tenant.id, thread_id=None,
            from_address="support@bench.test", to=["customer@example.net"],
            subject="Your order", message_id=f"{token}@bench.test", reply_token=str(token),
            reply_address=address, reply_domain=domain.effective_reply_domain,
        )  # fmt: skip
        for n in range(args.messages - 1):
            text = f"Reply number {n}.\n\nOn Monday you wrote:\n> Your order\n"
            sent = await smtp_send(
                mx.port, "customer@example.net", [address], reply_message(address, text=text)
            )
            assert sent.data is not None and sent.data[0] == 250, sent.data
        await users.create_user(pool, tenant.id, "bench@bench.test", hash_password(PASSWORD))

        jar = aiohttp.DummyCookieJar()
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.post(
                base + "/dashboard/login",
                data={"email": "bench@bench.test", "password": PASSWORD},
                headers={"Origin": base},
                allow_redirects=False,
            ) as signed:
                assert signed.status == 303, signed.status
                cookie = signed.cookies["__Host-opensend_session"].value
            headers = {"Cookie": f"__Host-opensend_session={cookie}"}
            page = f"{base}/dashboard/emails/{email_id}"
            timings: list[float] = []
            for i in range(args.warmup + args.requests):
                started = time.perf_counter()
                async with http.get(page, headers=headers) as response:
                    body = await response.text()
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status == 200, response.status
                assert body.count('<details class="message') == args.messages, "messages missing"
                if i >= args.warmup:
                    timings.append(elapsed)
    finally:
        await runner.cleanup()
        await mx.drain(grace=1.0)
        await pool.close()
    return {
        "messages": args.messages,
        "requests": len(timings),
        "p50_ms": round(quantile(timings, 0.50) or 0.0, 2),
        "p99_ms": round(quantile(timings, 0.99) or 0.0, 2),
        "mean_ms": round(statistics.fmean(timings), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50, help="messages in the conversation")
    parser.add_argument("--requests", type=int, default=300, help="timed page loads")
    parser.add_argument("--warmup", type=int, default=20, help="untimed page loads first")
    args = parser.parse_args()
    with session_database() as url, tempfile.TemporaryDirectory() as work:
        result = asyncio.run(run(args, url, Path(work)))
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"dashboard-{stamp}.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
