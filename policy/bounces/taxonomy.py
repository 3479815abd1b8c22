"""Bounce types in the SES and Resend taxonomy, and which bounces put an address on the list.

The type follows the RFC 3463 status first; words of the diagnostic only refine a status that
says little (x.0.0, or none), through the phrase table below. Written as tables, read in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class BounceType(StrEnum):
    PERMANENT = "Permanent"
    TRANSIENT = "Transient"
    UNDETERMINED = "Undetermined"


class BounceSubtype(StrEnum):
    GENERAL = "General"
    NO_EMAIL = "NoEmail"  # the address or its domain does not exist
    SUPPRESSED = "Suppressed"
    MAILBOX_FULL = "MailboxFull"
    MESSAGE_TOO_LARGE = "MessageTooLarge"
    CONTENT_REJECTED = "ContentRejected"
    UNDETERMINED = "Undetermined"


@dataclass(frozen=True, slots=True)
class BounceKind:
    type: BounceType
    subtype: BounceSubtype

    @property
    def hard(self) -> bool:
        """The address itself is bad: what sisimai calls a hard bounce, SES Permanent/NoEmail."""
        return self.subtype is BounceSubtype.NO_EMAIL


UNDETERMINED = BounceKind(BounceType.UNDETERMINED, BounceSubtype.UNDETERMINED)

# RFC 3463 subject.detail -> subtype. x.1.7 and x.1.8 are about the sender's address, not the
# recipient's, so they are not NoEmail.
_BY_STATUS: tuple[tuple[str, BounceSubtype], ...] = (
    ("1.1", BounceSubtype.NO_EMAIL),  # bad destination mailbox address
    ("1.2", BounceSubtype.NO_EMAIL),  # bad destination system address
    ("1.3", BounceSubtype.NO_EMAIL),  # bad destination mailbox address syntax
    ("1.4", BounceSubtype.NO_EMAIL),  # destination mailbox address ambiguous
    ("1.6", BounceSubtype.NO_EMAIL),  # destination mailbox has moved, no forwarding address
    ("1.10", BounceSubtype.NO_EMAIL),  # RFC 7505: the domain publishes a null MX
    ("2.1", BounceSubtype.GENERAL),  # mailbox disabled
    ("2.2", BounceSubtype.MAILBOX_FULL),
    ("2.3", BounceSubtype.MESSAGE_TOO_LARGE),
    ("3.4", BounceSubtype.MESSAGE_TOO_LARGE),
    ("6.0", BounceSubtype.CONTENT_REJECTED),
    ("7.1", BounceSubtype.CONTENT_REJECTED),  # delivery not authorized, message refused
)

# Diagnostic words for a status that says little, first match wins. Phrases common to many MTAs
# (sisimai's reason names give the groups), not any one sample's wording.
_PHRASES: tuple[tuple[re.Pattern[str], BounceSubtype], ...] = (
    (
        re.compile(
            r"user unknown|unknown user|no such (?:user|mailbox|recipient|address|account)|"
            r"(?:mailbox|user|address|recipient|account)(?: name)? (?:does not|doesn't) exist|"
            r"(?:unknown|invalid|non-?existent) (?:recipient|mailbox|address|local[- ]part|user)|"
            r"recipient (?:address )?rejected|user not found|mailbox not found|"
            r"not a valid (?:mailbox|recipient|user)|no mailbox here|addressee unknown|"
            r"(?:unrouteable|unroutable) address|host (?:or domain name )?not found|"
            r"domain (?:does not|doesn't) exist|no such domain|unknown domain|"
            r"bad destination (?:mailbox|system) address|account (?:has been )?(?:disabled|closed|"
            r"removed|deactivated)|this user doesn't have a .{1,40} account|"
            r"no valid recipients|unknown local part|mailbox unavailable",
            re.IGNORECASE,
        ),
        BounceSubtype.NO_EMAIL,
    ),
    (
        re.compile(
            r"mailbox (?:is )?full|over ?quota|quota exceeded|exceeded (?:the )?(?:storage|quota)|"
            r"insufficient (?:disk )?space|mailbox size limit|too many messages",
            re.IGNORECASE,
        ),
        BounceSubtype.MAILBOX_FULL,
    ),
    (
        re.compile(
            r"message (?:is )?too (?:big|large)|size (?:limit )?exceed|exceeds? (?:the )?"
            r"(?:maximum )?(?:message )?size",
            re.IGNORECASE,
        ),
        BounceSubtype.MESSAGE_TOO_LARGE,
    ),
    (
        re.compile(r"spam|virus|content (?:rejected|filter)|blocked|blacklist|listed", re.I),
        BounceSubtype.CONTENT_REJECTED,
    ),
)


def _status_subtype(status: str) -> BounceSubtype | None:
    _, _, subject_detail = status.partition(".")
    for key, subtype in _BY_STATUS:
        if subject_detail == key:
            return subtype
    return None


def _phrase_subtype(words: str | None) -> BounceSubtype | None:
    if not words:
        return None
    text = words[:4096]
    for pattern, subtype in _PHRASES:
        if pattern.search(text):
            return subtype
    return None


def bounce_kind(action: str | None, status: str | None, diagnostic: str | None) -> BounceKind:
    """Type and subtype of one recipient's report.

    5.x.x is Permanent (mailbox full and too large are Transient, as SES has them); 4.x.x is
    Transient; with no status, the words decide whether the address is gone, else Undetermined.
    """
    subtype = _status_subtype(status) if status else None
    if subtype is None or subtype is BounceSubtype.GENERAL:
        subtype = _phrase_subtype(diagnostic) or subtype
    if status is None or status.startswith("2."):
        if subtype is None:
            return UNDETERMINED
        status = "5.0.0" if subtype is BounceSubtype.NO_EMAIL else None
        if status is None:
            return BounceKind(BounceType.TRANSIENT, subtype)
    if subtype in (BounceSubtype.MAILBOX_FULL, BounceSubtype.MESSAGE_TOO_LARGE):
        return BounceKind(BounceType.TRANSIENT, subtype)
    if status.startswith("4.") or action == "delayed":
        if subtype is BounceSubtype.NO_EMAIL:
            subtype = BounceSubtype.GENERAL  # a temporary failure never says the address is gone
        return BounceKind(BounceType.TRANSIENT, subtype or BounceSubtype.GENERAL)
    return BounceKind(BounceType.PERMANENT, subtype or BounceSubtype.GENERAL)


def suppresses(action: str | None, status: str | None, kind: BounceKind) -> bool:
    """A permanent, address-level failure puts the address on the tenant's suppression list.

    Never a delay, a 4.x.x, or a 5.7.x policy block (the address is fine; the message or the
    sender was refused), whatever the words say.
    """
    if action != "failed" or status is None or not status.startswith("5."):
        return False
    if status.startswith("5.7.") or status.startswith("5.1.7") or status.startswith("5.1.8"):
        return False
    return kind.type is BounceType.PERMANENT and kind.subtype is BounceSubtype.NO_EMAIL
