"""Delivery settings: the relay URL, the MX port, the claim lease."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy.settings import Relay, RelayTls, SettingsError, load_settings, parse_relay


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "verify"),
    [
        pytest.param("smtp://relay.example", "relay.example", 25, RelayTls.OPPORTUNISTIC, False,
                     id="plain-smtp-is-opportunistic-unverified"),
        pytest.param("smtp+starttls://relay.example", "relay.example", 587, RelayTls.STARTTLS,
                     True, id="starttls-defaults-to-587-verified"),
        pytest.param("smtps://relay.example", "relay.example", 465, RelayTls.IMPLICIT, True,
                     id="smtps-defaults-to-465-verified"),
        pytest.param("relay.example:2526", "relay.example", 2526, RelayTls.OPPORTUNISTIC, False,
                     id="bare-host-port-as-postfix-writes-it"),
        pytest.param("[10.0.0.5]:25", "10.0.0.5", 25, RelayTls.OPPORTUNISTIC, False,
                     id="bracketed-address"),
        pytest.param("smtp://[2001:db8::25]:2525", "2001:db8::25", 2525, RelayTls.OPPORTUNISTIC,
                     False, id="ipv6"),
        pytest.param("SMTP+STARTTLS://relay.example?verify=no", "relay.example", 587,
                     RelayTls.STARTTLS, False, id="verify-off-on-request"),
    ],
)  # fmt: skip
def test_relay_urls(url: str, host: str, port: int, tls: RelayTls, verify: bool) -> None:
    relay = parse_relay("OPENSEND_RELAY", url)
    assert (relay.host, relay.port, relay.tls, relay.verify) == (host, port, tls, verify)


def test_credentials_are_percent_decoded_and_never_shown() -> None:
    relay = parse_relay("OPENSEND_RELAY", "smtp+starttls://me%40corp:p%2Fss%3Aword@relay:587")
    assert (relay.username, relay.password) == ("me@corp", "p/ss:word")
    assert "p/ss" not in repr(relay)


def test_credentials_on_plain_smtp_make_starttls_required_and_verified() -> None:
    """The documented example smtp://USER:PASSWORD@host:587 never sends a password in the
    clear (RFC 4954 section 4): with credentials, STARTTLS becomes a requirement."""
    relay = parse_relay("OPENSEND_RELAY", "smtp://USER:PASSWORD@smtp.example.net:587")
    assert (relay.tls, relay.verify, relay.port) == (RelayTls.STARTTLS, True, 587)


def test_a_private_ca_can_be_named(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    relay = parse_relay("OPENSEND_RELAY", f"smtps://relay.example?cafile={ca}")
    assert relay.cafile == ca


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        pytest.param("http://relay.example", "scheme", id="unknown-scheme"),
        pytest.param("smtp://", "no host", id="no-host"),
        pytest.param("smtp://relay.example:70000", "port", id="port-out-of-range"),
        pytest.param("smtp://relay.example/path", "path", id="a-path"),
        pytest.param("smtp://relay.example?timeout=5", "unknown option", id="unknown-option"),
        pytest.param("smtps://relay.example?verify=maybe", "yes or no", id="verify-not-yes-no"),
        pytest.param("smtps://relay.example?cafile=/nonexistent.pem", "cafile", id="missing-ca"),
    ],
)
def test_bad_relay_urls_are_refused_naming_the_variable(url: str, complaint: str) -> None:
    with pytest.raises(SettingsError, match="OPENSEND_RELAY") as refused:
        load_settings({"OPENSEND_RELAY": url})
    assert complaint in str(refused.value)


def test_relay_route_is_the_parsed_relay_or_none() -> None:
    assert load_settings({}).relay_route is None
    route = load_settings({"OPENSEND_RELAY": "smtps://u:p@relay.example"}).relay_route
    assert route == Relay("relay.example", 465, RelayTls.IMPLICIT, True, None, "u", "p")


def test_mx_delivery_uses_port_25_unless_told_otherwise() -> None:
    assert load_settings({}).smtp_port == 25
    assert load_settings({"OPENSEND_SMTP_PORT": "2525"}).smtp_port == 2525


@pytest.mark.parametrize("value", ["0", "0x19", "-1", "65536", "twenty-five"])
def test_a_bad_smtp_port_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="OPENSEND_SMTP_PORT"):
        load_settings({"OPENSEND_SMTP_PORT": value})


def test_the_delivery_lease_defaults_to_two_minutes_and_takes_durations() -> None:
    assert load_settings({}).delivery_lease == 120
    assert load_settings({"OPENSEND_DELIVERY_LEASE": "30s"}).delivery_lease == 30
    with pytest.raises(SettingsError, match="OPENSEND_DELIVERY_LEASE"):
        load_settings({"OPENSEND_DELIVERY_LEASE": "soon"})
