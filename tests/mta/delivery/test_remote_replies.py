"""What a remote server answers is stored whatever its bytes: a reply in Latin-1 or with a NUL
in it (both seen in the wild) is recorded, with undecodable bytes as U+FFFD and the NUL dropped,
and holds up nothing else. It once made the outcome's write fail for good, and the writer retried
it forever while every other outcome of the process waited behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.database import Pool
from tests.support.delivery_world import delivery_workers, queue_database
from tests.support.queued_mail import make_sender, wait_until_final

Queue = tuple[str, Pool]


class ByteLevelRemote:
    """A remote MTA answering RCPT and the final dot with the bytes a test gives, as written."""

    def __init__(self, rcpt_reply: bytes, data_reply: bytes, *, pipelining: bool) -> None:
        self.rcpt_reply, self.data_reply, self.pipelining = rcpt_reply, data_reply, pipelining
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ByteLevelRemote:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 remote.test ESMTP\r\n")
        in_data = False
        while line := await reader.readline():
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    writer.write(self.data_reply)
            elif line[:4].upper() == b"EHLO":
                extensions = b"250-PIPELINING\r\n" if self.pipelining else b""
                writer.write(b"250-remote.test\r\n" + extensions + b"250 8BITMIME\r\n")
            elif line[:4].upper() == b"RCPT":
                writer.write(self.rcpt_reply)
            elif line[:4].upper() == b"DATA":
                writer.write(b"354 go ahead\r\n")
                in_data = True
            elif line[:4].upper() == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        await writer.drain()
        writer.close()


@pytest.fixture(scope="module")
async def queue(database_url: str) -> AsyncIterator[Queue]:
    async with queue_database(database_url) as made:
        yield made


@pytest.mark.parametrize("pipelining", [False, True], ids=["one_by_one", "pipelined"])
@pytest.mark.parametrize(
    ("rcpt_reply", "data_reply", "status", "stored"),
    [
        pytest.param(
            b"550 5.1.1 Utilisateur inconnu \xe9\r\n",
            b"250 ok\r\n",
            "bounced",
            "Utilisateur inconnu \ufffd",
            id="latin1_at_rcpt",
        ),
        pytest.param(
            b"250 ok\r\n",
            b"250 2.0.0 Re\xe7u \x00queued\r\n",
            "delivered",
            "Re\ufffdu queued",
            id="latin1_and_nul_at_data",
        ),
    ],
)
async def test_a_reply_in_any_bytes_is_recorded_and_holds_up_nothing(
    queue: Queue,
    tmp_path: Path,
    pipelining: bool,
    rcpt_reply: bytes,
    data_reply: bytes,
    status: str,
    stored: str,
) -> None:
    url, pool = queue
    sender = await make_sender(pool)
    async with (
        ByteLevelRemote(rcpt_reply, data_reply, pipelining=pipelining) as remote,
        delivery_workers(
            pool, url, tmp_path, OPENSEND_TRANSPORTS=f"odd.test=127.0.0.1:{remote.port}"
        ) as workers,
    ):
        odd = await sender.queue(["bob@odd.test"])
        [row] = (await wait_until_final(pool, odd, statuses=(status,))).values()
        retries = workers.writer.retries
    assert row["last_response"] == stored
    assert retries == 0
