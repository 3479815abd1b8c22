"""Fixtures of the webhook tests: a database of their own, receivers, the SDK's globals."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import resend

from storage.database import Pool
from tests.support.delivery_world import queue_database
from tests.webhooks.receiver import Receiver

Queue = tuple[str, Pool]


@pytest.fixture(scope="module")
async def queue(database_url: str) -> AsyncIterator[Queue]:
    """A fresh database per module: its workers claim no other test's deliveries."""
    async with queue_database(database_url) as made:
        yield made


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = await Receiver.start()
    yield started
    await started.stop()


@pytest.fixture
async def other_receiver() -> AsyncIterator[Receiver]:
    started = await Receiver.start()
    yield started
    await started.stop()


@pytest.fixture
def sdk() -> Iterator[None]:
    """The SDK keeps its key and URL in module globals: put them back after the test."""
    saved = resend.api_key, resend.api_url
    yield
    resend.api_key, resend.api_url = saved
