"""DKIM key pairs: what is generated, the record that publishes it, and that the two belong
together (a message signed with the private key verifies against the record, with dkimpy)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from policy.domains import dkim_keys
from policy.domains.dkim_keys import DkimKeyPair

MESSAGE = (
    b"From: Support <support@example.com>\r\n"
    b"To: customer@example.net\r\n"
    b"Subject: Your order\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"It shipped.\r\n"
)


@pytest.fixture(scope="module")
def pair() -> DkimKeyPair:
    return dkim_keys.generate_key_pair("os202611")


def sign(pair: DkimKeyPair, domain: str = "example.com") -> bytes:
    signature: bytes = dkim.sign(
        MESSAGE,
        pair.selector.encode(),
        domain.encode(),
        pair.private_key_pem.encode(),
        include_headers=[b"from", b"to", b"subject", b"message-id"],
    )
    return signature + MESSAGE


def verify(signed: bytes, record: str) -> bool:
    result: bool = dkim.verify(signed, dnsfunc=lambda name, timeout=5: record.encode())
    return result


def test_private_key_is_pkcs8_pem_of_a_2048_bit_rsa_key(pair: DkimKeyPair) -> None:
    assert pair.private_key_pem.startswith("-----BEGIN PRIVATE KEY-----\n")
    key = serialization.load_pem_private_key(pair.private_key_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048


def test_public_key_is_base64_spki_of_the_private_key(pair: DkimKeyPair) -> None:
    public = serialization.load_der_public_key(base64.b64decode(pair.public_key))
    assert isinstance(public, rsa.RSAPublicKey)
    assert dkim_keys.public_key_of(pair.private_key_pem) == pair.public_key


def test_each_pair_is_new() -> None:
    assert dkim_keys.generate_key_pair().public_key != dkim_keys.generate_key_pair().public_key


def test_repr_never_shows_the_private_key(pair: DkimKeyPair) -> None:
    assert "PRIVATE" not in repr(pair)
    assert pair.public_key in repr(pair)


@pytest.mark.parametrize(
    ("when", "selector"),
    [
        pytest.param(datetime(2026, 11, 22, tzinfo=UTC), "os202611", id="utc"),
        pytest.param(
            datetime(2027, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
            "os202612",
            id="local_time_is_read_as_utc",
        ),
    ],
)
def test_selector_is_dated_by_utc_month(when: datetime, selector: str) -> None:
    assert dkim_keys.selector_for(when) == selector


def test_default_selector_is_this_month() -> None:
    assert dkim_keys.generate_key_pair().selector == dkim_keys.selector_for(datetime.now(UTC))


def test_record_lives_under_the_selector_and_domainkey() -> None:
    assert dkim_keys.record_name("os202611", "example.com") == "os202611._domainkey.example.com"


def test_record_value_is_v_dkim1_rsa_with_the_key(pair: DkimKeyPair) -> None:
    assert dkim_keys.record_value(pair.public_key) == f"v=DKIM1; k=rsa; p={pair.public_key}"


def test_message_signed_with_the_private_key_verifies_against_the_record(
    pair: DkimKeyPair,
) -> None:
    assert verify(sign(pair), dkim_keys.record_value(pair.public_key))


def test_message_does_not_verify_against_another_key(pair: DkimKeyPair) -> None:
    other = dkim_keys.generate_key_pair()
    assert not verify(sign(pair), dkim_keys.record_value(other.public_key))


def test_public_key_of_refuses_a_non_rsa_key() -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(ValueError, match="RSA"):
        dkim_keys.public_key_of(pem)
