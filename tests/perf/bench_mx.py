"""MX benchmark: OpenSend's port-25 server against a stock Postfix on the same machine.

    /work/venv/bin/python tests/perf/bench_mx.py [--messages 5000] [--sessions 20] [--size 2048]

What it does, for each server in turn (Postfix, then OpenSend with OPENSEND_MX_PROCESSES=1 and
=2), alone on the machine:

1. Throughput. Postfix's own load generator, smtp-source, sends the same load to each: `--sessions`
   parallel sessions, `--messages` messages of `--size` bytes of body, one recipient each, in two
   modes: `new-conn` (smtp-source without -d: a new connection, banner, HELO and QUIT for every
   message) and `reuse` (smtp-source -d: "don't disconnect after sending a message; send the next
   message over the same connection"). msg/s is messages completed (smtp-source's -c counter)
   divided by the wall time from smtp-source's start to its exit; every reply was the expected
   one, or smtp-source would have aborted with an error. With --repeat N the median is reported.
   The ratio is OpenSend's msg/s over Postfix's in the same mode. The issue's target is >= 2.0.

2. Durability. A 250 must mean "stored". For OpenSend the rows of `received_emails` are counted
   before and after each run (one row per message here, one recipient tenant), and the difference
   must equal what smtp-source sent. For Postfix, whose cleanup daemon fsyncs the queue file before
   smtpd answers 250, the queue manager's "(queue active)" log lines are counted the same way, and
   the queue must drain to empty through the discard transport. The database's `fsync` and
   `synchronous_commit` settings are printed: with either off, a COMMIT is not durable.

3. Latency. smtp-source prints no latency, so a separate run of a small asyncio client
   (smtp_load.py, on uvloop) sends `--latency-messages` messages with the same sessions, size and
   modes, one command at a time as smtp-source does, and times every message: in new-conn mode
   from connect to the 250 after DATA, in reuse mode from MAIL FROM to the 250 after DATA. p50 and
   p99 are nearest-rank quantiles of those times, so they include the client's own scheduling
   delay and loopback round trips; the same client measures Postfix, for comparison. When the
   server exposes it, the server-side histogram `opensend_mx_data_to_commit_seconds` from
   /metrics is also reported (p50/p99 interpolated inside Prometheus buckets, so only as precise
   as the bucket bounds, over the throughput runs); with several MX processes one scrape may see
   only the process that answered it, and the table says so when its count falls short.

4. Memory. A background thread sums RSS over each server's process tree every 0.1 s and keeps
   the peak: Postfix's master and all its children (smtpd, cleanup, qmgr, discard, postlogd, ...);
   OpenSend's server process and its children, and separately the embedded PostgreSQL's
   postmaster and backends. RSS counts shared pages once per process, so the sums overstate.

The machine is shared by load generator and server (loopback only), the same for both servers.
Results are printed as tables and written as JSON to tests/perf/results/ (gitignored).
Everything is bounded: messages per run, a timeout per run (--run-timeout), and a bound on the
whole benchmark (--max-seconds). Servers are stopped and their directories deleted on any exit.
Needs root (for Postfix's master) and Postfix's smtp-source.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from opensend_peer import REPO_ROOT, OpenSendError, OpenSendPeer
from postfix_peer import PostfixPeer, PostfixPeerError, free_loopback_port
from rss_sampler import RssSampler
from smtp_load import (
    SMTP_SOURCE,
    LatencyRun,
    Load,
    Mode,
    SourceRun,
    bucket_delta,
    histogram_buckets,
    histogram_count,
    histogram_quantile,
    run_latency,
    run_smtp_source,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
COMMIT_HISTOGRAM = "opensend_mx_data_to_commit_seconds"
TARGET_RATIO = 2.0
MIB = 1024 * 1024


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ targets


class Target(Protocol):
    """What the benchmark needs of a server under test."""

    label: str
    port: int

    def stored(self, expected: int | None = None) -> int: ...
    def settle(self) -> list[str]: ...
    def rss_groups(self) -> dict[str, Callable[[], Iterable[int]]]: ...
    def commit_histogram(self) -> dict[float, float] | None: ...


class PostfixTarget:
    def __init__(self, peer: PostfixPeer) -> None:
        self.peer = peer
        self.label = "postfix"
        self.port = peer.port

    def stored(self, expected: int | None = None) -> int:
        """Messages the queue manager took from the queue: each one had been written and fsynced.

        The log arrives through postlogd a little after the fact, so wait for it to settle.
        """
        deadline = time.monotonic() + 15.0
        accepted = self.peer.log_counts().accepted
        while time.monotonic() < deadline and accepted != expected:
            time.sleep(0.2)
            latest = self.peer.log_counts().accepted
            if latest == accepted and expected is None:
                break
            accepted = latest
        return accepted

    def settle(self) -> list[str]:
        if not self.peer.wait_drained(120.0):
            return [f"queue not drained: {self.peer.queue_size()} messages left after 120s"]
        counts = self.peer.log_counts()
        problems = []
        if counts.deferred or counts.bounced:
            problems.append(f"deferred {counts.deferred}, bounced {counts.bounced}")
        return problems

    def rss_groups(self) -> dict[str, Callable[[], Iterable[int]]]:
        return {"server": lambda: [pid] if (pid := self.peer.master_pid()) else []}

    def commit_histogram(self) -> dict[float, float] | None:
        return None


class OpenSendTarget:
    def __init__(self, peer: OpenSendPeer) -> None:
        self.peer = peer
        self.label = f"opensend {peer.processes}p"
        self.port = peer.mx_port

    def stored(self, expected: int | None = None) -> int:
        return asyncio.run(self.peer.count_received())

    def settle(self) -> list[str]:
        return []

    def rss_groups(self) -> dict[str, Callable[[], Iterable[int]]]:
        # PostgreSQL first, so that its processes are not counted as the server's if it happens
        # to be the server's child.
        return {
            "postgres": lambda: [pid] if (pid := self.peer.postmaster_pid()) else [],
            "server": lambda: [pid] if (pid := self.peer.pid) else [],
        }

    def commit_histogram(self) -> dict[float, float] | None:
        text = self.peer.metrics_text()
        if text is None:
            return None
        return histogram_buckets(text, COMMIT_HISTOGRAM) or None


# ------------------------------------------------------------------------------------ records


@dataclass(slots=True)
class RunRecord:
    mode: str
    repeat: int
    requested: int
    sent: int
    seconds: float
    msgs_per_s: float
    stored: int | None
    returncode: int
    peak_rss: dict[str, int]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(slots=True)
class LatencyRecord:
    mode: str
    requested: int
    completed: int
    seconds: float
    msgs_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    stored: int | None
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class TargetResult:
    label: str
    processes: int | None
    runs: list[RunRecord] = field(default_factory=list)
    latency: list[LatencyRecord] = field(default_factory=list)
    peak_rss: dict[str, int] = field(default_factory=dict)
    commit_hist: dict[str, dict[str, Any]] = field(default_factory=dict)
    database: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def median_rate(self, mode: Mode) -> float | None:
        rates = [run.msgs_per_s for run in self.runs if run.mode == mode and run.sent]
        return statistics.median(rates) if rates else None

    def all_ok(self) -> bool:
        return (
            not self.problems
            and bool(self.runs)
            and all(run.ok for run in self.runs)
            and all(not lat.problems for lat in self.latency)
        )


# ---------------------------------------------------------------------------------- exercising


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _check_stored(target: Target, before: int | None, sent: int) -> tuple[int | None, list[str]]:
    if before is None:
        return None, ["stored count not available"]
    try:
        after = target.stored(before + sent)
    except Exception as exc:
        return None, [f"could not count stored messages: {exc}"]
    delta = after - before
    if delta != sent:
        return delta, [f"sent {sent} but {delta} stored"]
    return delta, []


def _stored_or_none(target: Target) -> int | None:
    try:
        return target.stored()
    except Exception as exc:
        log(f"  cannot count stored messages: {exc}")
        return None


def exercise(target: Target, load: Load, args: argparse.Namespace, result: TargetResult) -> None:
    """Warm up, then the throughput runs, then the latency runs, for both modes."""
    host = "127.0.0.1"
    if args.warmup:
        for mode in Mode:
            warm = run_smtp_source(
                host, target.port, Load(args.warmup, load.sessions, load.size), mode, 120.0
            )
            if not warm.ok:
                result.problems.append(f"warm-up ({mode}) failed: {warm.stderr[-500:]}")
                return
        target.settle()

    hist_before = target.commit_histogram()
    for mode in Mode:
        for repeat in range(1, args.repeat + 1):
            before = _stored_or_none(target)
            with RssSampler(target.rss_groups()) as sampler:
                run: SourceRun = run_smtp_source(host, target.port, load, mode, args.run_timeout)
            problems = target.settle()
            if not run.ok:
                problems.append(
                    f"smtp-source exit {run.returncode}, {run.completed}/{run.requested} sent: "
                    f"{run.stderr[-500:]}"
                )
            elif run.stderr:
                problems.append(f"smtp-source said: {run.stderr[-300:]}")
            stored, stored_problems = _check_stored(target, before, run.completed)
            problems += stored_problems
            record = RunRecord(
                mode=str(mode),
                repeat=repeat,
                requested=run.requested,
                sent=run.completed,
                seconds=round(run.seconds, 4),
                msgs_per_s=round(run.msgs_per_s, 1),
                stored=stored,
                returncode=run.returncode,
                peak_rss=dict(sampler.peaks),
                problems=problems,
            )
            result.runs.append(record)
            for group, peak in sampler.peaks.items():
                result.peak_rss[group] = max(result.peak_rss.get(group, 0), peak)
            log(
                f"  {result.label:<12} {mode!s:<8} #{repeat}: {run.completed} msgs in "
                f"{run.seconds:.2f}s = {run.msgs_per_s:,.0f} msg/s, stored {stored}"
                + (f"  PROBLEMS: {problems}" if problems else "")
            )
        hist_after = target.commit_histogram()
        if hist_after is not None:
            delta = bucket_delta(hist_after, hist_before or {})
            sent = sum(r.sent for r in result.runs if r.mode == mode)
            result.commit_hist[str(mode)] = {
                "count": histogram_count(delta),
                "messages": sent,
                "p50_ms": _ms(histogram_quantile(0.5, delta)),
                "p99_ms": _ms(histogram_quantile(0.99, delta)),
                "partial": histogram_count(delta) < sent,
            }
        hist_before = hist_after

    if args.latency_messages:
        lat_load = Load(args.latency_messages, load.sessions, load.size)
        for mode in Mode:
            before = _stored_or_none(target)
            with RssSampler(target.rss_groups()) as sampler:
                lat: LatencyRun = run_latency(host, target.port, lat_load, mode, args.run_timeout)
            problems = target.settle() + lat.errors[:5]
            if len(lat.errors) > 5:
                problems.append(f"... {len(lat.errors)} errors in all")
            stored, stored_problems = _check_stored(target, before, lat.completed)
            problems += stored_problems
            for group, peak in sampler.peaks.items():
                result.peak_rss[group] = max(result.peak_rss.get(group, 0), peak)
            latencies = sorted(lat.latencies)
            lat_record = LatencyRecord(
                mode=str(mode),
                requested=lat.requested,
                completed=lat.completed,
                seconds=round(lat.seconds, 4),
                msgs_per_s=round(lat.msgs_per_s, 1),
                p50_ms=_ms(lat.quantile(0.5)),
                p99_ms=_ms(lat.quantile(0.99)),
                max_ms=_ms(latencies[-1] if latencies else None),
                stored=stored,
                problems=problems,
            )
            result.latency.append(lat_record)
            log(
                f"  {result.label:<12} {mode!s:<8} latency: p50 {lat_record.p50_ms} ms, "
                f"p99 {lat_record.p99_ms} ms over {lat.completed} msgs, stored {stored}"
                + (f"  PROBLEMS: {problems}" if problems else "")
            )


def bench_postfix(load: Load, args: argparse.Namespace, workdir: Path) -> TargetResult:
    result = TargetResult(label="postfix", processes=None)
    log("postfix: starting a private instance")
    try:
        with PostfixPeer(base_dir=workdir, domain=args.domain) as peer:
            log(f"postfix: listening on 127.0.0.1:{peer.port}")
            exercise(PostfixTarget(peer), load, args, result)
            result.problems += [f"maillog: {line}" for line in peer.problem_lines(10)]
    except PostfixPeerError as exc:
        result.problems.append(f"postfix: {exc}")
        log(f"postfix: {exc}")
    return result


def bench_opensend(
    load: Load, args: argparse.Namespace, workdir: Path, dns_server: str
) -> list[TargetResult]:
    data_dir = workdir / "opensend-data"
    results: list[TargetResult] = []
    setup = OpenSendPeer(
        data_dir,
        database_url=args.database_url,
        command=args.opensend_command,
        dns_server=dns_server,
    )
    try:
        log(f"opensend: setting up routing for *@{args.domain} in {data_dir}")
        setup.setup_routing(args.domain, args.tenant)
    except OpenSendError as exc:
        log(f"opensend: setup failed: {exc}")
        for processes in args.processes:
            failed = TargetResult(label=f"opensend {processes}p", processes=processes)
            failed.problems.append(f"setup failed: {exc}")
            results.append(failed)
        return results

    for processes in args.processes:
        result = TargetResult(label=f"opensend {processes}p", processes=processes)
        results.append(result)
        peer = OpenSendPeer(
            data_dir,
            processes=processes,
            max_connections=args.max_connections,
            database_url=args.database_url,
            command=args.opensend_command,
            dns_server=dns_server,
        )
        log(f"opensend: starting serve --only mta with {processes} MX process(es)")
        try:
            with peer:
                log(f"opensend: MX on 127.0.0.1:{peer.mx_port}, healthz {peer.healthz()}")
                target = OpenSendTarget(peer)
                try:
                    facts = asyncio.run(peer.database_facts())
                    result.database = {
                        "database": facts.database,
                        "fsync": facts.fsync,
                        "synchronous_commit": facts.synchronous_commit,
                    }
                    if facts.fsync != "on" or facts.synchronous_commit not in (
                        "on",
                        "remote_apply",
                    ):
                        result.problems.append(
                            f"database commits are not durable: fsync={facts.fsync}, "
                            f"synchronous_commit={facts.synchronous_commit}"
                        )
                except Exception as exc:
                    result.problems.append(f"database not found: {exc}")
                exercise(target, load, args, result)
        except OpenSendError as exc:
            result.problems.append(str(exc))
            log(f"opensend: {exc}")
        finally:
            if peer.log_tail(5).strip() and any(not r.ok for r in result.runs):
                log(f"opensend log tail:\n{peer.log_tail(20)}")
    setup.stop_embedded_postgres()
    return results


# ----------------------------------------------------------------------------------- reporting


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def _mib(value: int | None) -> str:
    return "-" if not value else f"{value / MIB:,.0f}"


def report(results: list[TargetResult]) -> tuple[str, dict[str, Any]]:
    postfix = next((r for r in results if r.label == "postfix"), None)
    lines: list[str] = []
    ratios: dict[str, dict[str, float | None]] = {}

    lines.append("Throughput (smtp-source; median over repeats)")
    header = f"{'server':<13} {'mode':<9} {'sent':>7} {'stored':>7} {'msg/s':>9} {'vs postfix':>10}"
    lines += [header, "-" * len(header)]
    for result in results:
        for mode in Mode:
            runs = [r for r in result.runs if r.mode == mode]
            rate = result.median_rate(mode)
            base = postfix.median_rate(mode) if postfix else None
            ratio = rate / base if rate is not None and base and result is not postfix else None
            if result is not postfix:
                ratios.setdefault(result.label, {})[str(mode)] = (
                    round(ratio, 3) if ratio is not None else None
                )
            sent = sum(r.sent for r in runs)
            stored = sum(r.stored or 0 for r in runs) if runs else None
            lines.append(
                f"{result.label:<13} {mode!s:<9} {sent:>7} {_fmt(stored, 'd'):>7} "
                f"{_fmt(rate):>9} {(_fmt(ratio, '.2f') + 'x') if ratio else '-':>10}"
            )

    lines.append("")
    lines.append("Latency per message (asyncio client, same sessions/size) and peak memory")
    header = (
        f"{'server':<13} {'mode':<9} {'msgs':>6} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'commit p50/p99 ms':>18} {'RSS MiB':>8} {'+PG MiB':>8}"
    )
    lines += [header, "-" * len(header)]
    for result in results:
        for mode in Mode:
            lat = next((x for x in result.latency if x.mode == mode), None)
            hist = result.commit_hist.get(str(mode))
            commit = "-"
            if hist:
                commit = f"{_fmt(hist['p50_ms'], '.1f')}/{_fmt(hist['p99_ms'], '.1f')}"
                if hist["partial"]:
                    commit += "*"
            lines.append(
                f"{result.label:<13} {mode!s:<9} {lat.completed if lat else 0:>6} "
                f"{_fmt(lat.p50_ms if lat else None, '.2f'):>8} "
                f"{_fmt(lat.p99_ms if lat else None, '.2f'):>8} {commit:>18} "
                f"{_mib(result.peak_rss.get('server')):>8} "
                f"{_mib(result.peak_rss.get('postgres')):>8}"
            )
    if any(h.get("partial") for r in results for h in r.commit_hist.values()):
        lines.append(
            "* the /metrics histogram counted fewer messages than were sent (one process?)"
        )

    lines.append("")
    for label, by_mode in ratios.items():
        known = [v for v in by_mode.values() if v is not None]
        verdict = (
            "MET"
            if known and len(known) == len(by_mode) and min(known) >= TARGET_RATIO
            else "NOT MET"
        )
        detail = ", ".join(f"{m} {_fmt(v, '.2f')}x" for m, v in by_mode.items())
        lines.append(f"target >= {TARGET_RATIO:.1f}x postfix msg/s, {label}: {verdict} ({detail})")
    for result in results:
        if result.database:
            lines.append(f"{result.label} database: {result.database}")
        problems = result.problems + [p for r in result.runs for p in r.problems]
        problems += [p for lat in result.latency for p in lat.problems]
        for problem in problems[:10]:
            lines.append(f"PROBLEM {result.label}: {problem}")
    return "\n".join(lines), ratios


def machine_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "cpus": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu_model"] = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
        facts["memory_gib"] = round(mem_kib / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    for key, command in (
        ("postfix", ["postconf", "-h", "mail_version"]),
        ("git_commit", ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"]),
    ):
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
            if out.returncode == 0:
                facts[key] = out.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    return facts


# ---------------------------------------------------------------------------------------- main


@contextmanager
def bounded(seconds: int) -> Iterator[None]:
    """Turn SIGTERM and SIGALRM (after `seconds`) into exceptions, so every `finally` runs."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"the benchmark's bound of {seconds}s was reached")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous_alarm = signal.signal(signal.SIGALRM, on_alarm)
    previous_term = signal.signal(signal.SIGTERM, on_term)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous_alarm)
        signal.signal(signal.SIGTERM, previous_term)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare OpenSend's MX with a stock Postfix (smtp-source load).",
        epilog="See the module docstring and tests/perf/README.md for what is measured.",
    )
    parser.add_argument("--messages", type=int, default=5000, help="messages per run")
    parser.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions")
    parser.add_argument("--size", type=int, default=2048, help="body bytes per message")
    parser.add_argument("--repeat", type=int, default=1, help="runs per mode; median reported")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured messages per mode")
    parser.add_argument(
        "--latency-messages", type=int, default=2000, help="messages per latency run (0: none)"
    )
    parser.add_argument(
        "--processes",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        default=[1, 2],
        help="OPENSEND_MX_PROCESSES values to run, comma-separated (default 1,2)",
    )
    parser.add_argument(
        "--targets",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=["postfix", "opensend"],
        help="which servers: postfix,opensend (default both)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=100,
        help="OPENSEND_MAX_CONNECTIONS (default 100, as Postfix's default_process_limit)",
    )
    parser.add_argument("--database-url", default=None, help="use this PostgreSQL, not embedded")
    parser.add_argument(
        "--opensend-command",
        type=lambda s: s.split(),
        default=None,
        help="how to run `opensend` (default: this tree's mta.cli with the current Python)",
    )
    parser.add_argument("--domain", default="bench.test")
    parser.add_argument("--tenant", default="bench")
    parser.add_argument("--run-timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument(
        "--max-seconds", type=int, default=3600, help="bound on the whole benchmark"
    )
    parser.add_argument("--json", type=Path, default=None, help="results file (default: results/)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--require-target",
        action="store_true",
        help=f"exit 1 unless every OpenSend configuration reaches {TARGET_RATIO}x Postfix",
    )
    args = parser.parse_args(argv)
    for name in ("messages", "sessions", "size", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    unknown = set(args.targets) - {"postfix", "opensend"}
    if unknown:
        parser.error(f"--targets: unknown {sorted(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(SMTP_SOURCE).exists():
        log(f"{SMTP_SOURCE} not found: install postfix (it ships smtp-source)")
        return 2
    load = Load(args.messages, args.sessions, args.size, recipient=f"user@{args.domain}")
    started_at = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="opensend-bench-"))
    workdir.chmod(0o755)  # Postfix's daemons, and PostgreSQL's user, must traverse it
    results: list[TargetResult] = []
    dns: subprocess.Popen[bytes] | None = None
    failure: str | None = None
    try:
        with bounded(args.max_seconds):
            if "postfix" in args.targets:
                results.append(bench_postfix(load, args, workdir))
            if "opensend" in args.targets:
                dns_port = free_loopback_port()
                dns = subprocess.Popen(
                    [
                        sys.executable,
                        str(Path(__file__).with_name("dns_stub.py")),
                        "--port",
                        str(dns_port),
                        "--seconds",
                        str(args.max_seconds + 60),
                    ],
                    stdout=subprocess.DEVNULL,
                )
                results += bench_opensend(load, args, workdir, f"127.0.0.1:{dns_port}")
    except (TimeoutError, KeyboardInterrupt, SystemExit) as exc:
        failure = f"stopped early: {exc!r}"
        log(failure)
    except Exception:
        failure = traceback.format_exc()
        log(failure)
    finally:
        if dns is not None:
            dns.terminate()
            dns.wait(10)
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    table, ratios = report(results)
    print(table)
    document = {
        "benchmark": "mx",
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "load": asdict(load),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine_facts(),
        "results": [asdict(r) for r in results],
        "ratios_vs_postfix": ratios,
        "target_ratio": TARGET_RATIO,
        "failure": failure,
    }
    out = args.json or RESULTS_DIR / f"mx-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"\nresults written to {out}")

    ok = failure is None and bool(results) and all(r.all_ok() for r in results)
    if args.require_target:
        ok = ok and all(
            v is not None and v >= TARGET_RATIO for by in ratios.values() for v in by.values()
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
