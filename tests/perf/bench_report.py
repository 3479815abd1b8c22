"""What the MX benchmark records, and the tables it prints from those records."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import statistics
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from smtp_load import Mode

TARGET_RATIO = 2.0
MIB = 1024 * 1024


@dataclass(slots=True)
class RunRecord:
    """One smtp-source run against one server."""

    mode: str
    block: str  # which OpenSend configuration this run was paired with ("" when none)
    round: int
    requested: int
    sent: int
    seconds: float
    msgs_per_s: float
    stored: int | None
    returncode: int
    problems: list[str] = field(default_factory=list)
    # Messages OpenSend's auth checks finished during the run (any message, the warm-up's and
    # earlier runs' too); None for a server without them.
    checked: int | None = None
    # CPU milliseconds per message sent, over the run, by part of the server: "mx" (the server's
    # own process), "children" (its child processes: the auth checks, and the extra MX
    # processes of --processes 2), "database" (PostgreSQL's processes). Empty for Postfix.
    cpu_ms_per_msg: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def checked_per_s(self) -> float | None:
        if self.checked is None or not self.seconds:
            return None
        return self.checked / self.seconds


@dataclass(slots=True)
class LatencyRecord:
    """One run of the timing client: per-message latency, and memory while it ran."""

    mode: str
    requested: int
    completed: int
    seconds: float
    msgs_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    stored: int | None
    peak_rss: dict[str, int] = field(default_factory=dict)
    peak_pss: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class TargetResult:
    label: str
    processes: int | None
    runs: list[RunRecord] = field(default_factory=list)
    latency: list[LatencyRecord] = field(default_factory=list)
    # Server-side DATA-to-commit histogram over the throughput runs, per mode (bucket deltas).
    commit_buckets: dict[str, dict[float, float]] = field(default_factory=dict)
    commit_hist: dict[str, dict[str, Any]] = field(default_factory=dict)
    database: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth reading, but not a failure

    def median_rate(self, mode: Mode, block: str | None = None) -> float | None:
        rates = [
            run.msgs_per_s
            for run in self.runs
            if run.mode == mode and run.sent and (block is None or run.block == block)
        ]
        return statistics.median(rates) if rates else None

    def median_checked_rate(self, mode: Mode) -> float | None:
        rates = [
            rate
            for run in self.runs
            if run.mode == mode and (rate := run.checked_per_s) is not None
        ]
        return statistics.median(rates) if rates else None

    def median_cpu(self, mode: Mode, part: str) -> float | None:
        values = [
            run.cpu_ms_per_msg[part]
            for run in self.runs
            if run.mode == mode and part in run.cpu_ms_per_msg
        ]
        return statistics.median(values) if values else None

    def all_problems(self) -> list[str]:
        problems = list(self.problems)
        problems += [f"{run.mode} #{run.round}: {p}" for run in self.runs for p in run.problems]
        problems += [f"{lat.mode} latency: {p}" for lat in self.latency for p in lat.problems]
        return problems

    def all_ok(self) -> bool:
        return bool(self.runs) and not self.all_problems()


def paired_ratios(ours: TargetResult, postfix: TargetResult, mode: Mode) -> list[float]:
    """OpenSend's msg/s over Postfix's, run by run: the two ran back to back in each round."""
    theirs = {
        run.round: run.msgs_per_s
        for run in postfix.runs
        if run.mode == mode and run.block == ours.label and run.ok
    }
    return [
        run.msgs_per_s / theirs[run.round]
        for run in ours.runs
        if run.mode == mode and run.ok and theirs.get(run.round)
    ]


def ratios_vs_postfix(results: list[TargetResult]) -> dict[str, dict[str, float | None]]:
    postfix = next((r for r in results if r.processes is None), None)
    ratios: dict[str, dict[str, float | None]] = {}
    for result in results:
        if result.processes is None:
            continue
        for mode in Mode:
            pairs = paired_ratios(result, postfix, mode) if postfix else []
            ratios.setdefault(result.label, {})[str(mode)] = (
                round(statistics.median(pairs), 3) if pairs else None
            )
    return ratios


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def _mib(value: int | None) -> str:
    return "-" if not value else f"{value / MIB:,.0f}"


def _cpu_parts(result: TargetResult, mode: Mode) -> str:
    parts = [result.median_cpu(mode, part) for part in ("mx", "children", "database")]
    if all(part is None for part in parts):
        return "-"
    return "+".join(_fmt(part, ".3f") for part in parts)


def render(results: list[TargetResult]) -> str:
    ratios = ratios_vs_postfix(results)
    lines = ["Throughput: smtp-source, median msg/s over rounds; ratio = median of paired runs"]
    header = (
        f"{'server':<13} {'mode':<9} {'runs':>4} {'sent':>7} {'stored':>7} {'msg/s':>8} "
        f"{'postfix msg/s':>13} {'ratio':>6} {'checked/s':>9} {'CPU ms/msg mx+child+db':>22}"
    )
    lines += [header, "-" * len(header)]
    postfix = next((r for r in results if r.processes is None), None)
    for result in results:
        for mode in Mode:
            runs = [r for r in result.runs if r.mode == mode]
            stored = sum(r.stored or 0 for r in runs) if runs else None
            paired = None
            if postfix is not None and result is not postfix:
                paired = postfix.median_rate(mode, block=result.label)
            ratio = ratios.get(result.label, {}).get(str(mode))
            lines.append(
                f"{result.label:<13} {mode!s:<9} {len(runs):>4} {sum(r.sent for r in runs):>7} "
                f"{_fmt(stored, 'd'):>7} {_fmt(result.median_rate(mode)):>8} "
                f"{_fmt(paired):>13} {(_fmt(ratio, '.2f') + 'x') if ratio else '-':>6} "
                f"{_fmt(result.median_checked_rate(mode)):>9} {_cpu_parts(result, mode):>22}"
            )

    if any(run.checked is not None for result in results for run in result.runs):
        lines.append(
            "checked/s: messages OpenSend's auth checks finished during the runs, over their time"
        )
    if any(run.cpu_ms_per_msg for result in results for run in result.runs):
        lines.append(
            "CPU ms/msg: CPU time over the run per message sent, of the server's process, its "
            "child processes (auth checks; extra MX processes) and PostgreSQL"
        )
    lines += ["", "Per-message latency (timing client, same sessions and size) and peak memory"]
    header = (
        f"{'server':<13} {'mode':<9} {'msgs':>5} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'commit p50/p99':>14} {'RSS MiB':>7} {'PSS MiB':>7} {'PG RSS':>6} {'PG PSS':>6}"
    )
    lines += [header, "-" * len(header)]
    partial = False
    for result in results:
        for mode in Mode:
            lat = next((x for x in result.latency if x.mode == mode), None)
            hist = result.commit_hist.get(str(mode))
            commit = "-"
            if hist and hist.get("count"):
                commit = f"{_fmt(hist['p50_ms'], '.1f')}/{_fmt(hist['p99_ms'], '.1f')}"
                if hist["partial"]:
                    commit += "*"
                    partial = True
            rss = lat.peak_rss if lat else {}
            pss = lat.peak_pss if lat else {}
            lines.append(
                f"{result.label:<13} {mode!s:<9} {lat.completed if lat else 0:>5} "
                f"{_fmt(lat.p50_ms if lat else None, '.2f'):>7} "
                f"{_fmt(lat.p99_ms if lat else None, '.2f'):>7} {commit:>14} "
                f"{_mib(rss.get('server')):>7} {_mib(pss.get('server')):>7} "
                f"{_mib(rss.get('postgres')):>6} {_mib(pss.get('postgres')):>6}"
            )
    if partial:
        lines.append("* the server's histogram counted fewer messages than were sent")

    lines.append("")
    for label, by_mode in ratios.items():
        known = [v for v in by_mode.values() if v is not None]
        met = bool(known) and len(known) == len(by_mode) and min(known) >= TARGET_RATIO
        detail = ", ".join(f"{m} {_fmt(v, '.2f')}x" for m, v in by_mode.items())
        lines.append(
            f"target >= {TARGET_RATIO:.1f}x Postfix msg/s, {label}: "
            f"{'MET' if met else 'NOT MET'} ({detail})"
        )
    for result in results:
        if result.database:
            facts = ", ".join(f"{k}={v}" for k, v in result.database.items())
            lines.append(f"{result.label} stores in: {facts}")
        for problem in result.all_problems()[:12]:
            lines.append(f"PROBLEM {result.label}: {problem}")
        for note in result.notes[:6]:
            lines.append(f"note {result.label}: {note}")
    return "\n".join(lines)


def machine_facts(repo_root: Path) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "cpus": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_end": os.getloadavg(),
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
        ("git_commit", ["git", "-C", str(repo_root), "rev-parse", "HEAD"]),
        ("git_dirty", ["git", "-C", str(repo_root), "status", "--porcelain"]),
    ):
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0:
            facts[key] = bool(out.stdout.strip()) if key == "git_dirty" else out.stdout.strip()
    return facts


@contextlib.contextmanager
def bounded(seconds: int) -> Iterator[None]:
    """Turn SIGTERM, and SIGALRM after `seconds`, into exceptions, so every `finally` runs."""

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
