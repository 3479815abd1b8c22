"""POST /events/inbound/ses-s3: an SES receipt rule's S3 action, announced by SNS, end to end.

Everything is real and on loopback: the API, PostgreSQL, S3 (moto's server, spoken to over its
HTTP API with SigV4), SNS's HTTPS host (an aiohttp server with a trustme certificate, found
through the loopback DNS server) serving a signing certificate the test made, and messages
signed with its key the way AWS documents. One test takes a message signed by moto's own SNS.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import pytest
from aiohttp import web

from policy.aws.ses import S3Receipt, parse_receipt
from policy.tokens import ReplyTokens
from storage.database import Pool
from tests.conftest import (
    MakeTenant,
    StartApi,
    message,
    received_rows,
)
from tests.support.dns_server import LoopbackDNSServer
from tests.support.moto_aws import CREDENTIAL_ENV, MotoAws, moto_server
from tests.support.outage_api import api_on_own_cluster
from tests.support.sns import TOPIC, SnsHost, SnsSigner, ses_receipt, sns_timestamp

SNS_HOST = "sns.us-test-1.amazonaws.test"
BUCKET = "inbound-mail"
CERT_PATH = "/SimpleNotificationService-test.pem"
SCOPE = "20260101/us-east-1/sns/aws4_request"


@pytest.fixture(scope="session")
def signer() -> SnsSigner:
    return SnsSigner.create()


@pytest.fixture(scope="session")
async def aws() -> AsyncIterator[MotoAws]:
    async with moto_server() as aws:
        await aws.create_bucket(BUCKET)
        yield aws


@pytest.fixture
async def sns_host(
    tmp_path: Path, signer: SnsSigner, dns: LoopbackDNSServer
) -> AsyncIterator[SnsHost]:
    dns.zone.add(SNS_HOST, "A", "127.0.0.1")
    async with SnsHost.start(tmp_path, signer, SNS_HOST) as host:
        yield host


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server under test signs its S3 requests with AWS's usual environment variables."""
    for name, value in CREDENTIAL_ENV.items():
        monkeypatch.setenv(name, value)


def ses_env(
    dns: LoopbackDNSServer, host: SnsHost, aws: MotoAws, topics: str = TOPIC
) -> dict[str, str]:
    """The SES ingester's settings as an operator would write them, pointed at loopback."""
    return {
        "OPENSEND_DNS_SERVERS": dns.address,
        "OPENSEND_SES_TOPIC_ARNS": topics,
        # SNS's hosts are sns.<region>.amazonaws.com on 443; here, the loopback stand-in's name
        # and port.
        "OPENSEND_SES_CERT_HOST_PATTERN": re.escape(SNS_HOST) + r":[0-9]+",
        "OPENSEND_SES_CA_FILE": str(host.ca_file),
        "OPENSEND_SES_S3_ENDPOINT": aws.endpoint,
        "OPENSEND_SES_S3_REGION": "us-east-1",
    }


def basic_auth(user: str, password: str) -> str:
    """RFC 7617 credentials, as SNS builds them from the userinfo of its endpoint URL."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Sns:
    """SNS as the API sees it: signed messages posted to the endpoint."""

    url: str
    signer: SnsSigner
    host: SnsHost
    aws: MotoAws
    # The password of the endpoint URL's userinfo (https://sns:TOKEN@host/...), if any.
    password: str | None = None

    async def post(self, document: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        headers = {
            # What SNS sends (SNS developer guide, "HTTP/HTTPS headers").
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": document["Type"],
            "x-amz-sns-message-id": document["MessageId"],
            "x-amz-sns-topic-arn": document["TopicArn"],
        }
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{self.url}/events/inbound/ses-s3", data=json.dumps(document), headers=headers
            ) as response:
                challenge = response.headers.get("WWW-Authenticate", "")
                if response.status != 401 or self.password is None:
                    return response.status, await response.json()
            # As SNS does with credentials in the URL: only when challenged for Basic.
            assert challenge.startswith("Basic "), challenge
            async with session.post(
                f"{self.url}/events/inbound/ses-s3",
                data=json.dumps(document),
                headers=headers | {"Authorization": basic_auth("sns", self.password)},
            ) as response:
                return response.status, await response.json()

    async def email_in_s3(self, raw: bytes, recipients: list[str], **signed: Any) -> dict[str, Any]:
        """Put the email where SES's S3 action would, and the signed notification about it."""
        message_id = secrets.token_hex(20)
        await self.aws.put_object(BUCKET, f"mail/{message_id}", raw)
        receipt = ses_receipt(
            bucket=BUCKET, key=f"mail/{message_id}", recipients=recipients, message_id=message_id
        )
        return self.signer.notification(receipt, cert_url=self.host.cert_url, **signed)

    def certificate_fetches(self) -> int:
        return sum(1 for request in self.host.requests if request == f"GET {CERT_PATH}")


