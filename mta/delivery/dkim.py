"""DKIM signing of outbound mail (RFC 6376) with dkimpy, its RSA step done by OpenSSL.

dkimpy computes RSA in pure Python: about 8 ms per 2048-bit signature here, more than the rest
of a delivery. It calls the module-level `RSASSA_PKCS1_v1_5_sign` (and parses the PEM key on
every signature); both names are replaced in the `dkim` module with versions that build a
`cryptography` key from dkimpy's parsed numbers once per key and sign through OpenSSL. The
output is byte for byte the same (PKCS #1 v1.5 is deterministic); stock dkimpy verifies it in
tests/mta/delivery/test_dkim.py. The replacement depends on dkimpy's internals, so pyproject.toml
pins its exact version and the patch refuses any other.

Signing stays on the event loop (about 0.5 ms for a typical message, half of it RSA). A thread
would not make it cheaper: `cryptography`'s RSA holds the GIL here (measured: two threads sign
no faster than one, and a signing thread beside a busy loop is starved), and dkimpy is pure
Python. Only a large message goes to a thread, so that its canonicalization (about 27 ms a
megabyte) is interleaved with the loop's other work instead of stalling it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

log = logging.getLogger(__name__)

# The dkimpy release whose internals `_install` was written against (pyproject.toml pins it).
DKIMPY_VERSION = "1.1.8"

# Header fields signed when present (RFC 6376 section 5.4.1 recommends From, Reply-To,
# Subject, Date, To, Cc, MIME-Version, Content-Type, Message-ID, In-Reply-To, References),
# plus our reply token, which a receiver must be able to trust was ours.
SIGNED_FIELDS = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "mime-version",
    "content-type",
    "in-reply-to",
    "references",
    "x-opensend-reply-token",
)
# Listed once more than they occur, so a second From added in transit breaks the signature
# (RFC 6376 section 8.15, "oversigning").
OVERSIGNED = frozenset({"from"})
# relaxed/relaxed survives the header refolding and trailing-space changes relays make
# (RFC 6376 section 3.4).
CANONICALIZATION = (b"relaxed", b"relaxed")

# Messages above this size are signed in a thread: at about 6 ms and more, signing would stall
# every other session in the loop (DESIGN.md section 7); in a thread it gives the loop the GIL
# back every switch interval (5 ms). Below it, signing is quicker than that interval.
EXECUTOR_THRESHOLD_BYTES = 256 * 1024

# A domain without a key is reported this often, however much it sends.
UNSIGNED_WARNING_SECONDS = 3600.0

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha1": hashes.SHA1,
}


@functools.lru_cache(maxsize=1024)
def _openssl_key(n: int, e: int, d: int, p: int, q: int) -> rsa.RSAPrivateKey:
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(e, n),
    )
    return numbers.private_key()


def _openssl_sign(digest: Any, private_key: dict[str, int]) -> bytes:
    """dkimpy's RSASSA_PKCS1_v1_5_sign(hash, private_key), through OpenSSL (RFC 8017 8.2.1)."""
    key = _openssl_key(
        private_key["modulus"],
        private_key["publicExponent"],
        private_key["privateExponent"],
        private_key["prime1"],
        private_key["prime2"],
    )
    algorithm = _HASHES[digest.name.lower()]()
    return key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm))


_parse_pem_private_key = functools.lru_cache(maxsize=1024)(dkim.parse_pem_private_key)


def _install() -> bool:
    """Swap dkimpy's RSA signing and key parsing for the fast ones; False if not possible."""
    installed = version("dkimpy")
    if installed != DKIMPY_VERSION or not hasattr(dkim, "RSASSA_PKCS1_v1_5_sign"):
        log.warning(
            "dkimpy %s is not the pinned %s: signing with its pure-Python RSA (slow)",
            installed,
            DKIMPY_VERSION,
        )
        return False
    dkim.RSASSA_PKCS1_v1_5_sign = _openssl_sign
    dkim.parse_pem_private_key = _parse_pem_private_key
    return True


OPENSSL_RSA = _install()


def header_list(field_names: list[str]) -> list[bytes]:
    """The h= list for a message with these header fields, in SIGNED_FIELDS order.

    A field is listed as many times as it occurs (RFC 6376 section 5.4.2 signs instances from
    the bottom up), oversigned fields once more.
    """
    present = [name.lower() for name in field_names]
    listed: list[bytes] = []
    for name in SIGNED_FIELDS:
        count = present.count(name)
        if count:
            listed.extend([name.encode()] * (count + (name in OVERSIGNED)))
    return listed


def sign_message(message: bytes, *, domain: str, selector: str, private_key_pem: str) -> bytes:
    """The DKIM-Signature field for `message`, ending in CRLF, to put in front of it."""
    signer = dkim.DKIM(message, signature_algorithm=b"rsa-sha256", linesep=b"\r\n")
    names = [name.decode("ascii", "replace") for name, _ in signer.headers]
    signature: bytes = signer.sign(
        selector.encode(),
        domain.encode(),
        private_key_pem.encode(),
        canonicalize=CANONICALIZATION,
        include_headers=header_list(names),
    )
    return signature


class DkimSigner:
    """Signs with the sending domain's key; a message it cannot sign goes out unsigned."""

    def __init__(self, *, executor_threshold: int = EXECUTOR_THRESHOLD_BYTES) -> None:
        self._executor_threshold = executor_threshold
        self._warned: dict[str | None, float] = {}

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
        sign = functools.partial(
            sign_message, message, domain=domain, selector=selector, private_key_pem=private_key
        )
        try:
            if len(message) > self._executor_threshold:
                field = await asyncio.get_running_loop().run_in_executor(None, sign)
            else:
                field = sign()
        except dkim.DKIMException as error:
            # A broken key must not hold mail back; receivers judge unsigned mail by SPF.
            log.error(
                "sending unsigned: DKIM signing failed",
                extra={"domain": domain, "error": str(error)},
            )
            return message
        return field + message
