"""API benchmark: POST /emails requests per second, every accepted email committed.

    .venv/bin/python tests/perf/bench_api.py [--duration 30] [--connections 50] [--rounds 1]

The issue's target: at least 1,000 requests/s with 50 concurrent keep-alive clients on the
project's 2-core machine, every request committed.

Server. `opensend serve --only api` from this working tree, started as a subprocess with its own
`OPENSEND_DATA_DIR` (embedded PostgreSQL) in a temporary directory, or `--database-url`. The
tenant, its domain (receiving on, so every email is reply-tracked: thread, token, reply address)
and an API key are made with the `opensend` command, as an operator would. The delivery workers
do not run in `--only api`, so the queued `deliveries` rows simply accumulate.

Load. `wrk` (Debian's package; `apt-get install wrk`), with a Lua script that POSTs one JSON
email (text and HTML, one recipient, one tag) with the bearer key, over `--connections`
keep-alive connections from `--threads` threads for `--duration` seconds. requests/s is wrk's
figure: responses received over the run time. A warm-up run (`--warmup` seconds) comes first
and is not counted.

Durability. `emails` rows are counted before and after the measured run. Every 200 must be a
committed row, and a row may exist without a 200 only for requests still in flight when wrk
stopped (at most one per connection); any non-200 answer fails the benchmark. The database's
`fsync` and `synchronous_commit` are printed: with either off a COMMIT is not durable.

Ceiling. In the same run, against the same database, after the API's measured run (the server
stays up, idle): what PostgreSQL alone commits per second for the same rows through a pool of
the server's size (`mta.serve._pool_size` of its settings), with `--connections` concurrent
asyncio tasks in this process, each storing one email at a time and waiting for its COMMIT.
The rows are the ones the API just wrote: the last `emails` row, its recipients and its domain,
given fresh ids each time, so every email, thread, delivery and event row, the domain re-check,
the `email_events` webhook trigger and the NOTIFY are the same. No HTTP, no JSON, no validation,
no composing: only the asyncpg client's encoding. Two ways, each for `--ceiling-duration`
seconds: `grouped` through the API's own group-commit writer (storage.sending.writer, the
statements POST /emails uses), and `per-email`, one INSERT_EMAIL statement (one transaction) per
email. The ceiling is the higher of the two, and the ratio is POST /emails' rate over it.
`--rounds N` repeats the API's run and the ceiling's back to back N times, and the ratio is the
median of the rounds' ratios: on a shared machine the load changes within a minute. The same
ratio from CPU time alone (the ceiling's client + PostgreSQL CPU per commit over the server +
PostgreSQL CPU per request) is printed beside it: what the ratio would be were both CPU-bound.

Everything is on loopback and bounded: `--duration` per run (so the number of requests too),
`--max-seconds` for the whole benchmark. The server (and the embedded database, unless `--keep`)
is stopped and the temporary directory deleted on every exit. Results are printed and written
as JSON to tests/perf/results/ (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import uvloop
from bench_report import bounded, machine_facts
from opensend_peer import REPO_ROOT, OpenSendError, OpenSendPeer
from postfix_peer import free_loopback_port
from rss_sampler import tree

sys.path.insert(0, str(REPO_ROOT))

from mta.serve import _pool_size
from storage.database import open_pool
from storage.ids import uuid7
from storage.sending.emails import DomainState, NewEmail, insert_emails
from storage.sending.writer import EmailWriter

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_RPS = 1000.0
TARGET_RATIO = 0.60  # issue 16: POST /emails at least 60% of PostgreSQL's own ceiling
DOMAIN, TENANT = "bench.test", "bench"

LUA = """
wrk.method = "POST"
wrk.path = "/emails"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
"""

EMAIL = {
    "from": f"Bench <orders@{DOMAIN}>",
    "to": ["customer@example.net"],
    "subject": "Your order #12345 has shipped",
    "text": "Hello,\n\nyour order is on its way. Reply to this email with any question.\n",
    "html": "<p>Hello,</p><p>your order is on its way. Reply to this email with any question.</p>",
    "tags": [{"name": "category", "value": "shipping"}],
}


def log(message: str) -> None:
    print(f"[bench_api {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


class ApiPeer(OpenSendPeer):
    """`opensend serve --only api` on a loopback port of its own."""

    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        super().__init__(data_dir, database_url=database_url, hostname="api.bench.test")
        self.api_port = free_loopback_port()
        self.log_path = data_dir / "serve-api.log"

    def env(self) -> dict[str, str]:
        env = super().env()
        env["OPENSEND_API_LISTEN"] = f"127.0.0.1:{self.api_port}"
        return env

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def setup(self) -> str:
        """Tenant, verified receiving domain and a full-access key; returns the key."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.admin("migrate", check=False)
        self.admin("tenant", "create", TENANT, "--json")
        self.admin(
            "domain", "add", DOMAIN, "--tenant", TENANT, "--receiving", "--verified", "--json"
        )
        created = json.loads(self.admin("apikey", "create", "--tenant", TENANT, "--json").stdout)
        key = created.get("token") or created.get("key")
        if not isinstance(key, str):
            raise OpenSendError(f"no key in `opensend apikey create --json` output: {created}")
        return key

    def start(self, timeout: float = 180.0) -> None:
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [*self.command, "serve", "--only", "api"],
            env=self.env(),
            cwd=Path(__file__).resolve().parents[2],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise OpenSendError(f"serve --only api exited:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2.0) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise OpenSendError(f"no /healthz within {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.2)

    async def count_emails(self) -> int:
        facts = await self.database_facts()
        conn = await asyncpg.connect(facts.url, timeout=30.0)
        try:
            count: int = await conn.fetchval("SELECT count(*) FROM emails")
            return count
        finally:
            await conn.close()


def run_wrk(
    args: argparse.Namespace, url: str, script_env: dict[str, str], script: Path, seconds: int
) -> dict[str, Any]:
    """wrk with the shared settings; `script_env` feeds the Lua script (key, body, ids)."""
    env = {**os.environ, **script_env}
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    log(" ".join(command))
    proc = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}: {proc.stderr}\n{proc.stdout}")
    return parse_wrk(proc.stdout) | {"command": " ".join(command), "output": proc.stdout}


