"""The DNS records a tenant domain publishes for this server, and whether what DNS returned
satisfies each one. Pure: `policy.domains.check` asks DNS and passes the answers in.

A domain is verified when every required record holds: SPF and DKIM (sending), and the MX too
when it receives. DMARC is a suggestion: checked and reported, never required. A lookup that
could not be answered (timeout, SERVFAIL) is `temporary_failure`, never `failed`: a resolver
outage says nothing about the records (RFC 5321 section 5.1's rule for MX lookups, applied here).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from policy.domains import dkim_keys


class Status(StrEnum):
    """Resend's statuses, for records and for the domain."""

    NOT_STARTED = "not_started"  # never checked (or the record changed since the last check)
    PENDING = "pending"  # Resend's "check in progress"; our checks are synchronous, so unused
    VERIFIED = "verified"
    FAILED = "failed"  # DNS answered, and the answer is missing or wrong
    TEMPORARY_FAILURE = "temporary_failure"  # DNS did not answer; nothing is known


class Purpose(StrEnum):
    """The `record` label of each record in the API. Resend labels the receiving MX
    "Receiving"; ours says "MX", as `opensend domain add --json` always has."""

    RECEIVING = "MX"
    SPF = "SPF"
    DKIM = "DKIM"
    DMARC = "DMARC"


TTL = "Auto"  # Resend's word: the publisher picks the TTL
MX_PREFERENCE = 10
# RFC 7489 section 6.3: observe first (p=none), tighten once the aggregate reports look right.
DMARC_SUGGESTION = "v=DMARC1; p=none;"


@dataclass(frozen=True, slots=True)
class DomainSetup:
    """What decides a domain's records: its names, whether it receives, its DKIM key."""

    name: str
    receiving: bool
    reply_domain: str | None
    dkim_selector: str | None
    dkim_public_key: str | None  # None until a key is generated

    @property
    def receiving_name(self) -> str:
        """Where reply addresses live, so where the MX must point here."""
        return self.reply_domain or self.name


class DomainFields(Protocol):
    """The columns of a stored domain that decide its records
    (storage.account.domains.DomainDetails)."""

    @property
    def name(self) -> str: ...
    @property
    def receiving_enabled(self) -> bool: ...
    @property
    def reply_domain(self) -> str | None: ...
    @property
    def dkim_selector(self) -> str | None: ...
    @property
    def dkim_public_key(self) -> str | None: ...


def setup_of(domain: DomainFields) -> DomainSetup:
    return DomainSetup(
        name=domain.name,
        receiving=domain.receiving_enabled,
        reply_domain=domain.reply_domain,
        dkim_selector=domain.dkim_selector,
        dkim_public_key=domain.dkim_public_key,
    )


@dataclass(frozen=True, slots=True)
class RecordSpec:
    purpose: Purpose
    type: str  # the DNS type to publish: MX or TXT
    name: str  # fully qualified, without the trailing dot
    value: str  # exactly what to publish
    expect: str  # what a check looks for: our host, our SPF mechanism, our public key
    priority: int | None = None
    required: bool = True

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identity across checks: a stored result holds only while this is unchanged."""
        return (self.purpose.value, self.type, self.name, self.value)


def _receiving_record(setup: DomainSetup, hostname: str) -> RecordSpec | None:
    # RFC 5321 section 5.1: senders look up the MX of the recipient's domain.
    if not setup.receiving:
        return None
    return RecordSpec(
        Purpose.RECEIVING, "MX", setup.receiving_name, hostname, hostname, MX_PREFERENCE
    )


def _spf_record(setup: DomainSetup, hostname: str) -> RecordSpec:
    # RFC 7208 section 5.3: `a:<host>` follows the server's A/AAAA records, so moving the server
    # needs no change in any tenant's zone; one DNS lookup of the ten allowed (section 4.6.4).
    # `~all` (softfail) as deploy/dns-records.md advises until every sender is listed.
    mechanism = f"a:{hostname}"
    return RecordSpec(Purpose.SPF, "TXT", setup.name, f"v=spf1 {mechanism} ~all", mechanism)


def _dkim_record(setup: DomainSetup, hostname: str) -> RecordSpec | None:
    if not setup.dkim_selector or not setup.dkim_public_key:
        return None
    return RecordSpec(
        Purpose.DKIM,
        "TXT",
        dkim_keys.record_name(setup.dkim_selector, setup.name),
        dkim_keys.record_value(setup.dkim_public_key),
        setup.dkim_public_key,
    )


def _dmarc_record(setup: DomainSetup, hostname: str) -> RecordSpec:
    # RFC 7489 section 6.1: the policy record lives at _dmarc.<domain>.
    return RecordSpec(
        Purpose.DMARC, "TXT", f"_dmarc.{setup.name}", DMARC_SUGGESTION, "", required=False
    )


# The records, in the order they are shown.
RECORDS: tuple[Callable[[DomainSetup, str], RecordSpec | None], ...] = (
    _receiving_record,  # MX, required when receiving
    _spf_record,  # required: who may send for the domain
    _dkim_record,  # required: the key that signs for it
    _dmarc_record,  # suggested only
)


def records_to_publish(setup: DomainSetup, hostname: str) -> tuple[RecordSpec, ...]:
    host = hostname.lower().rstrip(".")
    return tuple(spec for build in RECORDS if (spec := build(setup, host)) is not None)


# -- judging what DNS returned -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """What DNS said for one record's name and type."""

    values: tuple[str, ...] = ()  # TXT strings (joined), or MX as "preference exchange"
    temporary: bool = False  # the question went unanswered: timeout, SERVFAIL
    missing_domain: str | None = None  # the domain itself does not exist (NXDOMAIN)


