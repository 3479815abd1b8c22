"""Senders whose mail can be authenticated: a domain's SPF, DKIM and DMARC records published in
the test's DNS server, messages DKIM-signed and ARC-sealed with stock dkimpy and a real key.

    sender = AuthSender("sender-x.example", dns.zone, key)
    sender.publish(spf="v=spf1 ip4:127.0.0.1 -all", dmarc="v=DMARC1; p=reject")
    signed = sender.sign(mail(sender.address))
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid

import dkim

from policy.domains.dkim_keys import DkimKeyPair, record_name, record_value
from tests.support.dns_server import ZoneData

# Header fields a sender signs (RFC 6376 section 5.4.1's list, the ones a test message has).
SIGNED = [b"from", b"to", b"subject", b"date", b"message-id"]


def mail(
    sender: str, to: str = "support@receiver.test", body: str = "Hello,\nthe body.\n"
) -> bytes:
    """A plain message from `sender`, CRLF line endings, as a client submits it."""
    msg = EmailMessage()
    msg["From"] = f"Sam Sender <{sender}>"
    msg["To"] = to
    msg["Subject"] = "Authenticated?"
    msg["Date"] = "Sat, 21 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    msg.set_content(body)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


@dataclass
class AuthSender:
    domain: str
    zone: ZoneData
    key: DkimKeyPair
    selector: str = "s2026"

    @property
    def address(self) -> str:
        return f"sam@{self.domain}"

    def publish(
        self, *, spf: str | None = None, dmarc: str | None = None, dkim_key: bool = True
    ) -> None:
        """The domain's records: SPF at the domain, DMARC at _dmarc, the DKIM key."""
        if spf is not None:
            self.zone.add(self.domain, "TXT", spf)
        if dmarc is not None:
            self.zone.add(f"_dmarc.{self.domain}", "TXT", dmarc)
        if dkim_key:
            name = record_name(self.selector, self.domain)
            self.zone.add(name, "TXT", record_value(self.key.public_key))

    def sign(self, message: bytes, *, domain: str | None = None) -> bytes:
        """`message` with a DKIM-Signature of `domain` (default: ours) on top."""
        field = dkim.sign(
            message,
            self.selector.encode(),
            (domain or self.domain).encode(),
            self.key.private_key_pem.encode(),
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=SIGNED,
        )
        return bytes(field) + message

    def arc_seal(self, message: bytes, *, authserv_id: str, results: str) -> bytes:
        """What an intermediary (a mailing list, a forwarder) at our domain adds: its own
        Authentication-Results, then an ARC set over it (RFC 8617 section 5.1)."""
        with_results = f"Authentication-Results: {authserv_id}; {results}\r\n".encode() + message
        fields = dkim.arc_sign(
            with_results,
            self.selector.encode(),
            self.domain.encode(),
            self.key.private_key_pem.encode(),
            authserv_id.encode(),
        )
        return b"".join(fields) + with_results