StartSns = Callable[..., Awaitable[Sns]]


@pytest.fixture
def start_sns(
    start_test_api: StartApi,
    dns: LoopbackDNSServer,
    sns_host: SnsHost,
    aws: MotoAws,
    signer: SnsSigner,
    aws_credentials: None,
) -> StartSns:
    """An API with the SES ingester set up as `ses_env` writes it, and `env` on top."""

    async def start(**env: str) -> Sns:
        api = await start_test_api(**(ses_env(dns, sns_host, aws) | env))
        return Sns(api.url, signer, sns_host, aws)

    return start


@pytest.fixture
async def sns(start_sns: StartSns) -> Sns:
    return await start_sns()


def stored_ids(body: dict[str, Any]) -> list[UUID]:
    return [UUID(email["id"]) for email in body["emails"]]


async def rows_of_event(pool: Pool, event_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT * FROM received_emails WHERE ingest_source = 'ses-s3' AND ingest_event_id = $1",
        event_id,
    )
    return [dict(r) for r in rows]


def event_id_of(document: dict[str, Any]) -> str:
    receipt = parse_receipt(document["Message"])
    assert isinstance(receipt, S3Receipt)
    return receipt.event_id


# -- Stored -------------------------------------------------------------------------------------


async def test_a_reply_in_s3_is_stored_202_and_matched_to_its_email_and_thread(
    sns: Sns, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant()
    email, token = await acme.sent_email()
    reply_address = token.address(acme.reply_domain)
    raw = message(
        to=reply_address,
        subject="Re: Your order",
        headers={"In-Reply-To": f"<{email.message_id}>"},
    )
    notification = await sns.email_in_s3(raw, [reply_address])

    status, body = await sns.post(notification)

    assert status == 202, body
    assert (body["object"], body["duplicate"], body["refused"]) == ("inbound_event", False, [])
    assert body["event_id"] == event_id_of(notification)
    [row] = await received_rows(pool, stored_ids(body))
    assert (row["tenant_id"], row["rcpt_to"], row["mail_from"]) == (
        acme.id,
        [reply_address],
        "customer@example.net",
    )
    assert bytes(row["raw"]) == raw
    assert (row["reply_match_status"], row["reply_to_email_id"], row["thread_id"]) == (
        "matched",
        email.id,
        email.thread_id,
    )
    assert (row["ingest_source"], row["ingest_event_id"]) == ("ses-s3", body["event_id"])


async def test_sns_retrying_a_notification_stores_it_once_and_fetches_the_certificate_once(
    sns: Sns, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    notification = await sns.email_in_s3(message(to=f"help@{acme.name}"), [f"help@{acme.name}"])

    first_status, first = await sns.post(notification)
    again_status, again = await sns.post(notification)  # SNS resends the very same message

    assert (first_status, again_status) == (202, 202)
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    assert stored_ids(again) == stored_ids(first)
    assert len(await rows_of_event(pool, event_id_of(notification))) == 1
    assert sns.certificate_fetches() == 1


async def test_production_without_the_ingester_token_serves_no_ingester(
    start_test_api: StartApi,
    database_url: str,
    dns: LoopbackDNSServer,
    sns_host: SnsHost,
    aws: MotoAws,
    signer: SnsSigner,
    aws_credentials: None,
    make_tenant: MakeTenant,
) -> None:
    """The source document: production ingesters reject inbound mail without the token."""
    api = await start_test_api(
        **ses_env(dns, sns_host, aws),
        OPENSEND_ENV="production",
        OPENSEND_DATABASE_URL=database_url,
    )
    acme = await make_tenant(catch_all=True)
    production = Sns(api.url, signer, sns_host, aws)
    notification = await production.email_in_s3(message(to=f"a@{acme.name}"), [f"a@{acme.name}"])

    status, _body = await production.post(notification)

    assert status == 404
    assert production.certificate_fetches() == 0


async def test_with_the_ingester_token_sns_is_challenged_and_its_url_credentials_accepted(
    start_test_api: StartApi,
    database_url: str,
    dns: LoopbackDNSServer,
    sns_host: SnsHost,
    aws: MotoAws,
    signer: SnsSigner,
    aws_credentials: None,
    make_tenant: MakeTenant,
    pool: Pool,
) -> None:
    token = secrets.token_hex(32)
    api = await start_test_api(
        **ses_env(dns, sns_host, aws),
        OPENSEND_ENV="production",
        OPENSEND_DATABASE_URL=database_url,
        INGESTER_INBOUND_TOKEN=token,
    )
    acme = await make_tenant(catch_all=True)
    anonymous = Sns(api.url, signer, sns_host, aws)
    notification = await anonymous.email_in_s3(message(to=f"a@{acme.name}"), [f"a@{acme.name}"])

    refused_status, refused = await anonymous.post(notification)
    wrong_status, wrong = await Sns(api.url, signer, sns_host, aws, "not-it").post(notification)
    status, body = await Sns(api.url, signer, sns_host, aws, token).post(notification)

    assert (refused_status, refused["name"]) == (401, "missing_ingester_token")
    assert (wrong_status, wrong["name"]) == (403, "invalid_ingester_token")
    assert status == 202, body
    assert len(await rows_of_event(pool, event_id_of(notification))) == 1


async def test_signature_version_1_sha1_is_accepted(
    sns: Sns, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    notification = await sns.email_in_s3(
        message(to=f"a@{acme.name}"), [f"a@{acme.name}"], version="1"
    )
    status, body = await sns.post(notification)
    assert status == 202, body
    assert len(await received_rows(pool, stored_ids(body))) == 1


async def test_a_notification_signed_by_motos_sns_is_accepted(
    start_test_api: StartApi,
    dns: LoopbackDNSServer,
    sns_host: SnsHost,
    aws: MotoAws,
    aws_credentials: None,
    pool: Pool,
    make_tenant: MakeTenant,
) -> None:
    """An independent signer: moto's SNS, publishing to an HTTP subscription of our own."""
    captured: list[dict[str, Any]] = []

    async def capture(request: web.Request) -> web.Response:
        captured.append(json.loads(await request.read()))
        return web.Response()

    capture_app = web.Application()
    capture_app.router.add_post("/", capture)
    runner = web.AppRunner(capture_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        topic = (await aws.sns.create_topic(Name=f"ses-{secrets.token_hex(4)}"))["TopicArn"]
        endpoint = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        await aws.sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=endpoint)
        acme = await make_tenant(catch_all=True)
        raw = message(to=f"b@{acme.name}")
        message_id = secrets.token_hex(20)
        await aws.put_object(BUCKET, message_id, raw)
        receipt = ses_receipt(
            bucket=BUCKET, key=message_id, recipients=[f"b@{acme.name}"], message_id=message_id
        )
        # No Subject: moto leaves it out of the string it signs even when it sends one.
        await aws.sns.publish(TopicArn=topic, Message=receipt)
    finally:
        await runner.cleanup()
    [document] = captured

    # Its certificate, fetched from moto and served from SNS's stand-in; SigningCertURL is not
    # part of the signed string, so pointing it there changes nothing that is verified.
    pem_name = document["SigningCertURL"].rsplit("/", 1)[1]
    async with (
        aiohttp.ClientSession() as session,
        # moto's server picks the service from the credential scope of the Authorization
        # header; it does not check the signature.
        session.get(
            f"{aws.endpoint}/{pem_name}",
            headers={"Authorization": f"AWS4-HMAC-SHA256 Credential=testing/{SCOPE}, Signature=0"},
        ) as response,
    ):
        assert response.status == 200
        sns_host.certificates[f"/{pem_name}"] = await response.read()
    document["SigningCertURL"] = f"{sns_host.base}/{pem_name}"

    api = await start_test_api(**ses_env(dns, sns_host, aws, topics=topic))
    status, body = await Sns(api.url, SnsSigner.create(), sns_host, aws).post(document)

    assert status == 202, body
    [row] = await received_rows(pool, stored_ids(body))
    assert bytes(row["raw"]) == raw


# -- Refused, and never retried by SNS (4xx) ----------------------------------------------------


async def test_a_tampered_message_is_refused_403_and_nothing_is_stored(
    sns: Sns, pool: Pool, make_tenant: MakeTenant
) -> None:
    acme = await make_tenant(catch_all=True)
    notification = await sns.email_in_s3(message(to=f"a@{acme.name}"), [f"a@{acme.name}"])
    forged = json.loads(notification["Message"])
    forged["receipt"]["recipients"] = [f"ceo@{acme.name}"]
    notification["Message"] = json.dumps(forged)

    status, body = await sns.post(notification)

    assert (status, body["name"]) == (403, "untrusted_sns_message")
    assert body["message"] == "The signature does not match the message and its certificate."
    assert await rows_of_event(pool, event_id_of(notification)) == []


async def test_a_certificate_url_off_the_sns_hosts_is_refused_403_without_any_fetch(
    sns: Sns,
) -> None:
    notification = await sns.email_in_s3(message(), ["a@example.com"])
    notification["SigningCertURL"] = f"https://127.0.0.1:{sns.host.port}{CERT_PATH}"

    status, body = await sns.post(notification)

    assert (status, body["name"]) == (403, "untrusted_sns_message")
    assert "is not on an Amazon SNS host" in body["message"]
    assert sns.host.requests == []


@pytest.mark.parametrize(
    ("served", "reason"),
    [
        (b"<html>maintenance</html>", "did not serve a PEM certificate"),
        (b"-" * 100_000, "served more than a certificate"),
        (None, "answered HTTP 404"),
    ],
    ids=["not_a_certificate", "too_large", "not_found"],
)
async def test_a_certificate_url_serving_no_certificate_is_refused_403(
    sns: Sns, served: bytes | None, reason: str
) -> None:
    if served is None:
        del sns.host.certificates[CERT_PATH]
    else:
        sns.host.certificates[CERT_PATH] = served
    notification = await sns.email_in_s3(message(), ["a@example.com"])
    status, body = await sns.post(notification)
    assert (status, body["name"]) == (403, "untrusted_sns_message")
    assert reason in body["message"]


async def test_a_topic_not_allowed_is_refused_403_without_any_fetch(sns: Sns) -> None:
    other = "arn:aws:sns:us-test-1:999999999999:someone-elses-topic"
    notification = sns.signer.notification(
        ses_receipt(bucket=BUCKET, key="k", recipients=["a@example.com"], message_id="m"),
        cert_url=sns.host.cert_url,
        topic=other,
    )

    status, body = await sns.post(notification)

    assert (status, body["name"], body["message"]) == (
        403,
        "untrusted_sns_message",
        f"Topic {other} is not accepted by this server.",
    )
    assert sns.host.requests == []


async def test_an_old_message_is_refused_403_as_a_replay(sns: Sns) -> None:
    published = datetime.now(UTC) - timedelta(hours=2)
    notification = await sns.email_in_s3(
        message(), ["a@example.com"], timestamp=sns_timestamp(published)
    )
    status, body = await sns.post(notification)
    assert (status, body["name"]) == (403, "untrusted_sns_message")
    assert "longer ago than this server accepts (4500 seconds)" in body["message"]


async def test_without_an_allowed_topic_every_message_is_refused_403(
    start_test_api: StartApi, signer: SnsSigner
) -> None:
    api = await start_test_api()  # OPENSEND_SES_TOPIC_ARNS unset: the ingester is off
    notification = signer.notification("{}", cert_url=f"https://{SNS_HOST}{CERT_PATH}")
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{api.url}/events/inbound/ses-s3", data=json.dumps(notification)) as reply,
    ):
        assert reply.status == 403
        assert (await reply.json())["name"] == "untrusted_sns_message"


async def test_raw_message_delivery_is_refused_400_with_the_setting_to_change(sns: Sns) -> None:
    bare = ses_receipt(bucket=BUCKET, key="k", recipients=["a@example.com"], message_id="m")
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sns.url}/events/inbound/ses-s3", data=bare) as reply,
    ):
        body = await reply.json()
    assert (reply.status, body["name"]) == (400, "invalid_sns_message")
    assert "turn raw message delivery off" in body["message"]