@dataclass(frozen=True, slots=True)
class RecordCheck:
    spec: RecordSpec
    status: Status
    found: tuple[str, ...] = ()
    reason: str | None = None  # what is wrong, in the operator's words

    def as_json(self) -> dict[str, Any]:
        """Resend's record fields, plus `found` and `reason` once the record has been checked."""
        record: dict[str, Any] = {
            "record": self.spec.purpose.value,
            "name": self.spec.name,
            "type": self.spec.type,
            "ttl": TTL,
            "status": self.status.value,
            "value": self.spec.value,
        }
        if self.spec.priority is not None:
            record["priority"] = self.spec.priority
        if self.status is not Status.NOT_STARTED:
            record["found"] = list(self.found)
        if self.reason:
            record["reason"] = self.reason
        return record


Verdict = tuple[Status, str | None]


def judge(spec: RecordSpec, answer: Answer) -> RecordCheck:
    if answer.temporary:
        unknown = f"DNS did not answer for {spec.name} {spec.type} now; nothing is known, try again"
        return RecordCheck(spec, Status.TEMPORARY_FAILURE, (), unknown)
    if answer.missing_domain is not None:
        missing = f"{answer.missing_domain} does not exist in DNS (NXDOMAIN)"
        return RecordCheck(spec, Status.FAILED, (), missing)
    status, reason = JUDGES[spec.purpose](spec, answer.values)
    return RecordCheck(spec, status, answer.values, reason)


def domain_status(checks: Iterable[RecordCheck]) -> Status:
    """A definite failure wins (DNS answered and the record is wrong); then an unanswered
    lookup; verified only when every required record is."""
    statuses = {check.status for check in checks if check.spec.required}
    if Status.FAILED in statuses:
        return Status.FAILED
    if Status.TEMPORARY_FAILURE in statuses:
        return Status.TEMPORARY_FAILURE
    if statuses == {Status.VERIFIED}:
        return Status.VERIFIED
    return Status.NOT_STARTED


def with_last_results(
    specs: Sequence[RecordSpec], stored: Sequence[Mapping[str, Any]]
) -> list[RecordCheck]:
    """The records to publish now, each with the last check's result while it is unchanged
    (a new hostname, key or reply domain makes a new record, not started)."""
    last: dict[tuple[str, str, str, str], Mapping[str, Any]] = {}
    for item in stored:
        key = (item.get("record"), item.get("type"), item.get("name"), item.get("value"))
        if all(isinstance(part, str) for part in key):
            last[key] = item  # type: ignore[index]
    checks = []
    for spec in specs:
        result = last.get(spec.key)
        status = _stored_status(result)
        if result is None or status is Status.NOT_STARTED:
            checks.append(RecordCheck(spec, Status.NOT_STARTED))
            continue
        found = tuple(str(v) for v in result.get("found", ()))
        reason = result.get("reason")
        checks.append(RecordCheck(spec, status, found, reason if isinstance(reason, str) else None))
    return checks


def _stored_status(item: Mapping[str, Any] | None) -> Status:
    try:
        return Status(item["status"]) if item is not None else Status.NOT_STARTED
    except (KeyError, ValueError):
        return Status.NOT_STARTED


def _judge_mx(spec: RecordSpec, values: tuple[str, ...]) -> Verdict:
    if not values:
        return Status.FAILED, f"no MX record at {spec.name}, so mail for it does not come here"
    records = []
    for value in values:
        preference, _, exchange = value.partition(" ")
        records.append((int(preference), exchange.strip().rstrip(".").lower()))
    if any(not exchange for _, exchange in records):
        return Status.FAILED, f"{spec.name} has a null MX (RFC 7505): it says it takes no mail"
    ours = [preference for preference, exchange in records if exchange == spec.expect]
    if not ours:
        hosts = ", ".join(sorted({exchange for _, exchange in records}))
        return Status.FAILED, f"the MX of {spec.name} points at {hosts}, not {spec.expect}"
    best = min(preference for preference, _ in records)
    if min(ours) > best:
        # RFC 5321 section 5.1: senders try the lowest preference first.
        preferred = sorted({exchange for preference, exchange in records if preference == best})
        return Status.FAILED, f"{', '.join(preferred)} has a lower preference than {spec.expect}"
    return Status.VERIFIED, None


