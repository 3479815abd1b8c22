"""A small time-bounded cache of RCPT routing answers, so a busy MX asks Postgres less.

Answers (found or not) are kept for a few seconds; failures are never kept. A route or domain
changed by an administrator therefore takes effect within `ttl` seconds on every MX process.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

# Long enough to absorb a burst for one domain, short enough that an administrator's change is
# seen almost at once.
DEFAULT_TTL_SECONDS = 5.0
DEFAULT_MAX_ENTRIES = 10_000


class TTLCache(Generic[T]):
    def __init__(
        self,
        load: Callable[[str, Sequence[str]], Awaitable[T]],
        ttl: float = DEFAULT_TTL_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self._load = load
        self._ttl = ttl
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, tuple[str, ...]], tuple[float, T]] = OrderedDict()

    async def get(self, domain: str, candidates: Sequence[str]) -> T:
        key = (domain, tuple(candidates))
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        value = await self._load(domain, candidates)  # an exception is not cached
        self._entries[key] = (now + self._ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return value
