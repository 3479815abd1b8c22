"""Browser fixtures: Debian's chromium driven by Playwright (never `playwright install`, which
downloads a browser), and where the tests leave their screenshots."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, async_playwright, expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[3]
# Playwright waits 5 s (assertions) or 30 s (actions) by default: a busy CI machine can be slower
# than that. This bound is only there so that a page that never shows what is awaited fails
# instead of hanging; it measures nothing.
WAIT_BOUND_MS = 120_000
expect.set_options(timeout=WAIT_BOUND_MS)


@pytest.fixture(scope="session")
def chromium() -> str:
    assert os.path.exists(CHROMIUM), "chromium is missing: apt-get install chromium (see README)"
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, headless=True, timeout=WAIT_BOUND_MS
        )
        yield launched
        await launched.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Screenshots are test artifacts: OPENSEND_TEST_ARTIFACTS, else test-artifacts/."""
    where = Path(os.environ.get("OPENSEND_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "dashboard"
    where.mkdir(parents=True, exist_ok=True)
    return where


async def new_context(browser: Browser, **options: Any) -> BrowserContext:
    """A fresh browser profile (its own cookies) with the wait bound above."""
    context = await browser.new_context(**options)
    context.set_default_timeout(WAIT_BOUND_MS)
    context.set_default_navigation_timeout(WAIT_BOUND_MS)
    return context
