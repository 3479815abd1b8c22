"""The DKIM-Signature field we build (RFC 6376), checked by stock dkimpy: it verifies our
signatures, and it computes the same body hash from the same body."""

from __future__ import annotations

import re

import dkim
import pytest
from dkim.util import parse_tag_value
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mta.delivery import dkim_header
from mta.delivery.dkim import sign_message
from mta.delivery.dkim_header import UnsignableMessage, prepare, relaxed_body
from policy.domains.dkim_keys import DkimKeyPair, generate_key_pair, record_value

DOMAIN = "sender.example"
SELECTOR = "os202612"


@pytest.fixture(scope="module")
def pair() -> DkimKeyPair:
    return generate_key_pair(SELECTOR)


def verifies(message: bytes, pair: DkimKeyPair) -> bool:
    record = record_value(pair.public_key).encode()

    def txt(name: bytes, timeout: int = 5) -> bytes:
        assert name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode()
        return record

    return bool(dkim.verify(message, dnsfunc=txt))


def signed(message: bytes, pair: DkimKeyPair) -> bytes:
    field = sign_message(
        message, domain=DOMAIN, selector=SELECTOR, private_key_pem=pair.private_key_pem
    )
    return field + message


def tags(message: bytes) -> dict[bytes, bytes]:
    found = re.search(rb"^DKIM-Signature:(.*?)\r\n(?![ \t])", message, re.S | re.M)
    assert found is not None
    return parse_tag_value(re.sub(rb"\s+", b"", found.group(1)).replace(b";", b"; "))


def dkimpy_body_hash(message: bytes, pair: DkimKeyPair) -> bytes:
    """What dkimpy's own signer puts in bh= for relaxed body canonicalization."""
    field = dkim.sign(
        message,
        b"x",
        DOMAIN.encode(),
        pair.private_key_pem.encode(),
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"from"],
    )
    return tags(field + message)[b"bh"]


TYPICAL = (
    b"From: Bench <bench@sender.example>\r\n"
    b"To: rcpt@example.net\r\n"
    b"Subject:  Hello   there \r\n\tfolded onto a second line\r\n"
    b"Date: Mon, 07 Dec 2026 12:00:00 +0000\r\n"
    b"Message-ID: <osr_1@sender.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"X-OpenSend-Reply-Token: osr_1\r\n"
    b"X-Not-Signed: anything\r\n"
    b"\r\n"
    b"Body  with \t runs of space \t\r\n\r\nand trailing empty lines\r\n\r\n\r\n"
)


def test_a_typical_message_verifies_and_lists_the_fields_it_has(pair: DkimKeyPair) -> None:
    message = signed(TYPICAL, pair)
    assert verifies(message, pair)
    found = tags(message)
    assert found[b"h"].split(b":") == [
        b"from",
        b"from",  # oversigned (RFC 6376 section 8.15)
        b"to",
        b"subject",
        b"date",
        b"message-id",
        b"mime-version",
        b"content-type",
        b"x-opensend-reply-token",
    ]
    assert (found[b"a"], found[b"c"], found[b"d"], found[b"s"]) == (
        b"rsa-sha256",
        b"relaxed/relaxed",
        DOMAIN.encode(),
        SELECTOR.encode(),
    )
    assert found[b"bh"] == dkimpy_body_hash(TYPICAL, pair)


