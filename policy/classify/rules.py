"""The classification rules, one small predicate each, and their order as a table.

`classify()` runs `CLASSIFY_RULES` top to bottom; the first rule that answers decides, and its
name is stored as the reason. A message no rule claims is `human`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from policy.bounces.taxonomy import BounceType
from policy.classify.signals import Signals

UNDETERMINED = BounceType.UNDETERMINED


class MailClass(StrEnum):
    HUMAN = "human"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    AUTO_GENERATED = "auto_generated"


@dataclass(frozen=True, slots=True)
class Classification:
    kind: MailClass
    reason: str  # the rule that fired

    @property
    def automatic(self) -> bool:
        """RFC 3834 section 2: nothing we send automatically may answer such a message."""
        return self.kind is not MailClass.HUMAN


Rule = Callable[[Signals], bool]


# -- reports -------------------------------------------------------------------------------------


def arf_complaint(s: Signals) -> bool:
    # RFC 5965: multipart/report; report-type=feedback-report. auth-failure reports (RFC 6591)
    # are DMARC/SPF failure reports about the sending domain, not a person's complaint.
    return (
        s.report is not None
        and s.report.form == "feedback-report"
        and s.report.feedback_type != "auth-failure"
    )


def arf_auth_failure(s: Signals) -> bool:
    return s.report is not None and s.report.form == "feedback-report"


def dsn_failure(s: Signals) -> bool:
    # RFC 3464: multipart/report; report-type=delivery-status with a failed or delayed recipient.
    return s.report is not None and s.report.form == "delivery-status" and bool(s.report.failed)


def dsn_success(s: Signals) -> bool:
    # A DSN whose recipients were all delivered, relayed or expanded (RFC 3461 NOTIFY=SUCCESS).
    return s.report is not None and s.report.form == "delivery-status"


def read_receipt(s: Signals) -> bool:
    # RFC 8098 message disposition notifications.
    return s.report is not None and s.report.form == "disposition-notification"


def returned_by_mail_system(s: Signals) -> bool:
    # A mail system (null reverse-path, or MAILER-DAEMON/postmaster) returning a message with a
    # failed recipient named: Exim, qmail, Microsoft 365 and other text forms. Its subject must
    # announce the failure, or the notice must give the recipient an SMTP status: an
    # out-of-office reply sent from the null path that quotes the original is not a bounce.
    if not s.from_mail_system or s.report is None or not s.report.recipients:
        return False
    if s.says_failure or any(r.status is not None for r in s.report.recipients):
        return True
    # The message came back attached, and the notice's words give a reason for the failure.
    return s.report.returned and any(r.kind.type is not UNDETERMINED for r in s.report.recipients)


# -- people and their helpdesks ------------------------------------------------------------------


def helpdesk_reply_with_token(s: Signals) -> bool:
    # Helpdesks (Zendesk and others) send an agent's reply with Auto-Submitted: auto-generated.
    # A message that answers one of our messages through a genuine reply token, with words of its
    # own and no auto-reply marker of another kind, is a person's reply.
    return (
        s.auto_submitted == "auto-generated"
        and s.matched_by_token
        and s.has_own_text
        and not s.vendor_auto_reply
        and not s.auto_reply_subject
    )


# -- auto-replies --------------------------------------------------------------------------------


def auto_submitted_replied(s: Signals) -> bool:
    # RFC 3834 section 5: auto-replied marks a response (vacation, out of office).
    return s.auto_submitted is not None and s.auto_submitted.startswith("auto-replied")


def auto_submitted_in_reply(s: Signals) -> bool:
    # Any other value than "no" (auto-generated, auto-notified) on a message that answers ours.
    return s.auto_submitted not in (None, "no") and s.answers_something


def vendor_auto_reply(s: Signals) -> bool:
    # X-Autoreply, X-Autorespond, X-Autoresponder, Precedence: auto_reply (vendor markers).
    # X-Auto-Response-Suppress is a request to others and marks nothing (it is not read here).
    return s.vendor_auto_reply


def exchange_out_of_office(s: Signals) -> bool:
    # Exchange and Microsoft 365 mark an out-of-office reply by its subject prefix and the
    # X-MS-Exchange-* auto-reply fields; older servers only by the subject.
    return s.auto_reply_subject


# -- lists and bulk ------------------------------------------------------------------------------


def auto_submitted_other(s: Signals) -> bool:
    # RFC 3834: any value but "no" is automatic; one not answering anything is a notification.
    return s.auto_submitted not in (None, "no")


def precedence_bulk(s: Signals) -> bool:
    return s.precedence in ("bulk", "junk", "list")


def list_headers(s: Signals) -> bool:
    # RFC 2919 List-Id and RFC 2369 List-* fields: a list's distribution, not a person's reply.
    return s.list_message


# The rules, in order; the first that holds decides. Reports first (they are certain), then the
# helpdesk exception (before the auto-reply rules it would otherwise trip), auto-replies, then
# lists and bulk mail.
CLASSIFY_RULES: tuple[tuple[str, Rule, MailClass], ...] = (
    # 1. RFC 5965 ARF abuse / opt-out / fraud report about a message.
    ("arf_complaint", arf_complaint, MailClass.COMPLAINT),
    # 2. RFC 6591 authentication failure report: automatic, about the domain.
    ("arf_auth_failure", arf_auth_failure, MailClass.AUTO_GENERATED),
    # 3. RFC 3464 DSN with a failed or delayed recipient.
    ("dsn_failure", dsn_failure, MailClass.BOUNCE),
    # 4. RFC 3464 DSN of success only.
    ("dsn_success", dsn_success, MailClass.AUTO_GENERATED),
    # 5. RFC 8098 read receipt.
    ("read_receipt", read_receipt, MailClass.AUTO_GENERATED),
    # 6. Non-standard bounce: a mail system returning the message or naming a failed address.
    ("returned_by_mail_system", returned_by_mail_system, MailClass.BOUNCE),
    # 7. Helpdesk agent's reply through our reply token: a person (known false positive).
    ("helpdesk_reply_with_token", helpdesk_reply_with_token, MailClass.HUMAN),
    # 8. RFC 3834 Auto-Submitted: auto-replied.
    ("auto_submitted_replied", auto_submitted_replied, MailClass.AUTO_REPLY),
    # 9. Vendor auto-reply fields.
    ("vendor_auto_reply", vendor_auto_reply, MailClass.AUTO_REPLY),
    # 10. Exchange / Microsoft 365 out-of-office forms.
    ("exchange_out_of_office", exchange_out_of_office, MailClass.AUTO_REPLY),
    # 11. RFC 3834 Auto-Submitted (other than no) on a message that answers something.
    ("auto_submitted_in_reply", auto_submitted_in_reply, MailClass.AUTO_REPLY),
    # 12. RFC 3834 Auto-Submitted (other than no), answering nothing: a notification.
    ("auto_submitted_other", auto_submitted_other, MailClass.AUTO_GENERATED),
    # 13. Precedence: bulk, junk or list.
    ("precedence_bulk", precedence_bulk, MailClass.AUTO_GENERATED),
    # 14. Mailing list fields.
    ("list_headers", list_headers, MailClass.AUTO_GENERATED),
)

HUMAN = Classification(MailClass.HUMAN, "no_rule")


def classify(signals: Signals) -> Classification:
    for name, rule, kind in CLASSIFY_RULES:
        if rule(signals):
            return Classification(kind, name)
    return HUMAN
