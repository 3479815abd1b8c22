"""The soak test's mixed load, and the ledger of what the server acknowledged.

Four clients, each a loop until told to stop: MX traffic from Postfix's `smtp-source`, `POST
/emails`, `POST /emails/{id}/reply`, and submission on 587 (STARTTLS, AUTH). Every message
carries a marker of its own (its recipient, or a line of its text), so the accounting in
soak.py finds each one in the database and at the sink. Only the server's own answer counts as
accepted: a 250 (smtp-source's verbose log, aiosmtplib's reply) or an HTTP 2xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import ssl
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import aiohttp
import aiosmtplib

SMTP_SOURCE = shutil.which("smtp-source", path="/usr/sbin:/usr/bin") or "/usr/sbin/smtp-source"
DOMAIN = "soak.test"  # ours: receiving, verified, a catch-all route
REMOTE = "remote.test"  # theirs: every outbound message goes to the loopback sink (the relay)
MARKER = re.compile(rb"soak-(?:api|sub|reply)-\d+-\d+")
_QUEUED = re.compile(r"queued as ((?:[0-9a-f-]{36}\s*)+)")
_REFUSAL = re.compile(r"\b([45]\d\d)[ -]([45])\.\d{1,3}\.\d{1,3}\b")
# Bounds that only stop a client that hangs; no figure depends on them.
SMTP_SOURCE_SECONDS = 60.0
CLIENT_SECONDS = 30.0


@dataclass
class Ledger:
    """What the server answered with success, per kind of traffic."""

    # MX: ids from "250 2.0.0 Ok: queued as <id>" (one per recipient tenant: here one).
    mx_ids: set[str] = field(default_factory=set)
    mx_runs: int = 0
    # Outbound: marker -> the email id of the 2xx or 250.
    api: dict[str, str] = field(default_factory=dict)
    replies: dict[str, str] = field(default_factory=dict)
    submission: dict[str, str] = field(default_factory=dict)
    # Requests that never got a 2xx, by kind (refused, cut off, timed out); not an error.
    unanswered: dict[str, int] = field(default_factory=dict)
    # Requests refused with a 4xx that a retry cannot change: the load's own mistake, shown.
    refusals: list[str] = field(default_factory=list)
    # Every 4xx and 5xx the server answered, as "kind code" (SMTP: "code class.x.x").
    codes: dict[str, int] = field(default_factory=dict)

    def miss(self, kind: str) -> None:
        self.unanswered[kind] = self.unanswered.get(kind, 0) + 1

    def answered(self, kind: str, code: str) -> None:
        key = f"{kind} {code}"
        self.codes[key] = self.codes.get(key, 0) + 1


@dataclass(frozen=True)
class Target:
    mx_port: int
    submission_port: int
    api_url: str
    api_key: str
    tls: ssl.SSLContext


async def mx_load(target: Target, ledger: Ledger, stop: asyncio.Event, sessions: int) -> None:
    """smtp-source runs one after another: `-N` puts a fresh sequence number before each
    recipient and the run number is in the address, so every message has a recipient of its
    own; `-v` shows every reply, from which the stored ids are read; `-A` goes on after a 4xx."""
    while not stop.is_set():
        ledger.mx_runs += 1
        run = ledger.mx_runs
        process = await asyncio.create_subprocess_exec(
            SMTP_SOURCE,
            *("-v", "-A", "-N", "-s", str(sessions), "-m", str(4 * sessions), "-l", "512"),
            *("-M", "client.example", "-f", "sender@client.example"),
            *("-t", f"r{run}@{DOMAIN}", "-S", f"soak mx run {run}"),
            f"127.0.0.1:{target.mx_port}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), SMTP_SOURCE_SECONDS)
        except TimeoutError:
            process.kill()
            output, _ = await process.communicate()
        finally:
            if process.returncode is None:  # cancelled: the soak is ending
                process.kill()
                await process.wait()
        text = output.decode(errors="replace")
        for match in _QUEUED.finditer(text):
            ledger.mx_ids.update(match.group(1).split())
        for match in _REFUSAL.finditer(text):
            ledger.answered("mx", f"{match.group(1)} {match.group(2)}.x.x")
        if process.returncode != 0:
            ledger.miss("mx run cut short")
            await _pause(stop, 0.2)  # the server is away: do not spin


async def api_load(
    target: Target, ledger: Ledger, stop: asyncio.Event, retry_until: list[float], worker: int
) -> None:
    """POST /emails, one recipient of its own each, with an Idempotency-Key: a request that got
    no 2xx is sent again with the same key until it does (or the retries' time is up), as a
    careful client does; the server must store it once."""
    number = 0
    async with _http(target) as http:
        while not stop.is_set():
            number += 1
            marker = f"soak-api-{worker}-{number}"
            body = {
                "from": f"Soak <app@{DOMAIN}>",
                "to": [f"{marker}@{REMOTE}"],
                "subject": f"Soak {marker}",
                "text": f"Marker {marker}\n",
            }
            email_id = await _post_until_stored(http, "/emails", body, marker, retry_until, ledger)
            if email_id is not None:
                ledger.api[marker] = email_id


async def reply_load(
    target: Target, ledger: Ledger, stop: asyncio.Event, retry_until: list[float]
) -> None:
    """POST /emails/{id}/reply to mail the MX stored, each received email answered once; the
    marker is a line of the reply's text."""
    answered: set[str] = set()
    number = 0
    async with _http(target) as http:
        while not stop.is_set():
            waiting = sorted(ledger.mx_ids - answered)
            if not waiting:
                await _pause(stop, 0.5)
                continue
            received_id = waiting[0]
            answered.add(received_id)
            number += 1
            marker = f"soak-reply-0-{number}"
            body = {"from": f"Support <support@{DOMAIN}>", "text": f"Marker {marker}\n"}
            path = f"/emails/{received_id}/reply"
            email_id = await _post_until_stored(http, path, body, marker, retry_until, ledger)
            if email_id is not None:
                ledger.replies[marker] = email_id


async def submission_load(target: Target, ledger: Ledger, stop: asyncio.Event) -> None:
    """Port 587: STARTTLS (RFC 3207), AUTH PLAIN with the API key (RFC 4954), one message per
    session. A message that got no 250 is not sent again: its sender would, and a copy stored
    before the reply was lost would then be a second one (RFC 5321 section 6.1)."""
    number = 0
    while not stop.is_set():
        number += 1
        marker = f"soak-sub-0-{number}"
        msg = EmailMessage()
        msg["From"] = f"Soak <app@{DOMAIN}>"
        msg["To"] = f"{marker}@{REMOTE}"
        msg["Subject"] = f"Soak {marker}"
        msg["Message-ID"] = make_msgid(domain=DOMAIN)
        msg.set_content(f"Marker {marker}\n")
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=target.submission_port,
            start_tls=True,
            tls_context=target.tls,
            timeout=CLIENT_SECONDS,
        )
        try:
            await client.connect()
            await client.login("soak", target.api_key)
            _, reply = await client.send_message(msg)
            found = _QUEUED.search(reply)
            if found:
                ledger.submission[marker] = found.group(1).split()[0]
            await client.quit()
        except aiosmtplib.SMTPResponseException as refused:
            found = _REFUSAL.search(f"{refused.code} {refused.message}")
            ledger.answered(
                "submission",
                f"{found.group(1)} {found.group(2)}.x.x" if found else str(refused.code),
            )
            ledger.miss("submission")
            await _pause(stop, 0.2)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            ledger.miss("submission")
            await _pause(stop, 0.2)
        finally:
            with contextlib.suppress(Exception):
                client.close()


def _http(target: Target) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        base_url=target.api_url,
        headers={"Authorization": f"Bearer {target.api_key}"},
        timeout=aiohttp.ClientTimeout(total=CLIENT_SECONDS),
    )


async def _post_until_stored(
    http: aiohttp.ClientSession,
    path: str,
    body: dict[str, Any],
    marker: str,
    retry_until: list[float],
    ledger: Ledger,
) -> str | None:
    """The email id of the first 2xx; None if the retries' time ran out first."""
    while True:
        try:
            async with http.post(path, json=body, headers={"Idempotency-Key": marker}) as r:
                if 200 <= r.status < 300:
                    email_id: str = (await r.json())["id"]
                    return email_id
                text = await r.text()
                ledger.answered("reply" if "reply" in path else "emails", str(r.status))
                if 400 <= r.status < 500 and r.status not in (409, 429):
                    ledger.refusals.append(f"{path} {r.status} {text[:200]}")
                    return None  # refused for good: a retry would get the same
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        ledger.miss(path.split("/")[-1] if "reply" in path else "emails")
        if time.monotonic() > retry_until[0]:
            return None
        await asyncio.sleep(0.5)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
