"""Delivery benchmark: OpenSend's delivery workers against a stock Postfix relaying, same sink.

    .venv/bin/python tests/perf/bench_delivery.py [--messages 10000] [--size 2048]

Needs root (Postfix's master runs as root; smtp-sink is told to drop to the postfix user) and
Postfix's smtp-sink and smtp-source. Everything is on loopback.

The sink. Postfix's `smtp-sink` on a loopback port takes every message and throws it away; its
`-c` counter (mesg=N) is read before and after each run and must grow by exactly the run's count.

Postfix. A private stock Postfix (postfix_peer.py) in relay mode: `relay_transport =
smtp:[127.0.0.1]:<sink port>`, every performance setting at its default (20 connections per
destination, connection caching on demand, slow start). smtp-source injects the messages (20
sessions, `--size` bytes each, one recipient) while `defer_transports = smtp` holds them in the
queue; once all are queued, the hold is lifted and the queue flushed, and the clock runs from
the flush to the last "status=sent" line of Postfix's SMTP client in its maillog. Postfix
signs nothing (no milter): signing is work only OpenSend does here.

OpenSend. `opensend serve --only mta` with `OPENSEND_RELAY=smtp://127.0.0.1:<sink port>` (its
delivery workers at their defaults) and an idle queue. The messages are stored as POST /emails
stores them (storage.sending.emails.insert_emails: emails row, one deliveries row, the email.sent
event) in one transaction, whose COMMIT sends the NOTIFY that wakes the workers; the clock runs from
that COMMIT until every delivery row is `delivered` (polled every 20 ms). Each message is
DKIM-signed at send time with its domain's 2048-bit key (`--no-dkim` stores no key), and every
outcome is committed with its event before the worker moves on.

Both servers see the same count, size and sink, one after the other; the ratio is OpenSend's
msg/s over Postfix's in the same round, the median over `--repeat` rounds is reported. The
target is a ratio of at least 2.0 (issue 16). Results are printed and written as JSON to
tests/perf/results/. Bounded: `--messages` per run, `--run-timeout` per run; servers and
directories are removed on any exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import psutil
from opensend_peer import REPO_ROOT, OpenSendPeer
from postfix_peer import PostfixPeer, free_loopback_port
from rss_sampler import tree

sys.path.insert(0, str(REPO_ROOT))

from policy.domains.dkim_keys import generate_key_pair
from storage.account import directory
from storage.account.domains import set_dkim_key
from storage.database import open_pool
from storage.ids import uuid7
from storage.sending.emails import NewEmail, insert_emails
from tests.conftest import DOMAIN_VIEW

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SMTP_SINK = shutil.which("smtp-sink", path="/usr/sbin:/usr/bin") or "/usr/sbin/smtp-sink"
SMTP_SOURCE = shutil.which("smtp-source", path="/usr/sbin:/usr/bin") or "/usr/sbin/smtp-source"
DOMAIN = "bench.test"
TARGET_RATIO = 2.0  # issue 16: twice Postfix
_MESG = re.compile(rb"mesg=(\d+)")
UNFINISHED = """
SELECT (SELECT count(*) FROM deliveries WHERE status IN ('queued', 'deferred'))
     + (SELECT count(*) FROM deliveries WHERE status = 'sending')
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_until(done: Callable[[], bool], timeout: float, what: str, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done within {timeout:.0f}s")
        time.sleep(poll)


def tree_cpu(pid: int | None) -> float:
    """CPU seconds used by a process tree so far: its live processes, and the children they
    have already reaped (Postfix's short-lived smtp processes, PostgreSQL's backends)."""
    if pid is None:
        return 0.0
    total = 0.0
    for process in tree(pid):
        with contextlib.suppress(Exception):
            t = process.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def own_cpu(pid: int | None) -> float:
    """CPU seconds of the process `pid` alone (all its threads; not its children)."""
    if pid is None:
        return 0.0
    with contextlib.suppress(Exception):
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    return 0.0


class SmtpSink:
    """Postfix's smtp-sink on 127.0.0.1, counting messages (-c) into a file we read."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_loopback_port()
        self.output = workdir / "smtp-sink.out"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SmtpSink:
        with self.output.open("wb") as out:
            self._proc = subprocess.Popen(
                [SMTP_SINK, "-u", "postfix", "-c", f"127.0.0.1:{self.port}", "1024"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(lambda: self.output.exists(), 5, "smtp-sink start")
        time.sleep(0.3)
        if self._proc.poll() is not None:
            raise RuntimeError(f"smtp-sink exited: {self.output.read_text()}")
        return self

    def __exit__(self, *_: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(10)

    def messages(self) -> int:
        found = _MESG.findall(self.output.read_bytes())
        return int(found[-1]) if found else 0


def message_bytes(sender: str, recipient: str, size: int, number: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Bench <{sender}>"
    msg["To"] = recipient
    msg["Subject"] = f"Benchmark message {number}"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<{uuid7().hex}@{sender.rpartition('@')[2]}>"
    line = "The quick brown fox jumps over the lazy dog, again and again.\n"
    msg.set_content(line * max(1, size // len(line)))
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


# ------------------------------------------------------------------------------- Postfix


def run_postfix(args: argparse.Namespace, workdir: Path, sink: SmtpSink) -> dict[str, Any]:
    with PostfixPeer(base_dir=workdir, domain=DOMAIN, relay_to=("127.0.0.1", sink.port)) as peer:
        peer.hold()
        log(f"postfix: injecting {args.messages} messages (held in its queue)")
        subprocess.run(
            [SMTP_SOURCE, "-s", "20", "-m", str(args.messages), "-l", str(args.size),
             "-f", f"bench@sender.{DOMAIN}", "-t", f"rcpt@{DOMAIN}", f"127.0.0.1:{peer.port}"],
            check=True, timeout=args.run_timeout, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(
            lambda: peer.log_counts().deferred >= args.messages, args.run_timeout, "postfix hold"
        )
        before = sink.messages()
        log("postfix: releasing the queue")
        cpu_before = tree_cpu(peer.master_pid())
        started = time.monotonic()
        peer.release()
        wait_until(
            lambda: peer.log_counts().relayed >= args.messages,
            args.run_timeout,
            "postfix relay",
            poll=0.05,
        )
        elapsed = time.monotonic() - started
        cpu = tree_cpu(peer.master_pid()) - cpu_before
        wait_until(lambda: sink.messages() - before >= args.messages, 10, "sink count")
        counts = peer.log_counts()
        return {
            "target": "postfix",
            "messages": args.messages,
            "seconds": elapsed,
            "msg_per_s": args.messages / elapsed,
            "cpu_ms_per_msg": {"server": cpu * 1000 / args.messages, "database": 0.0},
            "sink_received": sink.messages() - before,
            "bounced": counts.bounced,
        }


# ------------------------------------------------------------------------------- OpenSend


class RelayPeer(OpenSendPeer):
    def __init__(self, data_dir: Path, relay: str, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.relay = relay

    def env(self) -> dict[str, str]:
        env = super().env()
        env["OPENSEND_RELAY"] = self.relay
        return env


async def queue_messages(url: str, count: int, size: int, dkim: bool) -> list[Any]:
    pool = await open_pool(url, max_size=2)
    try:
        suffix = uuid7().hex[-8:]
        tenant = await directory.create_tenant(pool, f"bench-{suffix}")
        domain = await directory.add_domain(
            pool, tenant.id, f"s{suffix}.{DOMAIN}", receiving=False, reply_domain=None,
            verified=True, event_data=DOMAIN_VIEW.event_data,
        )  # fmt: skip
        if dkim:
            await set_dkim_key(
                pool, domain.id, generate_key_pair(), event_data=DOMAIN_VIEW.event_data
            )
        sender = f"bench@{domain.name}"
        emails = []
        for number in range(count):
            recipient = f"rcpt{number}@{DOMAIN}"
            raw = message_bytes(sender, recipient, size, number)
            emails.append(
                NewEmail(
                    id=uuid7(),
                    tenant_id=tenant.id,
                    domain_id=domain.id,
                    thread_id=None,
                    from_address=sender,
                    from_header=f"Bench <{sender}>",
                    to=[recipient],
                    cc=[],
                    bcc=[],
                    reply_to=[],
                    subject=f"Benchmark message {number}",
                    html=None,
                    text="",
                    headers={},
                    attachments=[],
                    tags=[],
                    message_id=uuid7().hex,
                    reply_token=None,
                    reply_address=None,
                    reply_domain=None,
                    raw=raw,
                    scheduled_at=None,
                    recipients=[recipient],
                )
            )
        await insert_emails(pool, emails)  # one transaction; its COMMIT notifies the workers
        return [e.id for e in emails]
    finally:
        await pool.close()


async def count_states(url: str, ids: list[Any]) -> dict[str, int]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT status, count(*) AS n FROM deliveries WHERE email_id = ANY($1::uuid[]) "
            "GROUP BY status",
            ids,
        )
        return {row["status"]: row["n"] for row in rows}
    finally:
        await conn.close()


async def wait_delivered(url: str, ids: list[Any], bound: float) -> dict[str, int]:
    import asyncpg

    conn = await asyncpg.connect(url)
    deadline = time.monotonic() + bound
    try:
        while time.monotonic() < deadline:
            # Through the queue's partial indexes: cheap, so polling costs the server little.
            remaining = await conn.fetchval(UNFINISHED)
            if remaining == 0:
                break
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    return await count_states(url, ids)


def run_opensend(args: argparse.Namespace, workdir: Path, sink: SmtpSink) -> dict[str, Any]:
    peer = RelayPeer(
        workdir / "opensend",
        f"smtp://127.0.0.1:{sink.port}",
        database_url=args.database_url,
        dns_server="127.0.0.1:1",
    )
    try:
        peer.data_dir.mkdir(parents=True, exist_ok=True)
        peer.admin("migrate")
        url = asyncio.run(peer.database_facts()).url
        peer.start()
        log(f"opensend: storing {args.messages} messages in one transaction")
        before = sink.messages()
        ids = asyncio.run(queue_messages(url, args.messages, args.size, not args.no_dkim))
        cpu_before = (tree_cpu(peer.pid), tree_cpu(peer.postmaster_pid()), own_cpu(peer.pid))
        started = time.monotonic()
        log("opensend: committed; delivering")
        states = asyncio.run(wait_delivered(url, ids, args.run_timeout))
        elapsed = time.monotonic() - started
        server_cpu = tree_cpu(peer.pid) - cpu_before[0]
        database_cpu = tree_cpu(peer.postmaster_pid()) - cpu_before[1]
        loop_cpu = own_cpu(peer.pid) - cpu_before[2]
        wait_until(lambda: sink.messages() - before >= args.messages, 10, "sink count")
        facts = asyncio.run(peer.database_facts())
        return {
            "target": "opensend",
            "messages": args.messages,
            "seconds": elapsed,
            "msg_per_s": args.messages / elapsed,
            "sink_received": sink.messages() - before,
            "cpu_ms_per_msg": {
                "server": server_cpu * 1000 / args.messages,
                "database": database_cpu * 1000 / args.messages,
                # The server's own process (its event loop), without its child processes.
                "server_process": loop_cpu * 1000 / args.messages,
            },
            "states": states,
            "dkim": not args.no_dkim,
            "fsync": facts.fsync,
            "synchronous_commit": facts.synchronous_commit,
        }
    finally:
        peer.stop()
        peer.stop_embedded_postgres()


# ------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=2048, help="body bytes per message")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--targets", default="postfix,opensend")
    parser.add_argument("--no-dkim", action="store_true", help="OpenSend sends unsigned")
    parser.add_argument("--database-url", default=None, help="default: embedded PostgreSQL")
    parser.add_argument("--run-timeout", type=float, default=600.0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--require-target", action="store_true")
    args = parser.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if os.geteuid() != 0 and "postfix" in targets:
        log("Postfix needs root; run as root or with --targets opensend")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-delivery-"))
    workdir.chmod(0o755)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    runs: list[dict[str, Any]] = []
    ok = True
    try:
        with SmtpSink(workdir) as sink:
            log(f"smtp-sink on 127.0.0.1:{sink.port}")
            for round_number in range(1, args.repeat + 1):
                for target in targets:
                    runner = run_postfix if target == "postfix" else run_opensend
                    try:
                        run = runner(args, workdir, sink)
                    except Exception as error:  # a failed run is reported, not hidden
                        ok = False
                        log(f"{target}: run failed: {error!r}")
                        continue
                    run["round"] = round_number
                    ok = ok and run["sink_received"] == args.messages
                    runs.append(run)
                    log(f"{target}: {run['msg_per_s']:.0f} msg/s ({run['seconds']:.2f} s)")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    ratios = []
    for round_number in range(1, args.repeat + 1):
        by = {r["target"]: r for r in runs if r["round"] == round_number}
        if "postfix" in by and "opensend" in by:
            ratios.append(by["opensend"]["msg_per_s"] / by["postfix"]["msg_per_s"])
    print(
        f"\n{'round':>5} {'target':>9} {'messages':>8} {'seconds':>8} {'msg/s':>8} "
        f"{'CPU ms/msg (server + database)':>31} {'of which the server process':>27}"
    )
    for run in runs:
        cpu = run["cpu_ms_per_msg"]
        print(
            f"{run['round']:>5} {run['target']:>9} {run['messages']:>8} "
            f"{run['seconds']:>8.2f} {run['msg_per_s']:>8.0f} "
            f"{cpu['server']:>20.3f} + {cpu['database']:.3f}"
            f"{cpu.get('server_process', cpu['server']):>28.3f}"
        )
    ratio = statistics.median(ratios) if ratios else None
    if ratio is not None:
        print(
            f"\nOpenSend / Postfix (median of {len(ratios)}): {ratio:.2f} (target {TARGET_RATIO})"
        )
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"delivery-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"args": vars(args), "runs": runs, "ratio": ratio}, indent=2))
    print(f"results: {out}")
    if args.require_target and (ratio is None or ratio < TARGET_RATIO):
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