async def test_a_body_larger_than_any_sns_message_is_refused_400(sns: Sns) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sns.url}/events/inbound/ses-s3", data=b"{" + b" " * 2_000_000) as reply,
    ):
        body = await reply.json()
    assert (reply.status, body["name"]) == (400, "invalid_sns_message")
    assert "larger than an SNS message can be" in body["message"]


async def test_a_missing_s3_object_is_refused_422(sns: Sns) -> None:
    notification = sns.signer.notification(
        ses_receipt(bucket=BUCKET, key="mail/gone", recipients=["a@example.com"], message_id="m"),
        cert_url=sns.host.cert_url,
    )
    status, body = await sns.post(notification)
    assert (status, body["name"], body["message"]) == (
        422,
        "s3_object_missing",
        f"s3://{BUCKET}/mail/gone does not exist.",
    )


async def test_an_unrouted_recipient_is_refused_422_missing_domain(sns: Sns) -> None:
    notification = await sns.email_in_s3(message(), ["someone@unrouted.example"])
    status, body = await sns.post(notification)
    assert (status, body["name"]) == (422, "recipients_refused")
    assert [(r["recipient"], r["reason"]) for r in body["refused"]] == [
        ("someone@unrouted.example", "missing-domain")
    ]


async def test_an_email_larger_than_the_limit_is_refused_413_unread(start_sns: StartSns) -> None:
    big = await start_sns(OPENSEND_MAX_MESSAGE_SIZE="2000")
    notification = await big.email_in_s3(message(body="x" * 5000), ["a@example.com"])
    status, body = await big.post(notification)
    assert status == 413, body
    assert "this server accepts at most 2000" in body["message"]


