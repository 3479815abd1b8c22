"""Amazon SNS messages posted to an HTTPS endpoint: parsed, checked, their signature verified.

Pure: the caller fetches the signing certificate (only from a URL `check_message` allowed) and
passes its PEM in. The checks run in the order of `SNS_CHECKS`; the first that fails refuses the
message with a `Refusal` whose `Problem` the API maps to a 4xx answer. The signature scheme is
AWS's "Verifying the signatures of Amazon SNS messages" (SNS developer guide).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class Problem(StrEnum):
    """Why a message is refused; the API maps each to one entry of its error catalogue."""

    MALFORMED = "malformed"  # 400: not an SNS message, or a field missing or mistyped
    UNSUPPORTED = "unsupported"  # 400: a message type or signature version we do not know
    UNTRUSTED = "untrusted"  # 403: topic, certificate URL, age or signature not accepted


class Refusal(Exception):
    def __init__(self, problem: Problem, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message


class MessageType(StrEnum):
    NOTIFICATION = "Notification"
    SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
    UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"


# The name-value pairs of the string to sign, in the (byte-sorted) order AWS prescribes. Subject
# takes part only when the message has one; the confirmations sign SubscribeURL and Token.
_CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
SIGNED_FIELDS: dict[MessageType, tuple[str, ...]] = {
    MessageType.NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    MessageType.SUBSCRIPTION_CONFIRMATION: _CONFIRMATION_FIELDS,
    MessageType.UNSUBSCRIBE_CONFIRMATION: _CONFIRMATION_FIELDS,
}
OPTIONAL_FIELDS = frozenset({"Subject"})

# SignatureVersion 1 is SHA1withRSA, 2 is SHA256withRSA, both PKCS #1 v1.5.
SIGNATURE_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1": hashes.SHA1,
    "2": hashes.SHA256,
}

# Where SNS's signing certificates and confirmation URLs live: sns.<region>.amazonaws.com, and
# .com.cn in China. A region is two letters, words, a number (us-east-1, us-gov-west-1, cn-north-1):
# a looser "sns.<anything>.amazonaws.com" would also match S3 website and bucket hosts
# (`sns.s3.amazonaws.com`, `sns.<bucket>.s3...`), where anyone can publish a certificate.
DEFAULT_CERT_HOST_PATTERN = r"sns\.[a-z]{2}(-[a-z]+)+-[0-9]+\.amazonaws\.com(\.cn)?"

# How far a Timestamp may be ahead of our clock before the message is taken for a forgery.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Trust:
    """What this server accepts: the topics, the certificate hosts, the age of a message."""

    topic_arns: frozenset[str]
    cert_host: re.Pattern[str]  # full-matched against "host", or "host:port" off port 443
    max_age: timedelta


@dataclass(frozen=True, slots=True)
class HttpsUrl:
    """A URL that passed `allowed_url`, in parts: the fetch is built from these, not re-parsed,
    so two URL parsers cannot disagree about which host is meant."""

    host: str
    port: int
    path: str
    query: str

    def __str__(self) -> str:
        port = "" if self.port == 443 else f":{self.port}"
        query = f"?{self.query}" if self.query else ""
        return f"https://{self.host}{port}{self.path}{query}"


@dataclass(frozen=True, slots=True)
class SnsMessage:
    type: MessageType
    message_id: str
    topic_arn: str
    message: str
    timestamp: datetime
    signature_version: str
    signature: bytes
    signing_cert_url: str
    fields: dict[str, str]  # every signed field present, by name, as received

    @property
    def subscribe_url(self) -> str:
        return self.fields["SubscribeURL"]


# -- parsing ------------------------------------------------------------------------------------


def parse_message(body: bytes, header_type: str | None = None) -> SnsMessage:
    """The SNS message in an HTTP POST body; `header_type` is the x-amz-sns-message-type header."""
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Refusal(Problem.MALFORMED, "The request body is not JSON.") from None
    if not isinstance(document, dict):
        raise Refusal(Problem.MALFORMED, "The request body is not a JSON object.")
    if "Type" not in document and "notificationType" in document:
        # Raw message delivery strips the SNS envelope, and with it the signature.
        raise Refusal(
            Problem.MALFORMED,
            "This is an SES notification without its SNS envelope: turn raw message delivery "
            "off for this subscription, so that the signature can be verified.",
        )
    raw_type = _string(document, "Type")
    try:
        kind = MessageType(raw_type)
    except ValueError:
        raise Refusal(Problem.UNSUPPORTED, f"SNS message type {raw_type!r} is not known.") from None
    if header_type is not None and header_type != raw_type:
        raise Refusal(
            Problem.MALFORMED,
            f"The x-amz-sns-message-type header says {header_type!r}, the body {raw_type!r}.",
        )
    fields = {
        name: _string(document, name)
        for name in SIGNED_FIELDS[kind]
        if name not in OPTIONAL_FIELDS or document.get(name) is not None
    }
    version = _string(document, "SignatureVersion")
    if version not in SIGNATURE_HASHES:
        raise Refusal(
            Problem.UNSUPPORTED,
            f"SignatureVersion {version!r} is not supported; "
            f"known: {', '.join(sorted(SIGNATURE_HASHES))}.",
        )
    try:
        signature = base64.b64decode(_string(document, "Signature"), validate=True)
    except binascii.Error:
        raise Refusal(Problem.MALFORMED, "Signature is not base64.") from None
    return SnsMessage(
        type=kind,
        message_id=fields["MessageId"],
        topic_arn=fields["TopicArn"],
        message=fields["Message"],
        timestamp=_timestamp(fields["Timestamp"]),
        signature_version=version,
        signature=signature,
        signing_cert_url=_string(document, "SigningCertURL"),
        fields=fields,
    )


def _string(document: dict[str, Any], name: str) -> str:
    value = document.get(name)
    if value is None:
        raise Refusal(Problem.MALFORMED, f"The SNS message has no {name}.")
    if not isinstance(value, str):
        raise Refusal(Problem.MALFORMED, f"{name} must be a string.")
    return value


def _timestamp(text: str) -> datetime:
    # ISO 8601 in UTC, e.g. 2012-05-02T00:54:06.655Z (SNS's JSON formats page).
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise Refusal(Problem.MALFORMED, f"Timestamp {text!r} is not an ISO 8601 time.") from None
    if value.tzinfo is None:
        raise Refusal(Problem.MALFORMED, f"Timestamp {text!r} has no time zone.")
    return value


# -- checks before anything is fetched ---------------------------------------------------------


def allowed_url(url: str, trust: Trust, what: str, *, path_suffix: str = "") -> HttpsUrl:
    """The URL in parts if it is https on a certificate host this server trusts, else a refusal.

    Userinfo, a fragment and characters that URL parsers disagree about (backslash, whitespace)
    are refused outright: the host checked must be the host connected to.
    """
    if any(ch in url for ch in "\\@ \t\r\n") or not url.isascii():
        raise Refusal(Problem.UNTRUSTED, f"{what} {url!r} is not an acceptable URL.")
    try:
        parts = urlsplit(url)
        port = parts.port or 443
    except ValueError:
        raise Refusal(Problem.UNTRUSTED, f"{what} {url!r} is not a URL.") from None
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or not host or parts.fragment:
        raise Refusal(Problem.UNTRUSTED, f"{what} {url!r} is not an https URL.")
    where = host if port == 443 else f"{host}:{port}"
    if trust.cert_host.fullmatch(where) is None:
        raise Refusal(Problem.UNTRUSTED, f"{what} {url!r} is not on an Amazon SNS host.")
    path = parts.path or "/"
    if not path.endswith(path_suffix):
        raise Refusal(Problem.UNTRUSTED, f"{what} {url!r} does not end in {path_suffix}.")
    return HttpsUrl(host, port, path, parts.query)


def _check_topic(message: SnsMessage, trust: Trust, now: datetime) -> None:
    if message.topic_arn not in trust.topic_arns:
        raise Refusal(
            Problem.UNTRUSTED, f"Topic {message.topic_arn} is not accepted by this server."
        )


def _check_certificate_url(message: SnsMessage, trust: Trust, now: datetime) -> None:
    allowed_url(message.signing_cert_url, trust, "SigningCertURL", path_suffix=".pem")


def _check_age(message: SnsMessage, trust: Trust, now: datetime) -> None:
    if now - message.timestamp > trust.max_age:
        # SNS retries an HTTPS delivery for at most an hour, keeping the first Timestamp.
        raise Refusal(
            Problem.UNTRUSTED,
            f"The message was published at {message.timestamp.isoformat()}, longer ago than "
            f"this server accepts ({int(trust.max_age.total_seconds())} seconds).",
        )
    if message.timestamp - now > CLOCK_SKEW:
        raise Refusal(
            Problem.UNTRUSTED,
            f"The message's Timestamp {message.timestamp.isoformat()} is in the future.",
        )


def _check_subscribe_url(message: SnsMessage, trust: Trust, now: datetime) -> None:
    if message.type is not MessageType.SUBSCRIPTION_CONFIRMATION:
        return  # only a subscription confirmation makes us visit its SubscribeURL
    url = allowed_url(message.subscribe_url, trust, "SubscribeURL")
    # The URL confirms a subscription to this message's topic, and does nothing else.
    query = parse_qs(url.query)
    if query.get("Action") != ["ConfirmSubscription"] or query.get("TopicArn") != [
        message.topic_arn
    ]:
        raise Refusal(
            Problem.UNTRUSTED, "SubscribeURL does not confirm a subscription to this topic."
        )


# The checks that need nothing fetched, in order; the first to fail refuses the message. The
# certificate URL is judged before it is fetched, so a message cannot make us connect anywhere.
SNS_CHECKS: tuple[tuple[str, Callable[[SnsMessage, Trust, datetime], None]], ...] = (
    ("topic", _check_topic),  # any AWS account can sign a message for its own topic
    ("certificate_url", _check_certificate_url),  # only SNS's hosts vouch for a key
    ("age", _check_age),  # an old message captured and replayed
    ("subscribe_url", _check_subscribe_url),  # the confirmation GET goes to SNS only
)


def check_message(message: SnsMessage, trust: Trust, now: datetime) -> HttpsUrl:
    """Run `SNS_CHECKS`; the certificate URL to fetch when every one passes."""
    for _name, check in SNS_CHECKS:
        check(message, trust, now)
    return allowed_url(message.signing_cert_url, trust, "SigningCertURL", path_suffix=".pem")


# -- the signature ------------------------------------------------------------------------------


def string_to_sign(message: SnsMessage) -> bytes:
    """Each signed field's name, a newline, its value, a newline, in `SIGNED_FIELDS` order."""
    lines = []
    for name in SIGNED_FIELDS[message.type]:
        if name in message.fields:
            lines += [name, message.fields[name]]
    return "".join(f"{line}\n" for line in lines).encode()


def signing_key(certificate_pem: bytes) -> rsa.RSAPublicKey:
    """The RSA public key of a signing certificate, or a refusal when it holds none."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
    except ValueError:
        raise Refusal(
            Problem.UNTRUSTED, "SigningCertURL did not serve a PEM certificate."
        ) from None
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Refusal(Problem.UNTRUSTED, "The signing certificate does not hold an RSA key.")
    return key


def verify_signature(message: SnsMessage, key: rsa.RSAPublicKey) -> None:
    """Refuse the message unless `key` signed its string to sign (PKCS #1 v1.5)."""
    algorithm = SIGNATURE_HASHES[message.signature_version]()
    try:
        key.verify(message.signature, string_to_sign(message), padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise Refusal(
            Problem.UNTRUSTED, "The signature does not match the message and its certificate."
        ) from None
