"""RSA signatures of DKIM digests (RFC 8017 section 8.2.1), made in a process of their own.

A 2048-bit signature costs about 0.27 ms of OpenSSL, more than the rest of a delivery; in the
event loop's process it would hold the loop that long per message. A thread does not help
(measured: the thread and the loop then take turns at the GIL), a process does: the loop
sends digests in batches and goes on, and the signatures take the other core. One such process
per server process, shared by its signers, started at the first signature and started again if
it dies; it ends when its parent does, even by SIGKILL (mta.stopping.die_with_parent).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import signal
from concurrent.futures import Executor, ProcessPoolExecutor

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from mta.stopping import die_with_parent

log = logging.getLogger(__name__)

# Each key crosses the pipe once per batch, with the digests it signs.
Jobs = dict[str, list[bytes]]


class KeyUnusable(ValueError):
    """The stored private key cannot sign: not PEM, not RSA, or broken."""


@functools.lru_cache(maxsize=1024)
def private_key(pem: str) -> rsa.RSAPrivateKey:
    """Parsed once per key: loading checks the key, which costs more than a signature."""
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError, UnsupportedAlgorithm) as error:
        raise KeyUnusable(str(error) or type(error).__name__) from error
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyUnusable(f"not an RSA key: {type(key).__name__}")
    return key


def rsa_sign(digest: bytes, pem: str) -> bytes:
    """RSASSA-PKCS1-v1_5 over a SHA-256 digest (RFC 6376 section 3.3.1, rsa-sha256)."""
    return private_key(pem).sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def sign_batch(jobs: Jobs) -> dict[str, list[bytes] | KeyUnusable]:
    """The signatures of each key's digests, in order, or why that key cannot sign."""
    signed: dict[str, list[bytes] | KeyUnusable] = {}
    for pem, digests in jobs.items():
        try:
            signed[pem] = [rsa_sign(digest, pem) for digest in digests]
        except KeyUnusable as error:  # one broken key must not fail the other keys' messages
            signed[pem] = error
    return signed


def _process_start(parent_pid: int) -> None:
    """First thing in the signing process."""
    die_with_parent(parent_pid)
    # A Ctrl-C at a terminal reaches the whole process group: the parent decides, not us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class SigningProcess:
    """The process, started on first use; a dead one is replaced on the next use."""

    def __init__(self) -> None:
        self._executor: ProcessPoolExecutor | None = None

    def executor(self) -> Executor:
        if self._executor is None:
            # spawn: a fork would copy this process's threads and event loop mid-flight.
            self._executor = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_process_start,
                initargs=(os.getpid(),),
            )
        return self._executor

    def broken(self, executor: Executor) -> None:
        """`executor`'s process died; the next use starts another."""
        if self._executor is executor:
            log.warning("the DKIM signing process died; starting another")
            self._executor = None
            executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


# One per server process: RSA needs one more core, not one more process per signer.
SIGNING_PROCESS = SigningProcess()