async def test_ses_set_up_notification_is_acknowledged_and_stores_nothing(sns: Sns) -> None:
    notification = sns.signer.notification(
        json.dumps({"notificationType": "AMAZON_SES_SETUP_NOTIFICATION"}),
        cert_url=sns.host.cert_url,
    )
    status, body = await sns.post(notification)
    assert (status, body["stored"]) == (200, False)


# -- Subscription -------------------------------------------------------------------------------


async def test_a_subscription_confirmation_is_confirmed_by_visiting_its_subscribe_url(
    sns: Sns,
) -> None:
    token = secrets.token_hex(32)
    subscribe_url = sns.host.subscribe_url(TOPIC, token)
    confirmation = sns.signer.confirmation(
        cert_url=sns.host.cert_url, subscribe_url=subscribe_url, token=token
    )

    status, body = await sns.post(confirmation)

    assert (status, body) == (
        200,
        {"object": "sns_subscription", "topic_arn": TOPIC, "confirmed": True},
    )
    assert sns.host.requests == [f"GET {CERT_PATH}", f"GET /{subscribe_url.split('/', 3)[3]}"]


async def test_a_confirmation_sns_refuses_is_422_and_one_it_cannot_answer_is_503(
    sns: Sns,
) -> None:
    token = secrets.token_hex(32)
    confirmation = sns.signer.confirmation(
        cert_url=sns.host.cert_url, subscribe_url=sns.host.subscribe_url(TOPIC, token), token=token
    )
    sns.host.failures["/"] = 403
    refused_status, refused = await sns.post(confirmation)
    sns.host.failures["/"] = 500
    failing_status, failing = await sns.post(confirmation)

    assert (refused_status, refused["name"]) == (422, "sns_confirmation_refused")
    assert (failing_status, failing["name"]) == (503, "application_error")


