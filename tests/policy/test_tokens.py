"""Reply tokens as DESIGN.md section 4 fixes them: format, address, verification and rotation.

The expected token is computed here from the specification with hmac/hashlib, independently of
`policy.tokens`, so a change of format shows up as a failing test rather than a silent drift.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy.tokens import (
    ReplyToken,
    ReplyTokens,
    TokenFailure,
    find_tokens,
    parse_token,
    token_from_local_part,
)

SECRET = b"s" * 32
OLD_SECRET = b"o" * 32
TENANT = UUID("11111111-2222-4333-8444-555555555555")
OTHER_TENANT = UUID("99999999-2222-4333-8444-555555555555")
EMAIL = UUID("0123456789abcdef0123456789abcdef")
OTHER_EMAIL = UUID("fedcba9876543210fedcba9876543210")
REPLY_DOMAIN = "reply.example.com"

HEX = "0123456789abcdef"


def expected_token(secret: bytes, tenant_id: UUID, email_id: UUID, reply_domain: str) -> str:
    """DESIGN.md 4, written out: osr_<eid>_<first 20 hex of HMAC-SHA256(secret, v1:...)>."""
    eid = email_id.hex
    message = "v1:" + str(tenant_id) + ":" + eid + ":" + reply_domain.lower()
    digest = hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()
    return f"osr_{eid}_{digest[:20]}"


@pytest.fixture
def tokens() -> ReplyTokens:
    return ReplyTokens(SECRET)


def flip(char: str) -> str:
    """Another hex digit than `char`."""
    return HEX[(HEX.index(char) + 1) % 16]


# -- format -----------------------------------------------------------------------------------


def test_minted_token_is_exactly_the_designed_format(tokens: ReplyTokens) -> None:
    token = tokens.mint(TENANT, EMAIL, REPLY_DOMAIN)
    assert str(token) == expected_token(SECRET, TENANT, EMAIL, REPLY_DOMAIN)
    assert re.fullmatch(r"osr_[0-9a-f]{32}_[0-9a-f]{20}", str(token))


def test_token_names_the_email_by_its_uuid_as_lowercase_hex(tokens: ReplyTokens) -> None:
    token = tokens.mint(TENANT, EMAIL, REPLY_DOMAIN)
    assert token.email_id == EMAIL
    assert str(token).split("_")[1] == "0123456789abcdef0123456789abcdef"


def test_signature_covers_the_reply_domain_in_lowercase(tokens: ReplyTokens) -> None:
    assert tokens.mint(TENANT, EMAIL, "Reply.Example.COM") == tokens.mint(
        TENANT, EMAIL, REPLY_DOMAIN
    )


def test_reply_address_local_part_is_63_octets_with_reply_prefix(tokens: ReplyTokens) -> None:
    token = tokens.mint(TENANT, EMAIL, REPLY_DOMAIN)
    address = token.address("Reply.Example.COM")
    local, _, domain = address.rpartition("@")
    assert local == "reply+" + expected_token(SECRET, TENANT, EMAIL, REPLY_DOMAIN)
    assert len(local.encode("ascii")) == 63  # within RFC 5321's 64
    assert domain == REPLY_DOMAIN


# -- parsing ----------------------------------------------------------------------------------


def test_parse_token_reads_back_a_minted_token(tokens: ReplyTokens) -> None:
    token = tokens.mint(TENANT, EMAIL, REPLY_DOMAIN)
    assert parse_token(str(token)) == token


def test_parse_token_is_case_insensitive(tokens: ReplyTokens) -> None:
    token = tokens.mint(TENANT, EMAIL, REPLY_DOMAIN)
    assert parse_token(str(token).upper()) == token


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("osr_0123_abcd", id="short"),
        pytest.param("osr_" + "0" * 32 + "_" + "0" * 19, id="signature_too_short"),
        pytest.param("osr_" + "0" * 32 + "_" + "0" * 21, id="signature_too_long"),
        pytest.param("osr_" + "0" * 31 + "_" + "0" * 20, id="email_id_too_short"),
        pytest.param("osr_" + "g" * 32 + "_" + "0" * 20, id="not_hex"),
        pytest.param("tok_" + "0" * 32 + "_" + "0" * 20, id="wrong_prefix"),
    ],
)
def test_parse_token_refuses_anything_but_a_whole_token(text: str) -> None:
    assert parse_token(text) is None


def test_find_tokens_finds_a_token_inside_a_message_id(tokens: ReplyTokens) -> None:
    token = tokens.mint(TENANT, EMAIL, REPLY_DOMAIN)
    assert find_tokens(f"<{token}@example.com>") == [token]


def test_find_tokens_finds_every_token_in_order(tokens: ReplyTokens) -> None:
    first = tokens.mint(TENANT, EMAIL, REPLY_DOMAIN)
    second = tokens.mint(TENANT, OTHER_EMAIL, REPLY_DOMAIN)
    text = f"<{first}@example.com>\r\n <{str(second).upper()}@example.com>"
    assert find_tokens(text) == [first, second]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("<osr_" + "a" * 32 + "_" + "b" * 21 + "@example.com>", id="longer_signature"),
        pytest.param("<osr_" + "a" * 33 + "_" + "b" * 20 + "@example.com>", id="longer_email_id"),
        pytest.param("<osr_" + "a" * 32 + "_" + "b" * 20 + "c0ffee@x>", id="hex_run_continues"),
        pytest.param("<osr_" + "a" * 32 + "_" + "b" * 20 + "Z@x>", id="letters_continue"),
    ],
)
def test_find_tokens_ignores_tokens_inside_longer_strings(text: str) -> None:
    assert find_tokens(text) == []


def test_find_tokens_in_nothing_is_empty() -> None:
    assert find_tokens("") == []
    assert find_tokens("<CAF00@mail.example.com>") == []


def test_token_from_local_part_reads_a_reply_address(tokens: ReplyTokens) -> None:
    token = tokens.mint(TENANT, EMAIL, REPLY_DOMAIN)
    assert token_from_local_part(f"reply+{token}") == token
    assert token_from_local_part(f"REPLY+{str(token).upper()}") == token


@pytest.mark.parametrize(
    "local_part",
    [
        pytest.param("alice", id="plain"),
        pytest.param("alice+osr_" + "0" * 32 + "_" + "0" * 20, id="other_prefix"),
        pytest.param("reply", id="reply_alone"),
        pytest.param("reply+tickets", id="reply_with_detail"),
        pytest.param("replyosr_" + "0" * 32 + "_" + "0" * 20, id="no_plus"),
    ],
)
def test_token_from_local_part_ignores_ordinary_local_parts(local_part: str) -> None:
    assert token_from_local_part(local_part) is None


@pytest.mark.parametrize(
    "local_part",
    [
        pytest.param("reply+osr_", id="prefix_only"),
        pytest.param("reply+osr_" + "0" * 32, id="no_signature"),
        pytest.param("reply+osr_" + "0" * 32 + "_" + "0" * 19, id="truncated_signature"),
        pytest.param("reply+osr_" + "0" * 32 + "_" + "0" * 21, id="long_signature"),
        pytest.param("reply+osr_" + "z" * 32 + "_" + "0" * 20, id="not_hex"),
        pytest.param("reply+osr_" + "0" * 32 + "_" + "0" * 20 + "+x", id="trailing_detail"),
    ],
)
def test_token_from_local_part_reports_a_broken_reply_address_as_malformed(
    local_part: str,
) -> None:
    assert token_from_local_part(local_part) is TokenFailure.MALFORMED


# -- verification -----------------------------------------------------------------------------


def test_signature_valid_for_the_tenant_and_domain_it_was_minted_for(
    tokens: ReplyTokens,
) -> None:
    token = tokens.mint(TENANT, EMAIL, REPLY_DOMAIN)
    assert tokens.signature_valid(token, TENANT, REPLY_DOMAIN)
    assert tokens.signature_valid(token, TENANT, REPLY_DOMAIN.upper())


def test_signature_invalid_for_another_tenant(tokens: ReplyTokens) -> None:
    token = tokens.mint(TENANT, EMAIL, REPLY_DOMAIN)
    assert not tokens.signature_valid(token, OTHER_TENANT, REPLY_DOMAIN)


def test_signature_invalid_for_another_email(tokens: ReplyTokens) -> None:
    token = tokens.mint(TENANT, EMAIL, REPLY_DOMAIN)
    moved = ReplyToken(OTHER_EMAIL, token.signature)
    assert not tokens.signature_valid(moved, TENANT, REPLY_DOMAIN)


def test_signature_invalid_for_another_reply_domain(tokens: ReplyTokens) -> None:
    token = tokens.mint(TENANT, EMAIL, REPLY_DOMAIN)
    assert not tokens.signature_valid(token, TENANT, "reply.example.net")


def test_signature_invalid_with_a_flipped_digit(tokens: ReplyTokens) -> None:
    token = tokens.mint(TENANT, EMAIL, REPLY_DOMAIN)
    tampered = ReplyToken(EMAIL, flip(token.signature[0]) + token.signature[1:])
    assert not tokens.signature_valid(tampered, TENANT, REPLY_DOMAIN)


def test_signature_invalid_when_truncated(tokens: ReplyTokens) -> None:
    token = tokens.mint(TENANT, EMAIL, REPLY_DOMAIN)
    truncated = ReplyToken(EMAIL, token.signature[:-1])
    assert not tokens.signature_valid(truncated, TENANT, REPLY_DOMAIN)


def test_signature_invalid_under_another_secret() -> None:
    token = ReplyTokens(OLD_SECRET).mint(TENANT, EMAIL, REPLY_DOMAIN)
    assert not ReplyTokens(SECRET).signature_valid(token, TENANT, REPLY_DOMAIN)


# -- rotation ---------------------------------------------------------------------------------


def test_token_minted_with_a_previous_secret_still_verifies() -> None:
    old = ReplyTokens(OLD_SECRET).mint(TENANT, EMAIL, REPLY_DOMAIN)
    rotated = ReplyTokens(SECRET, previous=[OLD_SECRET])
    assert rotated.signature_valid(old, TENANT, REPLY_DOMAIN)


def test_new_tokens_are_minted_with_the_current_secret() -> None:
    rotated = ReplyTokens(SECRET, previous=[OLD_SECRET])
    token = rotated.mint(TENANT, EMAIL, REPLY_DOMAIN)
    assert str(token) == expected_token(SECRET, TENANT, EMAIL, REPLY_DOMAIN)
    assert ReplyTokens(SECRET).signature_valid(token, TENANT, REPLY_DOMAIN)


def test_reply_tokens_refuse_an_empty_secret() -> None:
    with pytest.raises(ValueError):
        ReplyTokens(b"")


# -- properties -------------------------------------------------------------------------------

domains = st.from_regex(
    r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?(\.[a-zA-Z]{2,10}){1,3}", fullmatch=True
)


@given(tenant_id=st.uuids(), email_id=st.uuids(), reply_domain=domains)
def test_any_minted_token_verifies_through_its_reply_address(
    tenant_id: UUID, email_id: UUID, reply_domain: str
) -> None:
    tokens = ReplyTokens(SECRET)
    token = tokens.mint(tenant_id, email_id, reply_domain)
    assert str(token) == expected_token(SECRET, tenant_id, email_id, reply_domain)
    local, _, domain = token.address(reply_domain).rpartition("@")
    assert len(local) == 63
    parsed = token_from_local_part(local)
    assert parsed == token
    assert isinstance(parsed, ReplyToken)
    assert tokens.signature_valid(parsed, tenant_id, domain)


@given(
    tenant_id=st.uuids(),
    email_id=st.uuids(),
    reply_domain=domains,
    position=st.integers(min_value=0, max_value=19),
    replacement=st.sampled_from(HEX),
)
def test_any_single_character_change_of_the_signature_fails(
    tenant_id: UUID, email_id: UUID, reply_domain: str, position: int, replacement: str
) -> None:
    tokens = ReplyTokens(SECRET)
    signature = tokens.mint(tenant_id, email_id, reply_domain).signature
    if signature[position] == replacement:
        replacement = flip(replacement)
    changed = signature[:position] + replacement + signature[position + 1 :]
    assert not tokens.signature_valid(ReplyToken(email_id, changed), tenant_id, reply_domain)
