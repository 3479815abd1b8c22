"""MX memory benchmark: resident memory at 500 concurrent sessions, and whether one 25 MB message
stalls the other sessions.

Phases, against `opensend serve --only mta` (or `opensend serve`, `--serve full`) with its own
defaults (OPENSEND_MAX_CONNECTIONS included, unless `--max-connections` is given), and, with
`--postfix`, a private stock Postfix the same way:

1. warm-up: a few hundred small messages, so caches and the database pool are filled;
2. held: `--sessions` (500) sessions connect, greet and EHLO together and stay open; then every
   one sends `--messages-per-session` small messages at once; all stay open `--hold` seconds
   more before QUIT. RSS and PSS of the server are sampled throughout (0.25 s) and once at the
   moment all sessions are open;
3. stall: `--stall-sessions` sessions each send a small message every `--stall-interval`
   seconds; after `--lead-in` seconds one more session sends `--large-count` messages of
   `--large-size` bytes, `--gap` seconds apart. Small messages that overlapped a large one in
   flight (its MAIL FROM to its 250) are "during", the others "apart": their p99, same run;
4. after: memory once more, when the auth checks of every message are done and `--settle`
   seconds more have passed: what the server keeps.

The server's memory is shown in parts: its main process (the MX, submission and delivery), its
child processes (the auth checks, webhook deliveries), and the embedded PostgreSQL apart.

    .venv/bin/python tests/perf/bench_mx_memory.py
    .venv/bin/python tests/perf/bench_mx_memory.py --postfix   # as root: Postfix's figures too

Bounded: `--max-seconds` (900) for the whole run, `--phase-timeout` (300) per phase. Exit status
0 when every session was admitted, every message accepted and found stored, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dns_stub
from bench_report import MIB, bounded, machine_facts
from mx_memory_load import HeldRun, StallRun, hold_sessions, stall_run, summary
from opensend_peer import REPO_ROOT, OpenSendError, OpenSendPeer
from postfix_peer import PostfixPeer, PostfixPeerError
from rss_sampler import RssSampler, psutil
from smtp_load import Load, Mode, counter_total, message_bytes, run_latency

HOST = "127.0.0.1"
RESULTS_DIR = REPO_ROOT / "tests" / "perf" / "results"
Groups = dict[str, Callable[[], Iterable[int]]]


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class FullServePeer(OpenSendPeer):
    """`opensend serve`: the API, the MTA and every worker, as an operator starts it."""

    def serve_command(self) -> list[str]:
        return [*self.command, "serve"]


def opensend_groups(peer: OpenSendPeer) -> Groups:
    # Order matters: a process is counted in the first group that reaches it. PostgreSQL first
    # (it is not the server's child, but never count it as the server's), then the server's
    # children, so that "main" is the server's own process alone.
    def children() -> list[int]:
        if peer.pid is None:
            return []
        try:
            return [child.pid for child in psutil.Process(peer.pid).children()]
        except psutil.Error:
            return []

    return {
        "postgres": lambda: [pid] if (pid := peer.postmaster_pid()) else [],
        "children": children,
        "main": lambda: [peer.pid] if peer.pid else [],
    }


def memory(sampler: RssSampler, server_groups: list[str]) -> dict[str, Any]:
    """Peaks in MiB: each group's, and the server's (its groups added up sample by sample)."""
    rss, pss = sampler.peak_of_sum(server_groups)
    out: dict[str, Any] = {
        name: {"rss": round(sampler.peaks[name] / MIB, 1), "pss": round(peak / MIB, 1)}
        for name, peak in sampler.peaks_pss.items()
    }
    out["server"] = {"rss": round(rss / MIB, 1), "pss": round(pss / MIB, 1)}
    return out


def snapshot(groups: Groups, server_groups: list[str]) -> dict[str, Any]:
    sampler = RssSampler(groups)
    sampler.sample()
    return memory(sampler, server_groups)


def run_async(work: Callable[[], Awaitable[None]], timeout: float) -> str | None:
    """`work()` in a fresh event loop (uvloop when installed); a timeout is returned, not raised."""

    async def bounded_work() -> str | None:
        try:
            async with asyncio.timeout(timeout):
                await work()
        except TimeoutError:
            return f"timed out after {timeout:.0f}s"
        return None

    try:
        import uvloop
    except ImportError:
        return asyncio.run(bounded_work())
    return uvloop.run(bounded_work())


def measure(
    label: str,
    port: int,
    groups: Groups,
    server_groups: list[str],
    args: argparse.Namespace,
    stored: Callable[[], int] | None,
    settled: Callable[[], list[str]] | None = None,
) -> dict[str, Any]:
    """The phases against one server on `port`; the figures as a dict. `settled` waits until
    the server's work after the 250s is done, before the last reading."""
    result: dict[str, Any] = {"label": label, "problems": []}
    problems: list[str] = result["problems"]
    small = Load(args.warmup, 20, args.size, recipient=f"user@{args.domain}")
    stored_before = stored() if stored else None

    log(f"{label}: warm-up, {args.warmup} messages")
    warm = run_latency(HOST, port, small, Mode.REUSE, args.phase_timeout)
    problems += warm.errors[:5]
    result["idle"] = snapshot(groups, server_groups)

    log(f"{label}: held, {args.sessions} sessions")
    held = HeldRun(sessions=args.sessions)
    at: dict[str, Any] = {}
    with RssSampler(groups) as sampler:

        def remember(name: str) -> Callable[[], None]:
            def take() -> None:
                at[name] = snapshot(groups, server_groups)

            return take

        problem = run_async(
            lambda: hold_sessions(
                HOST,
                port,
                small,
                held,
                messages_per_session=args.messages_per_session,
                hold_seconds=args.hold,
                when_open=remember("open"),
                when_sent=remember("sent"),
            ),
            args.phase_timeout,
        )
    problems += [problem] if problem else []
    problems += held.errors[:5]
    if held.opened < args.sessions:
        problems.append(f"only {held.opened} of {args.sessions} sessions were admitted")
    result["held"] = {
        "sessions": args.sessions,
        "opened": held.opened,
        "messages": len(held.latencies),
        "errors": len(held.errors),
        "seconds": round(held.seconds, 2),
        "latency": summary(held.latencies),
        "all_open": at.get("open"),
        "all_sent": at.get("sent"),
        "peak": memory(sampler, server_groups),
    }

    log(f"{label}: stall, {args.large_count} x {args.large_size:,} bytes")
    large = Load(1, 1, args.large_size, recipient=f"user@{args.domain}")
    payload = message_bytes(large, 0)
    stall = StallRun()
    with RssSampler(groups) as sampler:
        problem = run_async(
            lambda: stall_run(
                HOST,
                port,
                small,
                stall,
                sessions=args.stall_sessions,
                interval=args.stall_interval,
                large=large,
                large_payload=payload,
                large_count=args.large_count,
                lead_in=args.lead_in,
                gap=args.gap,
            ),
            args.phase_timeout,
        )
    problems += [problem] if problem else []
    problems += stall.errors[:5]
    if len(stall.large) < args.large_count:
        problems.append(f"only {len(stall.large)} of {args.large_count} large messages accepted")
    during, apart = stall.split()
    result["stall"] = {
        "sessions": args.stall_sessions,
        "interval_s": args.stall_interval,
        "message_bytes": len(payload) - 3,  # without the ".\r\n" that ends DATA
        "large_ms": [round((end - begun) * 1000, 1) for begun, end in stall.large],
        "small_during": summary(during),
        "small_apart": summary(apart),
        "errors": len(stall.errors),
        "peak": memory(sampler, server_groups),
    }

    if settled is not None:
        problems += settled()
    time.sleep(args.settle)
    result["after"] = snapshot(groups, server_groups)
    if stored is not None and stored_before is not None:
        sent = warm.completed + len(held.latencies) + len(stall.small) + len(stall.large)
        grew = stored() - stored_before
        result["stored"] = {"sent": sent, "stored": grew}
        if grew != sent:
            problems.append(f"{sent} messages accepted but {grew} rows stored")
    return result


