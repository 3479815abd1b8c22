"""Group commit for the sending API: concurrent requests' emails in one transaction.

Each request still waits for the COMMIT that holds its own emails, so its 2xx follows its
COMMIT. Under no load a request is stored at once, alone, in one statement; groups form only
while earlier groups are being committed, so grouping adds no latency. A group is one statement
over arrays (storage.sending.emails.INSERT_EMAIL_GROUP), one transaction in one round trip: one WAL
flush, one wake-up of the delivery workers and one statement's fixed cost for the whole group
instead of one per request. A group holding a reply, which updates an existing thread, goes
statement by statement instead (INSERT_EMAIL_IN_GROUP), pipelined (`executemany`) in the one
implicit transaction that ends at the pipeline's single Sync (all or nothing, asyncpg 0.22 and
later), so that thread rows are locked in id order; so does a group of large messages
(ONE_STATEMENT_BYTES).

If any email of the group cannot be stored (its domain changed, its Idempotency-Key was taken
over), the statement aborts the group (migration 0011); that, or a failure other than an outage,
rolls the whole group back and each request is then stored on its own, so one request never
decides another's fate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from storage.database import Pool
from storage.errors import StorageError, StorageUnavailable, storage_errors
from storage.group_commit import GroupCommit
from storage.sending.emails import (
    GROUP_ABORTED_SQLSTATE,
    INSERT_EMAIL_GROUP,
    INSERT_EMAIL_IN_GROUP,
    Completion,
    NewEmail,
    Stored,
    arguments,
    group_arguments,
    insert_emails,
)


@dataclass(frozen=True, slots=True)
class _Request:
    emails: Sequence[NewEmail]
    completion: Completion | None
    done: asyncio.Future[Stored]


# The most raw message bytes a group sends as one statement. One statement is one protocol
# message, which PostgreSQL refuses above 1 GiB and holds whole in one backend's memory; a
# group of large messages goes statement by statement instead (asyncpg streams those in 32 KiB
# writes), in the same one transaction.
ONE_STATEMENT_BYTES = 16 * 1024 * 1024


class _Regroup(Exception):
    """Rolls back a group that cannot be stored whole."""


class EmailWriter:
    def __init__(self, pool: Pool, *, max_batch: int = 64, max_inflight: int = 2) -> None:
        self._pool = pool
        # max_batch: requests per group; max_inflight: groups being committed at once.
        self._group: GroupCommit[_Request] = GroupCommit(
            self._flush, max_batch=max_batch, max_inflight=max_inflight
        )
        # Groups committed whole, and groups rolled back and stored request by request.
        self.groups_stored = 0
        self.groups_split = 0

    async def store(self, emails: Sequence[NewEmail], completion: Completion | None) -> Stored:
        """Store one request's emails (all or none) with its Idempotency-Key completion."""
        done: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._group.submit(_Request(emails, completion, done))
        # A client that goes away cancels only its own future: the group is committed by the
        # writer's own task, which `_settle` tells that nobody waits for this request any more.
        # So no `asyncio.shield`, whose extra future and callbacks every request would pay.
        return await done

    async def _flush(self, group: list[_Request]) -> None:
        try:
            if len(group) == 1:
                await self._alone(group[0])
                return
            try:
                await self._together(group)
            except StorageError as error:
                if error.temporary:
                    for request in group:
                        _settle(request, error)
                    return
            except _Regroup:
                pass
            else:
                self.groups_stored += 1
                for request in group:
                    _settle(request, Stored.STORED)
                return
            self.groups_split += 1
            for request in group:
                await self._alone(request)
        except BaseException as unexpected:  # never leave a request waiting forever
            for request in group:
                _settle(request, StorageUnavailable(f"unexpected: {unexpected!r}"))
            raise

    async def _together(self, group: list[_Request]) -> None:
        pairs = [
            (email, request.completion if email is request.emails[-1] else None)
            for request in group
            for email in request.emails
        ]
        # Replies update their existing thread's row. Two groups locking the same threads in
        # different orders could deadlock, so every group takes thread rows in id order.
        pairs.sort(key=lambda pair: str(pair[0].thread_id) if pair[0].thread_exists else "")
        one_statement = not any(email.thread_exists for email, _ in pairs) and (
            sum(len(email.raw) for email, _ in pairs) <= ONE_STATEMENT_BYTES
        )
        try:
            arrays = group_arguments(pairs) if one_statement else ()
        except (TypeError, ValueError) as unencodable:  # one request's value: not the others'
            raise _Regroup from unencodable
        try:
            async with storage_errors(), self._pool.acquire() as conn:
                if one_statement:
                    await conn.execute(INSERT_EMAIL_GROUP, *arrays)
                else:
                    # No explicit transaction: the pipelined statements share the implicit
                    # one that ends at their single Sync, stored together or not at all.
                    rows = [arguments(email, completion) for email, completion in pairs]
                    await conn.executemany(INSERT_EMAIL_IN_GROUP, rows)
        except StorageError as error:
            if getattr(error.__cause__, "sqlstate", None) == GROUP_ABORTED_SQLSTATE:
                raise _Regroup from error
            raise

    async def _alone(self, request: _Request) -> None:
        try:
            outcome = await insert_emails(self._pool, request.emails, request.completion)
        except StorageError as error:
            _settle(request, error)
        else:
            _settle(request, outcome)


def _settle(request: _Request, outcome: Stored | StorageError) -> None:
    if request.done.done():
        return
    if isinstance(outcome, StorageError):
        request.done.set_exception(outcome)
    else:
        request.done.set_result(outcome)
