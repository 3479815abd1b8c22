"""Outbound mail in the queue, put there by the sending API's own storage code.

`Sender` is a tenant with a verified sending domain (and, unless asked otherwise, a DKIM key);
`Sender.queue()` stores an email and its per-recipient deliveries exactly as POST /emails does
(storage.sending.emails.insert_emails: one statement, NOTIFY at commit). Helpers read back what the
delivery workers made of it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from uuid import UUID

from policy.domains.dkim_keys import DkimKeyPair, generate_key_pair
from storage.account import directory
from storage.account.domains import set_dkim_key
from storage.database import Pool
from storage.ids import uuid7
from storage.sending.emails import NewEmail, insert_emails
from tests.conftest import DOMAIN_VIEW

# Only stops a hung test; no assertion depends on it.
WAIT_SECONDS = 30.0


def build_message(
    sender: str, to: list[str], subject: str, body: str, message_id: str, cc: list[str]
) -> bytes:
    """A message as the sending API builds it: CRLF, no Bcc, our Message-ID and reply token."""
    msg = EmailMessage()
    msg["From"] = f"Support <{sender}>"
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now().astimezone())
    msg["Message-ID"] = f"<{message_id}>"
    msg["X-OpenSend-Reply-Token"] = "osr_" + secrets.token_hex(16) + "_" + secrets.token_hex(10)
    msg.set_content(body)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


@dataclass
class Sender:
    pool: Pool
    tenant: directory.Tenant
    domain: directory.Domain
    dkim: DkimKeyPair | None

    @property
    def address(self) -> str:
        return f"support@{self.domain.name}"

    async def queue(
        self,
        to: list[str],
        *,
        cc: list[str] | None = None,
        bcc: list[str] | None = None,
        subject: str = "Your order",
        body: str = "Hello,\nyour order has shipped.\n",
        scheduled_at: datetime | None = None,
    ) -> UUID:
        email_id = uuid7()
        message_id = f"{email_id.hex}@{self.domain.name}"
        cc = cc or []
        bcc = bcc or []
        raw = build_message(self.address, to, subject, body, message_id, cc)
        email = NewEmail(
            id=email_id,
            tenant_id=self.tenant.id,
            domain_id=self.domain.id,
            thread_id=None,
            from_address=self.address,
            from_header=f"Support <{self.address}>",
            to=to,
            cc=cc,
            bcc=bcc,
            reply_to=[],
            subject=subject,
            html=None,
            text=body,
            headers={},
            attachments=[],
            tags=[],
            message_id=message_id,
            reply_token=None,
            reply_address=None,
            reply_domain=None,
            raw=raw,
            scheduled_at=scheduled_at,
            recipients=list(dict.fromkeys([*to, *cc, *bcc])),
        )
        assert await insert_emails(self.pool, [email])
        return email_id


async def make_sender(pool: Pool, *, dkim: bool = True) -> Sender:
    suffix = secrets.token_hex(4)
    tenant = await directory.create_tenant(pool, f"sender-{suffix}")
    domain = await directory.add_domain(
        pool,
        tenant.id,
        f"s{suffix}.test",
        receiving=False,
        reply_domain=None,
        verified=True,
        event_data=DOMAIN_VIEW.event_data,
    )
    key = None
    if dkim:
        key = await asyncio.to_thread(generate_key_pair, "os202611")
        assert (
            await set_dkim_key(pool, domain.id, key, event_data=DOMAIN_VIEW.event_data) is not None
        )
    return Sender(pool, tenant, domain, key)


async def deliveries(pool: Pool, email_id: UUID) -> dict[str, dict[str, Any]]:
    rows = await pool.fetch("SELECT * FROM deliveries WHERE email_id = $1", email_id)
    return {row["recipient"]: dict(row) for row in rows}


async def events(pool: Pool, email_id: UUID) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT type, recipient, data FROM email_events WHERE email_id = $1 ORDER BY id",
        email_id,
    )
    return [dict(row) for row in rows]


async def email_row(pool: Pool, email_id: UUID) -> dict[str, Any]:
    row = await pool.fetchrow("SELECT status, last_event FROM emails WHERE id = $1", email_id)
    assert row is not None
    return dict(row)


async def wait_until_final(
    pool: Pool, email_id: UUID, *, statuses: tuple[str, ...] = ("delivered", "bounced")
) -> dict[str, dict[str, Any]]:
    """Until every delivery of the email is in one of `statuses`; returns them."""
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            rows = await deliveries(pool, email_id)
            if rows and all(row["status"] in statuses for row in rows.values()):
                return rows
            await asyncio.sleep(0.02)


async def poll_until(predicate: Callable[[], bool], *, every: float = 0.02) -> None:
    """For state that no event announces (a gauge refreshed on a timer): check, wait, repeat."""
    for _ in range(int(WAIT_SECONDS / every)):
        if predicate():
            return
        await asyncio.sleep(every)
    raise AssertionError("the condition never held")
