"""The inbound pipeline every way in shares: judge each recipient, match the message, build records.

Port 25 (`mta.mx.handler`) and the ingester endpoints (`api.ingest.raw`) both call these functions,
so routing, token checks and reply matching have one implementation. Lookups are passed in as the
`InboundLookups` protocol (storage's `InboxLookups` satisfies it); their errors pass through
untouched, for the caller to render as a temporary failure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from policy.bounces.effects import DeliveryReport, delivery_reports
from policy.bounces.report import Report, read_report
from policy.bounces.verp import (
    BounceVerdict,
    DeliveryEvidence,
    bounce_token_from_local_part,
    verify_bounce_token,
)
from policy.classify.rules import HUMAN, Classification, MailClass, classify
from policy.classify.signals import FirstLook, first_look, read_signals
from policy.dates import rfc5322_date
from policy.inbound.addresses import split_mailbox
from policy.inbound.matching import (
    KnownMessage,
    Match,
    MatchSource,
    MatchStatus,
    OutboundEvidence,
    candidates,
    decide,
    verify_token,
)
from policy.inbound.message import ParsedMessage
from policy.inbound.routing import (
    DomainRouting,
    RcptDecision,
    RcptInput,
    RouteKind,
    TokenVerdict,
    decide_rcpt,
    rcpt_over_limit,
    rcpt_syntax_rejected,
    route_candidates,
)
from policy.text import clean_text
from policy.tokens import ReplyTokens, TokenFailure, token_from_local_part

# -- What the pipeline asks of storage ----------------------------------------------------------


class RecipientRouteFacts(Protocol):
    """A recipient domain's tenant and the best route for the address (storage: RecipientRoute)."""

    @property
    def tenant_id(self) -> UUID: ...
    @property
    def domain_id(self) -> UUID: ...
    @property
    def domain(self) -> str: ...
    @property
    def reply_domain(self) -> str | None: ...
    @property
    def route_kind(self) -> str | None: ...
    @property
    def route_address(self) -> str | None: ...
    @property
    def route_target(self) -> str | None: ...


class OutboundFacts(Protocol):
    """The outbound email a token names (storage: OutboundRow)."""

    @property
    def email_id(self) -> UUID: ...
    @property
    def thread_id(self) -> UUID | None: ...
    @property
    def reply_token(self) -> str | None: ...
    @property
    def reply_domain(self) -> str | None: ...


class KnownMessageFacts(Protocol):
    """A stored message of the tenant under a Message-ID (storage: KnownMessageRow)."""

    @property
    def reply_to_email_id(self) -> UUID | None: ...
    @property
    def thread_id(self) -> UUID | None: ...
    @property
    def received_id(self) -> UUID | None: ...


class DeliveryFacts(Protocol):
    """The delivery a bounce address names (storage: DeliveryRow)."""

    @property
    def delivery_id(self) -> UUID: ...
    @property
    def email_id(self) -> UUID: ...
    @property
    def recipient(self) -> str: ...
    @property
    def thread_id(self) -> UUID | None: ...


class MatchFacts(Protocol):
    @property
    def outbound(self) -> Mapping[UUID, OutboundFacts]: ...
    @property
    def known(self) -> Mapping[str, KnownMessageFacts]: ...
    @property
    def answered(self) -> Mapping[UUID, KnownMessageFacts]: ...


class EvidenceLookups(Protocol):
    """One tenant's stored messages that matching may name (storage.inbound.inbox.EvidenceLookups):
    outbound emails by id (tokens), messages by Message-ID, received emails by id."""

    async def match_evidence(
        self,
        tenant_id: UUID,
        email_ids: Sequence[UUID],
        message_ids: Sequence[str],
        received_ids: Sequence[UUID] = (),
    ) -> MatchFacts: ...


class InboundLookups(EvidenceLookups, Protocol):
    async def recipient_route(
        self, domain: str, candidates: Sequence[str]
    ) -> RecipientRouteFacts | None: ...

    async def token_evidence(self, tenant_id: UUID, email_id: UUID) -> OutboundFacts | None: ...

    async def delivery_evidence(
        self, tenant_id: UUID, delivery_id: UUID
    ) -> DeliveryFacts | None: ...


def _routing(found: RecipientRouteFacts | None) -> DomainRouting | None:
    if found is None:
        return None
    return DomainRouting(
        tenant_id=found.tenant_id,
        domain_id=found.domain_id,
        domain=found.domain,
        reply_domain=found.reply_domain,
        route_kind=RouteKind(found.route_kind) if found.route_kind else None,
        route_address=found.route_address,
        route_target=found.route_target,
    )


