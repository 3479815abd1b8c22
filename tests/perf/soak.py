"""Soak test: `opensend serve` under mixed load, killed, stopped and cut off from its database;
then every message it acknowledged is accounted for.

    .venv/bin/python tests/perf/soak.py [--duration 120] [--kills 10] [--seed N]

One `opensend serve` (MX, submission, API, delivery workers, auth checks; two MX processes) on
loopback ports, on a PostgreSQL cluster of the soak's own that it stops and starts. Outbound mail
goes to an SMTP sink in this process (OPENSEND_RELAY), DNS to a loopback server that knows no
names. The load (soak_load.py): MX traffic from Postfix's `smtp-source`, `POST /emails`,
`POST /emails/{id}/reply`, and submission on 587 with STARTTLS and AUTH.

During `--duration` seconds, at random moments: `--kills` SIGKILLs of the server (each followed by
a restart), two SIGTERMs (the server must exit, then it is started again), one restart of
PostgreSQL under the running server, and once PostgreSQL stopped first and the server sent SIGTERM
after it (it must still exit: OPENSEND_SHUTDOWN_DRAIN_SECONDS). After every kill and stop, the
server's child processes must be gone (no orphans). Then the load stops, requests that got no
answer are retried with their Idempotency-Key, the queue is left to empty, and the server is
stopped.

The accounting: every 250 and 2xx is a stored row, exactly once (matched by the stored id and
by the message's own marker); every stored outbound message reached the sink exactly once. The
one documented exception (DESIGN.md, migration 0002): the remote accepted while the server died
or lost its database before recording the outcome; the delivery is then made again. Those are
counted apart, and a duplicate with no such fault between its two arrivals is a real one. No
delivery may be left claimed (`sending`, a lease) or due, and the events must match the
deliveries. Exit status 0 when lost, real duplicates, stuck rows and orphans are all 0 and
every stop ended. Bounded: `--max-seconds` for everything; every process is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import ssl
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
import trustme

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from soak_load import (  # noqa: E402
    DOMAIN,
    MARKER,
    Ledger,
    Target,
    api_load,
    mx_load,
    reply_load,
    submission_load,
)

from tests.support.databases import Cluster, disposable_cluster  # noqa: E402
from tests.support.dns_server import LoopbackDNSServer, ZoneData  # noqa: E402
from tests.support.opensend_cli import (  # noqa: E402
    OPENSEND,
    free_loopback_port,
    opensend_env,
    run_opensend,
)
from tests.support.smtp_sink import Received, Sink, SinkHandler  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TENANT = "soak"
DRAIN_SECONDS = 5  # OPENSEND_SHUTDOWN_DRAIN_SECONDS of the server under test
# Generous bounds that only stop a hung soak; the figures never depend on them.
READY_SECONDS = 120.0
EXIT_SECONDS = 120.0  # far above DRAIN_SECONDS plus the exit watchdog's 10 s
ORPHAN_SECONDS = 60.0
FINAL_STATES = ("delivered", "bounced", "canceled")


class SoakError(RuntimeError):
    """The soak could not run (a server that never started); not a finding."""


def log(message: str) -> None:
    print(f"[soak {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


@dataclass
class Fault:
    kind: str  # kill, term, pg-restart, pg-stop-then-term
    at: float  # time.monotonic() when it began
    until: float = 0.0  # when the server (or database) was back
    exit_code: int | None = None
    exit_seconds: float | None = None
    processes: int = 0  # the server's descendants just before
    orphans: int = 0  # of them, still running after the bound


@dataclass
class TimedHandler(SinkHandler):
    """The sink's handler, noting when each message was accepted."""

    times: list[float] = field(default_factory=list)

    def _record(self, received: Received) -> None:
        super()._record(received)
        self.times.append(time.monotonic())


