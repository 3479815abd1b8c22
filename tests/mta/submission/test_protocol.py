"""The submission ports' SMTP edges, spoken by real clients (aiosmtplib, smtplib) over loopback
with a trustme certificate: TLS first, then AUTH with an API key, then mail from the account's
own domains only. Every refusal is checked for both codes (RFC 3463: the same class)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import smtplib
import ssl
from collections.abc import AsyncIterator

import aiosmtplib
import pytest

from mta import metrics
from policy import replies
from policy.replies import Reply
from storage.account import directory
from storage.account_caches import KeyCache
from storage.database import Pool
from tests.conftest import (
    DOMAIN_VIEW,
    SUBMISSION_HOST,
    MakeTenant,
    StartSubmission,
    SubmissionServer,
    TenantWorld,
    message,
)
from tests.support.smtp import RawSMTP, SMTPReply

HOST = "127.0.0.1"
CLIENT_NAME = "laptop.example.net"
REPLY_TIMEOUT = 10.0  # bounds a wait so a broken server fails the test instead of hanging
POLL_ATTEMPTS = 500  # bounds a poll for state no event announces; no assertion on time


def assert_reply(reply: SMTPReply, expected: Reply) -> None:
    assert (reply.code, reply.enhanced) == (expected.code, expected.enhanced), reply


def assert_refusal(error: aiosmtplib.SMTPResponseException, expected: Reply) -> None:
    assert (error.code, error.message.split(" ", 1)[0]) == (expected.code, expected.enhanced), (
        error.code,
        error.message,
    )


def plain(user: str, password: str) -> str:
    """RFC 4616 initial response: authzid NUL authcid NUL password, base64."""
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


@contextlib.asynccontextmanager
async def session(
    server: SubmissionServer, *, implicit: bool = False, starttls: bool = True
) -> AsyncIterator[aiosmtplib.SMTP]:
    """A real client past EHLO: over STARTTLS on 587 (unless told not to), or on 465."""
    client = aiosmtplib.SMTP(
        hostname=HOST,
        port=server.implicit_port if implicit else server.starttls_port,
        use_tls=implicit,
        start_tls=False,
        tls_context=server.client_context(),
        timeout=30,
    )
    await client.connect()
    try:
        await client.ehlo(hostname=CLIENT_NAME)
        if starttls and not implicit:
            await client.starttls(server_hostname=SUBMISSION_HOST)
            await client.ehlo(hostname=CLIENT_NAME)
        yield client
    finally:
        with contextlib.suppress(aiosmtplib.SMTPException):
            await client.quit()
        client.close()


@contextlib.asynccontextmanager
async def raw_session(port: int) -> AsyncIterator[RawSMTP]:
    """A byte-level client past the greeting and EHLO, in the clear, always closed."""
    client, greeting = await RawSMTP.connect(HOST, port)
    try:
        assert greeting.code == 220, greeting
        assert (await client.command(f"EHLO {CLIENT_NAME}")).code == 250
        yield client
    finally:
        await client.close()


async def emails_of(pool: Pool, world: TenantWorld) -> list[dict[str, object]]:
    rows = await pool.fetch("SELECT * FROM emails WHERE tenant_id = $1 ORDER BY id", world.id)
    return [dict(row) for row in rows]


@pytest.fixture
async def submission(start_test_submission: StartSubmission) -> SubmissionServer:
    return await start_test_submission()


@pytest.fixture
async def acme(make_tenant: MakeTenant) -> TenantWorld:
    return await make_tenant()


# -- EHLO: what is offered when --------------------------------------------------------------


async def test_port_587_offers_starttls_in_the_clear_and_auth_only_inside_tls(
    submission: SubmissionServer,
) -> None:
    async with session(submission, starttls=False) as client:
        clear = {name.lower() for name in client.esmtp_extensions}
        await client.starttls(server_hostname=SUBMISSION_HOST)
        await client.ehlo(hostname=CLIENT_NAME)
        inside = {name.lower() for name in client.esmtp_extensions}
        mechanisms = client.supported_auth_methods
        negotiated = client.get_transport_info("ssl_object").version()

    assert "starttls" in clear
    assert "auth" not in clear  # RFC 4954 section 4: no mechanism offered in the clear
    assert "starttls" not in inside  # RFC 3207 section 4.2
    assert "auth" in inside
    assert sorted(mechanisms) == ["login", "plain"]
    assert "smtputf8" not in inside  # delivery does not speak it
    assert {"pipelining", "size", "8bitmime", "enhancedstatuscodes"} <= inside
    assert negotiated in ("TLSv1.2", "TLSv1.3")


async def test_port_465_speaks_tls_from_the_first_byte_and_offers_auth_not_starttls(
    submission: SubmissionServer,
) -> None:
    async with session(submission, implicit=True) as client:
        extensions = {name.lower() for name in client.esmtp_extensions}
        negotiated = client.get_transport_info("ssl_object").version()
        starttls = await client.execute_command(b"STARTTLS")

    assert "auth" in extensions
    assert "starttls" not in extensions
    assert negotiated in ("TLSv1.2", "TLSv1.3")
    assert (starttls.code, starttls.message.split()[0]) == (503, "5.5.1")


async def test_a_plain_text_connection_to_port_465_gets_no_smtp_at_all(
    submission: SubmissionServer,
) -> None:
    # RFC 8314 section 3.3: the TLS handshake comes first; a clear-text EHLO is not SMTP here.
    reader, writer = await asyncio.open_connection(HOST, submission.implicit_port)
    writer.write(b"EHLO laptop.example.net\r\n")
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(100), REPLY_TIMEOUT)
    except ConnectionError:
        answer = b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    assert not answer.startswith(b"220")


async def test_a_failed_tls_handshake_closes_the_connection_and_frees_its_slot(
    start_test_submission: StartSubmission, acme: TenantWorld, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_test_submission(OPENSEND_MAX_CONNECTIONS="1")
    caplog.set_level(logging.INFO)
    async with raw_session(server.starttls_port) as client:
        assert (await client.command("STARTTLS")).code == 220
        await client.send_raw(b"EHLO this is not a TLS ClientHello\r\n")
        closed = await asyncio.wait_for(client.reader.read(), REPLY_TIMEOUT)
    assert not closed.startswith(b"250")

    gate = server.listeners.starttls.gate
    for _ in range(POLL_ATTEMPTS):  # the server's side of the close runs in its own time
        if gate.active == 0:
            break
        await asyncio.sleep(0.01)
    assert gate.active == 0
    # The one connection allowed is free again: a real client gets through and logs in.
    async with session(server) as client:
        logged_in = await client.auth_plain("me", await acme.api_key())
    assert logged_in.code == 235
    # Routine for a server on the internet: logged, not an error with a traceback.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert "TLS handshake failed" in [r.getMessage() for r in caplog.records]


# -- no TLS, no AUTH, no mail ----------------------------------------------------------------


async def test_auth_in_the_clear_is_refused_538_5_7_11_before_any_credentials_are_read(
    submission: SubmissionServer, acme: TenantWorld
) -> None:
    key = await acme.api_key()
    async with raw_session(submission.starttls_port) as client:
        refused = await client.command(f"AUTH PLAIN {plain('me', key)}")
        login = await client.command("AUTH LOGIN")
        still_there = await client.command("NOOP")

    assert_reply(refused, replies.S538_ENCRYPTION_REQUIRED)
    assert_reply(login, replies.S538_ENCRYPTION_REQUIRED)
    assert_reply(still_there, replies.S250_OK)


async def test_mail_in_the_clear_is_refused_530_5_7_0_starttls_first(
    submission: SubmissionServer, acme: TenantWorld
) -> None:
    async with raw_session(submission.starttls_port) as client:
        mail = await client.command(f"MAIL FROM:<support@{acme.name}>")
        rcpt = await client.command("RCPT TO:<bob@example.net>")
        data = await client.command("DATA")

    for reply in (mail, rcpt, data):
        assert_reply(reply, replies.S530_STARTTLS_FIRST)


async def test_mail_inside_tls_before_auth_is_refused_530_5_7_0_authentication_required(
    submission: SubmissionServer, acme: TenantWorld
) -> None:
    async with session(submission) as client:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.mail(f"support@{acme.name}")

    assert_refusal(refused.value, replies.S530_AUTH_REQUIRED)


# -- AUTH ------------------------------------------------------------------------------------


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls_587", "implicit_tls_465"])
@pytest.mark.parametrize("mechanism", ["plain", "login"])
async def test_api_key_logs_in_with_any_user_name_and_sends(
    submission: SubmissionServer,
    acme: TenantWorld,
    pool: Pool,
    implicit: bool,
    mechanism: str,
) -> None:
    key = await acme.api_key()
    async with session(submission, implicit=implicit) as client:
        auth = client.auth_plain if mechanism == "plain" else client.auth_login
        logged_in = await auth("anything-at-all", key)
        _errors, answer = await client.sendmail(
            f"support@{acme.name}", ["bob@example.net"], message(sender=f"support@{acme.name}")
        )

    assert (logged_in.code, logged_in.message.split()[0]) == (235, "2.7.0")
    assert answer.startswith("2.0.0 Ok: queued as ")
    [row] = await emails_of(pool, acme)
    assert str(row["id"]) == answer.rsplit(" ", 1)[1]
    assert row["source"] == "smtp"


async def test_smtplib_logs_in_over_implicit_tls_with_the_key_name_as_user(
    submission: SubmissionServer, acme: TenantWorld, pool: Pool
) -> None:
    key = await acme.api_key()  # named "test"

    def send() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP_SSL(
            HOST, submission.implicit_port, context=submission.client_context(), timeout=30
        ) as client:
            client.login("test", key)
            return client.sendmail(
                f"support@{acme.name}",
                ["bob@example.net"],
                message(sender=f"support@{acme.name}"),
            )

    refused = await asyncio.to_thread(send)

    assert refused == {}
    assert len(await emails_of(pool, acme)) == 1


async def test_wrong_key_is_refused_535_5_7_8_and_the_session_may_try_again(
    submission: SubmissionServer, acme: TenantWorld
) -> None:
    key = await acme.api_key()
    async with session(submission) as client:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as wrong:
            await client.auth_plain("me", "re_not-a-key-of-anyone")
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as empty:
            await client.auth_login("me", "")
        right = await client.auth_plain("me", key)

    assert_refusal(wrong.value, replies.S535_AUTH_INVALID)
    assert_refusal(empty.value, replies.S535_AUTH_INVALID)
    assert right.code == 235


async def test_auth_protocol_errors_are_answered_and_leave_the_session_usable(
    submission: SubmissionServer, acme: TenantWorld
) -> None:
    key = await acme.api_key()
    async with session(submission) as client:
        unknown = await client.execute_command(b"AUTH CRAM-MD5")
        not_base64 = await client.execute_command(b"AUTH PLAIN %%%")
        not_three_parts = await client.execute_command(
            b"AUTH PLAIN " + base64.b64encode(b"only-a-password")
        )
        # RFC 4954 section 4: "*" cancels an exchange in progress; the server answers 501.
        challenge = await client.execute_command(b"AUTH LOGIN")
        cancelled = await client.execute_command(b"*")
        logged_in = await client.execute_command(f"AUTH PLAIN {plain('me', key)}".encode())
        again = await client.execute_command(f"AUTH PLAIN {plain('me', key)}".encode())

    assert (unknown.code, unknown.message.split()[0]) == (504, "5.5.4")
    assert (not_base64.code, not_base64.message.split()[0]) == (501, "5.5.2")
    assert (not_three_parts.code, not_three_parts.message.split()[0]) == (501, "5.5.2")
    assert challenge.code == 334
    assert cancelled.code == 501
    assert logged_in.code == 235
    assert (again.code, again.message.split()[0]) == (503, "5.5.1")


async def test_auth_is_not_allowed_inside_a_mail_transaction(
    submission: SubmissionServer, acme: TenantWorld
) -> None:
    key = await acme.api_key()
    async with session(submission) as client:
        await client.auth_plain("me", key)
        await client.mail(f"support@{acme.name}")
        inside = await client.execute_command(f"AUTH PLAIN {plain('me', key)}".encode())

    assert (inside.code, inside.message.split()[0]) == (503, "5.5.1")


async def test_a_new_tls_session_forgets_the_login_of_the_clear_text_one(
    submission: SubmissionServer, acme: TenantWorld
) -> None:
    # RFC 3207 section 4.2: after STARTTLS the server forgets everything the client said.
    key = await acme.api_key()
    async with session(submission, starttls=False) as client:
        await client.starttls(server_hostname=SUBMISSION_HOST)
        await client.ehlo(hostname=CLIENT_NAME)
        await client.auth_plain("me", key)
        mail = await client.mail(f"support@{acme.name}")
    assert mail.code == 250


# -- failed logins slow down, then lock the address out --------------------------------------


async def test_repeated_wrong_keys_lock_the_address_out_logged_and_counted(
    start_test_submission: StartSubmission,
    acme: TenantWorld,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await start_test_submission(OPENSEND_AUTH_MAX_FAILURES="3", OPENSEND_AUTH_LOCKOUT="1h")
    key = await acme.api_key()
    lockouts_before = metrics.SUBMISSION_AUTH_LOCKOUTS._value.get()
    caplog.set_level(logging.INFO, logger="mta.submission.auth")

    async with session(server) as client:
        answers = []
        for _ in range(2):
            with pytest.raises(aiosmtplib.SMTPAuthenticationError) as wrong:
                await client.auth_plain("me", "re_wrong")
            answers.append(wrong.value)
        # The third failure starts the lockout: 421, and the server closes the connection.
        third = await client.execute_command(f"AUTH PLAIN {plain('me', 're_wrong')}".encode())
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await client.noop()

    # Locked out: even the right key gets 454, on either port, its credentials unread.
    async with session(server) as client:
        locked = await client.execute_command(f"AUTH PLAIN {plain('me', key)}".encode())
    async with session(server, implicit=True) as client:
        locked_465 = await client.execute_command(f"AUTH PLAIN {plain('me', key)}".encode())

    for refused in answers:
        assert_refusal(refused, replies.S535_AUTH_INVALID)
    assert (third.code, third.message.split()[0]) == (421, "4.7.0")
    for reply in (locked, locked_465):
        expected = replies.S454_AUTH_LOCKED_OUT
        assert (reply.code, reply.message.split()[0]) == (expected.code, expected.enhanced)
    assert metrics.SUBMISSION_AUTH_LOCKOUTS._value.get() == lockouts_before + 1
    [lockout] = [r for r in caplog.records if r.getMessage() == "login failed: address locked out"]
    assert lockout.levelno == logging.WARNING
    assert lockout.__dict__["client"] == HOST
    assert lockout.__dict__["failures"] == 3


async def test_failures_are_answered_after_a_delay_that_doubles(
    start_test_submission: StartSubmission,
    acme: TenantWorld,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await start_test_submission(
        OPENSEND_AUTH_FAILURE_DELAY="5ms", OPENSEND_AUTH_MAX_FAILURES="10"
    )
    caplog.set_level(logging.INFO, logger="mta.submission.auth")
    async with session(server) as client:
        for _ in range(3):
            with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                await client.auth_login("me", "re_wrong")

    failed = [r for r in caplog.records if r.getMessage() == "login failed"]
    delays = [r.__dict__["delay_seconds"] for r in failed]
    assert delays == [0.005, 0.01, 0.02]


async def test_the_lockout_of_one_address_does_not_stop_a_good_login_from_another(
    start_test_submission: StartSubmission, acme: TenantWorld
) -> None:
    server = await start_test_submission(OPENSEND_AUTH_MAX_FAILURES="1")
    key = await acme.api_key()
    async with session(server) as client:
        locking = await client.execute_command(f"AUTH PLAIN {plain('me', 're_x')}".encode())
    assert locking.code == 421

    # 127.0.0.2 is another client address on the loopback network.
    client = aiosmtplib.SMTP(
        hostname=HOST,
        port=server.implicit_port,
        use_tls=True,
        tls_context=server.client_context(),
        source_address=("127.0.0.2", 0),
        timeout=30,
    )
    await client.connect()
    try:
        await client.ehlo(hostname=CLIENT_NAME)
        logged_in = await client.auth_plain("me", key)
    finally:
        await client.quit()
    assert logged_in.code == 235


# -- who may send what -----------------------------------------------------------------------


async def test_mail_from_a_domain_that_is_not_the_accounts_is_refused_553_5_7_1(
    submission: SubmissionServer, acme: TenantWorld, make_tenant: MakeTenant
) -> None:
    globex = await make_tenant()
    unverified = await make_tenant(verified=False)
    key = await acme.api_key()
    async with session(submission) as client:
        await client.auth_plain("me", key)
        refused: dict[str, aiosmtplib.SMTPSenderRefused] = {}
        for sender in (
            "someone@gmail.example",
            f"support@{globex.name}",  # verified, but another account's
            f"support@{unverified.name}",
            "",  # the null reverse-path, <>
        ):
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
                await client.mail(sender)
            refused[sender] = caught.value
        accepted = await client.mail(f"support@{acme.name}")

    for sender, error in refused.items():
        assert_refusal(error, replies.S553_SENDER_NOT_ALLOWED)
        if sender:
            assert "is not a verified domain of your account" in error.message, error.message
    assert accepted.code == 250


async def test_mail_from_an_unverified_domain_of_the_account_is_refused_553(
    submission: SubmissionServer, make_tenant: MakeTenant
) -> None:
    pending = await make_tenant(verified=False)
    key = await pending.api_key()
    async with session(submission) as client:
        await client.auth_plain("me", key)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.mail(f"support@{pending.name}")
    assert_refusal(refused.value, replies.S553_SENDER_NOT_ALLOWED)
    assert pending.name in refused.value.message


async def test_from_field_on_another_domain_is_refused_553_5_7_1_and_nothing_stored(
    submission: SubmissionServer, acme: TenantWorld, make_tenant: MakeTenant, pool: Pool
) -> None:
    globex = await make_tenant()
    key = await acme.api_key()
    forged = message(sender=f"ceo@{globex.name}", to="bob@example.net")
    two_authors = message(sender=f"a@{acme.name}, b@{acme.name}", to="bob@example.net")
    no_author = b"To: bob@example.net\r\nSubject: who?\r\n\r\nbody\r\n"
    async with session(submission) as client:
        await client.auth_plain("me", key)
        refusals = []
        for content in (forged, two_authors, no_author):
            with pytest.raises(aiosmtplib.SMTPDataError) as refused:
                await client.sendmail(f"support@{acme.name}", ["bob@example.net"], content)
            refusals.append(refused.value)

    for error in refusals:
        assert_refusal(error, replies.S553_FROM_NOT_ALLOWED)
    assert f"{globex.name} is not a verified domain of your account" in refusals[0].message
    assert await emails_of(pool, acme) == []


async def test_a_second_from_in_obsolete_syntax_is_refused_550_5_6_0_and_nothing_stored(
    submission: SubmissionServer, acme: TenantWorld, pool: Pool
) -> None:
    """RFC 5322 section 4.5 lets receivers read "FROM : x" as a From field; Python's parser ends
    the header there. Two views of one author would let a foreign From ride past our check."""
    key = await acme.api_key()
    smuggled = (
        f"From: support@{acme.name}\r\nFROM : ceo@victim.example\r\nTo: bob@example.net\r\n"
        "Subject: s\r\n\r\nbody\r\n"
    ).encode()
    async with session(submission) as client:
        await client.auth_plain("me", key)
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await client.sendmail(f"support@{acme.name}", ["bob@example.net"], smuggled)
        # The session goes on: the next, well-formed message is accepted.
        await client.sendmail(
            f"support@{acme.name}", ["bob@example.net"], message(sender=f"support@{acme.name}")
        )
    assert_refusal(refused.value, replies.S550_MALFORMED_HEADER)
    assert len(await emails_of(pool, acme)) == 1


async def test_a_key_deleted_during_a_session_stops_it_at_the_next_mail_530_5_7_0(
    submission: SubmissionServer, acme: TenantWorld, pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(KeyCache, "TTL_SECONDS", 0.0)  # the revocation is seen at once
    key = await acme.api_key()
    content = message(sender=f"support@{acme.name}", to="bob@example.net")
    async with session(submission) as client:
        await client.auth_plain("me", key)
        await client.sendmail(f"support@{acme.name}", ["bob@example.net"], content)
        [row] = await pool.fetch("SELECT id FROM api_keys WHERE tenant_id = $1", acme.id)
        assert await directory.delete_api_key(pool, acme.id, row["id"])
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.sendmail(f"support@{acme.name}", ["bob@example.net"], content)
    assert_refusal(refused.value, replies.S530_KEY_REVOKED)
    assert len(await emails_of(pool, acme)) == 1


async def test_a_key_limited_to_one_domain_sends_from_it_only(
    submission: SubmissionServer, acme: TenantWorld, pool: Pool
) -> None:
    other = await acme_second_domain(acme)
    key = await acme.api_key("sending_access", domain_id=acme.domain.id)
    async with session(submission) as client:
        await client.auth_plain("me", key)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.mail(f"news@{other}")
        _errors, answer = await client.sendmail(
            f"support@{acme.name}", ["bob@example.net"], message(sender=f"support@{acme.name}")
        )

    assert_refusal(refused.value, replies.S553_SENDER_NOT_ALLOWED)
    assert "may only send from its own domain" in refused.value.message
    assert answer.startswith("2.0.0")


async def acme_second_domain(acme: TenantWorld) -> str:
    from storage.account import directory

    name = f"news.{acme.name}"
    await directory.add_domain(
        acme.pool,
        acme.id,
        name,
        receiving=False,
        reply_domain=None,
        verified=True,
        event_data=DOMAIN_VIEW.event_data,
    )
    return name


async def test_monthly_sending_limit_defers_mail_450_4_7_1(
    submission: SubmissionServer, acme: TenantWorld
) -> None:
    from storage.sending import replies as limits

    key = await acme.api_key()
    await limits.set_sending_limit(acme.pool, acme.id, 0)
    async with session(submission) as client:
        await client.auth_plain("me", key)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as deferred:
            await client.mail(f"support@{acme.name}")
    assert_refusal(deferred.value, replies.S450_SENDING_LIMIT)


# -- recipients and size, as the MX limits them ----------------------------------------------


async def test_recipient_limit_defers_452_and_bad_addresses_are_refused_501(
    start_test_submission: StartSubmission, acme: TenantWorld, pool: Pool
) -> None:
    server = await start_test_submission(OPENSEND_MAX_RECIPIENTS="2")
    key = await acme.api_key()
    async with session(server) as client:
        await client.auth_plain("me", key)
        await client.mail(f"support@{acme.name}")
        codes = []
        for rcpt in ("a@example.net", "A@EXAMPLE.NET", '"x@y"@example.net', "b@example.net"):
            codes.append((await client.execute_command(f"RCPT TO:<{rcpt}>".encode())).code)
        third = await client.execute_command(b"RCPT TO:<c@example.net>")
        await client.data(message(sender=f"support@{acme.name}"))

    # The same address in another case is one recipient, accepted again without counting.
    assert codes == [250, 250, 501, 250]
    assert (third.code, third.message.split()[0]) == (452, "4.5.3")
    [row] = await emails_of(pool, acme)
    recipients = await pool.fetch(
        "SELECT recipient FROM deliveries WHERE email_id = $1 ORDER BY recipient", row["id"]
    )
    assert [r["recipient"] for r in recipients] == ["a@example.net", "b@example.net"]


async def test_message_over_the_size_limit_is_refused_552(
    start_test_submission: StartSubmission, acme: TenantWorld, pool: Pool
) -> None:
    server = await start_test_submission(OPENSEND_MAX_MESSAGE_SIZE="4096")
    key = await acme.api_key()
    big = message(sender=f"support@{acme.name}", body=("x" * 70 + "\n") * 100)
    async with session(server) as client:
        await client.auth_plain("me", key)
        assert client.esmtp_extensions["size"] == "4096"
        # RFC 1870: a client that declares the size hears at MAIL FROM...
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as declared:
            await client.sendmail(f"support@{acme.name}", ["bob@example.net"], big)
        # ...one that does not, after the message, read to its end.
        await client.mail(f"support@{acme.name}")
        await client.rcpt("bob@example.net")
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await client.data(big)
    assert declared.value.code == 552
    assert_refusal(refused.value, replies.S552_TOO_BIG)
    assert await emails_of(pool, acme) == []


# -- non-ASCII addresses (RFC 6531) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("mail", "rcpt", "expected"),
    [
        pytest.param("zoë@{domain}", None, replies.S553_NON_ASCII_NOT_SENDABLE, id="mail"),
        pytest.param(
            "support@{domain}", "zoë@a.test", replies.S553_NON_ASCII_NOT_SENDABLE, id="rcpt"
        ),
        # SMTPUTF8 is not offered here (RFC 5321 section 4.1.1.11: an unadvertised parameter).
        pytest.param(
            "support@{domain} SMTPUTF8", None, replies.S555_MAIL_PARAMETERS, id="declared"
        ),
    ],
)
async def test_non_ascii_addresses_are_refused_553_5_6_7_on_both_ports(
    submission: SubmissionServer,
    acme: TenantWorld,
    pool: Pool,
    mail: str,
    rcpt: str | None,
    expected: Reply,
) -> None:
    key = await acme.api_key()
    answers: list[tuple[int, str]] = []
    for implicit in (False, True):
        async with session(submission, implicit=implicit) as client:
            await client.auth_plain("user", key)
            address, _, parameters = mail.replace("{domain}", acme.name).partition(" ")
            argument = f"FROM:<{address}> {parameters}".strip()
            first = await client.execute_command(b"MAIL", argument.encode())
            answers.append((first.code, first.message))
            if rcpt is not None:
                assert first.code == 250, first
                second = await client.execute_command(b"RCPT", f"TO:<{rcpt}>".encode())
                answers.append((second.code, second.message))

    refusals = [answer for answer in answers if answer[0] != 250]
    assert refusals == [(expected.code, f"{expected.enhanced} {expected.text}")] * 2
    assert await emails_of(pool, acme) == []


# -- line endings -----------------------------------------------------------------------------


@pytest.mark.parametrize("bare_newline", ["reject", "normalize"])
async def test_bare_lf_lines_are_refused_or_stored_for_signing_and_delivery_with_crlf(
    start_test_submission: StartSubmission, acme: TenantWorld, pool: Pool, bare_newline: str
) -> None:
    """As on the MX: refused by default (RFC 5321 section 2.3.8); with Postfix 3.9's normalize,
    what is signed and relayed has CRLF line ends."""
    server = await start_test_submission(OPENSEND_BARE_NEWLINE=bare_newline)
    key = await acme.api_key()
    client, greeting = await RawSMTP.connect(
        HOST,
        server.implicit_port,
        tls=server.client_context(),
        server_hostname=SUBMISSION_HOST,
    )
    try:
        assert greeting.code == 220, greeting
        assert (await client.command(f"EHLO {CLIENT_NAME}")).code == 250
        assert (await client.command(f"AUTH PLAIN {plain('me', key)}")).code == 235
        assert (await client.command(f"MAIL FROM:<support@{acme.name}>")).code == 250
        assert (await client.command("RCPT TO:<bob@example.net>")).code == 250
        assert (await client.command("DATA")).code == 354
        await client.send_raw(
            f"From: support@{acme.name}\nTo: bob@example.net\nSubject: cron\n\n"
            "disk 91%\n.\nload\rhigh\r\n.\r\n".encode()
        )
        reply = await client.read_reply(REPLY_TIMEOUT)
    finally:
        await client.close()

    if bare_newline == "reject":
        assert_reply(reply, replies.S550_BARE_NEWLINE)
        assert await emails_of(pool, acme) == []
        return
    assert reply.code == 250, reply
    [row] = await emails_of(pool, acme)
    raw = bytes(row["raw"])  # type: ignore[arg-type]
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", raw) is None, raw
    assert b"\r\nSubject: cron\r\n" in raw
    assert raw.endswith(b"\r\n\r\ndisk 91%\r\n\r\nload high\r\n")