def _outbound(facts: OutboundFacts | None) -> OutboundEvidence | None:
    if facts is None:
        return None
    return OutboundEvidence(facts.email_id, facts.thread_id, facts.reply_token, facts.reply_domain)


def known_message(facts: KnownMessageFacts) -> KnownMessage:
    return KnownMessage(facts.reply_to_email_id, facts.thread_id, facts.received_id)


def evidence_of(
    facts: MatchFacts | None,
) -> tuple[dict[UUID, OutboundEvidence], dict[str, KnownMessage]]:
    """The lookups' answer as `policy.inbound.matching.decide` takes it; None: nothing was looked
    up."""
    if facts is None:
        return {}, {}
    outbound = {
        key: OutboundEvidence(v.email_id, v.thread_id, v.reply_token, v.reply_domain)
        for key, v in facts.outbound.items()
    }
    return outbound, {key: known_message(v) for key, v in facts.known.items()}


# -- Recipients ---------------------------------------------------------------------------------


async def judge_recipient(
    address: str,
    accepted_so_far: int,
    *,
    max_recipients: int,
    lookups: InboundLookups,
    tokens: ReplyTokens,
) -> RcptDecision:
    """What RCPT TO (or an ingester's recipient list) gets for one address.

    A lookup failure is raised, not decided: the caller answers it as a temporary failure.
    """
    if accepted_so_far >= max_recipients:
        # RFC 5321 section 4.5.3.1.10: 452 lets the client send the rest in a new message.
        return rcpt_over_limit()
    mailbox = split_mailbox(address)
    if mailbox is None:
        return rcpt_syntax_rejected()
    routing = _routing(await lookups.recipient_route(mailbox.domain, route_candidates(mailbox)))
    verdict = None
    bounce = None
    token = token_from_local_part(mailbox.local)
    bounce_token = bounce_token_from_local_part(mailbox.local) if token is None else None
    if routing is not None and bounce_token is not None:
        if isinstance(bounce_token, TokenFailure):
            bounce = BounceVerdict(None, bounce_token)
        else:
            found = await lookups.delivery_evidence(routing.tenant_id, bounce_token.delivery_id)
            bounce = verify_bounce_token(
                tokens,
                bounce_token,
                routing.tenant_id,
                mailbox.domain,
                None
                if found is None
                else DeliveryEvidence(
                    found.delivery_id, found.email_id, found.recipient, found.thread_id
                ),
            )
    if routing is not None and token is not None:
        if isinstance(token, TokenFailure):
            verdict = TokenVerdict(None, token)
        else:
            evidence = await lookups.token_evidence(routing.tenant_id, token.email_id)
            verdict = verify_token(
                tokens,
                token,
                routing.tenant_id,
                _outbound(evidence),
                recipient_domain=mailbox.domain,
            )
    return decide_rcpt(RcptInput(mailbox, routing, verdict, bounce))


