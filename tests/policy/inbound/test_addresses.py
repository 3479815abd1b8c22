"""Mailbox splitting: normalised for routing, and closed to every relay trick (RFC 5321 2.4)."""

from __future__ import annotations

import pytest

from policy import replies
from policy.inbound.addresses import Mailbox, envelope_address_refusal, split_mailbox


@pytest.mark.parametrize(
    ("address", "local", "domain"),
    [
        pytest.param("alice@example.com", "alice", "example.com", id="plain"),
        pytest.param("<alice@example.com>", "alice", "example.com", id="angle_brackets"),
        pytest.param("  alice@example.com  ", "alice", "example.com", id="surrounding_space"),
        pytest.param("Alice@Example.COM", "alice", "example.com", id="mixed_case"),
        pytest.param("alice@example.com.", "alice", "example.com", id="trailing_dot"),
        pytest.param("alice+news@example.com", "alice+news", "example.com", id="subaddress"),
        pytest.param("a.b-c_d@mail.example.com", "a.b-c_d", "mail.example.com", id="dotted"),
    ],
)
def test_split_mailbox_normalises_a_routable_address(address: str, local: str, domain: str) -> None:
    assert split_mailbox(address) == Mailbox(local, domain)


def test_mailbox_address_joins_local_part_and_domain() -> None:
    mailbox = split_mailbox("Alice@Example.COM.")
    assert mailbox is not None
    assert mailbox.address == "alice@example.com"


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("@relay.example.net:alice@example.com", id="source_route"),
        pytest.param("<@relay.example.net:alice@example.com>", id="source_route_bracketed"),
        pytest.param("<@a.example,@b.example:alice@example.com>", id="source_route_two_hops"),
        pytest.param('"alice@victim.example"@example.com', id="quoted_local_with_at"),
        pytest.param('"alice"@example.com', id="quoted_local"),
        pytest.param("alice%victim.example@example.com", id="percent_hack"),
        pytest.param("victim.example!alice@example.com", id="bang_path"),
        pytest.param("alice@[192.0.2.1]", id="ip_literal"),
        pytest.param("alice@[IPv6:2001:db8::1]", id="ipv6_literal"),
        pytest.param("alice@victim.example@example.com", id="two_ats"),
        pytest.param("alice\\@victim.example@example.com", id="escaped_at"),
        pytest.param("alice @example.com", id="space_in_local"),
        pytest.param("ali\x00ce@example.com", id="nul_in_local"),
        pytest.param("alice@exa\x7fmple.com", id="delete_in_domain"),
        pytest.param("alice\x1b[2J@example.com", id="escape_sequence"),
    ],
)
def test_split_mailbox_refuses_relay_tricks(address: str) -> None:
    assert split_mailbox(address) is None


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("", id="empty"),
        pytest.param("<>", id="null_path"),
        pytest.param("alice", id="no_at"),
        pytest.param("@example.com", id="no_local"),
        pytest.param("alice@", id="no_domain"),
        pytest.param("alice@.", id="domain_only_dot"),
        pytest.param("alice@.example.com", id="leading_dot"),
        pytest.param("alice@example..com", id="empty_label"),
    ],
)
def test_split_mailbox_refuses_empty_parts(address: str) -> None:
    assert split_mailbox(address) is None


@pytest.mark.parametrize(
    ("local", "base"),
    [
        pytest.param("alice+news", "alice", id="detail"),
        pytest.param("alice+news+more", "alice", id="two_details"),
        pytest.param("alice", "alice", id="no_detail"),
        pytest.param("reply+osr_abc_def", "reply", id="reply_address"),
    ],
)
def test_base_local_strips_the_subaddress(local: str, base: str) -> None:
    assert Mailbox(local, "example.com").base_local == base


# -- envelope addresses and SMTPUTF8 (RFC 6531 section 3.4) ----------------------------------


@pytest.mark.parametrize(
    ("address", "declared", "offered", "expected"),
    [
        pytest.param("ann@a.test", False, True, None, id="ascii"),
        pytest.param("zoë@a.test", True, True, None, id="declared"),
        pytest.param("zoë@a.test", False, True, replies.S553_NON_ASCII_ADDRESS, id="undeclared"),
        pytest.param(
            "zoë@a.test", False, False, replies.S553_NON_ASCII_NOT_SENDABLE, id="unoffered"
        ),
        pytest.param("ann@a.test", True, False, replies.S555_MAIL_PARAMETERS, id="unadvertised"),
        pytest.param("z\udcffe@a.test", True, True, replies.S501_SYNTAX_ADDRESS, id="not_utf8"),
    ],
)
def test_envelope_address_refusal_follows_rfc_6531(
    address: str, declared: bool, offered: bool, expected: replies.Reply | None
) -> None:
    refusal = envelope_address_refusal(
        address, declared_smtputf8=declared, offers_smtputf8=offered, sender=False
    )
    assert refusal is expected
