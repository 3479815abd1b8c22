"""After the commit: parsing the bodies of mail the MX stored with its header fields alone.

A busy MX reads plain mail by its header fields (policy.inbound.message.scan_headers), which is
all that routing, matching and classification need, stores it with `parse_pending`, answers 250,
and hands the raw message to this component, which parses it when the process is quiet (no other
message finished for a moment) or once the oldest has waited `max_delay_seconds`, and writes the
rest of the row (storage/inbound/fill_in.py). The row is hidden from the API until then.

Nothing here is needed for durability: the raw message is committed before the 250. What the
process does not fill in (it died, the database was away, its queue was full) stays pending and
is filled in by a sweep, which every MX process runs every `sweep_seconds` on rows older than
`settle_seconds`, reading the raw message back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from mta import metrics
from policy.inbound.message import parse_message
from policy.inbound.pipeline import body_fields
from policy.settings import ParseLater
from storage.database import Pool
from storage.errors import StorageError
from storage.ids import uuid7_floor
from storage.inbound.fill_in import ParsedColumns, fill_in, fill_in_stale

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FillInOptions:
    # Held in memory until filled in; past either, the MX parses before its 250 as when idle.
    # Small beside the MX's own memory (a burst of 2 KB messages is 8,000 of them); a large
    # message is parsed before its 250: holding it would cost more than its parse saves.
    max_messages: int = 20_000
    max_bytes: int = 16 * 1024 * 1024
    max_message_bytes: int = 256 * 1024
    # The process is busy while it finishes `busy_messages` or more in a tick: then the fill-in
    # waits, so a burst is filled in after it; in a long one nothing waits more than the delay.
    tick_seconds: float = 0.05
    busy_messages: int = 3  # per tick: 60 messages a second
    max_delay_seconds: float = 5.0
    batch: int = 32  # messages per fill-in transaction
    sweep_seconds: float = 10.0
    # A pending row older than this is taken to be a dead process's (group commit and the MX's
    # 451 on a slow database keep a live one's far younger, unless its queue is full of a long
    # burst: then the sweep and the process both fill it in, and the UPDATE writes it once).
    settle_seconds: float = 60.0


def parsed_columns(raw: bytes) -> ParsedColumns:
    """The columns the full parse fills in, as `received_messages` would have written them."""
    return ParsedColumns(**body_fields(parse_message(raw)))


class FillIn:
    """One per MX listener: its queue of messages to parse, and the sweep."""

    def __init__(self, pool: Pool, mode: ParseLater, options: FillInOptions | None = None) -> None:
        self._pool = pool
        self._mode = mode
        self._options = options or FillInOptions()
        self._queue: deque[tuple[Sequence[UUID], bytes, float]] = deque()
        self._queued_bytes = 0
        self._in_data = 0  # messages of this process between the end of DATA and the reply
        self._finished = 0  # messages of this process that got their reply, ever
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- the MX's side ----------------------------------------------------------------------

    def entered(self) -> None:
        """A message's DATA ended: it is being handled (`left` when it got its reply)."""
        self._in_data += 1

    def left(self) -> None:
        self._in_data -= 1
        self._finished += 1

    def wanted(self, size: int) -> bool:
        """Whether the message being handled may be stored before its body is parsed."""
        if self._mode is ParseLater.NEVER:
            return False
        if self._mode is ParseLater.BUSY and self._in_data <= 1:
            return False  # alone: parsing now costs its sender nothing worth saving
        return (
            size <= self._options.max_message_bytes
            and len(self._queue) < self._options.max_messages
            and self._queued_bytes + size <= self._options.max_bytes
        )

    def later(self, ids: Sequence[UUID], raw: bytes) -> None:
        """Committed rows `ids`, all copies of `raw`, to be filled in."""
        self._queue.append((ids, raw, time.monotonic()))
        self._queued_bytes += len(raw)
        metrics.PARSE_LATER.inc(len(ids))
        self._wakeup.set()

    # -- running ----------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._fill_loop(), name="mx-fill-in"),
            loop.create_task(self._sweep_loop(), name="mx-fill-in-sweep"),
        ]

    async def stop(self, grace: float) -> None:
        """Fill in what is queued, for up to `grace` seconds; the rest is swept later."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                while self._queue:
                    await self._fill_batch()

    async def _fill_loop(self) -> None:
        options = self._options
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self._overdue():
                finished = self._finished
                await asyncio.sleep(options.tick_seconds)
                if self._finished - finished >= options.busy_messages:
                    continue  # mail is coming in: its sessions first
            while self._queue:
                finished = self._finished
                await self._fill_batch()
                if self._finished - finished >= options.busy_messages and not self._overdue():
                    break

    def _overdue(self) -> bool:
        return bool(self._queue) and (
            time.monotonic() - self._queue[0][2] >= self._options.max_delay_seconds
        )

    async def _fill_batch(self) -> None:
        batch: list[tuple[UUID, ParsedColumns]] = []
        while self._queue and len(batch) < self._options.batch:
            ids, raw, _ = self._queue.popleft()
            self._queued_bytes -= len(raw)
            columns = _parsed_or_none(raw)
            if columns is not None:
                batch.extend((record_id, columns) for record_id in ids)
            await asyncio.sleep(0)  # one parse at a time between the sessions' turns
        try:
            await fill_in(self._pool, batch)
        except Exception as error:  # nothing may end the loop: the rows stay pending, the
            # sweep fills them in (a storage failure is expected now and then, anything else
            # is a bug: with its trace)
            log.warning(
                "could not fill in received mail",
                extra={"error": str(error)},
                exc_info=None if isinstance(error, StorageError) else error,
            )

    async def _sweep_loop(self) -> None:
        options = self._options
        while True:
            try:
                cutoff = uuid7_floor(int((time.time() - options.settle_seconds) * 1000))
                claimed = options.batch
                while claimed == options.batch:  # a full batch: there may be more
                    claimed = await fill_in_stale(
                        self._pool, before=cutoff, limit=options.batch, parse=parsed_columns
                    )
            except Exception as error:  # the database away, mostly; nothing may end this loop
                log.warning(
                    "could not sweep pending received mail",
                    extra={"error": str(error)},
                    exc_info=None if isinstance(error, StorageError) else error,
                )
            await asyncio.sleep(options.sweep_seconds)


def _parsed_or_none(raw: bytes) -> ParsedColumns | None:
    # parse_message never raises; a bug in turning its answer into columns must not stop the
    # loop. The row stays pending and is hidden; the sweep tries it again, and logs again.
    try:
        return parsed_columns(raw)
    except Exception:
        log.exception("could not read a received message's body")
        return None
