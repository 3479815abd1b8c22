"""Reply benchmark: POST /emails/{id}/reply replies per second, and MX-to-thread latency.

    .venv/bin/python tests/perf/bench_reply.py [--duration 30] [--connections 50]

Servers. `opensend serve --only api` (embedded PostgreSQL in a temporary `OPENSEND_DATA_DIR`, or
`--database-url`) and `opensend serve --only mta` on the same database and reply-token secret,
both from this working tree, loopback ports only. The tenant, its domain (`bench.test`,
receiving on, verified), a catch-all route and an API key are made with the `opensend` command.
The delivery workers do not run (`--only`), so the replies' queue rows accumulate.

Throughput. `--received` messages (default 200) are sent to the MX first, so there are received
emails to answer. `wrk` then POSTs a reply (text and HTML, quoting the original, one tag) over
`--connections` keep-alive connections for `--duration` seconds, each request answering the next
received email in turn (a Lua script walks the ids), so the replies spread over `--received`
threads as a support desk's would. A warm-up run (`--warmup` s, not counted) first: it gives every
unmatched received email its thread, so the measured run is the steady state. Every 200 must be a
committed `emails` row (counted before and after, as in bench_api.py); any non-200 fails it.

Latency. `--threads-for-latency` emails (default 50) are sent with POST /emails; then, one at a
time, `--latency-messages` answers (default 500, spread evenly over those threads, so no thread
passes storage.conversations.threads.MAX_THREAD_MESSAGES) are sent to their reply addresses with
In-Reply-To and References, from an asyncio SMTP client (aiosmtplib) on one kept-open connection.
For each: t0 just before MAIL FROM, t1 when GET /threads/{id} first lists the stored message (its id
is in the MX's 250 reply), polled without pause. p50/p99 of t1 - t0 in milliseconds. The MX answers
250 only after the COMMIT, so this is SMTP transaction + commit + one API read.

Bounded: `--duration`, `--latency-messages`, `--max-seconds` for everything. The servers (and the
embedded database, unless `--keep`) are stopped and the work directory deleted on every exit.
Results are printed and written as JSON to tests/perf/results/ (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
from bench_api import ApiPeer, cpu_seconds, run_wrk
from bench_report import bounded, machine_facts
from opensend_peer import OpenSendError, OpenSendPeer

RESULTS = Path(__file__).resolve().parent / "results"
DOMAIN, TENANT = "bench.test", "bench"
SECRET = secrets.token_hex(32)  # one reply-token secret for both servers

LUA = """
local ids = {}
for id in string.gmatch(os.getenv("BENCH_IDS"), "[^,]+") do ids[#ids + 1] = id end
local n = 0
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
request = function()
    n = n + 1
    return wrk.format(nil, "/emails/" .. ids[(n % #ids) + 1] .. "/reply")
end
"""

REPLY = {
    "from": f"Bench Support <support@{DOMAIN}>",
    "text": "Hello,\n\nthank you for writing. Your order ships tomorrow.\n",
    "html": "<p>Hello,</p><p>thank you for writing. Your order ships tomorrow.</p>",
    "tags": [{"name": "category", "value": "support"}],
}


def log(message: str) -> None:
    print(f"[bench_reply {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


class ReplyApiPeer(ApiPeer):
    def env(self) -> dict[str, str]:
        return {**super().env(), "OPENSEND_REPLY_TOKEN_SECRET": SECRET}


class MxPeer(OpenSendPeer):
    def env(self) -> dict[str, str]:
        return {**super().env(), "OPENSEND_REPLY_TOKEN_SECRET": SECRET}


def customer_message(
    to: str, subject: str, in_reply_to: str | None = None, references: str | None = None
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Carol <customer@example.net>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="example.net")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = references or in_reply_to
    msg.set_content("Hi,\n\nwhere is my order? It was due yesterday.\n\nCarol\n")
    return msg


def stored_id(response: tuple[dict[str, Any], str]) -> str:
    return response[1].split("queued as ", 1)[1].split()[0]


async def send_received(mx_port: int, count: int) -> list[str]:
    """`count` customer messages to support@ (unmatched, not replies); their received ids."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=mx_port, start_tls=False, timeout=30)
    await client.connect()
    ids = []
    try:
        for i in range(count):
            msg = customer_message(f"support@{DOMAIN}", f"Order question #{i}")
            ids.append(stored_id(await client.send_message(msg)))
    finally:
        await client.quit()
    return ids


async def latency(args: argparse.Namespace, api_url: str, key: str, mx_port: int) -> list[float]:
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(base_url=api_url, headers=headers) as http:
        threads = []
        for i in range(args.threads_for_latency):
            body = {**REPLY, "to": "customer@example.net", "subject": f"Your order #{i}"}
            async with http.post("/emails", json=body) as response:
                email_id = (await response.json())["id"]
            async with http.get(f"/emails/{email_id}") as response:
                sent = await response.json()
            threads.append(sent)
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=mx_port, start_tls=False, timeout=30)
        await client.connect()
        timings = []
        try:
            for n in range(args.latency_messages):
                sent = threads[n % len(threads)]
                parent = f"<{sent['message_id']}>"
                msg = customer_message(sent["reply_address"], f"Re: {sent['subject']}", parent)
                t0 = time.perf_counter()
                received_id = stored_id(await client.send_message(msg))
                deadline = t0 + 10.0
                while True:
                    async with http.get(f"/threads/{sent['thread_id']}") as response:
                        thread = await response.json()
                    if any(m["id"] == received_id for m in thread["messages"]):
                        break
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"{received_id} not in its thread after 10 s")
                timings.append((time.perf_counter() - t0) * 1000)
        finally:
            await client.quit()
    return timings


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    api = ReplyApiPeer(workdir / "data", args.database_url)
    mx: MxPeer | None = None
    script = workdir / "reply.lua"
    script.write_text(LUA)
    try:
        key = api.setup()
        api.admin("route", "add", f"*@{DOMAIN}", "--tenant", TENANT)
        api.start()
        facts = asyncio.run(api.database_facts())
        log(f"database fsync={facts.fsync} synchronous_commit={facts.synchronous_commit}")
        mx = MxPeer(workdir / "mx-data", database_url=facts.url, hostname="mx.bench.test")
        mx.start()
        ids = asyncio.run(send_received(mx.mx_port, args.received))
        log(f"{len(ids)} received emails to answer")
        script_env = {
            "BENCH_KEY": key,
            "BENCH_BODY": json.dumps(REPLY),
            "BENCH_IDS": ",".join(ids),
        }
        result: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(),
            "machine": machine_facts(Path(__file__).resolve().parents[2]),
            "fsync": facts.fsync,
            "synchronous_commit": facts.synchronous_commit,
            "connections": args.connections,
            "received_emails": len(ids),
        }
        if args.duration:
            if args.warmup:
                run_wrk(args, api.url, script_env, script, args.warmup)
                time.sleep(1.0)
            before = asyncio.run(api.count_emails())
            cpu_before = cpu_seconds(api)
            run = run_wrk(args, api.url, script_env, script, args.duration)
            cpu = {k: v - cpu_before[k] for k, v in cpu_seconds(api).items()}
            time.sleep(1.0)  # requests in flight when wrk stopped finish their COMMIT
            stored = asyncio.run(api.count_emails()) - before
            ok = run["responses"] - run["non_2xx"]
            result["throughput"] = {
                **{k: v for k, v in run.items() if k != "output"},
                "stored": stored,
                "cpu_ms_per_reply": {k: round(v * 1000 / max(1, ok), 3) for k, v in cpu.items()},
                "durable": run["non_2xx"] == 0 and ok <= stored <= ok + args.connections,
            }
            print(run["output"])
        if args.latency_messages:
            timings = asyncio.run(latency(args, api.url, key, mx.mx_port))
            result["mx_to_thread_ms"] = {
                "messages": len(timings),
                "p50": round(statistics.median(timings), 2),
                "p99": round(percentile(timings, 0.99), 2),
                "max": round(max(timings), 2),
            }
        return result
    finally:
        if mx is not None:
            mx.stop()
        api.stop()
        if not args.keep:
            api.stop_embedded_postgres()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--duration", type=int, default=30, help="seconds of the measured wrk run (0: skip)")
    add("--warmup", type=int, default=5, help="seconds of load before it, not counted (0: none)")
    add("--connections", type=int, default=50, help="concurrent keep-alive connections")
    add("--threads", type=int, default=1, help="wrk threads (the server needs the cores)")
    add("--received", type=int, default=200, help="received emails the replies answer")
    add("--latency-messages", type=int, default=500, help="answers timed MX to thread (0: skip)")
    add("--threads-for-latency", type=int, default=50, help="threads the answers spread over")
    add("--max-seconds", type=int, default=900, help="bound on the whole benchmark")
    add("--database-url", help="a PostgreSQL to use instead of the embedded one")
    add("--keep", action="store_true", help="keep the work directory and database")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.duration and shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    with bounded(args.max_seconds):
        workdir = Path(tempfile.mkdtemp(prefix="opensend-bench-reply-"))
        try:
            result = benchmark(args, workdir)
        except OpenSendError as error:
            print(f"server trouble: {error}", file=sys.stderr)
            return 1
        finally:
            if args.keep:
                log(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"reply-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
        path.write_text(json.dumps(result, indent=2))
        durable = True
        if "throughput" in result:
            run = result["throughput"]
            durable = run["durable"]
            print(
                f"POST /emails/{{id}}/reply: {run['rps']:.0f} replies/s with {args.connections} "
                f"connections (p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms); {run['responses']} "
                f"responses, {run['non_2xx']} not 200, {run['stored']} committed; "
                f"durable: {durable}; "
                f"CPU ms per reply: {run['cpu_ms_per_reply']}"
            )
        if "mx_to_thread_ms" in result:
            lat = result["mx_to_thread_ms"]
            print(
                f"MX to GET /threads/{{id}}: p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
                f"max {lat['max']} ms over {lat['messages']} messages"
            )
        print(f"results: {path}")
        return 0 if durable else 1


if __name__ == "__main__":
    sys.exit(main())