# -- Messages -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrival:
    """How a message reached us: the facts of its session, for the record and its trace field."""

    mail_from: str  # the reverse-path; "" for the null reverse-path of bounces
    peer_ip: str | None
    helo: str | None
    tls_version: str | None
    hostname: str  # ours, for the Received field
    received_at: datetime
    # RFC 5321 section 4.4 "with" keyword; None picks ESMTP or ESMTPS from tls_version.
    protocol: str | None = None
    # An ingester's provider event: a retry with the same (source, event_id) stores nothing twice.
    source: str = "smtp"
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One stored copy of a received message, for one tenant
    (storage.inbound.inbox.ReceivedRecord)."""

    id: UUID
    tenant_id: UUID
    mail_from: str
    rcpt_to: list[str]
    remote_ip: str | None
    helo: str | None
    tls: bool
    tls_version: str | None
    received_header: str
    raw: bytes
    headers: list[tuple[str, str]]
    message_id: str | None
    in_reply_to: str | None
    references: str | None
    subject: str | None
    from_address: str | None
    from_name: str | None
    to_addresses: list[str]
    cc_addresses: list[str]
    reply_to_addresses: list[str]
    sent_at: datetime | None
    text_body: str | None
    html_body: str | None
    attachments: list[dict[str, Any]]
    parse_defects: list[str]
    reply_match_status: str
    reply_to_email_id: UUID | None
    thread_id: UUID | None
    contact_email: str | None  # the sender; linked to the tenant's contact of that address, if any
    match_source: str | None
    token_failure: str | None
    token_failure_source: str | None
    ingest_source: str | None
    ingest_event_id: str | None
    # What kind of mail this is (policy.classify) and the rule that said so; a report's reading.
    classification: str = "human"
    classification_reason: str = "no_rule"
    report: dict[str, Any] | None = None
    # What the report does to the tenant's deliveries (policy.bounces.effects), applied with it.
    delivery_reports: tuple[DeliveryReport, ...] = ()
    # Stored before its body is parsed (policy.inbound.message.scan_headers): the fields the
    # scan leaves empty are filled in after the commit (mta/mx/fill_in.py).
    parse_pending: bool = False


# A control character in a client-supplied name (a bare CR in EHLO's argument, which aiosmtpd
# keeps) must not reach a header field, where it could end the field early.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def received_header(record_id: UUID, arrival: Arrival, recipient: str | None) -> str:
    """The trace field of RFC 5321 section 4.4, with the protocol keyword of RFC 3848."""
    tls = f" ({arrival.tls_version})" if arrival.tls_version else ""
    protocol = arrival.protocol or ("ESMTPS" if arrival.tls_version else "ESMTP")
    for_clause = f"\r\n\tfor <{recipient}>" if recipient else ""
    helo = _CONTROL.sub("?", arrival.helo) if arrival.helo else "unknown"
    return (
        f"Received: from {helo} ([{arrival.peer_ip or 'unknown'}])\r\n"
        f"\tby {arrival.hostname} (OpenSend) with {protocol}{tls} id {record_id.hex}"
        f"{for_clause}; {rfc5322_date(arrival.received_at)}"
    )


async def received_messages(
    accepted: Sequence[RcptDecision],
    parsed: ParsedMessage,
    raw: bytes,
    arrival: Arrival,
    *,
    lookups: InboundLookups,
    tokens: ReplyTokens,
    new_id: Callable[[], UUID],
) -> list[ReceivedMessage]:
    """One record per tenant among the accepted recipients, each matched for its own tenant.

    A message for two tenants is stored twice, and a token of one tenant never matches for the
    other (DESIGN.md 7).
    """
    by_tenant: dict[UUID, list[RcptDecision]] = {}
    for decision in accepted:
        assert decision.tenant_id is not None
        by_tenant.setdefault(decision.tenant_id, []).append(decision)

    look = _first_look(parsed, arrival.mail_from)
    if not parsed.complete and not look.body_not_needed:
        raise ValueError("only plain mail is stored before its body is parsed (body_unread)")
    report = _report(parsed, raw, arrival, accepted) if look.wants_report else None
    records = []
    for tenant_id, decisions in by_tenant.items():
        match = await _match(tenant_id, decisions, parsed, lookups, tokens, report)
        verdicts = [d.bounce for d in decisions if d.bounce is not None]
        match = _linked_by_bounce_address(match, verdicts)
        # Most mail carries no field any rule reads: human without building the rules' input.
        kind = HUMAN if look.plain and report is None else _classify(parsed, arrival, match, report)
        effects: tuple[DeliveryReport, ...] = ()
        if kind.kind in (MailClass.BOUNCE, MailClass.COMPLAINT):
            effects = delivery_reports(
                report,
                complaint=kind.kind is MailClass.COMPLAINT,
                verdicts=verdicts,
                returned_email_id=match.reply_to_email_id,
            )
        # An address given twice (or two aliases of one target) is one recipient.
        recipients = list(dict.fromkeys(d.delivered_to for d in decisions if d.delivered_to))
        record_id = new_id()
        records.append(
            ReceivedMessage(
                id=record_id,
                tenant_id=tenant_id,
                mail_from=arrival.mail_from,
                rcpt_to=recipients,
                remote_ip=arrival.peer_ip,
                helo=arrival.helo,
                tls=arrival.tls_version is not None,
                tls_version=arrival.tls_version,
                received_header=received_header(
                    record_id, arrival, recipients[0] if len(recipients) == 1 else None
                ),
                raw=raw,
                headers=parsed.headers,
                message_id=parsed.message_id,
                in_reply_to=parsed.in_reply_to,
                references=parsed.references,
                subject=parsed.subject,
                from_address=parsed.from_address,
                **body_fields(parsed),
                reply_match_status=match.status.value,
                reply_to_email_id=match.reply_to_email_id,
                thread_id=match.thread_id,
                contact_email=parsed.from_address,
                match_source=match.source.value if match.source else None,
                token_failure=match.token_failure.value if match.token_failure else None,
                token_failure_source=match.failure_source.value if match.failure_source else None,
                ingest_source=arrival.source if arrival.event_id is not None else None,
                ingest_event_id=arrival.event_id,
                classification=kind.kind.value,
                classification_reason=kind.reason,
                report=_report_json(report) if kind.automatic else None,
                delivery_reports=effects,
                parse_pending=not parsed.complete,
            )
        )
    return records


def body_fields(parsed: ParsedMessage) -> dict[str, Any]:
    """The stored fields that a header scan leaves empty, as the full parse gives them: written
    with the row, or by the fill-in after the commit (mta/mx/fill_in.py)."""
    return {
        "from_name": parsed.from_name,
        "to_addresses": parsed.to,
        "cc_addresses": parsed.cc,
        "reply_to_addresses": parsed.reply_to,
        "sent_at": parsed.date,
        "text_body": parsed.text,
        "html_body": parsed.html,
        "attachments": [a.as_json() for a in parsed.attachments],
        "parse_defects": parsed.defects,
    }


def body_unread(parsed: ParsedMessage, mail_from: str) -> bool:
    """Whether a message read by its header fields alone (`scan_headers`) can be stored so,
    its body parsed after the commit: plain mail, which no classification rule and no report
    reading looks into (policy.classify.signals.first_look), so that everything decided before
    the 250 (routing, matching, the class, a report's effects) is what the full parse decides.
    """
    return _first_look(parsed, mail_from).body_not_needed


def _first_look(parsed: ParsedMessage, mail_from: str) -> FirstLook:
    return first_look(
        parsed.headers,
        mail_from=mail_from,
        from_address=parsed.from_address,
        subject=parsed.subject,
    )


def _linked_by_bounce_address(match: Match, verdicts: Sequence[BounceVerdict]) -> Match:
    """A report sent to a genuine bounce address is about that delivery's email and thread."""
    if match.status is MatchStatus.MATCHED:
        return match
    for verdict in verdicts:
        if verdict.valid and verdict.delivery is not None:
            return Match(
                MatchStatus.MATCHED,
                MatchSource.RECIPIENT,
                reply_to_email_id=verdict.delivery.email_id,
                thread_id=verdict.delivery.thread_id,
                by_token=True,
            )
    return match


def _report(
    parsed: ParsedMessage, raw: bytes, arrival: Arrival, accepted: Sequence[RcptDecision]
) -> Report | None:
    """The light parse of a report, for messages that may be one (policy.classify)."""
    # The report's own addresses are never the failed recipient of a text bounce.
    own = {d.mailbox.address.lower() for d in accepted if d.mailbox is not None}
    if parsed.from_address:
        own.add(parsed.from_address.lower())
    if arrival.mail_from:
        own.add(arrival.mail_from.lower())
    addressed = frozenset(a.lower() for a in (*parsed.to, *parsed.cc))
    return read_report(raw, ignore_addresses=frozenset(own), unlikely_addresses=addressed)


def _classify(
    parsed: ParsedMessage, arrival: Arrival, match: Match, report: Report | None
) -> Classification:
    matched = match.status is MatchStatus.MATCHED
    return classify(
        read_signals(
            parsed.headers,
            mail_from=arrival.mail_from,
            from_address=parsed.from_address,
            subject=parsed.subject,
            text=parsed.text,
            in_reply_to=parsed.in_reply_to,
            matched=matched,
            matched_by_token=matched and match.by_token,
            report=report,
        )
    )


def _report_json(report: Report | None) -> dict[str, Any] | None:
    if report is None or report.form == "none":
        return None
    return {
        "form": report.form,
        "feedback_type": clean_text(report.feedback_type) if report.feedback_type else None,
        "returned_message_id": (
            clean_text(report.returned_message_id) if report.returned_message_id else None
        ),
        "recipients": [r.as_json() for r in report.recipients],
    }


async def _match(
    tenant_id: UUID,
    decisions: list[RcptDecision],
    parsed: ParsedMessage,
    lookups: InboundLookups,
    tokens: ReplyTokens,
    report: Report | None,
) -> Match:
    offered = candidates(
        [d.token for d in decisions if d.token is not None],
        parsed.reply_token_header,
        parsed.in_reply_to,
        parsed.references,
    )
    if report is not None and (report.returned_token or report.returned_message_id):
        # RFC 3464 section 2: a report returns the original message (or its header); its
        # X-OpenSend-Reply-Token and Message-ID link the report to what it is about.
        offered += candidates([], report.returned_token, report.returned_message_id, None)
    email_ids = sorted({c.token.email_id for c in offered if c.token is not None})
    message_ids = [c.message_id for c in offered if c.message_id is not None]
    facts = None
    if email_ids or message_ids:
        facts = await lookups.match_evidence(tenant_id, email_ids, message_ids)
    outbound, known = evidence_of(facts)
    return decide(offered, tokens, tenant_id, outbound, known)
