"""Peak resident memory of groups of process trees, sampled from /proc in a background thread.

Each group is a function returning its root pids (looked up again at every sample, so processes
that start later, such as a pre-forked worker or PostgreSQL's backends, are counted). A group's
figures are sums over its roots and all their descendants; a process already counted in an earlier
group is not counted again. Two sums are kept: RSS, which counts a shared page (shared libraries,
PostgreSQL's shared buffers) once in every process that maps it, so its sum overstates what a tree
of many processes occupies; and PSS (proportional set size, from /proc/PID/smaps_rollup), which
divides each shared page among the processes sharing it, so its sum is what the tree occupies.
Reading PSS costs the kernel a page-table walk per process: keep the interval at a fraction of a
second or more.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType

import psutil  # type: ignore[import-untyped]  # comes with pgserver; no stubs installed

RootPids = Callable[[], Iterable[int]]


def tree(pid: int) -> list[psutil.Process]:
    """The process `pid` and every descendant that exists right now."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


class RssSampler:
    """`with RssSampler({"server": lambda: [pid]}) as sampler: ...` then read `sampler.peaks`."""

    def __init__(self, groups: Mapping[str, RootPids], interval: float = 0.25) -> None:
        self._groups = dict(groups)
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peaks: dict[str, int] = dict.fromkeys(self._groups, 0)  # RSS bytes
        self.peaks_pss: dict[str, int] = dict.fromkeys(self._groups, 0)  # PSS bytes
        self.samples = 0
        # Every sample, group by group, (RSS, PSS) bytes: for the peak of a sum of groups,
        # which the sum of their peaks overstates when they peak at different moments.
        self.series: list[dict[str, tuple[int, int]]] = []

    def sample(self) -> None:
        seen: set[int] = set()
        figures: dict[str, tuple[int, int]] = {}
        for name, roots in self._groups.items():
            rss = pss = 0
            try:
                root_pids = list(roots())
            except Exception:  # a root that vanished between listing and reading
                root_pids = []
            for root in root_pids:
                for proc in tree(root):
                    if proc.pid in seen:
                        continue
                    seen.add(proc.pid)
                    try:
                        full = proc.memory_full_info()
                    except psutil.Error:
                        continue
                    rss += full.rss
                    pss += getattr(full, "pss", 0)
            self.peaks[name] = max(self.peaks[name], rss)
            self.peaks_pss[name] = max(self.peaks_pss[name], pss)
            figures[name] = (rss, pss)
        self.series.append(figures)
        self.samples += 1

    def peak_of_sum(self, names: Iterable[str]) -> tuple[int, int]:
        """The highest (RSS, PSS) of the groups `names` added up within one sample."""
        chosen = list(names)
        rss = max((sum(s[n][0] for n in chosen) for s in self.series), default=0)
        pss = max((sum(s[n][1] for n in chosen) for s in self.series), default=0)
        return rss, pss

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.sample()