def parse_wrk(text: str) -> dict[str, Any]:
    def number(pattern: str, default: float = 0.0) -> float:
        found = re.search(pattern, text)
        return float(found.group(1)) if found else default

    def millis(label: str) -> float | None:
        found = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", text)
        if not found:
            return None
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]
        return float(found.group(1)) * scale

    return {
        "responses": int(number(r"(\d+) requests in")),
        "seconds": number(r"requests in ([\d.]+)s"),
        "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "non_2xx": int(number(r"Non-2xx or 3xx responses: (\d+)")),
        "socket_errors": re.search(r"Socket errors:.*", text) is not None,
        "p50_ms": millis("50%"),
        "p99_ms": millis("99%"),
    }


def cpu_seconds(peer: ApiPeer) -> dict[str, float]:
    """User + system CPU time so far of the server and of PostgreSQL (postmaster and backends)."""
    totals: dict[str, float] = {}
    for name, pid in (("server", peer.pid), ("postgres", peer.postmaster_pid())):
        total = 0.0
        for proc in tree(pid) if pid else []:
            with contextlib.suppress(Exception):
                times = proc.cpu_times()
                total += times.user + times.system
        totals[name] = total
    return totals


TEMPLATE = """
SELECT e.tenant_id, e.domain_id, e.from_address, e.from_header, e.to_addresses, e.cc_addresses,
       e.bcc_addresses, e.reply_to_addresses, e.subject, e.html_body, e.text_body, e.headers,
       e.attachments, e.tags, e.message_id, e.reply_token, e.reply_address, e.reply_domain, e.raw,
       d.verified, d.status, d.receiving_enabled, d.reply_domain AS domain_reply_domain,
       ARRAY(SELECT recipient FROM deliveries WHERE email_id = e.id ORDER BY recipient)
           AS recipients
FROM emails e JOIN domains d ON d.id = e.domain_id
ORDER BY e.created_at DESC LIMIT 1
"""


