"""Webhook policy without sockets: subscriptions, endpoint addresses, signatures, the retry
table, payload size, and the settings that govern them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
import standardwebhooks

from policy.inbound.attachments import attachment_id
from policy.settings import SettingsError
from policy.webhooks import events, payloads, retry, signing
from policy.webhooks.endpoints import InvalidEndpoint, forbidden, parse_endpoint, refusal
from tests.conftest import make_settings


def test_a_subscription_keeps_its_order_once_and_names_unknown_types() -> None:
    assert events.subscription(["email.sent", "email.received", "email.sent"]) == [
        "email.sent",
        "email.received",
    ]
    with pytest.raises(events.InvalidEvents, match=re.escape("`email.teleported`")):
        events.subscription(["email.sent", "email.teleported"])
    with pytest.raises(events.InvalidEvents, match="non-empty"):
        events.subscription("email.sent")


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.0.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("172.16.0.1", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("100.64.0.1", "an address that is not publicly routable"),
        ("0.0.0.0", "a private address"),
        # IPv6 that carries an IPv4 address is judged as that address: NAT64 (RFC 6052),
        # 6to4 (RFC 3056); IPv4-compatible, IPv4-translated, local-use NAT64 and site-local
        # ranges are not routable at all.
        ("64:ff9b::a00:1", "a private address"),
        ("64:ff9b::a9fe:a9fe", "a link-local address"),
        ("2002:7f00:1::", "a loopback address"),
        ("2002:a9fe:a9fe::", "a link-local address"),
        ("64:ff9b:1::a00:1", "an address that is not publicly routable"),
        ("::127.0.0.1", "an address that is not publicly routable"),
        ("::ffff:0:7f00:1", "an address that is not publicly routable"),
        ("fec0::1", "an address that is not publicly routable"),
        ("93.184.216.34", None),
        ("2606:2800:220:1::1", None),
        ("64:ff9b::5db8:d822", None),  # NAT64 to 93.184.216.34
        ("2002:5db8:d822::1", None),  # 6to4 from 93.184.216.34
    ],
)
def test_addresses_webhooks_may_not_reach(address: str, reason: str | None) -> None:
    assert forbidden(address) == reason


def test_private_addresses_are_allowed_only_when_the_setting_says_so() -> None:
    assert (
        refusal(["93.184.216.34", "10.0.0.1"], allow_private=False)
        == "10.0.0.1 (a private address)"
    )
    assert refusal(["10.0.0.1"], allow_private=True) is None


def test_endpoint_forms() -> None:
    assert parse_endpoint("https://[::1]:8443/x", require_https=True).host == "::1"
    assert parse_endpoint("https://Hooks.Example.com/x", require_https=True).literal is False
    with pytest.raises(InvalidEndpoint, match="https"):
        parse_endpoint("http://hooks.example.com/", require_https=True)
    with pytest.raises(InvalidEndpoint, match="host"):
        parse_endpoint("https:///nohost", require_https=True)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        pytest.param("https://１２７.０.０.１:8443/x", "127.0.0.1", id="fullwidth_digits"),
        pytest.param("https://127。0。0。1/x", "127.0.0.1", id="ideographic_full_stops"),
        pytest.param("https://1６9.254.169.254/", "169.254.169.254", id="one_fullwidth_digit"),
        pytest.param("https://①②⑦.0.0.1/", "127.0.0.1", id="circled_digits"),
    ],
)
def test_a_host_is_read_as_the_client_reads_it(url: str, host: str) -> None:
    """Judged by the host aiohttp connects to (yarl's IDNA mapping), not by urlsplit's."""
    endpoint = parse_endpoint(url, require_https=True)
    assert (endpoint.host, endpoint.literal) == (host, True)
    assert forbidden(endpoint.host) is not None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        pytest.param("https://2130706433/", "usual form", id="decimal_address"),
        pytest.param("https://127.1/", "usual form", id="short_address"),
        pytest.param("https://0177.0.0.1/", "usual form", id="octal_address"),
        pytest.param("https://0x7f000001/", "usual form", id="hex_address"),
        pytest.param(
            "https://user:s3cret@example.com\\x/hook?token=abc", "not a valid URL", id="backslash"
        ),
        pytest.param("https://example.com:99999/", "not a valid URL", id="port_out_of_range"),
    ],
)
def test_urls_the_client_would_read_otherwise_are_refused(url: str, says: str) -> None:
    with pytest.raises(InvalidEndpoint, match=says):
        parse_endpoint(url, require_https=True)


def test_an_international_name_is_a_name_sent_in_its_ascii_form() -> None:
    endpoint = parse_endpoint("https://bücher.example/hook", require_https=True)
    assert (endpoint.host, endpoint.literal) == ("xn--bcher-kva.example", False)
    assert endpoint.url == "https://bücher.example/hook"  # stored as the tenant wrote it


def test_the_signature_is_standard_webhooks_and_rotation_sends_both() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    assert len(base64.b64decode(old.removeprefix("whsec_"))) >= 24
    body = b'{"type":"email.sent"}'
    headers = signing.signed_headers([new, old], "msg_1", 1_700_000_000, body)
    key = base64.b64decode(new.removeprefix("whsec_"))
    expected = base64.b64encode(
        hmac.new(key, b"msg_1.1700000000." + body, hashlib.sha256).digest()
    ).decode()
    first, second = headers["webhook-signature"].split(" ")
    assert first == f"v1,{expected}" and second.startswith("v1,")
    assert headers["svix-signature"] == headers["webhook-signature"]
    assert headers["svix-id"] == headers["webhook-id"] == "msg_1"
    signed_at = datetime.fromtimestamp(1_700_000_000, UTC)
    for secret in (old, new):
        assert standardwebhooks.Webhook(secret).sign("msg_1", signed_at, body) in (first, second)


def test_the_retry_table_is_resends_then_failed() -> None:
    schedule = retry.RESEND_SCHEDULE
    waits = [retry.after_attempt(False, n, schedule).retry_in for n in range(1, 8)]
    assert waits == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert retry.after_attempt(False, 8, schedule).status == "failed"
    assert retry.after_attempt(True, 8, schedule).status == "success"
    assert not retry.succeeded(301) and retry.succeeded(204) and not retry.succeeded(None)


EMAIL_ID = "0193c0de-0000-7000-8000-000000000001"


def test_email_received_names_attachments_as_the_api_does_and_carries_the_class() -> None:
    """The attachment id is the receiving API's (a UUID from the email and the part path), so a
    subscriber can fetch it; the class tells an auto-reply from a customer's answer."""
    snap = {
        "email_id": EMAIL_ID,
        "attachments": [{"part": "2", "filename": "a.pdf", "content_type": "application/pdf"}],
        "classification": "auto_reply",
        "classification_reason": "auto_submitted",
    }
    data = payloads.shape("email.received", datetime(2026, 1, 1, tzinfo=UTC), snap)["data"]
    [attachment] = data["attachments"]
    assert attachment["id"] == str(attachment_id(UUID(EMAIL_ID), {"part": "2"}, 0))
    assert data["classification"] == "auto_reply"
    assert data["classification_reason"] == "auto_submitted"


@pytest.mark.parametrize("kind", ["email.received", "email.sent"])
def test_a_message_without_a_message_id_or_a_tag_value_gives_strings_as_the_sdk_types(
    kind: str,
) -> None:
    """Resend's SDK types `message_id` a string and a tag's value a string: "" for none, never
    null, and never the text "None"."""
    snap = {"email_id": EMAIL_ID, "message_id": None, "tags": [{"name": "plan", "value": None}]}
    data = payloads.shape(kind, datetime(2026, 1, 1, tzinfo=UTC), snap)["data"]
    assert data["message_id"] == ""
    if kind == "email.sent":  # received mail carries no tags of ours
        assert data["tags"] == {"plan": ""}


def test_a_domain_event_goes_out_as_stored_and_one_the_trigger_wrote_keeps_its_shape() -> None:
    """domain.* data is stored in its final shape (policy.domains.public); an event written by
    migration 0013's trigger, before 0023, still in the outbox, is sent as it always was."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    mx = {"name": "a.test", "type": "MX", "ttl": "Auto", "status": "failed", "value": "mx.test"}
    stored = {
        "id": "d1",
        "name": "a.test",
        "capabilities": {"sending": "enabled", "receiving": "enabled"},
        "records": [{"record": "Receiving", **mx, "priority": 10, "reason": "no MX"}],
    }
    assert payloads.shape("domain.updated", at, stored)["data"] == stored
    by_trigger = {
        "id": "d1",
        "name": "a.test",
        "status": "failed",
        "receiving_enabled": True,
        "records": [{"record": "MX", **mx, "priority": 10, "reason": "no MX"}],
    }
    assert payloads.shape("domain.updated", at, by_trigger)["data"] == {
        "id": "d1",
        "name": "a.test",
        "status": "failed",
        "created_at": None,
        "region": None,
        "records": [{"record": "MX", **mx, "priority": 10}],
    }


def test_an_oversized_payload_loses_attachments_first_then_all_but_its_ids() -> None:
    snap = {
        "email_id": EMAIL_ID,
        "thread_id": "t1",
        "subject": "s",
        "attachments": [{"filename": "f" * 3000, "content_type": "x/y"}] * 3,
    }
    at = datetime(2026, 1, 1, tzinfo=UTC)
    small = payloads.body("email.received", at, snap, 6000)
    assert b'"attachments":[]' in small and b'"truncated":true' in small
    smallest = payloads.body("email.received", at, {**snap, "subject": "s" * 9000}, 6000)
    assert len(smallest) < 6000 and b"subject" not in smallest
    assert f'"email_id":"{EMAIL_ID}"'.encode() in smallest


def test_webhook_settings_defaults_and_refusals(tmp_path: Path) -> None:
    development = make_settings(tmp_path).webhooks
    assert development.allow_private is True and development.beside_mta is True
    assert make_settings(tmp_path, OPENSEND_WEBHOOK_WORKERS="off").webhooks.beside_mta is False
    assert development.retry_schedule == retry.RESEND_SCHEDULE
    production = make_settings(
        tmp_path, OPENSEND_ENV="production", OPENSEND_DATABASE_URL="postgresql://x/y"
    ).webhooks
    assert production.allow_private is False
    with pytest.raises(SettingsError, match="OPENSEND_WEBHOOK_LEASE"):
        make_settings(tmp_path, OPENSEND_WEBHOOK_LEASE="10s", OPENSEND_WEBHOOK_TIMEOUT="15s")
    with pytest.raises(SettingsError, match="OPENSEND_WEBHOOK_ALLOW_PRIVATE"):
        make_settings(tmp_path, OPENSEND_WEBHOOK_ALLOW_PRIVATE="maybe")
