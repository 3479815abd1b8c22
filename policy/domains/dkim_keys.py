"""DKIM key pairs for tenant domains and the DNS record that publishes each public key.

Pure apart from the randomness of key generation: no I/O. The private key (PKCS#8 PEM) goes to
storage and to the signer only; nothing here formats it for output, and its repr is hidden.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# RFC 8301 section 3.2: signers MUST use at least 1024 bits and SHOULD use at least 2048.
KEY_BITS = 2048
PUBLIC_EXPONENT = 65537

# Selectors are dated, "os" + YYYYMM ("os202611"): a rotated key gets a new selector, so the old
# record can stay published while mail signed with it is still in transit (RFC 6376 section
# 3.1 gives selectors exactly this purpose), and the name tells an operator the key's age.
SELECTOR_PREFIX = "os"


@dataclass(frozen=True, slots=True)
class DkimKeyPair:
    selector: str
    public_key: str  # base64 DER SubjectPublicKeyInfo: the record's p= value
    private_key_pem: str = field(repr=False)  # PKCS#8 PEM; for storage and the signer only


def selector_for(when: datetime) -> str:
    return f"{SELECTOR_PREFIX}{when.astimezone(UTC):%Y%m}"


def generate_key_pair(selector: str | None = None) -> DkimKeyPair:
    """A new RSA key pair. CPU-bound (tens of milliseconds): call it off the event loop."""
    key = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=KEY_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    return DkimKeyPair(
        selector=selector or selector_for(datetime.now(UTC)),
        public_key=_public_key_b64(key.public_key()),
        private_key_pem=pem,
    )


def public_key_of(private_key_pem: str) -> str:
    """The p= value that matches a stored private key (to check a pair belongs together)."""
    key = serialization.load_pem_private_key(private_key_pem.encode("ascii"), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return _public_key_b64(key.public_key())


def record_name(selector: str, domain: str) -> str:
    """Where verifiers look the key up: `<selector>._domainkey.<domain>` (RFC 6376 3.6.2.1)."""
    return f"{selector}._domainkey.{domain}"


def record_value(public_key: str) -> str:
    """The key record (RFC 6376 section 3.6.1): v=DKIM1 first, k=rsa, the key in p=.

    SubjectPublicKeyInfo rather than a bare RSAPublicKey: what `openssl rsa -pubout` and every
    provider publish, and what verifiers (dkimpy, OpenDKIM, the large mailbox providers) expect.
    """
    return f"v=DKIM1; k=rsa; p={public_key}"


def _public_key_b64(public_key: rsa.RSAPublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")
