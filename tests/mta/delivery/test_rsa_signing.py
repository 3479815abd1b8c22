"""The signing process (mta.delivery.rsa_signing): a dead one is replaced without a message going
out unsigned, a key that cannot sign spoils only its own messages, and the process ends with
its parent, even when the parent is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from mta.delivery.dkim import DkimSigner
from mta.delivery.rsa_signing import SigningProcess
from policy.domains.dkim_keys import DkimKeyPair, generate_key_pair, record_value

DOMAIN = "sender.example"
MESSAGE = b"From: a@sender.example\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nHello\r\n"
REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def pair() -> DkimKeyPair:
    return generate_key_pair("s1")


@pytest.fixture
def process() -> Iterator[SigningProcess]:
    made = SigningProcess()
    yield made
    made.close()


def verifies(message: bytes, pair: DkimKeyPair) -> bool:
    record = record_value(pair.public_key).encode()
    return bool(dkim.verify(message, dnsfunc=lambda name, timeout=5: record))


async def sign(signer: DkimSigner, pair: DkimKeyPair, key: str | None = None) -> bytes:
    return await signer.sign(
        MESSAGE, domain=DOMAIN, selector="s1", private_key=key or pair.private_key_pem
    )


def process_pid(process: SigningProcess) -> int:
    return int(process.executor().submit(os.getpid).result(timeout=60))


async def test_signatures_are_made_in_another_process(
    process: SigningProcess, pair: DkimKeyPair
) -> None:
    signer = DkimSigner(process=process)
    results = await asyncio.gather(*(sign(signer, pair) for _ in range(20)))
    assert all(verifies(result, pair) for result in results)
    assert process_pid(process) != os.getpid()


async def test_a_killed_signing_process_is_replaced_and_no_message_goes_unsigned(
    process: SigningProcess, pair: DkimKeyPair
) -> None:
    signer = DkimSigner(process=process)
    assert verifies(await sign(signer, pair), pair)
    first = process_pid(process)
    os.kill(first, signal.SIGKILL)
    after = await asyncio.gather(*(sign(signer, pair) for _ in range(5)))
    assert all(result.startswith(b"DKIM-Signature:") for result in after)
    assert all(verifies(result, pair) for result in after)
    assert verifies(await sign(signer, pair), pair)
    assert process_pid(process) != first


async def test_a_key_that_cannot_sign_leaves_its_message_unsigned_and_spoils_no_other(
    process: SigningProcess, pair: DkimKeyPair
) -> None:
    signer = DkimSigner(process=process)
    broken = "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
    results = await asyncio.gather(
        sign(signer, pair), sign(signer, pair, broken), sign(signer, pair)
    )
    assert verifies(results[0], pair) and verifies(results[2], pair)
    assert results[1] == MESSAGE


def test_the_signing_process_ends_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import os, sys, time
                from mta.delivery.rsa_signing import SigningProcess
                process = SigningProcess()
                print(process.executor().submit(os.getpid).result(), flush=True)
                time.sleep(600)
                """
            ),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
    finally:
        parent.kill()
        parent.wait()
    for _ in range(600):  # up to 60 s, as the soak test allows (tests/perf/soak.py)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        # Reaped by init once it exits; until then it may be a zombie, which also counts.
        if Path(f"/proc/{child}/stat").read_text().split(") ")[1].startswith("Z"):
            return
        time.sleep(0.1)
    pytest.fail(f"the signing process {child} outlived its parent")
