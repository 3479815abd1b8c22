"""Schemathesis driven against the real API on loopback: each operation of a document gets a
bounded number of generated requests (valid and invalid), and every answer is checked.

The requests carry a real tenant's API key. Two thirds of the valid cases are made plausible (the
tenant's verified domain as sender, ids of resources that exist), so that the valid paths are
exercised too, not only the refusals; half of those get a hostile character in one string
(`HOSTILE`), so that those valid paths meet it. Findings are collected, not raised, so that one
run lists them all.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode, Response
from schemathesis.schemas import APIOperation, BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# The checks of schemathesis that hold an answer to the document.
ALL_CHECKS = (status_code_conformance, content_type_conformance, response_schema_conformance)
# Answers that are not JSON by design, on success only: their errors are JSON like any other.
BINARY_SUCCESS = ("/metrics", "/attachments/{attachment_id}/content", "/raw")


@dataclass(frozen=True)
class World:
    """What exists for the caller: a verified sending domain and one resource of each kind."""

    key: str
    domain: str
    ids: dict[str, list[str]]  # kind of path parameter -> real values


@dataclass(frozen=True)
class Finding:
    operation: str
    mode: str
    status: int
    problem: str
    case: Case
    response: Response

    def __str__(self) -> str:
        return (
            f"{self.operation} [{self.mode}] {self.status}: {self.problem}\n"
            f"    {self.case.as_curl_command()[:400]}\n    answer: {self.response.text[:300]}"
        )


@dataclass
class Report:
    operations: list[str] = field(default_factory=list)
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0
    successes: dict[str, int] = field(default_factory=dict)  # 2xx answers, by operation

    def summary(self) -> str:
        return (
            f"{len(self.operations)} operations, {self.requests} requests in {self.seconds:.1f} s, "
            f"statuses {dict(sorted(self.statuses.items()))}, {len(self.findings)} findings"
        )

    def distinct(self) -> list[str]:
        """One example of each kind of finding (operation and problem), with how often."""
        kinds: dict[tuple[str, str], list[Finding]] = {}
        for finding in self.findings:
            kinds.setdefault((finding.operation, finding.problem[:160]), []).append(finding)
        return [f"{len(found)}x {found[0]}" for found in kinds.values()]


def id_kind(path: str) -> str:
    """Which kind of resource a path's first parameter names."""
    for prefix, kind in (
        ("/emails/receiving/", "received"),
        ("/api/v2/emails/", "received"),
        ("/emails/{id}/reply", "received"),
        ("/emails/{email_id}", "email"),
        ("/emails/{id}", "email"),
        ("/threads/", "thread"),
        ("/contacts/", "contact"),
        ("/domains/", "domain"),
        ("/api-keys/", "api_key"),
        ("/webhooks/{id}/events", "webhook_with_events"),
        ("/webhooks/", "webhook"),
        ("/suppressions/", "suppression"),
    ):
        if path.startswith(prefix):
            return kind
    return "none"


# Fields of an email that random text seldom fills validly, with a value that is valid.
EMAIL_DEFAULTS = {
    "cc": "cc@example.net",
    "bcc": None,
    "reply_to": "Help <help@example.net>",
    "headers": {"X-Campaign": "fuzz"},
    "tags": [{"name": "kind", "value": "fuzz"}],
    "attachments": [{"filename": "a.txt", "content": "aGk="}],
    "scheduled_at": "in 1 hour",
}


def plausible_email(item: dict[str, Any], sender: str) -> None:
    """The generated text of the bodies stays; what an address or header must be is made so."""
    item.update({"from": sender, "to": ["ann@example.net"]})
    subject = item.get("subject")
    if not (isinstance(subject, str) and subject.isprintable() and subject.strip()):
        item["subject"] = "Hello"
    if not any(isinstance(item.get(f), str) and item[f].strip() for f in ("html", "text")):
        item["text"] = "Hello"
    for name, value in EMAIL_DEFAULTS.items():
        if name in item:
            item[name] = copy.deepcopy(value)  # `hostile` may change it in place
    if "attachments" in item or "scheduled_at" in item:
        item.pop("attachments", None)  # not in batches; a single email may have one
        item.pop("scheduled_at", None)