def test_every_line_of_the_field_stays_within_78_octets(pair: DkimKeyPair) -> None:
    field = signed(TYPICAL, pair)[: signed(TYPICAL, pair).index(b"\r\nFrom:")]
    assert all(len(line) <= 78 for line in field.split(b"\r\n"))  # RFC 5322 section 2.1.1


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda m: m.replace(b"Hello", b"Hallo"), id="subject"),
        pytest.param(lambda m: m.replace(b"trailing", b"Trailing"), id="body"),
        pytest.param(
            lambda m: m.replace(b"To: ", b"From: evil@x.example\r\nTo: "), id="from_added"
        ),
    ],
)
def test_a_change_to_what_is_signed_breaks_the_signature(pair: DkimKeyPair, change: object) -> None:
    message = signed(TYPICAL, pair)
    assert callable(change)
    assert not verifies(change(message), pair)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda m: m.replace(b"Hello   there", b"Hello there"), id="header_spaces"),
        pytest.param(lambda m: m.replace(b"space \t\r\n", b"space\r\n"), id="trailing_space"),
        pytest.param(
            lambda m: m.replace(b"X-Not-Signed: anything", b"X-Not-Signed: b"), id="other"
        ),
        pytest.param(lambda m: m + b"\r\n\r\n", id="more_empty_lines"),
    ],
)
def test_changes_relaxed_canonicalization_ignores_keep_it_valid(
    pair: DkimKeyPair, change: object
) -> None:
    assert callable(change)
    assert verifies(change(signed(TYPICAL, pair)), pair)


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(b"From: a@sender.example\r\nTo: b@example.net\r\n\r\n", id="empty_body"),
        pytest.param(b"From: a@sender.example\r\n", id="no_body_at_all"),
        pytest.param(
            b"From: a@sender.example\nTo: b@example.net\n\nbare LF\nlines\n", id="bare_lf"
        ),
        pytest.param(
            b"From: a@sender.example\r\nReferences: <1@a>\r\nReferences: <2@b>\r\n\r\nx\r\n",
            id="repeated_field",
        ),
        pytest.param(b"From a@b Mon Dec  7\r\nFrom: a@sender.example\r\n\r\nx\r\n", id="mbox_line"),
    ],
)
def test_unusual_shapes_verify_and_hash_their_body_as_dkimpy_does(
    pair: DkimKeyPair, message: bytes
) -> None:
    assert verifies(signed(message, pair), pair)
    assert tags(signed(message, pair))[b"bh"] == dkimpy_body_hash(message, pair)


def test_a_body_without_its_last_line_end_is_hashed_as_smtp_will_send_it(
    pair: DkimKeyPair,
) -> None:
    """DATA ends the last line with CRLF (RFC 5321 section 4.1.1.4): the receiver hashes that,
    and a space before it is then trailing whitespace (RFC 6376 section 3.4.4)."""
    message = b"From: a@sender.example\r\n\r\nlast line  "
    assert verifies(signed(message, pair) + b"\r\n", pair)
    assert relaxed_body(b"last line  ") == b"last line\r\n"


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(b" folded first\r\nFrom: a@b\r\n\r\n", id="continuation_first"),
        pytest.param(b"From: a@b\r\nnot a field\r\n\r\n", id="line_without_colon"),
        pytest.param(b"To: b@example.net\r\n\r\nbody\r\n", id="no_from"),
    ],
)
def test_a_header_that_cannot_be_parsed_is_refused(message: bytes) -> None:
    with pytest.raises(UnsignableMessage):
        prepare(message, domain=DOMAIN, selector=SELECTOR, timestamp=0)


def test_the_signed_instances_are_taken_from_the_bottom_up() -> None:
    """RFC 6376 section 5.4.2: h=references:references signs the last instance, then the one
    above it."""
    fields, _ = dkim_header.split(b"From: a\r\nReferences: 1\r\nTo: b\r\nReferences: 2\r\n\r\n")
    names = [name.lower() for name, _ in fields]
    listed = dkim_header.header_list(names)
    assert listed == [b"from", b"from", b"to", b"references", b"references"]
    chosen = dkim_header._signed_fields(fields, names, [b"references", b"references", b"from"])
    assert chosen == [(b"References", b" 2"), (b"References", b" 1"), (b"From", b" a")]


_text = st.text(alphabet=st.sampled_from(list("abc XYZ.,;:<>@\t=-")), min_size=0, max_size=40).map(
    str.encode
)
_body_line = st.one_of(_text, st.just(b""), st.just(b"  "), st.just(b"\t \t"), st.just(b"."))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    subject=_text,
    folded=st.lists(_text, max_size=2),
    body=st.lists(_body_line, max_size=8),
    trailing=st.integers(min_value=0, max_value=3),
)
def test_generated_messages_verify_with_dkimpy(
    pair: DkimKeyPair, subject: bytes, folded: list[bytes], body: list[bytes], trailing: int
) -> None:
    subject_field = b"Subject: " + subject + b"".join(b"\r\n\t" + part for part in folded)
    message = (
        b"From: Some One <a@sender.example>\r\nTo: b@example.net\r\n"
        + subject_field
        + b"\r\n\r\n"
        + b"".join(line + b"\r\n" for line in body)
        + b"\r\n" * trailing
    )
    assert verifies(signed(message, pair), pair)
    assert tags(signed(message, pair))[b"bh"] == dkimpy_body_hash(message, pair)
