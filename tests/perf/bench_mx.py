"""MX benchmark: OpenSend's port-25 server against a stock Postfix on the same machine.

    .venv/bin/python tests/perf/bench_mx.py [--messages 5000] [--sessions 20] [--size 2048]

Needs root (Postfix's master runs as root) and Postfix's smtp-source. Everything is on loopback.

Throughput. Postfix's own load generator, smtp-source, sends the same load to both servers:
`--sessions` parallel sessions, `--messages` messages per run with `--size` bytes of body, one
recipient each, in two modes: `new-conn` (smtp-source without -d: a new connection, banner, HELO
and QUIT for every message) and `reuse` (smtp-source -d: "don't disconnect after sending a
message; send the next message over the same connection", smtp-source(1)). msg/s is messages
completed (smtp-source's -c counter) over the wall time from smtp-source's start to its exit.
smtp-source aborts on any unexpected reply, so a clean exit means every reply was a success.

Pairing. A stock Postfix (postfix_peer.py: its own directories, loopback port, queue then discard)
stays up the whole time; each OpenSend configuration (OPENSEND_MX_PROCESSES=1, then 2) is started
in turn, and in each of `--repeat` rounds, for each mode, Postfix and OpenSend run back to back.
Only one of them has load at a time. The ratio is OpenSend's msg/s over Postfix's within a round
(the median over rounds), so drift in the machine's speed (a shared VM, a busy disk) hits both
sides of each ratio alike. The issue's target is a ratio of at least 2.0 in both modes.

Durability. A 250 must mean stored. For OpenSend, `received_emails` rows are counted before and
after every run (one row per message here: one recipient tenant) and the difference must equal
what was sent; the database's `fsync` and `synchronous_commit` are printed, since with either off
a COMMIT is not durable. For Postfix, whose cleanup daemon fsyncs the queue file before smtpd
answers 250, the queue manager's "(queue active)" log lines are counted the same way, and the
queue must then drain to empty through the discard transport.

Latency. smtp-source reports none, so after the throughput rounds a small asyncio client
(smtp_load.py, on uvloop) sends `--latency-messages` messages per mode with the same sessions and
size, one command at a time as smtp-source does, and times each message: in new-conn mode from
connect to the 250 after DATA, in reuse mode from MAIL FROM to the 250 after DATA. p50/p99 are
nearest-rank quantiles of those times: they include loopback round trips and the client's own
scheduling delay, and the same client measures Postfix for comparison. The server's own histogram
`opensend_mx_data_to_commit_seconds` (end of DATA to COMMIT, from /metrics) is also shown, over
the throughput runs; its p50/p99 are interpolated inside Prometheus buckets, so they are only as
fine as the bucket bounds.

Memory. While the latency runs go on (not during the throughput runs, so that sampling costs
those nothing), a thread sums RSS and PSS over each server's process tree every 0.25 s and keeps
the peak: Postfix's master with all its children (smtpd, cleanup, qmgr, discard, postlogd...);
OpenSend's server process with its MX workers, and separately the embedded PostgreSQL (postmaster
and backends). RSS counts a shared page in every process mapping it, so for a tree of many
processes (Postfix's) its sum overstates badly; PSS splits shared pages and is the fair sum.

Results are printed as tables and written as JSON to tests/perf/results/ (gitignored). All of it
is bounded: messages per run, `--run-timeout` per run, `--max-seconds` for the whole benchmark;
the servers are stopped and their directories deleted on any exit, errors and SIGTERM included.
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
from collections.abc import Callable, Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import dns_stub
from bench_report import (
    TARGET_RATIO,
    LatencyRecord,
    RunRecord,
    TargetResult,
    bounded,
    machine_facts,
    ratios_vs_postfix,
    render,
)
from opensend_peer import REPO_ROOT, OpenSendError, OpenSendPeer
from postfix_peer import PostfixPeer, PostfixPeerError
from rss_sampler import RssSampler, psutil, tree
from smtp_load import (
    SMTP_SOURCE,
    Load,
    Mode,
    bucket_delta,
    counter_total,
    histogram_buckets,
    histogram_count,
    histogram_quantile,
    run_latency,
    run_smtp_source,
)
from webhook_sink import WebhookSink

RESULTS_DIR = Path(__file__).resolve().parent / "results"
COMMIT_HISTOGRAM = "opensend_mx_data_to_commit_seconds"
AUTHCHECK_COUNTER = "opensend_authcheck_results_total"
HOST = "127.0.0.1"


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
    def auth_checked(self) -> int | None: ...
    def cpu_seconds(self) -> dict[str, float]: ...


class PostfixTarget:
    def __init__(self, peer: PostfixPeer) -> None:
        self.peer = peer
        self.label = "postfix"
        self.port = peer.port

    def stored(self, expected: int | None = None) -> int:
        """Messages the queue manager took from the queue; each had been written and fsynced.

        The log arrives through postlogd a moment after the fact, so wait for it to settle.
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
        if counts.deferred or counts.bounced:
            return [f"deferred {counts.deferred}, bounced {counts.bounced}"]
        return []

    def rss_groups(self) -> dict[str, Callable[[], Iterable[int]]]:
        return {"server": lambda: [pid] if (pid := self.peer.master_pid()) else []}

    def commit_histogram(self) -> dict[float, float] | None:
        return None

    def auth_checked(self) -> int | None:
        return None

    def cpu_seconds(self) -> dict[str, float]:
        return {}


