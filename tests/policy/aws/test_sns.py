"""SNS messages: the string to sign as AWS documents it, the checks before any fetch, and the
signature with a key and certificate made by the test (tests/support/sns.py)."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from policy.aws import sns
from policy.aws.sns import DEFAULT_CERT_HOST_PATTERN, MessageType, Problem, Refusal, Trust
from tests.support.sns import TOPIC, SnsSigner, sns_timestamp

CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc123.pem"
NOW = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)
TRUST = Trust(
    topic_arns=frozenset({TOPIC}),
    cert_host=re.compile(DEFAULT_CERT_HOST_PATTERN),
    max_age=timedelta(minutes=75),
)


@pytest.fixture(scope="module")
def signer() -> SnsSigner:
    return SnsSigner.create()


def body(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def parsed(document: dict[str, Any]) -> sns.SnsMessage:
    return sns.parse_message(body(document))


def refusal(call: Any, *args: Any) -> Refusal:
    with pytest.raises(Refusal) as caught:
        call(*args)
    return caught.value


# -- the string to sign -------------------------------------------------------------------------


def test_notification_string_to_sign_is_the_documented_example() -> None:
    # The example of AWS's "Verifying the signatures of Amazon SNS messages", line for line.
    message = parsed(
        {
            "Type": "Notification",
            "MessageId": "4d4dc071-ddbf-465d-bba8-08f81c89da64",
            "TopicArn": "arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P",
            "Subject": "My subject",
            "Message": "My Test Message",
            "Timestamp": "2019-01-31T04:37:04.321Z",
            "SignatureVersion": "1",
            "Signature": "AAAA",
            "SigningCertURL": CERT_URL,
            "UnsubscribeURL": "https://sns.us-east-2.amazonaws.com/?Action=Unsubscribe",
        }
    )
    assert sns.string_to_sign(message) == (
        b"Message\nMy Test Message\n"
        b"MessageId\n4d4dc071-ddbf-465d-bba8-08f81c89da64\n"
        b"Subject\nMy subject\n"
        b"Timestamp\n2019-01-31T04:37:04.321Z\n"
        b"TopicArn\narn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P\n"
        b"Type\nNotification\n"
    )


def test_subscription_confirmation_string_to_sign_is_the_documented_example() -> None:
    url = (
        "https://sns.us-east-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn="
        "arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P&Token=233..."
    )
    message = parsed(
        {
            "Type": "SubscriptionConfirmation",
            "MessageId": "3d891288-136d-417f-bc05-901c108273ee",
            "Token": "233...",
            "TopicArn": "arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P",
            "Message": "My Test Message",
            "SubscribeURL": url,
            "Timestamp": "2019-01-31T19:25:13.719Z",
            "SignatureVersion": "1",
            "Signature": "AAAA",
            "SigningCertURL": CERT_URL,
        }
    )
    assert message.type is MessageType.SUBSCRIPTION_CONFIRMATION
    assert sns.string_to_sign(message) == (
        b"Message\nMy Test Message\n"
        b"MessageId\n3d891288-136d-417f-bc05-901c108273ee\n"
        b"SubscribeURL\n" + url.encode() + b"\n"
        b"Timestamp\n2019-01-31T19:25:13.719Z\n"
        b"Token\n233...\n"
        b"TopicArn\narn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P\n"
        b"Type\nSubscriptionConfirmation\n"
    )


@pytest.mark.parametrize("subject", [None, "absent"], ids=["null_subject", "no_subject"])
def test_a_notification_without_subject_signs_no_subject_line(
    signer: SnsSigner, subject: str | None
) -> None:
    document = signer.notification("hello", cert_url=CERT_URL, subject=None)
    if subject is None:
        document["Subject"] = None
    assert b"Subject" not in sns.string_to_sign(parsed(document))


# -- the signature --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"], ids=["sha1_version_1", "sha256_version_2"])
def test_a_message_signed_by_the_certificate_key_verifies(signer: SnsSigner, version: str) -> None:
    message = parsed(signer.notification("line one\nline two", cert_url=CERT_URL, version=version))
    sns.verify_signature(message, sns.signing_key(signer.certificate_pem))


@pytest.mark.parametrize(
    "field", ["Message", "MessageId", "Subject", "Timestamp", "TopicArn"], ids=str.lower
)
def test_a_changed_signed_field_fails_verification(signer: SnsSigner, field: str) -> None:
    document = signer.notification("hello", cert_url=CERT_URL)
    document[field] = sns_timestamp(NOW) if field == "Timestamp" else document[field] + "x"
    failure = refusal(
        sns.verify_signature, parsed(document), sns.signing_key(signer.certificate_pem)
    )
    assert failure.problem is Problem.UNTRUSTED
    assert "signature does not match" in failure.message


def test_another_keys_certificate_fails_verification(signer: SnsSigner) -> None:
    message = parsed(signer.notification("hello", cert_url=CERT_URL))
    other = SnsSigner.create()
    failure = refusal(sns.verify_signature, message, sns.signing_key(other.certificate_pem))
    assert failure.problem is Problem.UNTRUSTED


def test_a_certificate_url_serving_something_else_is_refused() -> None:
    failure = refusal(sns.signing_key, b"<html>Not Found</html>")
    assert (failure.problem, failure.message) == (
        Problem.UNTRUSTED,
        "SigningCertURL did not serve a PEM certificate.",
    )


# -- parsing --------------------------------------------------------------------------------------


def test_raw_message_delivery_is_refused_with_what_to_change() -> None:
    failure = refusal(sns.parse_message, b'{"notificationType": "Received", "mail": {}}')
    assert failure.problem is Problem.MALFORMED
    assert "turn raw message delivery off" in failure.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"not json", "The request body is not JSON."),
        (b"[1, 2]", "The request body is not a JSON object."),
        (b'{"Type": "Notification"}', "The SNS message has no Message."),
    ],
    ids=["not_json", "not_an_object", "missing_field"],
)
def test_a_body_that_is_not_an_sns_message_is_malformed(text: bytes, expected: str) -> None:
    failure = refusal(sns.parse_message, text)
    assert (failure.problem, failure.message) == (Problem.MALFORMED, expected)


def test_an_unknown_signature_version_is_unsupported(signer: SnsSigner) -> None:
    document = signer.notification("hello", cert_url=CERT_URL)
    document["SignatureVersion"] = "3"
    failure = refusal(sns.parse_message, body(document))
    assert failure.problem is Problem.UNSUPPORTED
    assert "SignatureVersion '3' is not supported" in failure.message


def test_an_unknown_message_type_is_unsupported(signer: SnsSigner) -> None:
    document = signer.notification("hello", cert_url=CERT_URL)
    document["Type"] = "Telegram"
    assert refusal(sns.parse_message, body(document)).problem is Problem.UNSUPPORTED


def test_the_message_type_header_must_agree_with_the_body(signer: SnsSigner) -> None:
    data = body(signer.notification("hello", cert_url=CERT_URL))
    failure = refusal(sns.parse_message, data, "SubscriptionConfirmation")
    assert failure.problem is Problem.MALFORMED


def test_a_signature_that_is_not_base64_is_malformed(signer: SnsSigner) -> None:
    document = signer.notification("hello", cert_url=CERT_URL)
    document["Signature"] = "not base64!"
    assert refusal(sns.parse_message, body(document)).problem is Problem.MALFORMED


# -- checks before any fetch ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        CERT_URL,
        "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem",
        "https://sns.ap-southeast-2.amazonaws.com:443/SimpleNotificationService-1.pem",
    ],
    ids=["us_east_1", "govcloud", "china", "explicit_443"],
)
def test_sns_certificate_urls_are_allowed(url: str) -> None:
    allowed = sns.allowed_url(url, TRUST, "SigningCertURL", path_suffix=".pem")
    assert allowed.port == 443 and allowed.path.endswith(".pem")


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.s3.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.s3-external-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.s3.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.amazonaws.com.evil.test/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.amazonaws.com@evil.test/SimpleNotificationService-1.pem",
        "https://evil.test\\@sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.txt",
        "https://sns.us-east-1.amazonaws.com/x.pem#fragment",
    ],
    ids=[
        "plain_http",
        "s3_bucket_named_sns",
        "legacy_s3_endpoint",
        "bucket_subdomain",
        "suffix_domain",
        "userinfo",
        "backslash",
        "other_port",
        "not_pem",
        "fragment",
    ],
)
def test_other_certificate_urls_are_refused(url: str) -> None:
    with pytest.raises(Refusal) as caught:
        sns.allowed_url(url, TRUST, "SigningCertURL", path_suffix=".pem")
    failure = caught.value
    assert failure.problem is Problem.UNTRUSTED
    assert failure.message.startswith("SigningCertURL ")


def test_check_returns_the_certificate_url_in_parts(signer: SnsSigner) -> None:
    document = signer.notification("hello", cert_url=CERT_URL, timestamp=sns_timestamp(NOW))
    url = sns.check_message(parsed(document), TRUST, NOW)
    assert (url.host, url.port, url.path) == (
        "sns.us-east-1.amazonaws.com",
        443,
        "/SimpleNotificationService-abc123.pem",
    )
    assert str(url) == CERT_URL


def test_a_topic_not_in_the_allow_list_is_refused_first(signer: SnsSigner) -> None:
    other = "arn:aws:sns:us-east-1:999999999999:someone-elses"
    # Its certificate URL is bad too: the topic is what the refusal names.
    document = signer.notification("hello", cert_url="https://evil.test/x.pem", topic=other)
    failure = refusal(sns.check_message, parsed(document), TRUST, NOW)
    assert (failure.problem, failure.message) == (
        Problem.UNTRUSTED,
        f"Topic {other} is not accepted by this server.",
    )


def test_no_topic_is_accepted_by_an_empty_allow_list(signer: SnsSigner) -> None:
    closed = Trust(frozenset(), TRUST.cert_host, TRUST.max_age)
    document = signer.notification("hello", cert_url=CERT_URL, timestamp=sns_timestamp(NOW))
    assert refusal(sns.check_message, parsed(document), closed, NOW).problem is Problem.UNTRUSTED


@pytest.mark.parametrize(
    ("published", "accepted"),
    [
        (NOW - timedelta(minutes=74), True),  # SNS's last retries come within the hour
        (NOW - timedelta(minutes=76), False),
        (NOW + timedelta(minutes=4), True),  # a clock a little ahead of ours
        (NOW + timedelta(minutes=6), False),
    ],
    ids=["within_max_age", "older_than_max_age", "small_skew", "from_the_future"],
)
def test_message_age(signer: SnsSigner, published: datetime, accepted: bool) -> None:
    document = signer.notification("hello", cert_url=CERT_URL, timestamp=sns_timestamp(published))
    if accepted:
        sns.check_message(parsed(document), TRUST, NOW)
    else:
        assert refusal(sns.check_message, parsed(document), TRUST, NOW).problem is (
            Problem.UNTRUSTED
        )


def confirmation(signer: SnsSigner, subscribe_url: str) -> dict[str, Any]:
    document = signer.confirmation(cert_url=CERT_URL, subscribe_url=subscribe_url, token="t0k")
    document["Timestamp"] = sns_timestamp(NOW)
    return signer.sign({k: v for k, v in document.items() if not k.startswith("Signature")})


def test_a_subscription_confirmation_for_the_topic_passes(signer: SnsSigner) -> None:
    url = (
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
        f"&TopicArn={TOPIC}&Token=t0k"
    )
    sns.check_message(parsed(confirmation(signer, url)), TRUST, NOW)


@pytest.mark.parametrize(
    "url",
    [
        f"https://sns.us-east-1.amazonaws.test/?Action=ConfirmSubscription&TopicArn={TOPIC}",
        f"https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&TopicArn={TOPIC}",
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
        "&TopicArn=arn:aws:sns:us-east-1:999999999999:other",
    ],
    ids=["other_host", "other_action", "other_topic"],
)
def test_a_subscribe_url_that_does_not_confirm_this_topic_is_refused(
    signer: SnsSigner, url: str
) -> None:
    failure = refusal(sns.check_message, parsed(confirmation(signer, url)), TRUST, NOW)
    assert failure.problem is Problem.UNTRUSTED
    assert "SubscribeURL" in failure.message


def test_signature_bytes_are_decoded_from_base64(signer: SnsSigner) -> None:
    document = signer.notification("hello", cert_url=CERT_URL)
    assert parsed(document).signature == base64.b64decode(document["Signature"])