class Server:
    """`opensend serve`, all parts, as a subprocess; started again after every stop."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.mx_port = int(env["OPENSEND_MX_LISTEN"].rsplit(":", 1)[1])
        self.api_url = f"http://{env['OPENSEND_API_LISTEN']}"
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                str(OPENSEND),
                "serve",
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_SECONDS
        while not (await _greets(self.mx_port) and await _healthy(self.api_url)):
            if self.process.returncode is not None:
                raise SoakError(f"opensend serve exited {self.process.returncode} while starting")
            if time.monotonic() > deadline:
                raise SoakError(f"opensend serve not ready within {READY_SECONDS:.0f}s")
            await asyncio.sleep(0.2)

    def family(self) -> list[psutil.Process]:
        assert self.process is not None
        with contextlib.suppress(psutil.NoSuchProcess):
            children: list[psutil.Process] = psutil.Process(self.process.pid).children(
                recursive=True
            )
            return children
        return []

    async def kill(self, fault: Fault) -> None:
        assert self.process is not None
        family = self.family()
        self.process.send_signal(signal.SIGKILL)
        fault.exit_code = await self.process.wait()
        await self._count_orphans(fault, family)

    async def terminate(self, fault: Fault) -> None:
        assert self.process is not None
        family = self.family()
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            fault.exit_code = await asyncio.wait_for(self.process.wait(), EXIT_SECONDS)
            fault.exit_seconds = round(time.monotonic() - started, 1)
        except TimeoutError:  # a finding: the stop did not end
            self.process.kill()
            await self.process.wait()
        await self._count_orphans(fault, family)

    async def _count_orphans(self, fault: Fault, family: list[psutil.Process]) -> None:
        fault.processes = len(family)
        _, alive = await asyncio.to_thread(psutil.wait_procs, family, ORPHAN_SECONDS)
        fault.orphans = len(alive)
        for process in alive:  # counted; now out of the way
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()

    async def destroy(self) -> None:
        """On the way out, whatever happened: the server and everything it started."""
        if self.process is None or self.process.returncode is not None:
            return
        family = self.family()
        self.process.kill()
        await self.process.wait()
        for process in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


async def _greets(port: int) -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except (OSError, TimeoutError):
        return False
    try:
        return (await asyncio.wait_for(reader.readline(), 10)).startswith(b"220 ")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _healthy(url: str) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(f"{url}/healthz") as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False


# -- faults ---------------------------------------------------------------------------------


async def inject_faults(
    args: argparse.Namespace, server: Server, cluster: Cluster, faults: list[Fault]
) -> None:
    rng = random.Random(args.seed)
    plan = ["kill"] * args.kills + ["term", "term", "pg-restart", "pg-stop-then-term"]
    rng.shuffle(plan)
    gap = args.duration / (len(plan) + 1)
    for kind in plan:
        await asyncio.sleep(rng.uniform(0.3, 1.7) * gap)
        fault = Fault(kind, time.monotonic())
        faults.append(fault)
        if kind == "kill":
            await server.kill(fault)
            await server.start()
        elif kind == "term":
            await server.terminate(fault)
            await server.start()
        elif kind == "pg-restart":
            await cluster.stop()
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            await cluster.start()
        else:
            await cluster.stop()
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            await server.terminate(fault)
            await cluster.start()
            await server.start()
        fault.until = time.monotonic()
        log(
            f"{kind}: exit {fault.exit_code}"
            + (f" after {fault.exit_seconds}s" if fault.exit_seconds is not None else "")
            + f", {fault.processes} child processes, {fault.orphans} left"
        )


# -- the run --------------------------------------------------------------------------------


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    ca = trustme.CA()
    cert = ca.issue_cert("mx.soak.test", "127.0.0.1")
    cert_path, key_path = workdir / "cert.pem", workdir / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)

    sink = await Sink.start("127.0.0.1")
    handler = TimedHandler()
    sink.handler = handler  # read for every new connection
    async with (
        LoopbackDNSServer(ZoneData()) as dns,
        disposable_cluster() as cluster,
    ):
        env = opensend_env(
            workdir / "data",
            cluster.url,
            OPENSEND_HOSTNAME="mx.soak.test",
            OPENSEND_MX_LISTEN=f"127.0.0.1:{free_loopback_port()}",
            OPENSEND_SUBMISSION_LISTEN=f"127.0.0.1:{free_loopback_port()}",
            OPENSEND_SUBMISSIONS_LISTEN=f"127.0.0.1:{free_loopback_port()}",
            OPENSEND_API_LISTEN=f"127.0.0.1:{free_loopback_port()}",
            OPENSEND_TLS_CERT=str(cert_path),
            OPENSEND_TLS_KEY=str(key_path),
            OPENSEND_DNS_SERVERS=dns.address,
            OPENSEND_RELAY=f"smtp://127.0.0.1:{sink.port}",
            OPENSEND_REPLY_TOKEN_SECRET="soak-" + "s" * 40,
            OPENSEND_MX_PROCESSES=str(args.mx_processes),
            OPENSEND_SHUTDOWN_DRAIN_SECONDS=str(DRAIN_SECONDS),
            # A killed worker's deliveries are taken over after this, and a deferred one retried
            # soon: the soak's queue must empty within its settle time.
            OPENSEND_DELIVERY_LEASE="10s",
            OPENSEND_RETRY_SCHEDULE="1s,2s,5s",
            OPENSEND_AUTH_FAILURE_DELAY="0",
            OPENSEND_LOG_LEVEL="WARNING",
        )
        await _admin(env, "migrate")
        await _admin(env, "tenant", "create", TENANT, "--json")
        await _admin(
            env, "domain", "add", DOMAIN, "--tenant", TENANT, "--receiving", "--verified", "--json"
        )
        await _admin(env, "route", "add", f"*@{DOMAIN}", "--tenant", TENANT, "--json")
        key = (await _admin(env, "apikey", "create", "--tenant", TENANT, "--json"))["token"]

        server = Server(env, workdir / "serve.log")
        faults: list[Fault] = []
        load: list[asyncio.Task[None]] = []
        ledger = Ledger()
        try:
            await server.start()
            log(f"server up (pid {server.process.pid if server.process else '?'}); load starts")
            target = Target(
                mx_port=server.mx_port,
                submission_port=int(env["OPENSEND_SUBMISSION_LISTEN"].rsplit(":", 1)[1]),
                api_url=server.api_url,
                api_key=key,
                tls=client_tls,
            )
            stop_load = asyncio.Event()
            retry_until = [float("inf")]
            load += [
                asyncio.create_task(mx_load(target, ledger, stop_load, args.mx_sessions)),
                *(
                    asyncio.create_task(api_load(target, ledger, stop_load, retry_until, n))
                    for n in range(args.api_clients)
                ),
                asyncio.create_task(reply_load(target, ledger, stop_load, retry_until)),
                asyncio.create_task(submission_load(target, ledger, stop_load)),
            ]
            started = time.monotonic()
            await inject_faults(args, server, cluster, faults)
            await asyncio.sleep(max(0.0, args.duration - (time.monotonic() - started)))
            log("load stops; unanswered requests are retried, the queue is left to empty")
            retry_until[0] = time.monotonic() + args.settle
            stop_load.set()
            await asyncio.wait_for(asyncio.gather(*load), args.settle + 60)
            settled = await _until_queue_empty(cluster.url, args.settle)
            final = Fault("final-term", time.monotonic())
            await server.terminate(final)
            final.until = time.monotonic()
            faults.append(final)
        finally:
            for task in load:  # on a failure: smtp-source and the clients stop here
                task.cancel()
            await asyncio.gather(*load, return_exceptions=True)
            await server.destroy()
            await sink.stop()
        figures = await account(cluster.url, ledger, handler, faults)
        figures["queue_settled"] = settled
        figures["server_starts"] = server.starts
        return figures


async def _admin(env: dict[str, str], *args: str) -> Any:
    done = await run_opensend(*args, env=env)
    if done.returncode != 0:
        raise SoakError(f"opensend {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return json.loads(done.stdout) if "--json" in args else None


async def _until_queue_empty(url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    conn = await asyncpg.connect(url)
    try:
        while time.monotonic() < deadline:
            due = await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE status <> ALL($1::text[])",
                list(FINAL_STATES),
            )
            if due == 0:
                return True
            await asyncio.sleep(0.5)
        return False
    finally:
        await conn.close()


# -- the accounting -------------------------------------------------------------------------


async def account(
    url: str, ledger: Ledger, handler: TimedHandler, faults: list[Fault]
) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        received = await conn.fetch("SELECT id::text AS id, rcpt_to FROM received_emails")
        emails = await conn.fetch(
            "SELECT id::text AS id, source, status, to_addresses, raw FROM emails"
        )
        deliveries = await conn.fetch(
            "SELECT id, email_id::text AS email_id, recipient, status, lease_token FROM deliveries"
        )
        events = await conn.fetch(
            "SELECT email_id::text AS email_id, type, recipient FROM email_events"
        )
        in_flight_keys = await conn.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE state = 'in_flight'"
        )
    finally:
        await conn.close()

    # Inbound (MX): each smtp-source message has a recipient of its own.
    stored_ids = {row["id"] for row in received}
    per_recipient = Counter(row["rcpt_to"][0].lower() for row in received)
    mx = {
        "accepted": len(ledger.mx_ids),
        "stored": len(ledger.mx_ids & stored_ids),
        "lost": len(ledger.mx_ids - stored_ids),
        "duplicates": sum(n - 1 for n in per_recipient.values() if n > 1),
        # Committed, but the 250 never reached smtp-source (killed in between): not lost, and
        # a real sender would send it again (RFC 5321 section 6.1).
        "stored_without_250": len(stored_ids - ledger.mx_ids),
    }

    # Outbound: each email has a marker of its own (recipient or text).
    marker_of: dict[str, str] = {}
    rows_per_marker: dict[str, list[str]] = defaultdict(list)
    for row in emails:
        found = MARKER.search(" ".join(row["to_addresses"]).encode() + bytes(row["raw"] or b""))
        if found:
            marker = found.group().decode()
            marker_of[row["id"]] = marker
            rows_per_marker[marker].append(row["id"])
    outbound: dict[str, Any] = {}
    for kind, acknowledged in (
        ("api", ledger.api),
        ("reply", ledger.replies),
        ("submission", ledger.submission),
    ):
        lost = [m for m, i in acknowledged.items() if i not in rows_per_marker.get(m, [])]
        outbound[kind] = {
            "accepted": len(acknowledged),
            "stored": len(acknowledged) - len(lost),
            "lost": len(lost),
            "lost_markers": lost[:10],
        }
    outbound_duplicates = sum(len(ids) - 1 for ids in rows_per_marker.values() if len(ids) > 1)

    # Delivery: the sink's receipts per marker, and the faults between two receipts.
    receipts: dict[str, list[float]] = defaultdict(list)
    for message, at in zip(handler.messages, handler.times, strict=True):
        text = " ".join(message.rcpt_tos).encode() + message.content
        for marker in {m.decode() for m in MARKER.findall(text)}:
            receipts[marker].append(at)
    # The server away or without its database, from the fault until it was back.
    outages = [(f.at, f.until, f.kind) for f in faults if f.kind != "final-term"]
    start = faults[0].at if faults else 0.0
    duplicate_details: list[dict[str, Any]] = []
    delivered_once = real = 0
    documented: Counter[str] = Counter()  # by cause
    missing: list[str] = []
    for marker in rows_per_marker:
        times = sorted(receipts.get(marker, []))
        if not times:
            missing.append(marker)
        elif len(times) == 1:
            delivered_once += 1
        else:
            # The outcome of the first arrival was never recorded: the server was away, or
            # without its database, at some moment between the arrivals.
            causes = [k for at, until, k in outages if at <= times[-1] and until >= times[0]]
            if causes:
                cause = "database away" if causes[0].startswith("pg-") else "server stopped"
                documented[cause] += len(times) - 1
            else:
                real += len(times) - 1
            duplicate_details.append(
                {
                    "marker": marker,
                    "faults_between": causes,
                    "arrivals": [round(t - start, 2) for t in times],
                }
            )
    unknown_at_sink = sorted(set(receipts) - set(rows_per_marker))

    status = Counter(row["status"] for row in deliveries)
    claimed = sum(1 for row in deliveries if row["lease_token"] is not None)
    stuck = sum(n for s, n in status.items() if s not in FINAL_STATES) + claimed
    delivered_events = Counter(
        (row["email_id"], row["recipient"]) for row in events if row["type"] == "email.delivered"
    )
    delivered_rows = {
        (r["email_id"], r["recipient"]) for r in deliveries if r["status"] == "delivered"
    }
    event_mismatch = sum(
        1 for k in delivered_rows | set(delivered_events) if delivered_events.get(k, 0) != 1
    )
    email_status = Counter(row["status"] for row in emails)

    lost = mx["lost"] + sum(o["lost"] for o in outbound.values()) + len(missing)
    accepted = mx["accepted"] + sum(o["accepted"] for o in outbound.values())
    orphans = sum(f.orphans for f in faults)
    stops = ("term", "pg-stop-then-term", "final-term")
    unended = [f.kind for f in faults if f.kind in stops and f.exit_seconds is None]
    return {
        "accepted": accepted,
        "stored": mx["stored"] + sum(o["stored"] for o in outbound.values()),
        "delivered": sum(1 for marker in rows_per_marker if receipts.get(marker)),
        "duplicates": {
            "documented": sum(documented.values()),
            "documented_by_cause": dict(documented),
            "real": real + mx["duplicates"] + outbound_duplicates,
            "real_deliveries": real,
            "real_stored_mx": mx["duplicates"],
            "real_stored_outbound": outbound_duplicates,
        },
        "lost": lost,
        "mx": mx,
        "outbound": outbound,
        "outbound_stored_total": len(rows_per_marker),
        "delivery": {
            "reached_sink_once": delivered_once,
            "never_reached_sink": len(missing),
            "missing_markers": missing[:10],
            "sink_messages": len(handler.messages),
            "at_sink_but_not_stored": len(unknown_at_sink),
            "deliveries_by_status": dict(status),
            "emails_by_status": dict(email_status),
        },
        "stuck": {"rows": stuck, "claimed": claimed, "idempotency_in_flight": in_flight_keys},
        "counters": {
            "delivered_event_mismatches": event_mismatch,
            # Every message at the sink is a first delivery or a counted duplicate.
            "sink_is_delivered_plus_duplicates": len(handler.messages)
            == sum(len(receipts.get(m, [])) for m in rows_per_marker),
            # Each outbound email has its one delivery row, and all of them ended delivered.
            "one_delivery_per_email": len(deliveries) == len(emails),
        },
        "duplicate_details": duplicate_details,
        "faults": [
            asdict(f) | {"at": round(f.at - start, 1), "until": round(f.until - start, 1)}
            for f in faults
        ],
        "orphans": orphans,
        "stops_that_did_not_end": unended,
        "unanswered_attempts": ledger.unanswered,
        "error_replies": ledger.codes,
        "refusals": ledger.refusals[:10],
        "smtp_source_runs": ledger.mx_runs,
    }


def verdict(figures: dict[str, Any]) -> list[str]:
    problems = []
    if figures["lost"]:
        problems.append(f"{figures['lost']} lost")
    if figures["duplicates"]["real"]:
        problems.append(f"{figures['duplicates']['real']} real duplicates")
    if figures["stuck"]["rows"] or figures["stuck"]["idempotency_in_flight"]:
        problems.append(f"stuck: {figures['stuck']}")
    counters = figures["counters"]
    if counters["delivered_event_mismatches"]:
        problems.append("delivered events do not match the deliveries")
    if not (counters["sink_is_delivered_plus_duplicates"] and counters["one_delivery_per_email"]):
        problems.append(f"counters do not add up: {counters}")
    if figures["orphans"]:
        problems.append(f"{figures['orphans']} orphaned child processes")
    if figures["stops_that_did_not_end"]:
        problems.append(f"stops that did not end: {figures['stops_that_did_not_end']}")
    if figures["delivery"]["at_sink_but_not_stored"]:
        problems.append("messages at the sink that were never stored")
    # Storage trouble is temporary: SMTP 4xx, HTTP 503; never an SMTP 5xx nor an HTTP 500
    # (DESIGN.md section 7).
    permanent = {
        k: n
        for k, n in figures["error_replies"].items()
        if (k.startswith(("mx ", "submission ")) and k.split()[1][0] == "5")
        or k.split()[1] == "500"
    }
    if permanent:
        problems.append(f"permanent refusals: {permanent}")
    mismatched = [k for k in figures["error_replies"] if " " in k[k.index(" ") + 1 :]]
    mismatched = [k for k in mismatched if k.split()[1][0] != k.split()[2][0]]
    if mismatched:
        problems.append(f"basic and enhanced codes disagree: {mismatched}")
    if not figures["queue_settled"]:
        problems.append("the queue did not empty within --settle")
    return problems


def print_figures(figures: dict[str, Any]) -> None:
    mx, out = figures["mx"], figures["outbound"]
    lines = [
        f"accepted    {figures['accepted']:>6}  (MX {mx['accepted']}, "
        f"API {out['api']['accepted']}, replies {out['reply']['accepted']}, "
        f"submission {out['submission']['accepted']})",
        f"stored      {figures['stored']:>6}  (+{mx['stored_without_250']} MX messages committed "
        "whose 250 was cut off by a kill)",
        f"delivered   {figures['delivered']:>6}  (of {figures['outbound_stored_total']} outbound "
        f"stored; sink saw {figures['delivery']['sink_messages']} messages)",
        f"duplicates  {figures['duplicates']['documented']:>6}  documented: the remote accepted, "
        "then the server died or lost its database before recording it "
        f"{figures['duplicates']['documented_by_cause']}",
        f"            {figures['duplicates']['real']:>6}  real",
        f"lost        {figures['lost']:>6}",
        f"stuck rows  {figures['stuck']['rows']:>6}  (claimed {figures['stuck']['claimed']}, "
        f"idempotency keys in flight {figures['stuck']['idempotency_in_flight']})",
        f"orphans     {figures['orphans']:>6}  after {len(figures['faults'])} stops and kills",
        f"refusals    {figures['error_replies']}",
        "faults      "
        + ", ".join(
            f"{f['kind']}@{f['at']}s"
            + (f"(exit {f['exit_seconds']}s)" if f["exit_seconds"] is not None else "")
            for f in figures["faults"]
        ),
    ]
    print("\n".join(lines), flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--duration", type=float, default=120.0, help="seconds of load and faults (120)")
    add("--kills", type=int, default=10, help="SIGKILLs of the server during the load (10)")
    add("--seed", type=int, default=None, help="for the fault moments (random)")
    add("--settle", type=float, default=120.0, help="seconds for retries and the queue (120)")
    add("--max-seconds", type=float, default=900.0, help="hard cap on the whole soak (900)")
    add("--mx-processes", type=int, default=2, help="OPENSEND_MX_PROCESSES (2)")
    add("--mx-sessions", type=int, default=2, help="smtp-source parallel sessions (2)")
    add("--api-clients", type=int, default=2, help="concurrent POST /emails clients (2)")
    add("--keep", action="store_true", help="keep the work directory (the server's log)")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 30)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="opensend-soak-"))
    log(f"seed {args.seed}, duration {args.duration:.0f}s, work directory {workdir}")

    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(args.max_seconds):
            return await soak(args, workdir)

    try:
        figures = asyncio.run(bounded())
    except TimeoutError:
        log(f"the soak did not finish within --max-seconds {args.max_seconds:.0f}")
        return 1
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    figures["seed"] = args.seed
    figures["duration"] = args.duration
    print_figures(figures)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"soak-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(figures, indent=2, default=str))
    problems = verdict(figures)
    log(f"figures in {out}")
    if problems:
        log("FAILED: " + "; ".join(problems))
        return 1
    log("passed: nothing lost, no real duplicate, nothing stuck, no orphan, every stop ended")
    return 0


if __name__ == "__main__":
    sys.exit(main())
