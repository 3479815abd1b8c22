"""An aiohttp application served on loopback for as long as a test needs it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web


@contextlib.asynccontextmanager
async def served_on_loopback(app: web.Application) -> AsyncIterator[str]:
    """`app` on 127.0.0.1 at a port of the system's choosing; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
