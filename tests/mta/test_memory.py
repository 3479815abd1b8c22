"""Large blocks freed go back to the system, so a 25 MB message leaves no lasting footprint."""

from __future__ import annotations

import ctypes.util
import sys

import psutil  # type: ignore[import-untyped]  # comes with pgserver; no stubs installed
import pytest

from mta.memory import LARGE_BLOCK, return_large_blocks

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or "libc.so" not in (ctypes.util.find_library("c") or ""),
    reason="mallopt(3) is glibc's",
)


@glibc_only
def test_a_large_block_freed_after_a_larger_one_leaves_resident_memory_as_it_was() -> None:
    assert return_large_blocks()
    process = psutil.Process()
    first = bytearray(b"x") * (25 * LARGE_BLOCK)  # as one 25 MB message's copy
    del first  # glibc's own threshold would now rise above 25 MiB
    before = process.memory_info().rss
    block = bytearray(b"x") * (20 * LARGE_BLOCK)  # so this would come from the heap, and stay
    del block
    assert process.memory_info().rss - before < 4 * LARGE_BLOCK
