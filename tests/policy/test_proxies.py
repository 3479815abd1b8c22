"""The client's address behind the operator's reverse proxy: X-Forwarded-For believed only as
far as trusted proxies wrote it."""

from __future__ import annotations

import pytest

from policy.proxies import InvalidProxies, client_address, parse_trusted

TRUSTED = parse_trusted("127.0.0.1, 10.0.0.0/8, ::1")


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        pytest.param("127.0.0.1", ["203.0.113.9"], "203.0.113.9", id="one_proxy"),
        # The client wrote the first entry itself: only the one our proxy appended counts.
        pytest.param("127.0.0.1", ["198.51.100.7, 203.0.113.9"], "203.0.113.9", id="spoofed_first"),
        pytest.param("127.0.0.1", ["203.0.113.9, 10.1.2.3"], "203.0.113.9", id="two_proxies"),
        pytest.param("127.0.0.1", ["203.0.113.9", "10.1.2.3"], "203.0.113.9", id="two_fields"),
        pytest.param("::ffff:127.0.0.1", ["2001:db8::5"], "2001:db8::5", id="mapped_peer"),
        pytest.param("127.0.0.1", ["10.0.0.5, 10.1.2.3"], "10.0.0.5", id="all_trusted"),
        # From anyone else the header is the client's own words: ignored.
        pytest.param("192.0.2.1", ["203.0.113.9"], "192.0.2.1", id="untrusted_peer"),
        pytest.param("127.0.0.1", [], "127.0.0.1", id="no_header"),
        pytest.param("127.0.0.1", ["unknown, 203.0.113.9"], "203.0.113.9", id="garbage_left"),
        pytest.param("127.0.0.1", ["203.0.113.9, unknown"], "127.0.0.1", id="garbage_appended"),
        pytest.param(None, ["203.0.113.9"], None, id="no_peer"),
    ],
)
def test_the_client_is_the_right_most_address_no_trusted_proxy_wrote(
    peer: str | None, forwarded: list[str], client: str | None
) -> None:
    assert client_address(peer, forwarded, TRUSTED) == client


def test_without_trusted_proxies_the_header_is_never_read() -> None:
    assert client_address("127.0.0.1", ["203.0.113.9"], ()) == "127.0.0.1"


def test_a_list_that_does_not_parse_names_the_bad_entry() -> None:
    assert parse_trusted("") == ()
    with pytest.raises(InvalidProxies, match=r"'proxy\.internal'"):
        parse_trusted("127.0.0.1, proxy.internal")