def fresh_email(row: Any) -> NewEmail:
    """The API's last email again, with new ids: a new thread, token and Message-ID each time,
    as POST /emails mints them (the raw message keeps the template's, which nothing checks)."""
    email_id, thread_id = uuid7(), uuid7()
    return NewEmail(
        id=email_id,
        tenant_id=row["tenant_id"],
        domain_id=row["domain_id"],
        thread_id=thread_id,
        from_address=row["from_address"],
        from_header=row["from_header"],
        to=list(row["to_addresses"]),
        cc=list(row["cc_addresses"]),
        bcc=list(row["bcc_addresses"]),
        reply_to=list(row["reply_to_addresses"]),
        subject=row["subject"],
        html=row["html_body"],
        text=row["text_body"],
        headers=row["headers"],
        attachments=row["attachments"],
        tags=row["tags"],
        message_id=f"{email_id}@{DOMAIN}",  # as stored: without angle brackets
        reply_token=email_id.hex,
        reply_address=row["reply_address"],
        reply_domain=row["reply_domain"],
        raw=bytes(row["raw"]),
        scheduled_at=None,
        recipients=list(row["recipients"]),
        domain_state=DomainState(
            row["verified"], row["status"], row["receiving_enabled"], row["domain_reply_domain"]
        ),
    )


async def ceiling_run(
    peer: ApiPeer, url: str, mode: str, seconds: float, concurrency: int, pool_size: int
) -> dict[str, Any]:
    """`concurrency` tasks storing the API's rows for `seconds`, through a pool of `pool_size`:
    `grouped` with the API's group-commit writer, `per-email` one statement per email. CPU is
    read before the pool closes: an exited backend's CPU time is no longer counted."""
    pool = await open_pool(url, max_size=pool_size)
    try:
        row = await pool.fetchrow(TEMPLATE)
        if row is None:
            raise RuntimeError("no email stored by the API to copy")
        writer = EmailWriter(pool)
        latencies: list[float] = []
        deadline = time.monotonic() + seconds

        async def client() -> None:
            while time.monotonic() < deadline:
                email = fresh_email(row)
                started = time.monotonic()
                if mode == "grouped":
                    stored = await writer.store([email], None)
                else:
                    stored = await insert_emails(pool, [email])
                if not stored:
                    raise RuntimeError(f"ceiling email not stored: {stored}")
                latencies.append(time.monotonic() - started)

        began, cpu_before, client_before = time.monotonic(), cpu_seconds(peer), time.process_time()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.monotonic() - began
        client_cpu = time.process_time() - client_before
        pg_cpu = cpu_seconds(peer)["postgres"] - cpu_before["postgres"]
    finally:
        await pool.close()
    latencies.sort()

    def percentile(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    return {
        "mode": mode,
        "commits": len(latencies),
        "seconds": round(elapsed, 2),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "pool_size": pool_size,
        # CPU ms per commit: this process (asyncpg's encoding, the writer) and PostgreSQL.
        "cpu_ms_per_commit": {
            "client": round(client_cpu * 1000 / max(1, len(latencies)), 3),
            "postgres": round(pg_cpu * 1000 / max(1, len(latencies)), 3),
        },
    }


def ceiling(args: argparse.Namespace, peer: ApiPeer, url: str) -> list[dict[str, Any]]:
    """PostgreSQL's own rate for POST /emails' rows, both ways, with CPU per commit."""
    pool_size = _pool_size(SimpleNamespace(max_connections=peer.max_connections))
    runs = []
    for mode in ("grouped", "per-email"):
        # On uvloop, as the server runs.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            run = runner.run(
                ceiling_run(peer, url, mode, args.ceiling_duration, args.connections, pool_size)
            )
        log(f"ceiling {mode}: {run}")
        runs.append(run)
        time.sleep(1.0)
    return runs


def profile(args: argparse.Namespace, peer: ApiPeer) -> subprocess.Popen[bytes] | None:
    """py-spy on the server for the measured run, when --profile names an output file."""
    if not args.profile or peer.pid is None:
        return None
    py_spy = Path(sys.executable).parent / "py-spy"
    command = [str(py_spy), "record", "--pid", str(peer.pid), "--duration", str(args.duration)]
    return subprocess.Popen([*command, "--output", args.profile, "--format", args.profile_format])


