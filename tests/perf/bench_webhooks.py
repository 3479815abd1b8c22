"""Webhook benchmark: events per second to a loopback receiver, the MX's 250 to the receiver's
POST, and the MX's rate with an email.received subscription against none, in one run.

    .venv/bin/python tests/perf/bench_webhooks.py [--events 5000] [--latency-messages 300]

Runs `opensend serve --only mta` (the MX and, beside it, the webhook workers, as deployed) on
loopback with an embedded PostgreSQL in a temporary directory, and an aiohttp receiver in this
process that answers 200 and records when each POST arrived.

1. Events/s. `--events` contacts are inserted in one statement with a contact.created
   subscription (the outbox trigger writes one event and one delivery each, in that statement);
   timed from the COMMIT to the receiver's last POST. Once with one endpoint (at most
   OPENSEND_WEBHOOK_ENDPOINT_CONCURRENCY requests in flight), once spread over four endpoints.
2. Latency. `--latency-messages` messages, one at a time, through the MX to a tenant subscribed
   to email.received: from the 250 after DATA to the POST carrying that email_id (p50/p99,
   nearest rank). It includes the COMMIT's NOTIFY, the claim, and the POST.
3. MX rate. smtp-source (`--sessions` sessions, `--messages` messages of `--size` bytes, a new
   connection per message and connections reused), alternately with the tenant's email.received
   webhook disabled (no outbox row written) and enabled (an event, a delivery and a NOTIFY per
   message, and the POSTs made meanwhile by the workers in the same process), `--rounds` times,
   starting with the other one each round. Each enabled run waits for its deliveries to drain
   before the next run. Ratio = with / without, median of the rounds. Target: >= 0.90.

Each phase also reports CPU time per event: of the webhook process alone, of PostgreSQL (the
postmaster and its backends) and of this process (the receiver), through the drain. `--phases`
runs some of the three; `--profile FILE` records the webhook process with py-spy (a development
tool, installed by hand) during the events phase.

The SPF/DKIM/DMARC checks are off (OPENSEND_AUTH_CHECKS=off) so that they do not take CPU from
one run and not the other. Results are printed and written as JSON to tests/perf/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg
import psutil
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from opensend_peer import REPO_ROOT, OpenSendPeer
from smtp_load import Load, Mode, quantile, run_smtp_source

from policy.webhooks.signing import new_secret

DOMAIN = "bench.test"
WAIT_SECONDS = 600.0


class Receiver:
    """Answers every POST 200 at once and keeps (arrival time, payload) for each."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.changed = asyncio.Event()
        self.runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        payload = json.loads(await request.read())
        self.arrivals.append((time.perf_counter(), payload))
        self.changed.set()
        return web.Response(text="ok")

    async def until(self, count: int) -> float:
        """The arrival time of the `count`th POST."""
        async with asyncio.timeout(WAIT_SECONDS):
            while len(self.arrivals) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.arrivals[count - 1][0]


async def add_webhook(conn: asyncpg.Connection, tenant_id: Any, url: str, kind: str) -> Any:
    return await conn.fetchval(
        "INSERT INTO webhooks (id, tenant_id, endpoint, events, signing_secret) "
        "VALUES (opensend_uuid7(), $1, $2, $3, $4) RETURNING id",
        tenant_id,
        url,
        [kind],
        new_secret(),
    )


async def pending(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE status IN ('pending', 'attempting')"
    )
    return count


async def drained(conn: asyncpg.Connection) -> float:
    """Seconds until no delivery is pending."""
    started = time.perf_counter()
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            if not await pending(conn):
                return time.perf_counter() - started
            await asyncio.sleep(0.05)


WEBHOOK_PROCESS_NAME = "opensend-webhoo"  # mta.serve.WEBHOOK_PROCESS_NAME, as ps shows it


