"""Auth-check benchmark: how fast the authentication checks of received mail catch up.

    .venv/bin/python tests/perf/bench_authcheck.py                  # 5000 messages, 1 round
    .venv/bin/python tests/perf/bench_authcheck.py --messages 3000 --repeat 3
    .venv/bin/python tests/perf/bench_authcheck.py --help

Needs smtp-source (Postfix's); no root, loopback only. `opensend serve --only mta` from this
tree (opensend_peer.py: embedded PostgreSQL, `dns_stub.py` as OPENSEND_DNS_SERVERS, so every
lookup is answered NXDOMAIN at once and the checks cost what their own work costs) receives a
burst of `--messages` messages from smtp-source, reused connections, 20 sessions, 2 KB each.
The checks run beside it from the first message (bench_mx.py shows what that costs the MX);
when smtp-source exits, the messages still without a `received_auth_results` row are timed
until every one has one: checks/s is that backlog over that time, with nothing else running.
(The database is new, so all its mail is above the checker's watermark.)

Exit status 0 when every message was stored and checked. Results are printed and written as
JSON to tests/perf/results/authcheck-*.json. Bounded: `--drain-timeout` per round,
`--max-seconds` for the whole; the server and the embedded database are stopped and the work
directory deleted on every exit (`--keep` keeps it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import dns_stub
import psutil
from bench_mx import HOST, RESULTS_DIR, log
from bench_report import bounded, machine_facts
from opensend_peer import REPO_ROOT, OpenSendError, OpenSendPeer
from smtp_load import Load, Mode, run_smtp_source

COUNT = """
SELECT (SELECT count(*) FROM received_emails)::int AS stored,
       (SELECT count(*) FROM received_emails r WHERE NOT EXISTS (
            SELECT 1 FROM received_auth_results a WHERE a.received_id = r.id))::int AS queued,
       (SELECT count(*) FROM received_auth_results WHERE next_check_at IS NULL)::int AS final
"""


async def counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url, timeout=30.0)
    try:
        row = await conn.fetchrow(COUNT)
    finally:
        await conn.close()
    return dict(row)


def cpu_seconds(peer: OpenSendPeer) -> dict[str, float]:
    """CPU time so far of the server's main process (the MX) and of its children (the auth
    checker, and the webhook process, idle here: no endpoint is subscribed)."""
    assert peer.pid is not None
    main = psutil.Process(peer.pid)
    times = main.cpu_times()
    children = 0.0
    for child in main.children(recursive=True):
        try:
            child_times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        children += child_times.user + child_times.system
    return {"mx": times.user + times.system, "children": children}


def drain_round(peer: OpenSendPeer, url: str, load: Load, timeout: float) -> dict[str, Any]:
    before = asyncio.run(counts(url))
    cpu_before = cpu_seconds(peer)
    run = run_smtp_source(HOST, peer.mx_port, load, Mode.REUSE, timeout)
    at_end = asyncio.run(counts(url))
    started = time.perf_counter()
    deadline = started + timeout
    latest = at_end
    while latest["queued"] and time.perf_counter() < deadline:
        time.sleep(0.05)  # the checks write rows; nothing announces the last one
        latest = asyncio.run(counts(url))
    seconds = time.perf_counter() - started
    cpu_after = cpu_seconds(peer)
    stored = at_end["stored"] - before["stored"]
    problems = []
    if not run.ok:
        problems.append(f"smtp-source exit {run.returncode}: {run.stderr[-300:]!r}")
    if stored != run.completed:
        problems.append(f"sent {run.completed} but {stored} stored")
    if latest["queued"]:
        problems.append(f"{latest['queued']} still unchecked after {timeout:.0f}s")
    if latest["final"] - before["final"] != stored:
        problems.append(f"{stored} stored, {latest['final'] - before['final']} checked")
    backlog = at_end["queued"]
    return {
        "sent": run.completed,
        "mx_msgs_per_s": round(run.msgs_per_s, 1),
        "checked_during_burst": stored - (backlog - before["queued"]),
        "backlog_at_end": backlog,
        "drain_seconds": round(seconds, 3),
        "checks_per_s": round(backlog / seconds, 1) if backlog and seconds else None,
        # Through the burst and the drain, per message stored.
        "cpu_ms_per_msg": {
            name: round(1000 * (cpu_after[name] - cpu_before[name]) / max(stored, 1), 3)
            for name in cpu_after
        },
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="How fast OpenSend's authentication checks drain a burst of received mail.",
        epilog="What is measured, and how: this file's docstring and tests/perf/README.md.",
    )
    parser.add_argument("--messages", type=int, default=5000, help="per round (default 5000)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (default 1)")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="seconds per round")
    parser.add_argument("--max-seconds", type=int, default=1200, help="bound on everything")
    parser.add_argument("--json", type=Path, help="results file (default results/authcheck-*)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="opensend-authcheck-bench-"))
    started_at = datetime.now(UTC)
    rounds: list[dict[str, Any]] = []
    failure: str | None = None
    setup = OpenSendPeer(workdir / "opensend-data")
    try:
        with bounded(args.max_seconds), dns_stub.running(args.max_seconds + 60) as dns_port:
            setup.setup_routing("bench.test", "bench")
            peer = OpenSendPeer(workdir / "opensend-data", dns_server=f"{HOST}:{dns_port}")
            with peer:
                url = asyncio.run(peer.database_facts()).url
                for number in range(1, args.repeat + 1):
                    result = drain_round(
                        peer, url, Load(args.messages, 20, 2048), args.drain_timeout
                    )
                    rounds.append(result)
                    log(
                        f"round {number}: MX {result['mx_msgs_per_s']:,.0f} msg/s; "
                        f"{result['checked_during_burst']} checked during the burst, "
                        f"{result['backlog_at_end']} left, drained in {result['drain_seconds']}s "
                        f"= {result['checks_per_s'] or 0:,.0f} checks/s; CPU ms a message: "
                        f"MX {result['cpu_ms_per_msg']['mx']}, "
                        f"checker {result['cpu_ms_per_msg']['children']}"
                        + (f"  PROBLEMS: {result['problems']}" if result["problems"] else "")
                    )
    except (OpenSendError, TimeoutError, OSError) as exc:
        failure = str(exc)
        log(f"failed: {exc}")
    finally:
        setup.stop_embedded_postgres()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    rates = [r["checks_per_s"] for r in rounds if r["checks_per_s"]]
    if rates:
        median = statistics.median(rates)
        print(f"checks/s draining the backlog, median of {len(rates)} rounds: {median:,.0f}")
    path = args.json or RESULTS_DIR / f"authcheck-{started_at:%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    facts = machine_facts(REPO_ROOT)
    path.write_text(
        json.dumps(
            {"benchmark": "authcheck", "started_at": started_at.isoformat(), "args": vars(args)}
            | {"machine": facts, "rounds": rounds, "failure": failure},
            indent=2,
            default=str,
        )
    )
    print(f"results written to {path}")
    ok = failure is None and bool(rounds) and not any(r["problems"] for r in rounds)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