def bench_opensend(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        dns_port = stack.enter_context(dns_stub.running(args.max_seconds + 60))
        peer_class = FullServePeer if args.serve == "full" else OpenSendPeer
        peer = peer_class(
            workdir / "opensend-data",
            max_connections=args.max_connections,
            database_url=args.database_url,
            command=args.opensend_command,
            dns_server=f"{HOST}:{dns_port}",
        )
        stack.callback(peer.stop_embedded_postgres)
        label = f"opensend ({' '.join(peer.serve_command()[-3:])})"
        peer.setup_routing(args.domain, "bench")
        log(f"{label}: starting")
        stack.enter_context(peer)

        def stored() -> int:
            return asyncio.run(peer.count_received())

        def checked() -> list[str]:
            """Wait for the auth checks of every stored message (one SPF verdict each): the
            auth-check process holds a message while it checks it."""
            deadline = time.monotonic() + args.phase_timeout
            while time.monotonic() < deadline:
                text = peer.metrics_text() or ""
                done = counter_total(text, "opensend_authcheck_results_total", method="spf")
                if done is None or done >= stored():
                    return []
                time.sleep(1.0)
            return ["the auth checks did not finish within --phase-timeout"]

        try:
            return measure(
                label,
                peer.mx_port,
                opensend_groups(peer),
                ["main", "children"],
                args,
                stored,
                checked,
            )
        finally:
            if args.keep:
                log(f"{label}: server log tail:\n{peer.log_tail(10)}")


def bench_postfix(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    # Stock Postfix runs at most default_process_limit (100) smtpd processes: the 500 held
    # sessions would wait in the listen queue for ever. Its message_size_limit is 10240000.
    settings = (
        f"default_process_limit={args.sessions + args.stall_sessions + 10}",
        f"message_size_limit={max(args.large_size * 2, 10_240_000)}",
    )
    with PostfixPeer(base_dir=workdir, domain=args.domain, settings=settings) as peer:
        groups: Groups = {"server": lambda: [pid] if (pid := peer.master_pid()) else []}
        return measure("postfix", peer.port, groups, ["server"], args, None)


def render(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        lines.append(f"\n== {r['label']}")
        for phase in ("idle", "after"):
            if phase in r:
                lines.append(f"{phase:>10}: {_parts(r[phase])}")
        if "held" in r:
            h = r["held"]
            lines.append(
                f"      held: {h['opened']}/{h['sessions']} sessions open, {h['messages']} "
                f"messages in {h['seconds']} s, latency {_lat(h['latency'])}"
            )
            lines.append(f"  all open: {_parts(h['all_open'])}")
            lines.append(f"  all sent: {_parts(h['all_sent'])}")
            lines.append(f"      peak: {_parts(h['peak'])}")
        if "stall" in r:
            s = r["stall"]
            lines.append(
                f"     stall: {s['sessions']} sessions, one small message each every "
                f"{s['interval_s']} s; large messages of {s['message_bytes']:,} bytes took "
                f"{s['large_ms']} ms"
            )
            lines.append(f"   small, no large in flight: {_lat(s['small_apart'])}")
            lines.append(f"   small, a large in flight:  {_lat(s['small_during'])}")
            lines.append(f"      peak: {_parts(s['peak'])}")
        if "stored" in r:
            lines.append(f"    stored: {r['stored']}")
        for problem in r.get("problems", []):
            lines.append(f"   PROBLEM: {problem}")
    return "\n".join(lines)


def _parts(figures: dict[str, Any] | None) -> str:
    if not figures:
        return "-"
    return ", ".join(f"{name} {v['rss']:.0f}/{v['pss']:.0f}" for name, v in figures.items()) + (
        " MiB RSS/PSS"
    )


def _lat(s: dict[str, Any]) -> str:
    return f"n={s['count']} p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, max {s['max_ms']} ms"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--serve", choices=("mta", "full"), default="mta", help="`serve --only mta` or `serve`")
    add("--max-connections", type=int, default=None, help="OPENSEND_MAX_CONNECTIONS (default: "
        "the server's own)")  # fmt: skip
    add("--sessions", type=int, default=500, help="sessions held open at once")
    add("--messages-per-session", type=int, default=2)
    add("--hold", type=float, default=2.0, help="seconds all sessions stay open after sending")
    add("--size", type=int, default=2000, help="bytes of a small message's body")
    add("--warmup", type=int, default=400, help="small messages before measuring")
    add("--stall-sessions", type=int, default=50)
    add("--stall-interval", type=float, default=0.25, help="seconds between a session's messages")
    add("--large-size", type=int, default=25_000_000, help="bytes of a large message's body")
    add("--large-count", type=int, default=3)
    add("--lead-in", type=float, default=3.0, help="seconds of small messages before the first")
    add("--gap", type=float, default=3.0, help="seconds between large messages, and after")
    add("--settle", type=float, default=3.0, help="seconds before the last memory reading")
    add("--domain", default="bench.test")
    add("--database-url", default=None, help="an existing PostgreSQL instead of the embedded one")
    add("--opensend-command", type=str.split, default=None, help="how to run `opensend` "
        "(default: this tree's mta.cli on this Python)")  # fmt: skip
    add("--postfix", action="store_true", help="measure a private stock Postfix too (root)")
    add("--no-opensend", dest="opensend", action="store_false")
    add("--phase-timeout", type=float, default=300.0)
    add("--max-seconds", type=int, default=900)
    add("--json", type=Path, default=None)
    add("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started_at = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="opensend-bench-memory-"))
    workdir.chmod(0o755)  # Postfix's daemons and PostgreSQL's user must traverse it
    results: list[dict[str, Any]] = []
    failure: str | None = None
    try:
        with bounded(args.max_seconds):
            if args.opensend:
                results.append(bench_opensend(args, workdir))
            if args.postfix:
                results.append(bench_postfix(args, workdir))
    except (TimeoutError, KeyboardInterrupt, SystemExit) as exc:
        failure = f"stopped early: {exc!r}"
    except (OpenSendError, PostfixPeerError, Exception):
        failure = traceback.format_exc()
    finally:
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if failure:
        log(failure)
    print(render(results))
    out = args.json or RESULTS_DIR / f"mx-memory-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "mx-memory",
        "started_at": started_at.isoformat(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {**machine_facts(REPO_ROOT), "loadavg_at_start": os.getloadavg()},
        "results": results,
        "failure": failure,
    }
    out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"\nresults written to {out}")
    ok = failure is None and bool(results) and not any(r["problems"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
