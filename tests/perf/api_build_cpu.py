"""CPU per POST /emails of the server's own Python work, without HTTP or a database.

    .venv/bin/python tests/perf/api_build_cpu.py [--emails 20000] [--rounds 3]
    PYTHONPATH=/path/to/another/tree .venv/bin/python tests/perf/api_build_cpu.py

What `POST /emails` does between reading the body and handing the email to the group writer,
and the writer's arguments and the answer after it: the body parsed (api.context), the fields
checked (policy.sending.request), the reply-tracking identity minted and the message composed
(policy.sending.compose), the thread looked for (policy.conversation), the `NewEmail` built,
the group statement's arrays made (storage.sending.emails.group_arguments) and the answer's
JSON encoded. The email is bench_api.py's. Measured as process CPU time (time.process_time)
over `--emails` emails, best of `--rounds`: unlike requests per second, it hardly moves when
other work shares the machine, so two trees can be compared by running it on each in turn.
It runs against the code on `sys.path`: this tree, or the one PYTHONPATH names (a tree from
before orjson reads bodies and writes answers with the json module, as it did then).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Appended, not inserted: a tree named in PYTHONPATH comes first.
sys.path.append(str(Path(__file__).resolve().parents[2]))

import api.context as context
from policy.conversation import outbound_thread
from policy.sending.compose import compose, mint_tracking
from policy.sending.request import parse_email
from policy.tokens import ReplyTokens
from storage.ids import uuid7
from storage.sending.emails import DomainState, NewEmail, group_arguments

EMAIL = {
    "from": "Bench <orders@bench.test>",
    "to": ["customer@example.net"],
    "subject": "Your order #12345 has shipped",
    "text": "Hello,\n\nyour order is on its way. Reply to this email with any question.\n",
    "html": "<p>Hello,</p><p>your order is on its way. Reply to this email with any question.</p>",
    "tags": [{"name": "category", "value": "shipping"}],
}
BODY = json.dumps(EMAIL).encode()
TOKENS = ReplyTokens(b"bench-secret-" * 3)
TENANT = uuid7()


def _parse(body: bytes) -> Any:
    parse_bytes = getattr(context, "parse_json_bytes", None)
    return parse_bytes(body) if parse_bytes else context.parse_json(body.decode())


def _answer(payload: Any) -> bytes:
    if hasattr(context, "json_response"):
        return bytes(context.json_response(payload).body)  # type: ignore[arg-type]
    return json.dumps(payload).encode()


async def one_email() -> None:
    now = datetime.now(UTC)
    draft = parse_email(_parse(BODY), now)
    email_id = uuid7()
    tracking = mint_tracking(
        TOKENS,
        tenant_id=TENANT,
        email_id=email_id,
        sending_domain=draft.sender.domain,
        reply_domain=draft.sender.domain,
        thread_id=uuid7(),
    )
    raw = compose(draft, tracking, now)
    await outbound_thread(
        None,  # type: ignore[arg-type]  # an email that names no message looks nothing up
        TOKENS,
        TENANT,
        in_reply_to=None,
        references=None,
        new_thread_id=uuid7,
    )
    email = NewEmail(
        id=email_id,
        tenant_id=TENANT,
        domain_id=TENANT,
        thread_id=tracking.thread_id,
        from_address=draft.sender.address,
        from_header=draft.sender.given,
        to=[box.given for box in draft.to],
        cc=[],
        bcc=[],
        reply_to=[],
        subject=draft.subject,
        html=draft.html,
        text=draft.text,
        headers=dict(draft.headers),
        attachments=[],
        tags=[{"name": name, "value": value} for name, value in draft.tags],
        message_id=tracking.message_id,
        reply_token=tracking.reply_token,
        reply_address=tracking.reply_address,
        reply_domain=tracking.reply_domain,
        raw=raw,
        scheduled_at=None,
        recipients=draft.envelope,
        domain_state=DomainState(True, "verified", True, None),
    )
    group_arguments([(email, None)])
    _answer({"id": str(email.id)})


async def emails(count: int) -> None:
    for _ in range(count):
        await one_email()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(emails(min(2000, args.emails)))  # warm caches and imports
    best = float("inf")
    for _ in range(args.rounds):
        started = time.process_time()
        loop.run_until_complete(emails(args.emails))
        best = min(best, (time.process_time() - started) / args.emails)
    print(f"{context.__file__}: {best * 1e6:.1f} us CPU per email (best of {args.rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
