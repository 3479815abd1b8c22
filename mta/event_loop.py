"""The event loop every process of `opensend serve` runs on: uvloop where available.

Imports only the standard library and uvloop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


def run_in_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run on uvloop where available: the SMTP protocol loop is the MX's bottleneck."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        asyncio.run(main())
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
