"""Amazon SNS as the tests play it: a signing key and certificate made here, messages signed the
way AWS documents, and a loopback HTTPS server in SNS's place that serves the certificate and
takes subscription confirmations.

The string to sign is written out below from AWS's page ("Verifying the signatures of Amazon SNS
messages"), on purpose not taken from `policy.aws.sns`: a mistake there must make the tests fail.

    signer = SnsSigner.create()
    async with SnsHost.start(tmp_path, signer, "sns.us-test-1.amazonaws.test") as host:
        body = signer.notification(TOPIC, message, cert_url=host.cert_url)
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

TOPIC = "arn:aws:sns:us-test-1:123456789012:ses-inbound"
# The signed fields in the order AWS lists them, per message type.
NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)


def sns_timestamp(when: dt.datetime | None = None) -> str:
    """SNS's form: 2012-05-02T00:54:06.655Z."""
    moment = when or dt.datetime.now(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class SnsSigner:
    """An RSA key and a self-signed certificate for it, as SNS's signing certificate."""

    key: rsa.RSAPrivateKey
    certificate_pem: bytes

    @classmethod
    def create(cls) -> SnsSigner:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.test")])
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate.public_bytes(serialization.Encoding.PEM))

    def sign(self, document: dict[str, Any], version: str = "2") -> dict[str, Any]:
        """Add SignatureVersion and Signature to `document` (its SigningCertURL already set)."""
        names = NOTIFICATION_FIELDS if document["Type"] == "Notification" else CONFIRMATION_FIELDS
        text = "".join(f"{name}\n{document[name]}\n" for name in names if name in document)
        algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), algorithm)
        return {
            **document,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
        }

    def notification(
        self,
        message: str,
        *,
        cert_url: str,
        topic: str = TOPIC,
        subject: str | None = "Amazon SES Email Receipt Notification",
        timestamp: str | None = None,
        version: str = "2",
    ) -> dict[str, Any]:
        document: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": topic,
            "Message": message,
            "Timestamp": timestamp or sns_timestamp(),
            "SigningCertURL": cert_url,
            "UnsubscribeURL": f"https://sns.invalid/?Action=Unsubscribe&SubscriptionArn={topic}:x",
        }
        if subject is not None:
            document["Subject"] = subject
        return self.sign(document, version)

    def confirmation(
        self, *, cert_url: str, subscribe_url: str, token: str, topic: str = TOPIC
    ) -> dict[str, Any]:
        return self.sign(
            {
                "Type": "SubscriptionConfirmation",
                "MessageId": str(uuid.uuid4()),
                "Token": token,
                "TopicArn": topic,
                "Message": (
                    f"You have chosen to subscribe to the topic {topic}.\n"
                    "To confirm the subscription, visit the SubscribeURL included in this message."
                ),
                "SubscribeURL": subscribe_url,
                "Timestamp": sns_timestamp(),
                "SigningCertURL": cert_url,
            }
        )


def ses_receipt(
    *,
    bucket: str,
    key: str,
    recipients: list[str],
    message_id: str,
    sender: str = "customer@example.net",
    topic: str = TOPIC,
) -> str:
    """The SNS Message of an SES receipt rule's S3 action, shaped as the SES guide shows it."""
    now = sns_timestamp()
    return json.dumps(
        {
            "notificationType": "Received",
            "mail": {
                "timestamp": now,
                "source": sender,
                "messageId": message_id,
                "destination": recipients,
                "headersTruncated": False,
                "headers": [{"name": "From", "value": sender}],
                "commonHeaders": {"from": [sender], "to": recipients},
            },
            "receipt": {
                "timestamp": now,
                "processingTimeMillis": 222,
                "recipients": recipients,
                "spamVerdict": {"status": "PASS"},
                "virusVerdict": {"status": "PASS"},
                "spfVerdict": {"status": "PASS"},
                "dkimVerdict": {"status": "PASS"},
                "dmarcVerdict": {"status": "PASS"},
                "action": {
                    "type": "S3",
                    "topicArn": topic,
                    "bucketName": bucket,
                    "objectKey": key,
                },
            },
        }
    )


@dataclass
class SnsHost:
    """SNS's HTTPS side on loopback: certificates by path, and the ConfirmSubscription action.

    Every request is recorded (`requests`, as "GET /path?query"); `failures` maps a path to the
    status to answer instead.
    """

    hostname: str
    port: int
    ca_file: Path
    certificates: dict[str, bytes]
    requests: list[str] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"https://{self.hostname}:{self.port}"

    @property
    def cert_url(self) -> str:
        return f"{self.base}/SimpleNotificationService-test.pem"

    def subscribe_url(self, topic: str, token: str) -> str:
        query = urlencode({"Action": "ConfirmSubscription", "TopicArn": topic, "Token": token})
        return f"{self.base}/?{query}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(f"GET {request.path_qs}")
        if request.path in self.failures:
            return web.Response(status=self.failures[request.path])
        if request.path == "/" and request.query.get("Action") == "ConfirmSubscription":
            arn = f"{request.query['TopicArn']}:{uuid.uuid4()}"
            return web.Response(
                text=(
                    "<ConfirmSubscriptionResponse><ConfirmSubscriptionResult>"
                    f"<SubscriptionArn>{arn}</SubscriptionArn>"
                    "</ConfirmSubscriptionResult></ConfirmSubscriptionResponse>"
                ),
                content_type="text/xml",
            )
        pem = self.certificates.get(request.path)
        if pem is None:
            return web.Response(status=404)
        return web.Response(body=pem, content_type="application/x-x509-ca-cert")

    @classmethod
    @asynccontextmanager
    async def start(
        cls, directory: Path, signer: SnsSigner, hostname: str
    ) -> AsyncIterator[SnsHost]:
        """Serve on 127.0.0.1 with a trustme certificate for `hostname`; the CA goes to a file
        for the server under test (OPENSEND_SES_CA_FILE)."""
        ca = trustme.CA()
        ca_file = directory / "sns-ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(hostname).configure_cert(server_context)
        host = cls(hostname, 0, ca_file, {})
        host.certificates["/SimpleNotificationService-test.pem"] = signer.certificate_pem
        app = web.Application()
        app.router.add_get("/{tail:.*}", host._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
        await site.start()
        host.port = runner.addresses[0][1]
        try:
            yield host
        finally:
            await runner.cleanup()
