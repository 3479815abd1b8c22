"""What an SMTP answer means for a recipient, and what recipients mean for their email."""

from __future__ import annotations

import re

import pytest

from policy.delivery import result as results
from policy.delivery.result import (
    OWN_ANSWERS,
    EmailStatus,
    Outcome,
    SmtpAnswer,
    Stage,
    another_host_may_take,
    classify,
    email_status,
    failed_not_bounced,
    judge,
)
from policy.replies import Reply

ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
SCHEDULE = (60, 300, 900)
FIVE_DAYS = 5 * 86400


def remote(code: int, text: str, stage: Stage = Stage.DATA) -> SmtpAnswer:
    return SmtpAnswer.from_reply(code, text, stage)


@pytest.mark.parametrize(
    ("name", "reply"), [pytest.param(n, r, id=n.lower()) for n, r in OWN_ANSWERS.items()]
)
def test_our_answers_have_agreeing_basic_and_enhanced_codes(name: str, reply: Reply) -> None:
    """RFC 3463: the enhanced code's class is the basic code's first digit."""
    assert ENHANCED.fullmatch(reply.enhanced), name
    assert reply.enhanced[0] == str(reply.code)[0], name


def test_null_mx_is_556_5_1_10_as_rfc_7505_says() -> None:
    assert (results.NULL_MX.code, results.NULL_MX.enhanced) == (556, "5.1.10")


def test_a_remote_reply_keeps_its_enhanced_code_apart_from_its_text() -> None:
    answer = remote(550, "5.1.1 <bob@example.net>: Recipient address rejected", Stage.RCPT)
    assert (answer.code, answer.enhanced) == (550, "5.1.1")
    assert answer.text == "<bob@example.net>: Recipient address rejected"
    assert answer.remote


def test_a_reply_without_an_enhanced_code_is_kept_whole() -> None:
    answer = remote(250, "Ok: queued as 4Bx")
    assert (answer.enhanced, answer.text) == (None, "Ok: queued as 4Bx")


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        pytest.param(remote(250, "2.0.0 Ok"), Outcome.DELIVERED, id="250-after-data-delivers"),
        pytest.param(remote(251, "2.1.5 forwarded"), Outcome.DELIVERED, id="any-2xx-after-data"),
        pytest.param(remote(451, "4.7.1 greylisted"), Outcome.DEFERRED, id="4xx-after-data-defers"),
        pytest.param(remote(554, "5.7.1 spam"), Outcome.BOUNCED, id="5xx-after-data-bounces"),
        pytest.param(
            remote(550, "5.1.1 unknown", Stage.RCPT), Outcome.BOUNCED, id="5xx-at-rcpt-bounces"
        ),
        pytest.param(
            remote(450, "4.2.0 busy", Stage.RCPT), Outcome.DEFERRED, id="4xx-at-rcpt-defers"
        ),
        pytest.param(
            remote(552, "5.5.3 too many recipients", Stage.RCPT),
            Outcome.DEFERRED,
            id="552-at-rcpt-is-the-old-452",
        ),
        pytest.param(
            remote(552, "5.3.4 too big"), Outcome.BOUNCED, id="552-after-data-is-permanent"
        ),
        pytest.param(
            remote(553, "5.1.8 bad sender", Stage.MAIL), Outcome.BOUNCED, id="5xx-at-mail-bounces"
        ),
        pytest.param(
            remote(554, "5.7.1 go away", Stage.GREETING),
            Outcome.DEFERRED,
            id="5xx-greeting-is-the-hosts-fault-defers",
        ),
        pytest.param(
            remote(535, "5.7.8 bad credentials", Stage.AUTH),
            Outcome.DEFERRED,
            id="refused-relay-login-defers",
        ),
        pytest.param(
            remote(250, "2.1.5 ok", Stage.RCPT),
            Outcome.DEFERRED,
            id="2xx-before-data-is-no-outcome",
        ),
        pytest.param(remote(354, "go on"), Outcome.DEFERRED, id="out-of-protocol-defers"),
        pytest.param(
            SmtpAnswer.ours(results.CONNECTION_LOST, Stage.DATA),
            Outcome.DEFERRED,
            id="connection-lost-in-data-defers",
        ),
        pytest.param(SmtpAnswer.ours(results.NULL_MX), Outcome.BOUNCED, id="null-mx-bounces"),
        pytest.param(
            SmtpAnswer.ours(results.DNS_TEMPORARY), Outcome.DEFERRED, id="dns-trouble-defers"
        ),
    ],
)
def test_classify(answer: SmtpAnswer, outcome: Outcome) -> None:
    assert classify(answer) is outcome


def test_a_deferral_is_retried_after_the_schedules_step() -> None:
    verdict = judge(
        remote(451, "4.7.1 try later"),
        attempts=2,
        age_seconds=100,
        schedule=SCHEDULE,
        max_age_seconds=FIVE_DAYS,
    )
    assert (verdict.outcome, verdict.retry_in, verdict.expired) == (Outcome.DEFERRED, 300, False)