def webhook_pid(server: int) -> int | None:
    """The server's webhook process (a child it spawns and names, soon after the MX is up)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for child in psutil.Process(server).children(recursive=True):
            try:
                if child.name() == WEBHOOK_PROCESS_NAME:
                    pid: int = child.pid
                    return pid
            except psutil.Error:
                continue
        time.sleep(0.2)
    return None


def own_cpu_seconds(pid: int | None) -> float:
    """User and system CPU time so far of one process alone (0 when there is none)."""
    if pid is None:
        return 0.0
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


@dataclass
class CpuMeter:
    """CPU time per event of the webhook worker process, of PostgreSQL (postmaster and
    backends) and of this process (the receiver, mostly), between `start` and `per_event`."""

    worker: int | None
    postmaster: int | None
    marks: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def _now(self) -> tuple[float, float, float]:
        database = cpu_seconds([self.postmaster]) if self.postmaster else 0.0
        return own_cpu_seconds(self.worker), database, time.process_time()

    def start(self) -> None:
        self.marks = self._now()

    def per_event(self, events: int) -> dict[str, float]:
        now = self._now()
        names = (
            "worker_cpu_ms_per_event",
            "postgres_cpu_ms_per_event",
            "receiver_cpu_ms_per_event",
        )
        return {
            name: (after - before) * 1000 / max(1, events)
            for name, before, after in zip(names, self.marks, now, strict=True)
        }


async def events_per_second(
    conn: asyncpg.Connection,
    receiver: Receiver,
    tenant_id: Any,
    url: str,
    events: int,
    hooks: int,
    meter: CpuMeter,
) -> dict[str, Any]:
    ids = [await add_webhook(conn, tenant_id, f"{url}{n}", "contact.created") for n in range(hooks)]
    before = len(receiver.arrivals)
    meter.start()
    await conn.execute(
        "INSERT INTO contacts (id, tenant_id, email) SELECT opensend_uuid7(), $1, "
        "'c' || n || '-' || $2 || '@example.net' FROM generate_series(1, $3) AS n",
        tenant_id,
        f"{hooks}-{time.time_ns()}",
        events // hooks,
    )
    committed = time.perf_counter()
    total = (events // hooks) * hooks
    last = await receiver.until(before + total)
    await drained(conn)  # every outcome committed: the worker's whole cost per event
    cpu = meter.per_event(total)
    await conn.execute("DELETE FROM webhooks WHERE id = ANY($1::uuid[])", ids)
    seconds = last - committed
    return {
        "endpoints": hooks,
        "events": total,
        "seconds": seconds,
        "events_per_s": total / seconds,
        **cpu,
    }


async def latency(port: int, receiver: Receiver, messages: int, meter: CpuMeter) -> dict[str, Any]:
    sent_at: dict[str, float] = {}
    meter.start()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=60)
    await client.connect()
    await client.ehlo(hostname="client.bench.test")
    for n in range(messages):
        body = (
            f"From: a@client.bench.test\r\nTo: user@{DOMAIN}\r\nSubject: latency {n}\r\n"
            f"Message-ID: <lat{n}.{time.time_ns()}@client.bench.test>\r\n\r\nhello\r\n"
        )
        await client.mail("a@client.bench.test")
        await client.rcpt(f"user@{DOMAIN}")
        reply = await client.data(body.encode())
        sent_at[reply.message.rsplit(" ", 1)[-1]] = time.perf_counter()
    await client.quit()
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            arrived = {
                p["data"]["email_id"]: t
                for t, p in receiver.arrivals
                if p["type"] == "email.received"
            }
            if all(i in arrived for i in sent_at):
                break
            receiver.changed.clear()
            await receiver.changed.wait()
    gaps = [arrived[i] - t for i, t in sent_at.items()]
    return {
        "messages": messages,
        "p50_ms": (quantile(gaps, 0.50) or 0) * 1000,
        "p99_ms": (quantile(gaps, 0.99) or 0) * 1000,
        "max_ms": max(gaps) * 1000,
        "worker_cpu_ms_per_event": meter.per_event(messages)["worker_cpu_ms_per_event"],
    }


def cpu_seconds(roots: list[int]) -> float:
    """User and system CPU time so far of these processes and all their descendants (the
    server with its webhook and MX children; the postmaster with its backends)."""
    total = 0.0
    for root in roots:
        try:
            parent = psutil.Process(root)
            for process in [parent, *parent.children(recursive=True)]:
                times = process.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


async def mx_rates(
    peer: OpenSendPeer,
    conn: asyncpg.Connection,
    hook_id: Any,
    load: Load,
    rounds: int,
    roots: list[int],
    worker: int | None,
) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for number in range(rounds):
        order = [False, True] if number % 2 == 0 else [True, False]
        for mode in (Mode.NEW_CONNECTION, Mode.REUSE):
            for subscribed in order:
                await conn.execute(
                    "UPDATE webhooks SET status = $2 WHERE id = $1",
                    hook_id,
                    "enabled" if subscribed else "disabled",
                )
                stored_before = await conn.fetchval("SELECT count(*) FROM received_emails")
                cpu_before = cpu_seconds(roots)
                worker_before = own_cpu_seconds(worker)
                run = await asyncio.to_thread(
                    run_smtp_source, "127.0.0.1", peer.mx_port, load, mode, 600
                )
                stored = await conn.fetchval("SELECT count(*) FROM received_emails") - stored_before
                # The MX fills in what it stored unparsed after the burst (mta/mx/fill_in.py):
                # a subscribed message's event is written then, so a drain starts there, and the
                # next run must not pay for this one's parsing.
                waited = await peer.wait_filled_in(WAIT_SECONDS)
                if waited is None:
                    raise TimeoutError("received mail still unparsed after the wait")
                drain = waited
                drain += await drained(conn) if subscribed else 0.0
                # Through the drain: what the webhooks cost, whenever the workers spent it.
                cpu_ms = (cpu_seconds(roots) - cpu_before) * 1000 / max(1, stored)
                worker_ms = (own_cpu_seconds(worker) - worker_before) * 1000 / max(1, stored)
                runs.append(
                    {
                        "round": number + 1,
                        "mode": mode.value,
                        "webhook": subscribed,
                        "msgs_per_s": run.msgs_per_s,
                        "ok": run.ok and stored == load.messages,
                        "drain_after_s": drain,
                        "server_and_db_cpu_ms_per_msg": cpu_ms,
                        "worker_cpu_ms_per_msg": worker_ms,
                    }
                )
                print(f"  {runs[-1]}", flush=True)
    summary = {}
    for mode in (Mode.NEW_CONNECTION, Mode.REUSE):
        ratios = []
        for number in range(rounds):
            pair = {
                r["webhook"]: r["msgs_per_s"]
                for r in runs
                if r["round"] == number + 1 and r["mode"] == mode.value
            }
            ratios.append(pair[True] / pair[False])
        without = statistics.median(
            r["msgs_per_s"] for r in runs if r["mode"] == mode.value and not r["webhook"]
        )
        with_ = statistics.median(
            r["msgs_per_s"] for r in runs if r["mode"] == mode.value and r["webhook"]
        )
        cpu = {
            flag: statistics.median(
                r["server_and_db_cpu_ms_per_msg"]
                for r in runs
                if r["mode"] == mode.value and r["webhook"] is flag
            )
            for flag in (False, True)
        }
        summary[mode.value] = {
            "cpu_ms_per_msg_without": cpu[False],
            "cpu_ms_per_msg_with": cpu[True],
            "without_msgs_per_s": without,
            "with_msgs_per_s": with_,
            "ratio_median": statistics.median(ratios),
            "ratios": ratios,
        }
    return {"runs": runs, "summary": summary}


def profile(args: argparse.Namespace, pid: int | None) -> subprocess.Popen[bytes] | None:
    """py-spy (a development tool, not a dependency) on the webhook process from here until it
    is stopped, when --profile names an output file."""
    if not args.profile or pid is None:
        return None
    py_spy = Path(sys.executable).parent / "py-spy"
    command = [str(py_spy), "record", "--pid", str(pid), "--rate", "250"]
    # --native shows what the C parts (uvloop, asyncpg's protocol, aiohttp's parser) cost, at
    # the price of pausing the process for each sample.
    command += ["--native"] if args.profile_native else ["--nonblocking"]
    return subprocess.Popen([*command, "--output", args.profile, "--format", args.profile_format])


def stop_profile(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(2)  # SIGINT: py-spy writes what it recorded and exits
        profiler.wait(60)


async def main(args: argparse.Namespace) -> int:
    phases = set(args.phases.split(","))
    with tempfile.TemporaryDirectory(prefix="opensend-bench-webhooks-") as work:
        peer = OpenSendPeer(Path(work) / "data", auth_checks=False)
        peer.setup_routing(DOMAIN, "bench")
        receiver = Receiver()
        url = await receiver.start()
        peer.start()
        try:
            facts = await peer.database_facts()
            conn = await asyncpg.connect(facts.url)
            tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE name = 'bench'")
            assert peer.pid is not None
            worker = webhook_pid(peer.pid)
            meter = CpuMeter(worker, peer.postmaster_pid())
            result: dict[str, Any] = {
                "when": datetime.now(UTC).isoformat(),
                "fsync": facts.fsync,
                "synchronous_commit": facts.synchronous_commit,
            }
            if "events" in phases:
                print("events/s to a loopback receiver", flush=True)
                profiler = profile(args, worker)
                result["events"] = [
                    await events_per_second(
                        conn, receiver, tenant_id, url, args.events, hooks, meter
                    )
                    for hooks in (1, 4)
                ]
                stop_profile(profiler)
                for row in result["events"]:
                    print(f"  {row}", flush=True)
            hook_id = await add_webhook(conn, tenant_id, url, "email.received")
            if "latency" in phases:
                print("MX 250 to receiver POST", flush=True)
                result["latency"] = await latency(
                    peer.mx_port, receiver, args.latency_messages, meter
                )
                print(f"  {result['latency']}", flush=True)
            if "mx" in phases:
                print("MX rate, email.received subscription against none", flush=True)
                load = Load(
                    messages=args.messages,
                    sessions=args.sessions,
                    size=args.size,
                    recipient=f"user@{DOMAIN}",
                )
                roots = [pid for pid in (peer.pid, peer.postmaster_pid()) if pid is not None]
                result["mx"] = await mx_rates(peer, conn, hook_id, load, args.rounds, roots, worker)
                for mode, figures in result["mx"]["summary"].items():
                    print(f"  {mode}: {figures}", flush=True)
            await conn.close()
        finally:
            peer.stop()
            peer.stop_embedded_postgres()
            assert receiver.runner is not None
            await receiver.runner.cleanup()
    out = REPO_ROOT / "tests" / "perf" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"webhooks-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"written to {path}")
    ok = all(r["ok"] for r in result.get("mx", {}).get("runs", []))
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--latency-messages", type=int, default=300)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--phases", default="events,latency,mx", help="which of events,latency,mx to run"
    )
    parser.add_argument("--profile", help="py-spy the webhook process in the events phase")
    parser.add_argument("--profile-native", action="store_true", help="py-spy --native")
    parser.add_argument("--profile-format", default="speedscope", help="flamegraph, raw...")
    sys.exit(asyncio.run(main(parser.parse_args())))