# -- Temporary: 503, so SNS retries --------------------------------------------------------------


async def test_sns_certificate_host_failing_is_503(sns: Sns) -> None:
    sns.host.failures[CERT_PATH] = 502
    notification = await sns.email_in_s3(message(), ["a@example.com"])
    status, body = await sns.post(notification)
    assert (status, body["name"]) == (503, "application_error")
    assert body["message"].endswith("answered HTTP 502.")


async def test_s3_out_of_reach_is_503_and_stores_nothing(
    start_test_api: StartApi,
    dns: LoopbackDNSServer,
    sns_host: SnsHost,
    signer: SnsSigner,
    aws_credentials: None,
    pool: Pool,
    make_tenant: MakeTenant,
) -> None:
    acme = await make_tenant(catch_all=True)
    async with moto_server() as lost:
        await lost.create_bucket(BUCKET)
        api = await start_test_api(**ses_env(dns, sns_host, lost))
        gone = Sns(api.url, signer, sns_host, lost)
        notification = await gone.email_in_s3(message(to=f"a@{acme.name}"), [f"a@{acme.name}"])
        await lost.stop()

        status, body = await gone.post(notification)

    assert (status, body["name"]) == (503, "application_error")
    key = json.loads(notification["Message"])["receipt"]["action"]["objectKey"]
    assert body["message"] == f"s3://{BUCKET}/{key} could not be read."
    assert await rows_of_event(pool, event_id_of(notification)) == []


