"""The event loop every process of `opensend serve` runs on: uvloop where available.

Imports only the standard library and uvloop. Every process also sets how its large memory blocks
are allocated here (mta.memory), once, before its work starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from mta.memory import return_large_blocks


def run_in_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run on uvloop where available: the SMTP protocol loop is the MX's bottleneck."""
    return_large_blocks()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        asyncio.run(main())
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
