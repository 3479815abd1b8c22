"""Mailbox addresses as the MX sees them: split, normalised, and checked for relay tricks.

RFC 5321 section 2.4 makes local parts case-sensitive in principle; in practice every mail system
folds them, and so do we for routing. Domains compare in lowercase without a trailing dot.
"""

from __future__ import annotations

from dataclasses import dataclass

from policy import replies
from policy.replies import Reply


@dataclass(frozen=True, slots=True)
class Mailbox:
    local: str
    domain: str

    @property
    def address(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def base_local(self) -> str:
        """The local part without a `+detail` subaddress (RFC 5233), for routing."""
        return self.local.split("+", 1)[0]


def split_mailbox(address: str) -> Mailbox | None:
    """A routable mailbox, or None for anything an open-relay probe would try.

    Source routes (`@a:user@b`, RFC 5321 section 4.1.2, to be ignored but never honoured), quoted
    local parts holding `@`, `%` hacks and `!` paths are refused here rather than interpreted,
    so no form of address can name a domain other than the one after the last `@`.
    """
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if not text or text.startswith("@") or any(c in text for c in '%!"\\ '):
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):  # no control character reaches a
        return None  # Received field or a row (PostgreSQL refuses NUL in text)
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain or "@" in local:
        return None
    domain = domain.rstrip(".").lower()
    if not domain or domain.startswith(".") or ".." in domain or domain.startswith("["):
        return None
    return Mailbox(local.lower(), domain)


def envelope_address_refusal(
    address: str, *, declared_smtputf8: bool, offers_smtputf8: bool, sender: bool
) -> Reply | None:
    """Why an envelope address may not be used in this transaction, or None when it may.

    RFC 6531 section 3.4: an address with non-ASCII characters is allowed only in a transaction
    whose MAIL carried the SMTPUTF8 parameter, and only where the server offers it; otherwise
    553 5.6.7. Bytes that are not UTF-8 at all (the engine hands them over as surrogate escapes)
    make no address in any transaction (RFC 6531 section 3.3 allows UTF-8 only): 501.
    """
    if declared_smtputf8 and not offers_smtputf8:
        # RFC 5321 section 4.1.1.11: a parameter the server did not advertise.
        return replies.S555_MAIL_PARAMETERS
    if address.isascii():
        return None
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:
        return replies.S501_SYNTAX_SENDER if sender else replies.S501_SYNTAX_ADDRESS
    if not offers_smtputf8:
        return replies.S553_NON_ASCII_NOT_SENDABLE
    if not declared_smtputf8:
        return replies.S553_NON_ASCII_ADDRESS
    return None