class OpenSendTarget:
    def __init__(self, peer: OpenSendPeer) -> None:
        self.peer = peer
        self.label = f"opensend {peer.processes}p"
        self.port = peer.mx_port

    def stored(self, expected: int | None = None) -> int:
        return asyncio.run(self.peer.count_received())

    def settle(self) -> list[str]:
        """Until the MX has filled in what it stored unparsed during the run (mta/mx/fill_in.py),
        so that this work is counted with the run and does not slow the next one, Postfix's."""
        waited = asyncio.run(self.peer.wait_filled_in(300.0))
        if waited is None:
            return ["messages still waiting for their fill-in 300 s after the run"]
        self.fill_in_seconds = waited
        return []

    fill_in_seconds = 0.0

    def rss_groups(self) -> dict[str, Callable[[], Iterable[int]]]:
        # PostgreSQL first, so its processes are never counted as the server's own.
        return {
            "postgres": lambda: [pid] if (pid := self.peer.postmaster_pid()) else [],
            "server": lambda: [pid] if (pid := self.peer.pid) else [],
        }

    def commit_histogram(self) -> dict[float, float] | None:
        text = self.peer.metrics_text()
        if text is None:
            return None
        return histogram_buckets(text, COMMIT_HISTOGRAM) or None

    def auth_checked(self) -> int | None:
        """Messages the auth-check process has checked since it started: one SPF verdict each.
        None for a server without the checks (or without /metrics)."""
        text = self.peer.metrics_text()
        if text is None:
            return None
        return counter_total(text, AUTHCHECK_COUNTER, method="spf")

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by the server's own process, by its children, and by
        PostgreSQL (its backends come and go: the reaped ones are counted through the
        postmaster)."""
        used: dict[str, float] = {}
        if (pid := self.peer.pid) is not None:
            server = tree(pid)
            if server:
                own = server[0].cpu_times()
                used["mx"] = own.user + own.system
                used["children"] = sum(_cpu(p, reaped=False) for p in server[1:])
        if (postmaster := self.peer.postmaster_pid()) is not None:
            used["database"] = sum(_cpu(p, reaped=True) for p in tree(postmaster))
        return used


def _cpu(process: psutil.Process, *, reaped: bool) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0  # ended between listing and reading
    total: float = times.user + times.system
    if reaped:
        total += times.children_user + times.children_system
    return total


# ---------------------------------------------------------------------------------- measuring


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _stored_before(target: Target) -> int | None:
    try:
        return target.stored()
    except Exception as exc:
        log(f"  {target.label}: cannot count stored messages: {exc}")
        return None


def _stored_delta(target: Target, before: int | None, sent: int) -> tuple[int | None, list[str]]:
    if before is None:
        return None, ["stored messages could not be counted"]
    try:
        after = target.stored(before + sent)
    except Exception as exc:
        return None, [f"stored messages could not be counted: {exc}"]
    delta = after - before
    return delta, [] if delta == sent else [f"sent {sent} but {delta} stored"]


def warm_up(target: Target, load: Load, messages: int) -> list[str]:
    """Unmeasured runs in both modes: caches, pools, lazily started processes."""
    if not messages:
        return []
    for mode in Mode:
        run = run_smtp_source(
            HOST, target.port, Load(messages, load.sessions, load.size), mode, 120
        )
        if not run.ok:
            return [f"warm-up ({mode}) failed: exit {run.returncode}: {run.stderr[-300:]}"]
    return target.settle()


def throughput_run(
    target: Target,
    result: TargetResult,
    load: Load,
    mode: Mode,
    *,
    block: str,
    round_number: int,
    timeout: float,
) -> RunRecord:
    before = _stored_before(target)
    hist_before = target.commit_histogram()
    checked_before = target.auth_checked()
    cpu_before = target.cpu_seconds()
    run = run_smtp_source(HOST, target.port, load, mode, timeout)
    cpu_after = target.cpu_seconds()
    checked_after = target.auth_checked()
    hist_after = target.commit_histogram()
    problems = target.settle()
    # The MX's and PostgreSQL's CPU through the fill-in of what was stored unparsed (work of
    # this run, done after it); the children's (auth checks, webhooks: they run on whenever
    # there is work) up to smtp-source's exit, as before the fill-in existed.
    cpu_settled = target.cpu_seconds()
    for part in ("mx", "database"):
        if part in cpu_settled:
            cpu_after[f"{part}_at_exit"] = cpu_after[part]
            cpu_before[f"{part}_at_exit"] = cpu_before[part]
            cpu_after[part] = cpu_settled[part]
    if not run.ok:
        problems.append(
            f"smtp-source exit {run.returncode}, {run.completed}/{run.requested} sent: "
            f"{run.stderr[-500:]}"
        )
    elif run.stderr:
        problems.append(f"smtp-source said: {run.stderr[-300:]}")
    stored, stored_problems = _stored_delta(target, before, run.completed)
    record = RunRecord(
        mode=str(mode),
        block=block,
        round=round_number,
        requested=run.requested,
        sent=run.completed,
        seconds=round(run.seconds, 4),
        msgs_per_s=round(run.msgs_per_s, 1),
        stored=stored,
        returncode=run.returncode,
        problems=problems + stored_problems,
        checked=(
            None
            if checked_before is None or checked_after is None
            else checked_after - checked_before
        ),
        cpu_ms_per_msg={
            part: round((cpu_after[part] - cpu_before[part]) * 1000 / run.completed, 4)
            for part in cpu_after
            if part in cpu_before and run.completed
        },
    )
    result.runs.append(record)
    if hist_after is not None:
        acc = result.commit_buckets.setdefault(str(mode), {})
        for le, count in bucket_delta(hist_after, hist_before or {}).items():
            acc[le] = acc.get(le, 0.0) + count
    log(
        f"  {result.label:<12} {mode!s:<8} round {round_number}: {run.completed} msgs in "
        f"{run.seconds:.2f}s = {run.msgs_per_s:,.0f} msg/s, stored {stored}"
        + (f", auth-checked {record.checked}" if record.checked is not None else "")
        + (f"  PROBLEMS: {record.problems}" if record.problems else "")
    )
    return record


def latency_runs(target: Target, result: TargetResult, load: Load, timeout: float) -> None:
    for mode in Mode:
        before = _stored_before(target)
        with RssSampler(target.rss_groups()) as sampler:
            lat = run_latency(HOST, target.port, load, mode, timeout)
        problems = target.settle() + lat.errors[:5]
        if len(lat.errors) > 5:
            problems.append(f"... {len(lat.errors)} errors in all")
        stored, stored_problems = _stored_delta(target, before, lat.completed)
        record = LatencyRecord(
            mode=str(mode),
            requested=lat.requested,
            completed=lat.completed,
            seconds=round(lat.seconds, 4),
            msgs_per_s=round(lat.msgs_per_s, 1),
            p50_ms=_ms(lat.quantile(0.5)),
            p99_ms=_ms(lat.quantile(0.99)),
            max_ms=_ms(max(lat.latencies, default=None)),
            stored=stored,
            peak_rss=dict(sampler.peaks),
            peak_pss=dict(sampler.peaks_pss),
            problems=problems + stored_problems,
        )
        result.latency.append(record)
        log(
            f"  {result.label:<12} {mode!s:<8} latency: p50 {record.p50_ms} ms, p99 "
            f"{record.p99_ms} ms over {lat.completed} msgs, stored {stored}, peak RSS "
            f"{ {k: v >> 20 for k, v in sampler.peaks.items()} } MiB"
            + (f"  PROBLEMS: {record.problems}" if record.problems else "")
        )


def summarise_histograms(result: TargetResult) -> None:
    for mode, buckets in result.commit_buckets.items():
        sent = sum(run.sent for run in result.runs if run.mode == mode)
        result.commit_hist[mode] = {
            "count": histogram_count(buckets),
            "messages": sent,
            "p50_ms": _ms(histogram_quantile(0.5, buckets)),
            "p99_ms": _ms(histogram_quantile(0.99, buckets)),
            "partial": histogram_count(buckets) < sent,
        }


# ---------------------------------------------------------------------------------- the plan


def bench_opensend_config(
    processes: int,
    args: argparse.Namespace,
    load: Load,
    data_dir: Path,
    dns_server: str,
    postfix: PostfixTarget | None,
    postfix_result: TargetResult | None,
    results: list[TargetResult],
) -> None:
    """One OpenSend configuration, each of its runs paired with a Postfix run."""
    result = TargetResult(label=f"opensend {processes}p", processes=processes)
    results.append(result)  # first, so that what was measured survives an early stop
    peer = OpenSendPeer(
        data_dir,
        processes=processes,
        max_connections=args.max_connections,
        database_url=args.database_url,
        command=args.opensend_command,
        dns_server=dns_server,
        auth_checks=args.auth_checks == "on",
    )
    log(
        f"{result.label}: starting `opensend serve --only mta` (auth checks {args.auth_checks}, "
        f"email.received webhook {args.webhook})"
    )
    try:
        with peer, contextlib.ExitStack() as sinks:
            log(f"{result.label}: MX on {HOST}:{peer.mx_port}, /healthz {peer.healthz()}")
            sink = None
            if args.webhook == "on":
                sink = sinks.enter_context(WebhookSink())
                asyncio.run(
                    peer.subscribe(args.tenant, f"{sink.url}/{processes}p", "email.received")
                )
                sinks.callback(lambda: result.notes.append(f"webhook POSTs received: {sink.posts}"))
            try:
                facts = asyncio.run(peer.database_facts())
                result.database = {
                    "database": facts.database,
                    "fsync": facts.fsync,
                    "synchronous_commit": facts.synchronous_commit,
                }
                if facts.fsync != "on" or facts.synchronous_commit not in ("on", "remote_apply"):
                    result.problems.append(f"commits are not durable: {result.database}")
            except Exception as exc:
                result.problems.append(f"database not found: {exc}")
            target = OpenSendTarget(peer)
            result.problems += warm_up(target, load, args.warmup)
            for round_number in range(1, args.repeat + 1):
                for mode in Mode:
                    if postfix is not None and postfix_result is not None:
                        throughput_run(
                            postfix,
                            postfix_result,
                            load,
                            mode,
                            block=result.label,
                            round_number=round_number,
                            timeout=args.run_timeout,
                        )
                    record = throughput_run(
                        target,
                        result,
                        load,
                        mode,
                        block=result.label,
                        round_number=round_number,
                        timeout=args.run_timeout,
                    )
                    if record.returncode != 0:
                        result.problems.append(
                            "a run failed: the rest of this configuration skipped"
                        )
                        return
            if args.latency_messages:
                lat_load = Load(args.latency_messages, load.sessions, load.size)
                latency_runs(target, result, lat_load, args.run_timeout)
    except OpenSendError as exc:
        result.problems.append(str(exc))
        log(f"{result.label}: {exc}")
    finally:
        summarise_histograms(result)
        tail = peer.log_tail(6).strip()
        if tail and tail != "(no log)":
            result.notes += [f"server log: {line}" for line in tail.splitlines()]
        if result.all_problems():
            log(f"{result.label}: server log tail:\n{peer.log_tail(20)}")


def run_benchmark(
    args: argparse.Namespace, load: Load, workdir: Path, results: list[TargetResult]
) -> None:
    with contextlib.ExitStack() as stack:
        postfix: PostfixTarget | None = None
        postfix_result: TargetResult | None = None
        if "postfix" in args.targets:
            log("postfix: starting a private instance")
            postfix_result = TargetResult(label="postfix", processes=None)
            results.append(postfix_result)
            try:
                peer = stack.enter_context(PostfixPeer(base_dir=workdir, domain=args.domain))
            except PostfixPeerError as exc:
                postfix_result.problems.append(f"could not start: {exc}")
                log(f"postfix: could not start: {exc}")
            else:
                log(f"postfix: listening on {HOST}:{peer.port}, directories in {peer.root}")
                postfix = PostfixTarget(peer)
                postfix_result.problems += warm_up(postfix, load, args.warmup)

        if "opensend" in args.targets:
            dns_port = stack.enter_context(dns_stub.running(args.max_seconds + 60))
            data_dir = workdir / "opensend-data"
            setup = OpenSendPeer(
                data_dir, database_url=args.database_url, command=args.opensend_command
            )
            stack.callback(setup.stop_embedded_postgres)
            log(f"opensend: routing *@{args.domain} to tenant {args.tenant!r} in {data_dir}")
            try:
                setup.setup_routing(args.domain, args.tenant)
            except OpenSendError as exc:
                log(f"opensend: setup failed: {exc}")
                for processes in args.processes:
                    failed = TargetResult(label=f"opensend {processes}p", processes=processes)
                    failed.problems.append(f"setup failed: {exc}")
                    results.append(failed)
            else:
                for processes in args.processes:
                    bench_opensend_config(
                        processes,
                        args,
                        load,
                        data_dir,
                        f"{HOST}:{dns_port}",
                        postfix,
                        postfix_result,
                        results,
                    )
        if postfix is not None and postfix_result is not None and not postfix_result.runs:
            # Postfix alone: asked for, or OpenSend could not be set up to pair with.
            for round_number in range(1, args.repeat + 1):
                for mode in Mode:
                    throughput_run(
                        postfix,
                        postfix_result,
                        load,
                        mode,
                        block="",
                        round_number=round_number,
                        timeout=args.run_timeout,
                    )

        if postfix is not None and postfix_result is not None and args.latency_messages:
            lat_load = Load(args.latency_messages, load.sessions, load.size)
            latency_runs(postfix, postfix_result, lat_load, args.run_timeout)
        if postfix is not None and postfix_result is not None:
            postfix_result.problems += [
                f"maillog: {line}" for line in postfix.peer.log_lines(errors=True, limit=10)
            ]
            # Such as "file system clock is 1 seconds ahead of local clock" on a VM.
            postfix_result.notes += [
                f"maillog: {line}" for line in postfix.peer.log_lines(errors=False, limit=6)
            ]


# ---------------------------------------------------------------------------------------- main


def _int_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive whole numbers, comma-separated")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare OpenSend's MX with a stock Postfix under smtp-source load.",
        epilog="What is measured, and how: this file's docstring and tests/perf/README.md.",
    )
    add = parser.add_argument
    add("--messages", type=int, default=5000, help="messages per run (default 5000)")
    add("--sessions", type=int, default=20, help="parallel SMTP sessions (default 20)")
    add("--size", type=int, default=2048, help="body bytes per message (default 2048)")
    add("--repeat", type=int, default=1, help="rounds; medians are reported (default 1)")
    add("--warmup", type=int, default=200, help="unmeasured messages per mode (default 200)")
    add("--latency-messages", type=int, default=2000, help="per latency run; 0 skips them")
    add("--processes", type=_int_list, default=[1, 2], help="OPENSEND_MX_PROCESSES values: 1,2")
    add(
        "--targets",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=["postfix", "opensend"],
        help="which servers: postfix,opensend (default both)",
    )
    add(
        "--max-connections",
        type=int,
        default=100,
        help="OPENSEND_MAX_CONNECTIONS (default 100, Postfix's default_process_limit)",
    )
    add("--database-url", default=None, help="an existing PostgreSQL instead of the embedded one")
    add(
        "--opensend-command",
        type=str.split,
        default=None,
        help="how to run `opensend` (default: this tree's mta.cli on this Python)",
    )
    add(
        "--auth-checks",
        choices=["on", "off"],
        default="off",
        help="OPENSEND_AUTH_CHECKS of the server (default off: stock Postfix checks no SPF, "
        "DKIM or DMARC either, so the ratio compares like with like; `on` measures what the "
        "checks beside the MX cost it)",
    )
    add(
        "--webhook",
        choices=["on", "off"],
        default="off",
        help="subscribe a loopback endpoint to email.received (default off); with "
        "--auth-checks on this is `opensend serve` with every feature on (issue 16)",
    )
    add("--domain", default="bench.test", help="the receiving domain (default bench.test)")
    add("--tenant", default="bench")
    add("--run-timeout", type=float, default=600.0, help="seconds per run (default 600)")
    add("--max-seconds", type=int, default=3600, help="bound on everything (default 3600)")
    add("--json", type=Path, default=None, help="results file (default results/mx-<time>.json)")
    add("--keep", action="store_true", help="keep the work directory (logs, data) afterwards")
    add(
        "--require-target",
        action="store_true",
        help=f"exit 1 unless every OpenSend configuration reaches {TARGET_RATIO}x Postfix",
    )
    args = parser.parse_args(argv)
    for name in ("messages", "sessions", "size", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    unknown = set(args.targets) - {"postfix", "opensend"}
    if unknown or not args.targets:
        parser.error(f"--targets: expected postfix and/or opensend, got {args.targets}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(SMTP_SOURCE).exists():
        log(f"{SMTP_SOURCE} not found: install postfix, which ships smtp-source")
        return 2
    load = Load(args.messages, args.sessions, args.size, recipient=f"user@{args.domain}")
    started_at = datetime.now(UTC)
    load_at_start = os.getloadavg()
    if load_at_start[0] > 0.5 * len(os.sched_getaffinity(0)):
        log(
            f"warning: the machine is busy before we start (load average {load_at_start[0]:.2f}); "
            "figures will be noisy: use --repeat 3 or more, ratios are paired run by run"
        )
    workdir = Path(tempfile.mkdtemp(prefix="opensend-bench-"))
    workdir.chmod(0o755)  # Postfix's daemons and PostgreSQL's user must traverse it
    results: list[TargetResult] = []
    failure: str | None = None
    try:
        with bounded(args.max_seconds):
            run_benchmark(args, load, workdir, results)
    except (TimeoutError, KeyboardInterrupt, SystemExit) as exc:
        failure = f"stopped early: {exc!r}"
        log(failure)
    except Exception:
        failure = traceback.format_exc()
        log(failure)
    finally:
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(render(results))
    ratios = ratios_vs_postfix(results)
    document = {
        "benchmark": "mx",
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "load": asdict(load),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {**machine_facts(REPO_ROOT), "loadavg_at_start": load_at_start},
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