def _is_spf(value: str) -> bool:
    # RFC 7208 section 4.5: "v=spf1" (any case) followed by a space or the end of the record.
    head = value[:7].lower()
    return head == "v=spf1" or head == "v=spf1 "


def _judge_spf(spec: RecordSpec, values: tuple[str, ...]) -> Verdict:
    records = [value for value in values if _is_spf(value)]
    if not records:
        return Status.FAILED, f'no SPF record ("v=spf1 …") at {spec.name}'
    if len(records) > 1:
        # RFC 7208 section 4.5: more than one SPF record is a permanent error for receivers.
        return Status.FAILED, f"{len(records)} SPF records at {spec.name}: merge them into one"
    mechanism = spec.expect.lower()
    for term in records[0].lower().split()[1:]:
        qualifier, bare = (term[0], term[1:]) if term[:1] in "+-~?" else ("+", term)
        if bare == mechanism:
            if qualifier == "+":  # "+" (pass) is also the default qualifier (section 4.6.2)
                return Status.VERIFIED, None
            return Status.FAILED, f"the SPF record has {term}, which does not pass: use {bare}"
        if bare == "all":
            # Section 4.6.2: evaluation stops at the first match, and `all` always matches.
            if mechanism in (t.lstrip("+-~?") for t in records[0].lower().split()):
                return Status.FAILED, f"the SPF record ends at {term!r} before {mechanism}"
            break
    return Status.FAILED, f"the SPF record does not authorise this server: add {mechanism}"


def _dkim_tags(value: str) -> dict[str, str] | None:
    """RFC 6376 section 3.2 tag=value list; white space inside values is folding, dropped."""
    tags: dict[str, str] = {}
    for part in value.split(";"):
        if not part.strip():
            continue
        tag, equals, tag_value = part.partition("=")
        if not equals:
            return None
        tags[tag.strip()] = "".join(tag_value.split())
    return tags


def _is_our_key(tags: dict[str, str] | None, public_key: str) -> bool:
    if tags is None or tags.get("k", "rsa") != "rsa" or tags.get("p") != public_key:
        return False
    # RFC 6376 section 3.6.1: v=, when present, is the first tag and says DKIM1.
    return "v" not in tags or (next(iter(tags)) == "v" and tags["v"] == "DKIM1")


def _judge_dkim(spec: RecordSpec, values: tuple[str, ...]) -> Verdict:
    if not values:
        return Status.FAILED, f"no DKIM record at {spec.name}"
    parsed = [_dkim_tags(value) for value in values]
    if any(_is_our_key(tags, spec.expect) for tags in parsed):
        if len(values) == 1:
            return Status.VERIFIED, None
        # RFC 6376 section 3.6.2.2: with several records, which one a verifier uses is undefined.
        return Status.FAILED, f"{len(values)} TXT records at {spec.name}: keep only this one"
    tags = parsed[0]
    if tags is None or "p" not in tags:
        return Status.FAILED, f"the TXT record at {spec.name} is not a DKIM key record"
    if "v" in tags and (next(iter(tags)) != "v" or tags["v"] != "DKIM1"):
        return Status.FAILED, "a DKIM key record starts with v=DKIM1 (RFC 6376 section 3.6.1)"
    if tags.get("k", "rsa") != "rsa":
        return Status.FAILED, f"the record says k={tags['k']}; this domain signs with k=rsa"
    if not tags["p"]:
        return Status.FAILED, "the record's p= is empty, which revokes the key (RFC 6376 3.6.1)"
    return Status.FAILED, "the record's public key (p=) is not this domain's key"


_DMARC = re.compile(r"v\s*=\s*DMARC1\s*(;|$)")


def _judge_dmarc(spec: RecordSpec, values: tuple[str, ...]) -> Verdict:
    # RFC 7489 section 6.6.3: only records that start with v=DMARC1 count.
    records = [value for value in values if _DMARC.match(value.strip())]
    if not records:
        return Status.FAILED, f"no DMARC record at {spec.name} (suggested, not required)"
    if len(records) > 1:
        return Status.FAILED, f"{len(records)} DMARC records at {spec.name}: receivers use none"
    return Status.VERIFIED, None


JUDGES: Mapping[Purpose, Callable[[RecordSpec, tuple[str, ...]], Verdict]] = {
    Purpose.RECEIVING: _judge_mx,
    Purpose.SPF: _judge_spf,
    Purpose.DKIM: _judge_dkim,
    Purpose.DMARC: _judge_dmarc,
}
