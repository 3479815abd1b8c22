"""Group commit flushes at once under no load, and batches only what waits behind a flush."""

from __future__ import annotations

import asyncio

from storage.group_commit import GroupCommit


async def test_a_lone_item_is_flushed_at_once_and_waiting_items_share_a_batch() -> None:
    release = asyncio.Event()
    batches: list[list[int]] = []

    async def flush(batch: list[int]) -> None:
        batches.append(batch)
        await release.wait()

    group: GroupCommit[int] = GroupCommit(flush, max_batch=10, max_inflight=1)
    group.submit(1)
    await asyncio.sleep(0)
    for n in (2, 3, 4):  # arrive while the first flush is in flight
        group.submit(n)
    assert batches == [[1]]
    release.set()
    while group.busy:  # each finished flush starts the next batch
        await asyncio.gather(*group.inflight)
    assert batches == [[1], [2, 3, 4]]


async def test_batches_respect_the_weight_limit_but_a_heavy_item_still_goes() -> None:
    release = asyncio.Event()
    batches: list[list[str]] = []

    async def flush(batch: list[str]) -> None:
        batches.append(batch)
        await release.wait()

    group: GroupCommit[str] = GroupCommit(flush, max_batch=4, max_inflight=1, weight=len)
    group.submit("x")
    await asyncio.sleep(0)
    for item in ("ab", "cd", "toolong", "e"):
        group.submit(item)
    release.set()
    while group.busy:  # each finished flush starts the next batch
        await asyncio.gather(*group.inflight)
    assert batches == [["x"], ["ab", "cd"], ["toolong"], ["e"]]
