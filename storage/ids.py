"""Row identifiers: UUIDv7 (RFC 9562 section 5.7), time-ordered so new rows append to indexes.

Within one process the ids are strictly increasing, even within a millisecond (RFC 9562 section
6.2, method 1: a counter in rand_a, re-seeded each new millisecond), so keyset pagination by id
lists rows in the order they were made.
"""

from __future__ import annotations

import os
import threading
import time
from uuid import UUID

_lock = threading.Lock()
_last_millis = 0
_counter = 0
_COUNTER_MAX = 0xFFF  # rand_a is 12 bits

# The system's randomness, read 4,608 bytes (512 ids) at a time: one getrandom(2) per id was
# 5% of the API's CPU under load (tests/perf/README.md, the API section). Emptied in a forked
# child, so that no two processes use the same bytes.
_RANDOM_CHUNK = 9 * 512
_random = b""
_taken = 0


def _forget_random() -> None:
    global _random, _taken
    _random, _taken = b"", 0


os.register_at_fork(after_in_child=_forget_random)


def uuid7() -> UUID:
    global _last_millis, _counter, _random, _taken
    with _lock:
        if _taken + 9 > len(_random):
            _random, _taken = os.urandom(_RANDOM_CHUNK), 0
        random = _random[_taken : _taken + 9]
        _taken += 9
        millis = time.time_ns() // 1_000_000
        if millis > _last_millis:
            _last_millis = millis
            # Start low in the counter space so a burst has room to count up; the id's first
            # random byte seeds it.
            _counter = random[0]
        else:
            _counter += 1
            if _counter > _COUNTER_MAX:  # more than ~3,800 ids in one millisecond
                _last_millis += 1
                _counter = 0
        millis, counter = _last_millis, _counter
    rand_b = int.from_bytes(random[1:], "big") & ((1 << 62) - 1)
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= counter << 64  # rand_a: the monotonic counter
    value |= 0b10 << 62  # RFC 9562 variant
    value |= rand_b
    return UUID(int=value)


def uuid7_millis(value: UUID) -> int:
    """When a uuid7 was minted: its first 48 bits, milliseconds since the Unix epoch."""
    return value.int >> 80


def uuid7_floor(millis: int) -> UUID:
    """The smallest uuid7 of that millisecond: every id minted earlier sorts below it, in
    PostgreSQL too (uuid order is byte order)."""
    return UUID(int=((millis & ((1 << 48) - 1)) << 80) | (0x7 << 76) | (0b10 << 62))
