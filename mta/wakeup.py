"""Waiting in a worker loop: until one of its events is set, or a timeout (the next due time)."""

from __future__ import annotations

import asyncio


async def wait_for_any(seconds: float, *events: asyncio.Event) -> None:
    """Return when any of `events` is set or `seconds` pass, leaving no waiter behind."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