def test_a_deferral_past_the_maximum_age_bounces_with_the_remotes_last_answer() -> None:
    answer = remote(451, "4.7.1 try later")
    verdict = judge(
        answer, attempts=30, age_seconds=FIVE_DAYS, schedule=SCHEDULE, max_age_seconds=FIVE_DAYS
    )
    assert (verdict.outcome, verdict.expired, verdict.answer) == (Outcome.BOUNCED, True, answer)


def test_a_bounce_is_final_whatever_the_age() -> None:
    verdict = judge(
        remote(550, "5.1.1 no"), attempts=1, age_seconds=0, schedule=SCHEDULE,
        max_age_seconds=FIVE_DAYS,
    )  # fmt: skip
    assert (verdict.outcome, verdict.retry_in, verdict.expired) == (Outcome.BOUNCED, None, False)


@pytest.mark.parametrize(
    ("states", "status"),
    [
        pytest.param({"delivered": 2}, EmailStatus.DELIVERED, id="all-delivered"),
        pytest.param({"bounced": 2}, EmailStatus.BOUNCED, id="all-bounced"),
        pytest.param(
            {"delivered": 1, "bounced": 1}, EmailStatus.PARTIALLY_BOUNCED, id="some-of-each"
        ),
        pytest.param(
            {"delivered": 1, "deferred": 1}, EmailStatus.DELIVERY_DELAYED, id="one-deferred"
        ),
        pytest.param({"delivered": 1, "queued": 1}, EmailStatus.SENT, id="one-still-queued"),
        pytest.param({"sending": 1, "bounced": 1}, EmailStatus.SENT, id="one-being-sent"),
        pytest.param({"canceled": 2}, EmailStatus.CANCELED, id="all-canceled"),
        pytest.param(
            {"canceled": 1, "delivered": 1}, EmailStatus.DELIVERED, id="canceled-ones-do-not-count"
        ),
    ],
)
def test_email_status_rolls_up_its_recipients(states: dict[str, int], status: EmailStatus) -> None:
    assert email_status(states) is status


def _verdict(answer: SmtpAnswer, age_seconds: float = 0) -> bool:
    verdict = judge(
        answer, attempts=1, age_seconds=age_seconds, schedule=SCHEDULE,
        max_age_seconds=FIVE_DAYS,
    )  # fmt: skip
    return failed_not_bounced(verdict)


@pytest.mark.parametrize(
    ("answer", "failed"),
    [
        # Nothing to send: our side, so Resend's email.failed.
        (SmtpAnswer.ours(results.MESSAGE_MISSING), True),
        # What we conclude about the recipient's domain or route is a bounce.
        (SmtpAnswer.ours(results.NULL_MX), False),
        (SmtpAnswer.ours(results.NO_SUCH_DOMAIN), False),
        (SmtpAnswer.ours(results.MX_HOSTS_UNRESOLVED), False),
        # A remote refusal is a bounce whatever its subject, content or policy included.
        (remote(554, "5.6.0 message refused"), False),
        (remote(550, "5.7.1 blocked"), False),
        # Not final: neither.
        (remote(451, "4.7.1 try later"), False),
        (remote(250, "2.0.0 ok"), False),
    ],
)
def test_only_our_own_refusals_of_the_message_are_failures_not_bounces(
    answer: SmtpAnswer, failed: bool
) -> None:
    assert _verdict(answer) is failed


def test_a_message_too_old_to_keep_trying_is_a_bounce_not_a_failure() -> None:
    assert _verdict(SmtpAnswer.ours(results.NO_ANSWER), age_seconds=FIVE_DAYS) is False


@pytest.mark.parametrize(
    ("answer", "next_host"),
    [
        (remote(451, "4.7.1 Greylisted", Stage.RCPT), True),
        (remote(452, "4.3.1 Queue full", Stage.MAIL), True),
        (remote(451, "4.3.0 Try later", Stage.DATA), True),  # refused after the dot: not taken
        (remote(552, "5.5.3 Too many recipients", Stage.RCPT), True),  # RFC 5321 4.5.3.1.10
        (SmtpAnswer.ours(results.CONNECTION_LOST, Stage.RCPT), True),
        (SmtpAnswer.ours(results.CONNECTION_LOST, Stage.DATA), False),  # it may have taken it
        (SmtpAnswer.ours(results.TIMED_OUT, Stage.DATA), False),
        (remote(250, "2.0.0 Ok", Stage.DATA), False),
        (remote(550, "5.1.1 No such user", Stage.RCPT), False),
        (remote(554, "5.7.1 Rejected", Stage.DATA), False),
    ],
)
def test_only_a_deferral_that_cannot_have_delivered_is_offered_to_the_next_host(
    answer: SmtpAnswer, next_host: bool
) -> None:
    assert another_host_may_take(answer) is next_host
