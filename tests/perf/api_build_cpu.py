"""CPU per POST /emails of the server's own Python work, without HTTP or a database.

    .venv/bin/python tests/perf/api_build_cpu.py [--emails 20000] [--rounds 3]
    PYTHONPATH=/path/to/another/tree .venv/bin/python tests/perf/api_build_cpu.py

What `POST /emails` does between reading the body and handing the email to the group writer,
and the writer's arguments and the answer after it, through the server's own `Builder` given a
stand-in for the request (the caller, the tokens, the settings): the body parsed
(api.context), the fields and the sender checked (policy.sending.request), the tracking
identity minted and the message composed, the thread looked for, the `NewEmail` built, the
group statement's arrays made (storage.sending.emails.group_arguments) and the answer's JSON
encoded. The email is bench_api.py's; the domain is given, not read. Measured as process CPU
time (time.process_time) over `--emails` emails, best of `--rounds`: unlike requests per
second, it hardly moves when other work shares the machine, so two trees can be compared by
running it on each in turn.
It runs against the code on `sys.path`: this tree, or the one PYTHONPATH names (a tree from
before orjson reads bodies and writes answers with the json module, as it did then).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# Appended, not inserted: a tree named in PYTHONPATH comes first.
sys.path.append(str(Path(__file__).resolve().parents[2]))

import api.context as context
from api.auth import CALLER, Caller
from api.context import POOL, SETTINGS, TOKENS
from api.sending.build import Builder
from policy.sending.request import SenderDomain, check_sender, parse_email
from policy.tokens import ReplyTokens
from storage.ids import uuid7
from storage.sending.emails import group_arguments

EMAIL = {
    "from": "Bench <orders@bench.test>",
    "to": ["customer@example.net"],
    "subject": "Your order #12345 has shipped",
    "text": "Hello,\n\nyour order is on its way. Reply to this email with any question.\n",
    "html": "<p>Hello,</p><p>your order is on its way. Reply to this email with any question.</p>",
    "tags": [{"name": "category", "value": "shipping"}],
}
BODY = json.dumps(EMAIL).encode()
TOKENS_ = ReplyTokens(b"bench-secret-" * 3)
TENANT = uuid7()


def _parse(body: bytes) -> Any:
    parse_bytes = getattr(context, "parse_json_bytes", None)
    return parse_bytes(body) if parse_bytes else context.parse_json(body.decode())


def _answer(payload: Any) -> bytes:
    if hasattr(context, "json_response"):
        return bytes(context.json_response(payload).body)  # type: ignore[arg-type]
    return json.dumps(payload).encode()


class _Request(dict[Any, Any]):
    """What `Builder` reads of an aiohttp request: `request[CALLER]` and `request.app[...]`."""

    def __init__(self, app: dict[Any, Any], caller: Caller) -> None:
        super().__init__({CALLER: caller})
        self.app = app


REQUEST = _Request(
    {TOKENS: TOKENS_, SETTINGS: SimpleNamespace(max_message_size=40 * 1024 * 1024), POOL: None},
    Caller(TENANT, uuid7(), "full_access", None),
)
DOMAIN = SenderDomain(uuid7(), "bench.test", True, "verified", True, None)


async def one_email() -> None:
    """As `api.sending.emails.send_email` and `Builder.prepare` do it, less the cached domain
    read and the writer's round trip."""
    builder = Builder(REQUEST)  # type: ignore[arg-type]
    draft = parse_email(_parse(BODY), builder.now)
    domain = check_sender(draft.sender, DOMAIN, None)
    email = await builder.in_conversation(builder.build(draft, domain), draft)
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
