"""Which strings are domain names a tenant may add, and the one form they are stored in."""

from __future__ import annotations

import pytest

from policy.domains.names import DomainNameError, is_subdomain, normalize_domain


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        pytest.param("example.com", "example.com", id="plain"),
        pytest.param("Example.COM", "example.com", id="uppercase_is_folded"),
        pytest.param("example.com.", "example.com", id="trailing_root_dot"),
        pytest.param("  example.com ", "example.com", id="surrounding_space"),
        pytest.param("mail-1.example.co.uk", "mail-1.example.co.uk", id="hyphen_digit_depth"),
        pytest.param("1example.com", "1example.com", id="label_starting_with_digit"),
        pytest.param("bücher.example", "xn--bcher-kva.example", id="unicode_to_a_label"),
        pytest.param("BÜCHER.example", "xn--bcher-kva.example", id="unicode_case_folded"),
        pytest.param("xn--bcher-kva.example", "xn--bcher-kva.example", id="a_label_kept"),
        pytest.param("faß.de", "xn--fa-hia.de", id="idna2008_keeps_sharp_s"),
        pytest.param("a" * 63 + ".com", "a" * 63 + ".com", id="longest_label"),
    ],
)
def test_accepted_names_are_stored_lowercase_ascii(text: str, stored: str) -> None:
    assert normalize_domain(text) == stored


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param(".", "empty", id="only_the_root"),
        pytest.param("https://example.com/", "not a domain name", id="url"),
        pytest.param("support@example.com", "not a domain name", id="address"),
        pytest.param("192.0.2.1", "IP address", id="ipv4"),
        pytest.param("2001:db8::1", "IP address", id="ipv6"),
        pytest.param("[192.0.2.1]", "IP address", id="address_literal"),
        pytest.param("exa mple.com", "white space", id="inner_space"),
        pytest.param("example", "single label", id="single_label"),
        pytest.param("localhost", "single label", id="localhost"),
        pytest.param("mail.localhost", "reserved", id="localhost_tld"),
        pytest.param("example.invalid", "reserved", id="invalid_tld"),
        pytest.param("example.123", "numeric", id="numeric_tld"),
        pytest.param("a..com", "empty label", id="empty_label"),
        pytest.param("-a.com", "inner hyphens", id="leading_hyphen"),
        pytest.param("a-.com", "inner hyphens", id="trailing_hyphen"),
        pytest.param("a_b.com", "inner hyphens", id="underscore"),
        pytest.param("ab--cd.com", "3rd and 4th", id="reserved_hyphens"),
        pytest.param("xn--zz.com", "A-label", id="bogus_a_label"),
        pytest.param("a" * 64 + ".com", "longer than 63", id="label_too_long"),
        pytest.param(".".join(["a" * 60] * 5), "longer than 253", id="name_too_long"),
        pytest.param("☃.net", "internationalised", id="disallowed_code_point"),
    ],
)
def test_refused_names_say_why(text: str, says: str) -> None:
    with pytest.raises(DomainNameError, match=says):
        normalize_domain(text)


@pytest.mark.parametrize(
    ("name", "parent", "under"),
    [
        pytest.param("inbound.example.com", "example.com", True, id="child"),
        pytest.param("a.b.example.com", "example.com", True, id="grandchild"),
        pytest.param("example.com", "example.com", False, id="itself"),
        pytest.param("badexample.com", "example.com", False, id="suffix_without_dot"),
        pytest.param("example.com", "inbound.example.com", False, id="parent"),
    ],
)
def test_is_subdomain(name: str, parent: str, under: bool) -> None:
    assert is_subdomain(name, parent) is under
