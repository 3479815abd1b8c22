"""Group commit: concurrent writers share transactions, each caller waiting for its own.

A `GroupCommit` hands pending items to `flush` in batches, with at most `max_inflight` batches
being committed at once. Under no load an item is flushed at once; batches form only while
earlier flushes are in flight, so batching adds no latency but saves a WAL flush per item under
load. What a batch means, and how its callers learn the outcome, is the flush function's job:
the MX's received mail (storage.inbound.inbox), the API's emails (storage.sending.writer) and the
delivery workers' outcomes (storage.delivery.writer) each bring their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def _one(_item: object) -> int:
    return 1


class GroupCommit(Generic[T]):
    def __init__(
        self,
        flush: Callable[[list[T]], Coroutine[Any, Any, None]],
        *,
        max_batch: int,
        max_inflight: int,
        weight: Callable[[T], int] = _one,
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch  # total weight per batch (a lone heavy item still goes)
        self._max_inflight = max_inflight
        self._weight = weight
        self._pending: list[T] = []
        self._inflight: set[asyncio.Task[None]] = set()

    def submit(self, item: T) -> None:
        self._pending.append(item)
        self._start()

    @property
    def busy(self) -> bool:
        return bool(self._pending or self._inflight)

    @property
    def inflight(self) -> set[asyncio.Task[None]]:
        return self._inflight

    def _start(self) -> None:
        while self._pending and len(self._inflight) < self._max_inflight:
            batch: list[T] = []
            total = 0
            while self._pending and (
                not batch or total + self._weight(self._pending[0]) <= self._max_batch
            ):
                item = self._pending.pop(0)
                batch.append(item)
                total += self._weight(item)
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._inflight.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._start()
