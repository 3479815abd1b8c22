"""How every process of `opensend serve` asks the C allocator to hand large blocks back.

Imports only the standard library.
"""

from __future__ import annotations

import ctypes
import gc
import sys

# glibc's mallopt(3) parameter number, from <malloc.h>.
_M_MMAP_THRESHOLD = -3
# Blocks of this size and more get pages of their own (mmap), returned to the system when freed.
LARGE_BLOCK = 1 << 20


def return_large_blocks() -> bool:
    """Fix glibc's mmap threshold at LARGE_BLOCK; True when it was set.

    By default glibc raises the threshold to the size of the largest block freed so far, up to
    32 MiB (mallopt(3), M_MMAP_THRESHOLD): after one 25 MB message, the copies of the next ones
    come from the heap, and a heap gives freed memory back only from its top. A process that
    has taken a few large messages in several threads then keeps hundreds of megabytes it no
    longer uses (tests/perf/README.md, "MX memory"). Setting the threshold turns the
    adjustment off. Elsewhere than glibc this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a C library without mallopt (musl has a stub)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK))


# The collector's first threshold: net new container objects (allocations less deallocations)
# between two young collections. CPython's 700 is less than what 50 API requests or a few dozen
# SMTP sessions in flight hold at once, so it collected about every request or connection and
# promoted their live objects to older generations, whose full collections then walked the
# whole heap: 9% of the API process's CPU under bench_api.py, and 34 to 51 us per message in
# the MX with a new connection per message (tests/perf/README.md). At 10,000 a collection is
# rare, as a request or session frees most of what it allocates; cycles still go, in larger
# batches.
GC_YOUNG_THRESHOLD = 10_000
_heap_settled = False


def settle_heap() -> None:
    """Once a process has started (modules imported, listeners and applications built), its
    objects live as long as it does: moved out of the collector's sight (`gc.freeze`), so a
    full collection walks only what came after; and young collections made rarer. Once per
    process. A frozen object is never collected: what is open at that moment and closed later
    (a session under way, a pool connection replaced) stays, once, a bounded cost.
    """
    global _heap_settled
    if _heap_settled:
        return
    _heap_settled = True
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), middle, old)