def api_round(
    args: argparse.Namespace,
    peer: ApiPeer,
    script_env: dict[str, str],
    script: Path,
    *,
    profiled: bool,
) -> dict[str, Any]:
    """One measured wrk run of POST /emails, with its CPU and its durability accounting."""
    before = asyncio.run(peer.count_emails())
    cpu_before = cpu_seconds(peer)
    profiler = profile(args, peer) if profiled else None
    try:
        run = run_wrk(args, f"{peer.url}/emails", script_env, script, args.duration)
    finally:
        if profiler is not None:
            profiler.wait(args.duration + 30)
    cpu = {k: v - cpu_before[k] for k, v in cpu_seconds(peer).items()}
    time.sleep(1.0)  # requests in flight when wrk stopped finish their COMMIT
    stored = asyncio.run(peer.count_emails()) - before
    ok = run["responses"] - run["non_2xx"]
    return {
        **run,
        "ok": ok,
        "stored": stored,
        "durable": run["non_2xx"] == 0 and ok <= stored <= ok + args.connections,
        "cpu_seconds": cpu,
    }


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    peer = ApiPeer(workdir / "data", args.database_url)
    script = workdir / "post_email.lua"
    script.write_text(LUA)
    try:
        key = peer.setup()
        script_env = {"BENCH_KEY": key, "BENCH_BODY": json.dumps(EMAIL)}
        peer.start()
        facts = asyncio.run(peer.database_facts())
        log(f"database fsync={facts.fsync} synchronous_commit={facts.synchronous_commit}")
        if args.warmup:
            run_wrk(args, f"{peer.url}/emails", script_env, script, args.warmup)
            time.sleep(1.0)  # the warm-up's last requests finish their COMMIT
        # Rounds of the API then PostgreSQL alone, back to back: on a machine shared with
        # other work, the load changes within minutes, and each round's ratio compares two
        # runs made under much the same load.
        rounds = []
        for number in range(args.rounds):
            api = api_round(args, peer, script_env, script, profiled=number == 0)
            ceilings = ceiling(args, peer, facts.url) if args.ceiling_duration > 0 else []
            best = max((c["rps"] for c in ceilings), default=0.0)
            api["ceiling"] = ceilings
            api["ceiling_rps"] = best
            api["ratio"] = round(api["rps"] / best, 3) if best else None
            log(f"round {number + 1}: {api['rps']:.0f} requests/s, ceiling {best:.0f}/s")
            rounds.append(api)
        ok = sum(r["ok"] for r in rounds)
        cpu = {k: sum(r["cpu_seconds"][k] for r in rounds) for k in rounds[0]["cpu_seconds"]}
        ratios = [r["ratio"] for r in rounds if r["ratio"] is not None]
        rps = sum(r["responses"] for r in rounds) / sum(r["seconds"] for r in rounds)
        durable = all(r["durable"] for r in rounds)
        api_cpu = sum(cpu.values()) * 1000 / max(1, ok)
        grouped = [c for r in rounds for c in r["ceiling"] if c["mode"] == "grouped"]
        ceiling_cpu = (
            sum(sum(c["cpu_ms_per_commit"].values()) * c["commits"] for c in grouped)
            / max(1, sum(c["commits"] for c in grouped))
            if grouped
            else None
        )
        return {
            "date": datetime.now(UTC).isoformat(),
            "machine": machine_facts(Path(__file__).resolve().parents[2]),
            "fsync": facts.fsync,
            "synchronous_commit": facts.synchronous_commit,
            "connections": args.connections,
            "threads": args.threads,
            "rounds": [{k: v for k, v in r.items() if k != "output"} for r in rounds],
            "rps": rps,
            "responses": sum(r["responses"] for r in rounds),
            "non_2xx": sum(r["non_2xx"] for r in rounds),
            "stored": sum(r["stored"] for r in rounds),
            # Over the rounds: the median of each round's wrk percentile.
            "p50_ms": statistics.median(r["p50_ms"] or 0.0 for r in rounds),
            "p99_ms": statistics.median(r["p99_ms"] or 0.0 for r in rounds),
            # CPU seconds per 1,000 answered requests: comparable across runs on a busy machine.
            "cpu_ms_per_request": {k: round(v * 1000 / max(1, ok), 3) for k, v in cpu.items()},
            "durable": durable,
            "ceiling_rps": statistics.median(r["ceiling_rps"] for r in rounds),
            "ratio": statistics.median(ratios) if ratios else None,
            # The same ratio from CPU time alone (server + PostgreSQL per request against client
            # + PostgreSQL per grouped commit): what it would be if both were CPU-bound, and
            # much steadier than the rates on a shared machine. wrk's own CPU is left out.
            "cpu_ratio": round(ceiling_cpu / api_cpu, 3) if ceiling_cpu else None,
            "target_ratio": TARGET_RATIO,
            "target_rps": TARGET_RPS,
            "met_target": durable and rps >= TARGET_RPS,
            "wrk_output": rounds[0]["output"],
        }
    finally:
        peer.stop()
        if not args.keep:
            peer.stop_embedded_postgres()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--duration", type=int, default=30, help="seconds of the measured run")
    add("--rounds", type=int, default=1, help="API-then-ceiling rounds; the ratio is their median")
    add("--warmup", type=int, default=5, help="seconds of load before it, not counted (0: none)")
    add("--connections", type=int, default=50, help="concurrent keep-alive connections")
    add("--threads", type=int, default=1, help="wrk threads (the server needs the cores)")
    add(
        "--ceiling-duration",
        type=int,
        default=None,
        help="seconds of each PostgreSQL-alone run (default: --duration; 0: none)",
    )
    add("--max-seconds", type=int, default=900, help="bound on the whole benchmark")
    add("--database-url", help="a PostgreSQL to use instead of the embedded one")
    add("--keep", action="store_true", help="keep the work directory and database")
    add("--profile", help="record the server with py-spy into this file")
    add("--profile-format", default="speedscope", help="py-spy's format: flamegraph, raw...")
    args = parser.parse_args(argv)
    if args.ceiling_duration is None:
        args.ceiling_duration = args.duration
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    with bounded(args.max_seconds):
        workdir = Path(tempfile.mkdtemp(prefix="opensend-bench-api-"))
        try:
            result = benchmark(args, workdir)
        finally:
            if args.keep:
                log(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        print(result.pop("wrk_output"))
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"api-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
        path.write_text(json.dumps(result, indent=2))
        print(
            f"POST /emails: {result['rps']:.0f} requests/s with {result['connections']} "
            f"connections over {len(result['rounds'])} round(s) "
            f"(p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms); {result['responses']} "
            f"responses, {result['non_2xx']} not 200, {result['stored']} emails committed; "
            f"durable: {result['durable']}; target {TARGET_RPS:.0f}/s met: {result['met_target']}; "
            f"CPU ms per request: {result['cpu_ms_per_request']}"
        )
        for number, round_ in enumerate(result["rounds"], 1):
            for run in round_["ceiling"]:
                print(
                    f"round {number}: POST /emails {round_['rps']:.0f} requests/s; "
                    f"PostgreSQL alone ({run['mode']}, pool of {run['pool_size']}, "
                    f"{result['connections']} tasks): {run['rps']:.0f} commits/s "
                    f"(p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms); "
                    f"CPU ms per commit: {run['cpu_ms_per_commit']}"
                )
        if result["ratio"] is not None:
            ratios = ", ".join(f"{r['ratio']:.0%}" for r in result["rounds"])
            print(
                f"POST /emails / PostgreSQL ceiling, median of the rounds ({ratios}): "
                f"{result['ratio']:.0%} (target {TARGET_RATIO:.0%}: met "
                f"{result['ratio'] >= TARGET_RATIO}); from CPU per request and per commit: "
                f"{result['cpu_ratio']:.0%}"
            )
        print(f"results: {path}")
        return 0 if result["durable"] else 1


if __name__ == "__main__":
    sys.exit(main())
