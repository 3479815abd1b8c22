"""Reply stripping measured on the public replies corpus, through the real server.

Every sample of `../shared/corpora/replies` (read in place, never copied) is sent as the text
body of a message to the MX of a real `opensend serve` (MX, API and the after-commit worker, on
loopback, with an embedded PostgreSQL in a temporary directory), and its `stripped_text` is read
back from `GET /emails/receiving/{id}`. A sample counts as stripped exactly when that text equals
the upstream project's expected text after the corpus README's normalisation (CRLF to LF, lines
right-stripped, blank lines at both ends dropped). Printed per source and in all, with every
failure; written as JSON to tests/perf/results/.

    .venv/bin/python tests/perf/accuracy_replies.py
    .venv/bin/python tests/perf/accuracy_replies.py --corpus ../shared/corpora/replies --show 3

The exit status is 0 when the share is at least --target (0.90), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import smtplib
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from opensend_peer import REPO_ROOT, OpenSendPeer
from postfix_peer import free_loopback_port

DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "corpora" / "replies"
DOMAIN = "replies.test"
WAIT_SECONDS = 300.0  # for the worker to strip every sample; only stops a hung run


class FullServer(OpenSendPeer):
    """`opensend serve` with every part: the MX, the API and the after-commit worker."""

    def __init__(self, data_dir: Path, dns_server: str) -> None:
        super().__init__(data_dir, hostname="mx.replies.test", dns_server=dns_server)
        self.api_port = free_loopback_port()

    def env(self) -> dict[str, str]:
        env = super().env()
        env["OPENSEND_API_LISTEN"] = f"127.0.0.1:{self.api_port}"
        return env

    def serve_command(self) -> list[str]:
        return [*self.command, "serve"]


def normalise(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def message_for(sample: dict[str, Any], body: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Customer <customer@example.net>"
    message["To"] = f"support@{DOMAIN}"
    message["Subject"] = f"Re: {sample['name']}"
    message.set_content(body, cte="base64")  # every byte of the sample, CRs included
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def send(port: int, raw: bytes) -> str:
    """The stored id, from the MX's "250 2.0.0 Ok: queued as <id>"."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("client.example.net")
        client.mail("customer@example.net")
        client.rcpt(f"support@{DOMAIN}")
        code, reply = client.data(raw)
    if code != 250:
        raise RuntimeError(f"the MX answered {code} {reply!r}")
    return reply.decode().rsplit(" ", 1)[-1]


def stripped_text(api_port: int, key: str, email_id: str) -> str | None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{api_port}/emails/receiving/{email_id}",
        headers={"Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body: dict[str, Any] = json.load(response)
    value: str | None = body["stripped_text"]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--show", type=int, default=12, help="lines of each failure shown")
    args = parser.parse_args(argv)
    samples: list[dict[str, Any]] = json.loads((args.corpus / "labels.json").read_text())

    with tempfile.TemporaryDirectory(prefix="opensend-replies-") as workdir:
        dns_port = free_loopback_port()
        dns = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("dns_stub.py")), "--port",
             str(dns_port), "--seconds", "1200"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        server = FullServer(Path(workdir) / "data", dns_server=f"127.0.0.1:{dns_port}")
        try:
            server.setup_routing(DOMAIN, "replies")
            key = json.loads(
                server.admin("apikey", "create", "--tenant", "replies", "--json").stdout
            )["token"]
            with server:
                results = run(server, key, samples, args.corpus)
        finally:
            server.stop_embedded_postgres()
            dns.terminate()
            dns.wait(10)
    return report(results, args)


def run(
    server: FullServer, key: str, samples: list[dict[str, Any]], corpus: Path
) -> list[dict[str, Any]]:
    sent: list[tuple[dict[str, Any], str]] = []
    for sample in samples:
        body = (corpus / sample["input"]).read_bytes().decode("utf-8")
        sent.append((sample, send(server.mx_port, message_for(sample, body))))
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT_SECONDS
    for sample, email_id in sent:
        got = stripped_text(server.api_port, key, email_id)
        while got is None:  # not stripped yet: the worker polls for new mail
            if time.monotonic() > deadline:
                raise RuntimeError(f"{sample['name']} was never stripped")
            time.sleep(0.2)
            got = stripped_text(server.api_port, key, email_id)
        expected = (corpus / sample["expected"]).read_bytes().decode("utf-8")
        results.append(
            {
                "name": sample["input"],
                "source": sample["source"],
                "language": sample["language"],
                "exact": normalise(got) == normalise(expected),
                "got": normalise(got),
                "expected": normalise(expected),
            }
        )
    return results


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> int:
    exact = sum(r["exact"] for r in results)
    share = exact / len(results)
    for source in sorted({r["source"] for r in results}):
        mine = [r for r in results if r["source"] == source]
        print(f"{source}: {sum(r['exact'] for r in mine)}/{len(mine)} stripped exactly")
    print(f"all: {exact}/{len(results)} = {share:.1%} (target {args.target:.0%})")
    for failure in (r for r in results if not r["exact"]):
        print(f"\nFAILED {failure['name']} ({failure['language']})")
        for label in ("got", "expected"):
            lines = failure[label].split("\n")
            print(f"  {label}: " + "\n  | ".join(lines[: args.show]))
    out = REPO_ROOT / "tests" / "perf" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"accuracy-replies-{stamp}.json"
    path.write_text(json.dumps({"exact": exact, "total": len(results), "results": results}))
    print(f"\nwritten to {path}")
    return 0 if share >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
