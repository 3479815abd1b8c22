"""How every process of `opensend serve` asks the C allocator to hand large blocks back.

Imports only the standard library.
"""

from __future__ import annotations

import ctypes
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
