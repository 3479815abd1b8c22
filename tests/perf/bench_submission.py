"""Submission benchmark: messages per second through the submission ports, against the MX's plain
rate measured in the same run with the same load generator.

    .venv/bin/python tests/perf/bench_submission.py                 # 3000 messages a run
    .venv/bin/python tests/perf/bench_submission.py --repeat 3      # medians of 3 rounds
    .venv/bin/python tests/perf/bench_submission.py --repeat 3 --postfix   # and Postfix's
    .venv/bin/python tests/perf/bench_submission.py --help

Loopback only; no root but for `--postfix`. The issue's target: submission at least 0.7 of the
MX's plain rate.

Load. smtp-source speaks neither STARTTLS nor AUTH, so `submission_load.py` (asyncio and ssl
of the standard library, on uvloop), in a process of its own, sends every load: `--sessions`
concurrent sessions, `--messages` messages of `--size` bytes of body, one recipient each, one
command at a time. To the MX (port 25's listener) in the clear; to port 587 with STARTTLS and
AUTH PLAIN (the API key as password), the client verifying the server's certificate; to port
465 the same with TLS from the first byte. Two modes: `new-conn`, a new connection for every
message (so a TLS handshake and a login per message on the submission ports), and `reuse`, one
connection and one login per session. msg/s is messages answered 250 over the generator's wall
time; the generator aborts nothing, and a run with any error fails the benchmark.

Pairing. In each round, for each mode, the MX run and the submission runs go back to back, one
at a time; the ratio is submission msg/s over MX msg/s within the round, and the median over
rounds is reported, so drift of a shared machine hits both sides of a ratio alike.

Server. `listeners_only.py`: `opensend serve --only mta`'s own composition (mta.serve.serve)
without the delivery workers, so that the submitted mail (queued for delivery, as always) does
not add delivery attempts beside the listeners being measured, as the MX has none to make, and
without the auth-check process, so that the MX's mail is not checked beside them either. An
embedded PostgreSQL (fsync and synchronous_commit on, printed); OPENSEND_ENV=development, so
the submission ports use the generated development certificate (P-256), which the client is
told to trust. The tenant, `bench.test` (verified, receiving: every submitted message is
reply-tracked) with a catch-all route (for the MX) and an API key come from the `opensend`
command.

Durability. `received_emails` (MX) and `emails` (submission) are counted before and after every
run; each must have grown by exactly the messages answered 250. CPU: user + system CPU of the
server process, of PostgreSQL and of the generator over each run, per message; on a machine
whose cores all three share, msg/s follows their sum, and the ratio with it.

Ceiling. After the runs, `tls_floor.py` times full TLS handshakes in OpenSSL alone (`openssl
s_server` with the server's certificate and key, `openssl s_time -new` verifying it) and takes
their CPU at both ends. A submitted message over a new connection does what an MX message does
plus one handshake at each end, so with everything else free (STARTTLS, AUTH, the second EHLO,
every extra round trip, the heavier insert) its rate is at most mx / (mx + handshake) of the
MX's, in CPU per message: the figure printed as the new-conn ceiling for this machine.

The peer (`--postfix`). A private, stock Postfix (postfix_peer.py) with the same certificate and
`smtpd_tls_security_level = may`, loaded by the same generator in the clear and with STARTTLS
(no AUTH: stock Postfix has no SASL back end), so that Postfix's own ratio of STARTTLS to plain
stands beside ours. Its messages are counted in its log as bench_mx.py counts them, and its
queue is drained before the next run.

Results are printed and written as JSON to tests/perf/results/submission-*.json. Bounded:
`--run-timeout` per run, `--max-seconds` for the whole; the server and the embedded database are
stopped and the work directory deleted on every exit (`--keep` keeps them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from bench_report import bounded, machine_facts
from opensend_peer import REPO_ROOT, OpenSendError, OpenSendPeer
from postfix_peer import PostfixPeer, free_loopback_port
from rss_sampler import tree
from smtp_load import Mode
from tls_floor import HandshakeCost
from tls_floor import measure as measure_handshakes

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGET_RATIO = 0.7
DOMAIN, TENANT = "bench.test", "bench"
SERVER_NAME = "mx.bench.test"


def log(message: str) -> None:
    print(f"[bench_submission {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


class SubmissionPeer(OpenSendPeer):
    """The MX and both submission ports of one server, without delivery workers or auth checks."""

    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        super().__init__(data_dir, database_url=database_url, hostname=SERVER_NAME)
        self.submission_port = free_loopback_port()
        self.submissions_port = free_loopback_port()
        self.log_path = data_dir / "serve-listeners.log"

    def env(self) -> dict[str, str]:
        env = super().env()
        env["OPENSEND_SUBMISSION_LISTEN"] = f"127.0.0.1:{self.submission_port}"
        env["OPENSEND_SUBMISSIONS_LISTEN"] = f"127.0.0.1:{self.submissions_port}"
        return env

    def serve_command(self) -> list[str]:
        return [sys.executable, str(HERE / "listeners_only.py")]

    @property
    def certificate(self) -> Path:
        """The development certificate the server generated at start (mta.smtp.tls)."""
        return self.data_dir / "tls" / "development.crt"

    @property
    def certificate_key(self) -> Path:
        return self.data_dir / "tls" / "development.key"

    def setup(self) -> str:
        """Tenant, domain and catch-all route (opensend_peer), and an API key; returns the key."""
        self.setup_routing(DOMAIN, TENANT)
        created = json.loads(self.admin("apikey", "create", "--tenant", TENANT, "--json").stdout)
        key = created.get("token")
        if not isinstance(key, str):
            raise OpenSendError(f"no token in `opensend apikey create --json`: {created}")
        return key

    async def count(self, table: str) -> int:
        facts = await self.database_facts()
        conn = await asyncpg.connect(facts.url, timeout=30.0)
        try:
            count: int = await conn.fetchval(f"SELECT count(*) FROM {table}")
            return count
        finally:
            await conn.close()


@dataclass(frozen=True, slots=True)
class Target:
    label: str
    port: int
    tls: str  # none, starttls, implicit
    table: str  # where its messages are committed; "" for Postfix (its queue, counted in its log)
    baseline: str | None = None  # the plain target its ratio is taken against
    login: bool = True  # AUTH with the key when over TLS (Postfix: STARTTLS alone, no AUTH)


@dataclass(slots=True)
class Run:
    target: str
    mode: str
    round: int
    requested: int
    completed: int
    seconds: float
    msgs_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    stored: int | None
    cpu_ms_per_message: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def cpu_seconds(peer: SubmissionPeer, postfix: PostfixPeer | None = None) -> dict[str, float]:
    totals: dict[str, float] = {}
    pids = (
        (("server", postfix.master_pid()),)
        if postfix is not None
        else (("server", peer.pid), ("postgres", peer.postmaster_pid()))
    )
    for name, pid in pids:
        total = 0.0
        for proc in tree(pid) if pid else []:
            with contextlib.suppress(Exception):
                times = proc.cpu_times()
                total += times.user + times.system
                if proc.pid == pid:
                    # Postfix's smtpd processes exit after 100 sessions (max_use): their CPU is
                    # then the master's reaped children's.
                    total += times.children_user + times.children_system
        totals[name] = total
    return totals


def load_command(
    args: argparse.Namespace, peer: SubmissionPeer, target: Target, mode: Mode, key: str
) -> list[str]:
    command = [
        sys.executable,
        str(HERE / "submission_load.py"),
        "--port",
        str(target.port),
        "--mode",
        str(mode),
        "--tls",
        target.tls,
        "--messages",
        str(args.messages),
        "--sessions",
        str(args.sessions),
        "--size",
        str(args.size),
        "--sender",
        f"bench@{DOMAIN}",
        "--recipient",
        f"user@{DOMAIN}",
        "--timeout",
        str(args.run_timeout),
    ]
    if target.tls != "none":
        command += ["--cafile", str(peer.certificate), "--server-name", SERVER_NAME]
        if target.login:
            command += ["--key", key]
    return command


def postfix_accepted(postfix: PostfixPeer, expected: int) -> int:
    """Messages Postfix's queue manager took from its queue (each written and fsynced before
    the 250); its log arrives through postlogd a moment after the fact."""
    deadline = time.monotonic() + 15.0
    accepted = postfix.log_counts().accepted
    while accepted < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        accepted = postfix.log_counts().accepted
    return accepted


def measure(
    args: argparse.Namespace,
    peer: SubmissionPeer,
    target: Target,
    mode: Mode,
    key: str,
    number: int,
    postfix: PostfixPeer | None = None,
) -> Run:
    on_postfix = postfix if not target.table else None
    drained = True
    if on_postfix is not None:
        before = on_postfix.log_counts().accepted
    else:
        before = asyncio.run(peer.count(target.table))
    cpu_before = cpu_seconds(peer, on_postfix)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        load_command(args, peer, target, mode, key),
        capture_output=True,
        text=True,
        timeout=args.run_timeout + 60,
        check=False,
    )
    cpu = {k: v - cpu_before[k] for k, v in cpu_seconds(peer, on_postfix).items()}
    # The generator shares the machine: its CPU is the part of it a busy run cannot give the
    # server. RUSAGE_CHILDREN counts it (and the `opensend` admin commands, none during a run).
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu["client"] = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    try:
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        result = {"completed": 0, "seconds": 0.0, "msgs_per_s": 0.0, "errors": [proc.stderr]}
    if on_postfix is not None:
        stored = postfix_accepted(on_postfix, before + result["completed"]) - before
        drained = on_postfix.wait_drained(120.0)  # the next run starts from an empty queue
    else:
        stored = asyncio.run(peer.count(target.table)) - before
    run = Run(
        target=target.label,
        mode=str(mode),
        round=number,
        requested=args.messages,
        completed=result["completed"],
        seconds=result["seconds"],
        msgs_per_s=result["msgs_per_s"],
        p50_ms=result.get("p50_ms"),
        p99_ms=result.get("p99_ms"),
        stored=stored,
        cpu_ms_per_message={
            k: round(v * 1000 / max(1, result["completed"]), 3) for k, v in cpu.items()
        },
    )
    if run.completed != run.requested:
        run.problems.append(f"{run.completed} of {run.requested} answered 250")
        run.problems += [str(e) for e in result.get("errors", [])[:3]]
    if stored != run.completed:
        run.problems.append(f"{stored} committed for {run.completed} answered 250")
    if not drained:
        run.problems.append("Postfix's queue did not drain within 120 s")
    log(
        f"round {number} {mode} {target.label}: {run.msgs_per_s:,.0f} msg/s, "
        f"p50 {run.p50_ms} ms, p99 {run.p99_ms} ms, stored {stored}, CPU ms/msg "
        f"{run.cpu_ms_per_message}{' PROBLEMS ' + str(run.problems) if run.problems else ''}"
    )
    return run


def ratios(runs: list[Run], target: Target, mode: Mode) -> list[float]:
    """Each round's msg/s over its baseline's (the same server in the clear) in that round."""
    plain = {r.round: r.msgs_per_s for r in runs if r.target == target.baseline and r.mode == mode}
    return [
        r.msgs_per_s / plain[r.round]
        for r in runs
        if r.target == target.label and r.mode == mode and plain.get(r.round) and not r.problems
    ]


def render(
    runs: list[Run], targets: list[Target], handshake: HandshakeCost
) -> tuple[str, dict[str, Any]]:
    header = (
        f"{'target':<16} {'mode':<9} {'runs':>4} {'msg/s':>8} {'ratio':>6} {'p50 ms':>7} "
        f"{'p99 ms':>7}  CPU ms/msg: server + PG (+ client)"
    )
    lines = [header, "-" * len(header)]
    summary: dict[str, Any] = {}
    for mode in Mode:
        for target in targets:
            mine = [r for r in runs if r.target == target.label and r.mode == mode]
            if not mine:
                continue
            rate = statistics.median(r.msgs_per_s for r in mine)
            pairs = ratios(runs, target, mode) if target.baseline else []
            ratio = round(statistics.median(pairs), 3) if pairs else None
            p50 = statistics.median(r.p50_ms or 0.0 for r in mine)
            p99 = statistics.median(r.p99_ms or 0.0 for r in mine)
            server = statistics.median(r.cpu_ms_per_message.get("server", 0.0) for r in mine)
            pg = statistics.median(r.cpu_ms_per_message.get("postgres", 0.0) for r in mine)
            client = statistics.median(r.cpu_ms_per_message.get("client", 0.0) for r in mine)
            shown = f"{ratio:.2f}x" if ratio is not None else "-"
            lines.append(
                f"{target.label:<16} {mode!s:<9} {len(mine):>4} {rate:>8,.0f} {shown:>6} "
                f"{p50:>7.1f} {p99:>7.1f}  {server:.3f} + {pg:.3f} (+ {client:.3f})"
            )
            summary.setdefault(target.label, {})[str(mode)] = {
                "msgs_per_s": rate,
                "ratio": ratio,
                "ratio_to": target.baseline,
                "p50_ms": p50,
                "p99_ms": p99,
                "cpu_ms_per_message": {"server": server, "postgres": pg, "client": client},
            }
    verdicts = []
    for mode in Mode:
        ratio = summary.get("submission-587", {}).get(str(mode), {}).get("ratio")
        verdicts.append(f"{mode} {ratio:.2f}x" if ratio is not None else f"{mode} -")
    met = all(
        (summary.get("submission-587", {}).get(str(m), {}).get("ratio") or 0) >= TARGET_RATIO
        for m in Mode
    )
    lines += [
        "",
        f"target: submission (587, STARTTLS + AUTH) >= {TARGET_RATIO}x the MX's plain msg/s: "
        f"{'MET' if met else 'NOT MET'} ({', '.join(verdicts)})",
    ]
    summary["met_target"] = met
    # The new-connection ceiling: a submitted message does at least what an MX message does
    # (a connection, a transaction, a commit) plus one TLS handshake at each end. On a machine
    # whose cores all processes share, msg/s follows CPU per message, so even with STARTTLS,
    # AUTH, the second EHLO and every extra round trip free, the ratio is at most mx / (mx + tls).
    mx_cpu = summary.get("mx", {}).get(str(Mode.NEW_CONNECTION), {}).get("cpu_ms_per_message")
    if mx_cpu:
        mx_total = sum(mx_cpu.values())
        ceiling = mx_total / (mx_total + handshake.total_ms)
        summary["new_conn_ceiling"] = {
            "mx_cpu_ms_per_message": round(mx_total, 3),
            "tls_handshake_cpu_ms": asdict(handshake) | {"total_ms": round(handshake.total_ms, 3)},
            "ceiling_ratio": round(ceiling, 3),
        }
        lines.append(
            f"new-conn ceiling on this machine: one TLS handshake in OpenSSL alone (s_server + "
            f"s_time, {handshake.handshakes:,} handshakes) costs {handshake.server_ms:.3f} + "
            f"{handshake.client_ms:.3f} ms CPU, a whole MX message {mx_total:.3f} ms, so "
            f"submission over new connections can reach at most {ceiling:.2f}x the MX's rate "
            f"({handshake.openssl})"
        )
    return "\n".join(lines), summary


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    peer = SubmissionPeer(workdir / "data", args.database_url)
    targets = [
        Target("mx", peer.mx_port, "none", "received_emails"),
        Target("submission-587", peer.submission_port, "starttls", "emails", "mx"),
    ]
    if not args.no_implicit:
        targets.append(Target("submissions-465", peer.submissions_port, "implicit", "emails", "mx"))
    postfix: PostfixPeer | None = None
    try:
        key = peer.setup()
        peer.start()
        if args.postfix:
            # The same certificate and key; Postfix's smtpd reads them as root at start.
            postfix = PostfixPeer(
                base_dir=workdir,
                domain=DOMAIN,
                hostname=SERVER_NAME,
                tls=(peer.certificate, peer.certificate_key),
            )
            postfix.start()
            targets += [
                Target("postfix", postfix.port, "none", ""),
                Target("postfix-starttls", postfix.port, "starttls", "", "postfix", login=False),
            ]
        facts = asyncio.run(peer.database_facts())
        log(f"database fsync={facts.fsync} synchronous_commit={facts.synchronous_commit}")
        # A short warm-up of every path (imports, pool connections, TLS contexts), not counted.
        warm = argparse.Namespace(**{**vars(args), "messages": 200})
        for target in targets:
            measure(warm, peer, target, Mode.REUSE, key, 0, postfix)
        runs: list[Run] = []
        for number in range(1, args.repeat + 1):
            for mode in Mode:
                for target in targets:
                    runs.append(measure(args, peer, target, mode, key, number, postfix))
        # After the runs, with the server idle: OpenSSL's own handshake cost, for the ceiling.
        handshake = measure_handshakes(peer.certificate, peer.certificate_key)
        log(f"TLS handshake in OpenSSL alone: {handshake}")
        table, summary = render(runs, targets, handshake)
        return {
            "date": datetime.now(UTC).isoformat(),
            "machine": machine_facts(REPO_ROOT),
            "fsync": facts.fsync,
            "synchronous_commit": facts.synchronous_commit,
            "messages": args.messages,
            "sessions": args.sessions,
            "size": args.size,
            "repeat": args.repeat,
            "runs": [asdict(r) for r in runs],
            "summary": summary,
            "table": table,
            "ok": all(not r.problems for r in runs),
        }
    finally:
        if postfix is not None:
            postfix.stop()
        peer.stop()
        if not args.keep:
            peer.stop_embedded_postgres()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--messages", type=int, default=3000, help="messages per run")
    add("--sessions", type=int, default=20, help="concurrent client sessions")
    add("--size", type=int, default=2048, help="bytes of message body")
    add("--repeat", type=int, default=1, help="rounds; ratios are medians over them")
    add("--no-implicit", action="store_true", help="leave port 465 out")
    add(
        "--postfix",
        action="store_true",
        help="also Postfix, plain and with STARTTLS (no AUTH), for its own ratio (needs root)",
    )
    add("--run-timeout", type=float, default=600.0, help="bound on each run, seconds")
    add("--max-seconds", type=int, default=1800, help="bound on the whole benchmark")
    add("--database-url", help="a PostgreSQL to use instead of the embedded one")
    add("--keep", action="store_true", help="keep the work directory and database")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with bounded(args.max_seconds):
        workdir = Path(tempfile.mkdtemp(prefix="opensend-bench-submission-"))
        started = time.monotonic()
        try:
            result = benchmark(args, workdir)
        finally:
            if args.keep:
                log(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        print(result["table"])
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"submission-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
        path.write_text(json.dumps(result, indent=2))
        print(f"results: {path} ({time.monotonic() - started:.0f} s)")
        for run in result["runs"]:
            for problem in run["problems"]:
                print(f"PROBLEM {run['target']} {run['mode']} #{run['round']}: {problem}")
        return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