async def test_storage_down_is_503_and_the_retry_after_it_is_stored_once(
    tmp_path: Path,
    tokens: ReplyTokens,
    dns: LoopbackDNSServer,
    sns_host: SnsHost,
    aws: MotoAws,
    signer: SnsSigner,
    aws_credentials: None,
) -> None:
    async with api_on_own_cluster(tmp_path, tokens, **ses_env(dns, sns_host, aws)) as api:
        outage = Sns(api.url, signer, sns_host, aws)
        notification = await outage.email_in_s3(
            message(to=f"x@{api.world.name}"), [f"x@{api.world.name}"]
        )

        await api.cluster.stop()
        down_status, down = await outage.post(notification)
        await api.cluster.start()
        retry_status, retry = await outage.post(notification)  # SNS's retry

        assert (down_status, down["name"]) == (503, "application_error")
        assert retry_status == 202, retry
        assert retry["duplicate"] is False
        assert len(await rows_of_event(api.pool, event_id_of(notification))) == 1


async def test_a_bucket_not_in_the_allow_list_is_refused_403_without_reading_it(
    start_sns: StartSns, aws: MotoAws
) -> None:
    """A notification from an allowed topic still names the object to read: with
    OPENSEND_SES_S3_BUCKETS, an object of any other bucket the credentials reach (here, one
    holding something that is not mail) is never read into a tenant's mail."""
    await aws.create_bucket("private-reports")
    await aws.put_object("private-reports", "q4.csv", message())
    sns = await start_sns(OPENSEND_SES_S3_BUCKETS=BUCKET)
    elsewhere = sns.signer.notification(
        ses_receipt(
            bucket="private-reports", key="q4.csv", recipients=["a@example.com"], message_id="m"
        ),
        cert_url=sns.host.cert_url,
    )
    status, body = await sns.post(elsewhere)
    assert (status, body["name"], body["message"]) == (
        403,
        "s3_bucket_not_allowed",
        "s3://private-reports is not a bucket this server reads; nothing was read.",
    )
    # The allowed bucket is read as before: this one reaches routing (a@example.com has none).
    status, body = await sns.post(await sns.email_in_s3(message(), ["a@example.com"]))
    assert (status, body["name"]) == (422, "recipients_refused")
