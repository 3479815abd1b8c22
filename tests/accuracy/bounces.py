"""Bounce accuracy over the public corpus: every sample through the real MX, read back through
the real API (GET /emails/receiving/{id}), compared with the corpus's labels.

    .venv/bin/python -m tests.accuracy.bounces [--corpus ../shared/corpora/bounces] [--failures]

A real PostgreSQL (embedded, or OPENSEND_DATABASE_URL's server in a database of its own), the
real MX and API on loopback. Each sample is sent as a peer would: CRLF line endings, envelope
sender from its Return-Path (the null path when it has none, as a DSN's is), to a catch-all
address of a test tenant. Reported, over the bounce samples (kind hard, soft or undetermined):
- detected: stored with classification `bounce`;
- right recipient: detected, and the report's first recipient is the labelled address;
- right class: right recipient, and hard/soft/undetermined agrees with the label (hard is our
  subtype NoEmail, undetermined our type Undetermined, soft every other bounce).
Counted per file and per distinct content (the corpus holds 30 byte-identical pairs). The
non-bounce samples are reported too: complaints found, auto-replies found, false bounces.
The corpus is read where it lies; nothing is copied into the project.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
from collections import Counter
from email.parser import BytesHeaderParser
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
from aiohttp import web

from api.app import make_app
from mta.dns import Resolver
from mta.listeners import start_mx
from policy.domains.dkim_keys import generate_key_pair
from policy.tokens import ReplyTokens
from storage.account import directory
from storage.database import open_pool
from storage.migrate import migrate
from tests.conftest import DOMAIN_VIEW, TEST_SECRET, make_settings
from tests.support.postgres import session_database

BOUNCE_KINDS = ("hard", "soft", "undetermined")
DEFAULT_CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpora" / "bounces"


def wire_form(raw: bytes) -> bytes:
    """The sample as it would travel: every line ending CRLF (a bare CR or LF is refused)."""
    text = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return text.replace(b"\n", b"\r\n")


def envelope_sender(raw: bytes) -> str:
    headers = BytesHeaderParser().parsebytes(raw)
    path = headers.get("Return-Path")
    if path is None:
        return ""
    return parseaddr(str(path))[1]


def status_class(row: dict[str, Any]) -> str:
    if row.get("subtype") == "NoEmail":
        return "hard"
    if row.get("type") == "Undetermined":
        return "undetermined"
    return "soft"


async def measure(corpus: Path, show_failures: bool) -> dict[str, Any]:
    labels = json.loads((corpus / "labels.json").read_text())
    with session_database() as url, tempfile.TemporaryDirectory() as tmp:
        await migrate(url)
        pool = await open_pool(url, max_size=10)
        settings = make_settings(Path(tmp))
        tokens = ReplyTokens(TEST_SECRET.encode())
        suffix = secrets.token_hex(4)
        tenant = await directory.create_tenant(pool, f"accuracy-{suffix}")
        name = f"accuracy{suffix}.test"
        await directory.add_domain(
            pool,
            tenant.id,
            name,
            receiving=True,
            reply_domain=None,
            verified=True,
            dkim=generate_key_pair(),
            event_data=DOMAIN_VIEW.event_data,
        )
        await directory.add_route(pool, tenant.id, f"*@{name}", None)
        _, key = await directory.create_api_key(pool, tenant.id, "accuracy", "full_access")
        runner = web.AppRunner(make_app(pool, settings, tokens, Resolver(settings.dns_servers)))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        api_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        mx = await start_mx(settings, pool, tokens)
        try:
            async with aiohttp.ClientSession(
                base_url=api_url, headers={"Authorization": f"Bearer {key}"}
            ) as http:
                results = [
                    await _one(mx.port, http, corpus, label, f"bounces@{name}") for label in labels
                ]
        finally:
            await mx.drain(grace=1.0)
            await runner.cleanup()
            await pool.close()
    return _summary(results, show_failures)


async def _one(
    port: int, http: aiohttp.ClientSession, corpus: Path, label: dict[str, Any], rcpt: str
) -> dict[str, Any]:
    raw = (corpus / label["file"]).read_bytes()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60, start_tls=False)
    await client.connect()
    try:
        await client.ehlo(hostname="accuracy.example.net")
        response = await client.sendmail(envelope_sender(raw), [rcpt], wire_form(raw))
    except aiosmtplib.SMTPResponseException as refused:
        return {"label": label, "classification": f"refused {refused.code}", "first": None}
    finally:
        await client.quit()
    stored = response[1].split("queued as ", 1)[1].split()[0]
    async with http.get(f"/emails/receiving/{stored}") as answer:
        detail = await answer.json()
        assert answer.status == 200, detail
    report = detail.get("report") or {}
    rows = report.get("recipients") or []
    return {
        "label": label,
        "classification": detail["classification"],
        "reason": detail["classification_reason"],
        "first": rows[0] if rows else None,
    }


def _summary(results: list[dict[str, Any]], show_failures: bool) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    distinct: dict[str, Counter[str]] = {}
    failures = []
    for result in results:
        label = result["label"]
        kind = label["kind"]
        if kind in BOUNCE_KINDS:
            found = Counter({"bounces": 1})
            first = result["first"]
            if result["classification"] == "bounce":
                found["detected"] = 1
                expected = (label["recipient"] or "").lower()
                if first is not None and first.get("email") == expected:
                    found["right_recipient"] = 1
                    if status_class(first) == kind:
                        found["right_class"] = 1
                    else:
                        failures.append(("class", label["file"], kind, label["reason"], first))
                else:
                    failures.append(("recipient", label["file"], expected, first))
            else:
                failures.append(("detection", label["file"], result["classification"]))
            counts.update(found)
            distinct[label["sha256"]] = found
        else:
            counts[f"{kind}_samples"] += 1
            expected_class = {"complaint": "complaint", "autoreply": "auto_reply"}.get(kind)
            if expected_class and result["classification"] == expected_class:
                counts[f"{kind}_found"] += 1
            if result["classification"] == "bounce":
                counts["false_bounces"] += 1
                failures.append(("false_bounce", label["file"], kind))
    unique: Counter[str] = Counter()
    for found in distinct.values():
        unique.update(found)
    summary: dict[str, Any] = {"files": dict(counts), "distinct_contents": dict(unique)}
    for scope, numbers in (("files", counts), ("distinct_contents", unique)):
        total = numbers["bounces"]
        for name in ("detected", "right_recipient", "right_class"):
            summary[scope][f"{name}_share"] = round(numbers[name] / total, 4) if total else None
    if show_failures:
        summary["failures"] = failures
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--failures", action="store_true", help="list every miss")
    args = parser.parse_args()
    summary = asyncio.run(measure(args.corpus, args.failures))
    json.dump(summary, sys.stdout, indent=1, default=str)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
