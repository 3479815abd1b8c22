"""Row identifiers: UUIDv7 (RFC 9562 section 5.7), time-ordered so new rows append to indexes."""

from __future__ import annotations

import os
import time
from uuid import UUID


def uuid7() -> UUID:
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # RFC 9562 variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
    return UUID(int=value)