def plausible(case: Case, world: World, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
    """Turn a generated case into one that can succeed: real ids, the tenant's own domain."""
    path, method = case.operation.path, case.operation.method.lower()
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = str(uuid.uuid4())  # a new request, not a replay
    for name in case.path_parameters or {}:
        if name == "attachment_id":
            case.path_parameters[name] = "2"
        elif name == "event_id":
            case.path_parameters[name] = draw(st.sampled_from(world.ids["webhook_event"]))
        else:
            case.path_parameters[name] = draw(st.sampled_from(world.ids[id_kind(path)]))
    body = case.body
    sender = f"Acme <news@{world.domain}>"
    if path in ("/emails", "/emails/batch") and method == "post":
        for item in body if isinstance(body, list) else [body]:
            if isinstance(item, dict):
                plausible_email(item, sender)
    elif path.endswith("/reply") and isinstance(body, dict):
        plausible_email(body, sender)
        for name in ("to", "replyTo", "from_name"):  # to: the original's sender
            body.pop(name, None)
    elif path == "/contacts" and method == "post" and isinstance(body, dict):
        body["email"] = f"c{draw(st.integers(0, 10**9))}@example.net"
    elif path.startswith("/domains") and isinstance(body, dict):
        for name in ("capabilities", "reply_domain", "open_tracking", "click_tracking", "tls"):
            body.pop(name, None)
        if method == "post":
            body["name"] = f"fuzz{draw(st.integers(0, 10**9))}.example.org"
        else:
            body.pop("name", None)
    elif path.startswith("/webhooks") and isinstance(body, dict):
        plausible_webhook(body, method, draw)
    elif path.startswith("/suppressions") and isinstance(body, dict):
        fresh = [f"s{draw(st.integers(0, 10**9))}@example.net" for _ in range(2)]
        if path == "/suppressions":
            body["email"] = fresh[0]
        elif "ids" in body and "emails" not in body:
            body["ids"] = [str(uuid.uuid4())]
        else:
            body.pop("ids", None)
            body["emails"] = fresh
    elif path == "/events/inbound" and isinstance(body, dict):
        body.pop("raw_mime_base64", None)
        body["raw_mime"] = f"From: a@example.net\r\nTo: x@{world.domain}\r\n\r\nHi\r\n"
        body["recipients"] = [f"x@{world.domain}"]


# Where a webhook may point during a fuzz: loopback, a port nothing listens on. Deliveries run
# only in the delivery worker, which the test API does not start (test_fuzz.py deletes the
# tenant's webhooks afterwards, so no later test's worker sends them anywhere).
LOOPBACK_ENDPOINT = "http://127.0.0.1:9/fuzz"
EVENT_TYPES = ("email.sent", "email.received", "email.bounced", "contact.created")


def plausible_webhook(
    body: dict[str, Any], method: str, draw: Callable[[st.SearchStrategy[Any]], Any]
) -> None:
    """A loopback endpoint, events of the SDK's list, a status the API knows."""
    if method == "post" or "endpoint" in body:
        body["endpoint"] = LOOPBACK_ENDPOINT
    if method == "post" or "events" in body:
        body["events"] = draw(st.lists(st.sampled_from(EVENT_TYPES), min_size=1, unique=True))
    if body.get("status") not in (None, "enabled", "disabled"):
        body["status"] = "disabled"


# Characters that pass a schema's `type: string` but not every layer below: NUL (PostgreSQL text),
# line breaks (headers), a lone surrogate (UTF-8), a line separator, DEL and a byte order mark.
HOSTILE = ("\0", "\r\n", "\n", "\ud800", "\u2028", "\x7f", "\ufeff")
IN_URLS = tuple(c for c in HOSTILE if c != "\ud800")  # no URL can encode half a character

Slot = tuple[Any, Any]  # a container and the key (or index) of one of its strings


def string_slots(value: Any) -> list[Slot]:
    """Every string leaf of a JSON value, as (container, key) so that it can be replaced."""
    items: Iterable[tuple[Any, Any]] = ()
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    slots: list[Slot] = []
    for key, item in items:
        slots += [(value, key)] if isinstance(item, str) else string_slots(item)
    return slots


def hostile(case: Case, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
    """One hostile character into one string the case sends: in the body, path or query. After
    `plausible`, it reaches the layers that valid requests reach (storage, message building)."""
    slots = [(slot, HOSTILE) for slot in string_slots(case.body)]
    for part in (case.path_parameters, case.query):
        slots += [(slot, IN_URLS) for slot in string_slots(part or {})]
    if not slots:
        return
    (container, key), characters = draw(st.sampled_from(slots))
    text: str = container[key]
    at = draw(st.integers(0, len(text)))
    container[key] = text[:at] + draw(st.sampled_from(characters)) + text[at:]


def answer_problems(response: Response, operation: APIOperation) -> list[str]:
    """JSON unless binary by design; an error in Resend's shape, its status in the body."""
    binary = response.status_code < 400 and operation.path.endswith(BINARY_SUCCESS)
    if binary:
        return []
    content_type = (response.headers.get("content-type") or [""])[0]
    if not content_type.startswith("application/json"):
        return [f"not JSON: {content_type}"]
    try:
        body = response.json()
    except json.JSONDecodeError:
        return ["a body that does not parse as JSON"]
    if response.status_code < 400:
        return []
    shape = isinstance(body, dict) and {"statusCode", "name", "message"} <= body.keys()
    if not shape or body["statusCode"] != response.status_code:
        return [f"not Resend's error shape: {body!r}"[:300]]
    if not all(isinstance(body[k], str) and body[k] for k in ("name", "message")):
        return [f"an empty name or message: {body!r}"[:300]]
    return []


def resolve(schema: Any, document: dict[str, Any]) -> Any:
    while isinstance(schema, dict) and "$ref" in schema:
        node: Any = document
        for step in schema["$ref"].removeprefix("#/").split("/"):
            node = node[step]
        schema = node
    return schema


def parts(schema: Any, document: dict[str, Any]) -> list[dict[str, Any]]:
    """A schema and every schema it combines (allOf, oneOf, anyOf), resolved."""
    schema = resolve(schema, document)
    if not isinstance(schema, dict):
        return []
    found = [schema]
    for word in ("allOf", "oneOf", "anyOf"):
        for sub in schema.get(word, []):
            found += parts(sub, document)
    return found


def undocumented(value: Any, schema: Any, document: dict[str, Any], where: str = "") -> list[str]:
    """Every field of an answer that its schema does not name: the schemas allow additional
    properties (clients must tolerate new fields), so conformance alone would not see them."""
    found = parts(schema, document)
    if isinstance(value, list):
        items = next((p["items"] for p in found if "items" in p), None)
        if items is None:
            return []
        return [
            problem
            for index, item in enumerate(value)
            for problem in undocumented(item, items, document, f"{where}[{index}]")
        ]
    if not isinstance(value, dict):
        return []
    named: dict[str, Any] = {}
    for part in found:
        for name, sub in part.get("properties", {}).items():
            named.setdefault(name, sub)
    free = any(p.get("additionalProperties") not in (None, False) for p in found)
    if not named or free:
        return []  # a free-form object (headers, a payload), documented as such
    problems = [f"undocumented field {where}.{name}" for name in value if name not in named]
    for name, sub in named.items():
        if name in value:
            problems += undocumented(value[name], sub, document, f"{where}.{name}")
    return problems


def documented_schema(operation: APIOperation, status: int, document: dict[str, Any]) -> Any | None:
    answers = document["paths"][operation.path][operation.method.lower()]["responses"]
    content = answers.get(str(status), {}).get("content", {})
    return content.get("application/json", {}).get("schema")


def brief(failure: BaseException) -> str:
    """A check's failure in a few lines: what, and where in the schema."""
    lines = [line.strip() for line in str(failure).splitlines() if line.strip()]
    return " | ".join(lines[:5])[:500]


def fuzz_operation(
    operation: APIOperation,
    mode: GenerationMode,
    world: World,
    base_url: str,
    checks: list[Any],
    examples: int,
    report: Report,
    http: requests.Session,
    strict: dict[str, Any] | None = None,
) -> None:
    """`examples` cases of one operation in one mode (valid or invalid), each answer checked;
    with `strict` (the document as a dict), every field of a JSON answer must be documented."""
    auth = {"Authorization": f"Bearer {world.key}"}

    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case, data: st.DataObject) -> None:
        # Valid cases: a third as generated, a third plausible, a third plausible and hostile.
        shaping = data.draw(st.integers(0, 2)) if mode is GenerationMode.POSITIVE else 0
        if shaping >= 1:
            plausible(case, world, data.draw)
        if shaping == 2:
            hostile(case, data.draw)
        response = case.call(base_url=base_url, session=http, headers=auth, timeout=60)
        report.requests += 1
        report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
        if response.status_code < 300:
            report.successes[operation.label] = report.successes.get(operation.label, 0) + 1
        problems = answer_problems(response, operation)
        if response.status_code >= 500:
            problems.append("a server error")
        schema = strict and documented_schema(operation, response.status_code, strict)
        if schema and not problems:
            problems += undocumented(response.json(), schema, strict or {})
        try:
            case.validate_response(response, checks=checks)
        except BaseExceptionGroup as failures:  # schemathesis: one group, every failure
            problems += [brief(failure) for failure in failures.exceptions]
        except AssertionError as failure:
            problems.append(brief(failure))
        for problem in problems:
            report.findings.append(
                Finding(operation.label, mode.value, response.status_code, problem, case, response)
            )

    try:
        run()
    except Unsatisfiable:
        # Nothing to make invalid (no parameters, no body): the valid cases cover it.
        if mode is GenerationMode.POSITIVE:
            raise


def fuzz(
    schema: BaseSchema,
    world: World,
    base_url: str,
    *,
    checks: Iterable[Any],
    examples: int,
    wanted: Callable[[APIOperation], bool] = lambda _: True,
    strict: dict[str, Any] | None = None,
) -> Report:
    """Every wanted operation of the document, `examples` valid and `examples` invalid cases."""
    report = Report()
    started = time.monotonic()
    with requests.Session() as http:
        for result in schema.get_all_operations():
            operation = result.ok()
            if not wanted(operation):
                continue
            report.operations.append(operation.label)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzz_operation(
                    operation, mode, world, base_url, list(checks), examples, report, http, strict
                )
    report.seconds = time.monotonic() - started
    return report
