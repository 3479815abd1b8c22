"""SES receipt notifications: the S3 object and recipients they name, and the event id that keeps
one delivery stored once."""

from __future__ import annotations

import json
import re

import pytest

from policy.aws import ses
from tests.support.sns import ses_receipt


def receipt(**overrides: object) -> ses.S3Receipt:
    text = ses_receipt(
        bucket="inbound-mail",
        key="mail/d6iitobk75ur44p8kdnnp7g2n800",
        recipients=["support@acme.test"],
        message_id="d6iitobk75ur44p8kdnnp7g2n800",
    )
    document = json.loads(text)
    document["receipt"].update(overrides)
    parsed = ses.parse_receipt(json.dumps(document))
    assert isinstance(parsed, ses.S3Receipt)
    return parsed


def test_an_s3_action_names_the_object_and_recipients() -> None:
    found = receipt()
    assert found == ses.S3Receipt(
        message_id="d6iitobk75ur44p8kdnnp7g2n800",
        sender="customer@example.net",
        recipients=("support@acme.test",),
        bucket="inbound-mail",
        key="mail/d6iitobk75ur44p8kdnnp7g2n800",
    )


def test_the_event_id_is_the_ses_message_id_and_a_digest_of_the_recipients() -> None:
    one = receipt(recipients=["b@acme.test", "A@acme.test"])
    same = receipt(recipients=["a@acme.test", "b@acme.test"])
    other_rule = receipt(recipients=["c@acme.test"])
    assert one.event_id == same.event_id  # order and case of the list do not matter
    assert one.event_id.startswith("d6iitobk75ur44p8kdnnp7g2n800/")
    assert other_rule.event_id != one.event_id  # another rule's recipients: another delivery


def test_other_notification_types_carry_nothing_to_store() -> None:
    found = ses.parse_receipt(json.dumps({"notificationType": "AMAZON_SES_SETUP_NOTIFICATION"}))
    assert found == ses.OtherNotification("AMAZON_SES_SETUP_NOTIFICATION")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("not json", "The SNS Message is not an SES notification (not JSON)."),
        ("{}", "The SES notification has no notificationType."),
        (
            json.dumps({"notificationType": "Received", "mail": {}}),
            "The SES notification has no receipt object.",
        ),
    ],
    ids=["not_json", "no_type", "no_receipt"],
)
def test_unusable_notifications_say_what_is_missing(message: str, expected: str) -> None:
    with pytest.raises(ses.NotificationError, match=re.escape(expected)):
        ses.parse_receipt(message)


def test_an_sns_action_is_refused_with_the_action_to_use() -> None:
    with pytest.raises(ses.NotificationError, match="this endpoint takes S3 actions"):
        receipt(action={"type": "SNS", "topicArn": "arn:aws:sns:us-east-1:123456789012:t"})


def test_a_receipt_without_recipients_is_refused() -> None:
    with pytest.raises(ses.NotificationError, match=r"receipt\.recipients"):
        receipt(recipients=[])
