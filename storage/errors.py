"""Storage failures as our own errors; asyncpg's classes stop at this boundary.

`temporary` tells the edge what to answer: a lost connection or a server that is starting or
shutting down is worth a retry (SMTP 451, HTTP 503); a constraint violation is not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


class StorageError(Exception):
    def __init__(self, message: str, *, temporary: bool, bad_data: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary
        # SQLSTATE class 22 (data exception): the values themselves cannot be stored (text
        # that is not UTF-8, a NUL), so the same write fails the same way every time.
        self.bad_data = bad_data


class StorageUnavailable(StorageError):
    def __init__(self, message: str) -> None:
        super().__init__(message, temporary=True)


class Conflict(StorageError):
    """A unique constraint said no: the thing already exists."""

    def __init__(self, message: str) -> None:
        super().__init__(message, temporary=False)


# SQLSTATE classes that mean "try again": 08 connection exception, 40 transaction rollback
# (serialization failure, deadlock), 53 insufficient resources, 57 operator intervention
# (admin shutdown, cannot connect now), 58 system error (I/O).
_TEMPORARY_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")


def translate(error: BaseException) -> StorageError:
    if isinstance(error, StorageError):
        return error
    if isinstance(error, asyncpg.UniqueViolationError):
        return Conflict(str(error.detail or error))
    if isinstance(error, asyncpg.PostgresError):
        sqlstate = getattr(error, "sqlstate", "") or ""
        temporary = sqlstate[:2] in _TEMPORARY_SQLSTATE_CLASSES
        return StorageError(
            f"{type(error).__name__}: {error}", temporary=temporary, bad_data=sqlstate[:2] == "22"
        )
    # Connection lost, refused, pool closed, or a timeout: the database is out of reach.
    return StorageUnavailable(f"{type(error).__name__}: {error}")


_TRANSLATED = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # A pooled connection whose server shut it down while it sat idle (a fast shutdown sends
    # the FATAL before the socket closes) can be handed out and then refuse its next query with
    # "cannot switch to state ...; another operation is in progress": the database is going
    # away, so a retry later is the answer, as for a lost connection.
    asyncpg.InternalClientError,
    OSError,
    ConnectionError,
    TimeoutError,
)


@asynccontextmanager
async def storage_errors() -> AsyncIterator[None]:
    """Re-raise anything the driver or the network throws as a StorageError."""
    try:
        yield
    except _TRANSLATED as error:
        raise translate(error) from error
