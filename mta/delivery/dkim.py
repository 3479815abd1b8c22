"""DKIM signing of outbound mail (RFC 6376): the field built on the loop, RSA in another process.

mta.delivery.dkim_header parses, canonicalizes and hashes the message (about 40 us for a
typical one, where dkimpy took 250); the RSA signature of that digest (about 0.27 ms with a
2048-bit key, more than the rest of a delivery) is made in the signing process
(mta.delivery.rsa_signing). The digests that wait while it is busy go to it together
(storage.group_commit.GroupCommit): one round trip per batch rather than per message.

A large message is canonicalized in a thread, so that its regular expressions are interleaved
with the loop's other work instead of stalling it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures.process import BrokenProcessPool

from mta.delivery.dkim_header import SignatureStart, UnsignableMessage, prepare
from mta.delivery.rsa_signing import (
    SIGNING_PROCESS,
    Jobs,
    KeyUnusable,
    SigningProcess,
    rsa_sign,
    sign_batch,
)
from storage.group_commit import GroupCommit

log = logging.getLogger(__name__)

# Messages above this size are canonicalized in a thread (DESIGN.md section 7): about 5 ms a
# megabyte of text or base64, ten times that for text full of runs of spaces and tabs, so
# from here on it could pass the interpreter's switch interval (5 ms).
EXECUTOR_THRESHOLD_BYTES = 256 * 1024

# Digests per batch to the signing process: at most about 17 ms of its work. Two batches may be
# under way, so the process has the next one while the loop reads the last one's results.
RSA_BATCH = 64

# A domain without a key is reported this often, however much it sends.
UNSIGNED_WARNING_SECONDS = 3600.0


def sign_message(
    message: bytes,
    *,
    domain: str,
    selector: str,
    private_key_pem: str,
    timestamp: int | None = None,
) -> bytes:
    """The DKIM-Signature field for `message`, ending in CRLF, to put in front of it; all in
    the calling thread."""
    start = prepare(
        message, domain=domain, selector=selector, timestamp=timestamp or int(time.time())
    )
    return start.field(rsa_sign(start.digest, private_key_pem))


_Job = tuple[bytes, str, "asyncio.Future[bytes]"]


class DkimSigner:
    """Signs with the sending domain's key; a message it cannot sign goes out unsigned."""

    def __init__(
        self,
        *,
        executor_threshold: int = EXECUTOR_THRESHOLD_BYTES,
        rsa_batch: int = RSA_BATCH,
        process: SigningProcess = SIGNING_PROCESS,
    ) -> None:
        self._executor_threshold = executor_threshold
        self._warned: dict[str | None, float] = {}
        self._process = process  # makes the RSA signatures
        self._rsa: GroupCommit[_Job] = GroupCommit(
            self._run_batch, max_batch=rsa_batch, max_inflight=2
        )

    def _warn_unsigned(self, domain: str | None) -> None:
        """Once per domain per UNSIGNED_WARNING_SECONDS, not once per message."""
        now = time.monotonic()
        if now - self._warned.get(domain, -UNSIGNED_WARNING_SECONDS) >= UNSIGNED_WARNING_SECONDS:
            self._warned[domain] = now
            log.warning("sending unsigned: the domain has no DKIM key", extra={"domain": domain})

    async def sign(
        self, message: bytes, *, domain: str | None, selector: str | None, private_key: str | None
    ) -> bytes:
        """The message with its DKIM-Signature field first, or unchanged when it has no key."""
        if not domain or not selector or not private_key:
            self._warn_unsigned(domain)
            return message
        prepared = functools.partial(
            prepare, message, domain=domain, selector=selector, timestamp=int(time.time())
        )
        try:
            if len(message) > self._executor_threshold:
                start: SignatureStart = await asyncio.to_thread(prepared)
            else:
                start = prepared()
            signature = await self._signature(start.digest, private_key)
        except (UnsignableMessage, KeyUnusable) as error:
            # A broken key must not hold mail back; receivers judge unsigned mail by SPF.
            log.error(
                "sending unsigned: DKIM signing failed",
                extra={"domain": domain, "error": str(error)},
            )
            return message
        return start.field(signature) + message

    async def _signature(self, digest: bytes, pem: str) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._rsa.submit((digest, pem, future))
        return await future

    async def _run_batch(self, batch: list[_Job]) -> None:
        jobs: Jobs = {}
        for digest, pem, _ in batch:
            jobs.setdefault(pem, []).append(digest)
        executor = self._process.executor()
        try:
            signed = await asyncio.get_running_loop().run_in_executor(executor, sign_batch, jobs)
        except BrokenProcessPool:
            # Killed, or out of memory: this batch is signed here, the next one in a new process.
            self._process.broken(executor)
            signed = sign_batch(jobs)
        except BaseException:
            for *_, future in batch:
                future.cancel()
            raise
        for _, pem, future in batch:
            result = signed[pem]
            signature = result if isinstance(result, KeyUnusable) else result.pop(0)
            if future.done():  # its caller was cancelled
                continue
            if isinstance(signature, KeyUnusable):
                future.set_exception(signature)
            else:
                future.set_result(signature)
