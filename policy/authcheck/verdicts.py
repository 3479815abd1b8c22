"""Authentication verdicts of a received message (SPF, DKIM, DMARC, ARC), as stored and shown.

The checker (mta/authcheck/checks.py) fills these values in; this module turns them into the
Authentication-Results field (RFC 8601) and the JSON the API returns, and decides when a result
that could not be had (a DNS failure) is looked for again. The verdicts are informative: mail
is stored whatever they say, and nothing is refused after the fact.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from authres import AuthenticationResultsHeader, SPFAuthenticationResult
from authres.arc import ARCAuthenticationResult
from authres.core import AuthenticationResultProperty
from authres.dkim_b import DKIMAuthenticationResult
from authres.dmarc import DMARCAuthenticationResult

from policy.submission.message import header_fields

# Result names per method, as the Authentication-Results registry spells them.
SPF_RESULTS = frozenset(
    {"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"}  # RFC 7208 2.6
)
DKIM_RESULTS = frozenset(
    {"none", "pass", "fail", "policy", "neutral", "temperror", "permerror"}  # RFC 8601 2.7.1
)
DMARC_RESULTS = frozenset({"none", "pass", "fail", "temperror", "permerror"})  # RFC 7489 11.2
# RFC 8617 section 4.4 names none, pass and fail; temperror (RFC 8601 2.7) is our word for "a
# key could not be looked up", which is worth a second look rather than a fail.
ARC_RESULTS = frozenset({"none", "pass", "fail", "temperror"})

# A DKIM signature is named by the first characters of its b= (RFC 6008 section 4), so two
# signatures of one domain can be told apart.
SIGNATURE_PREFIX_LENGTH = 8

# When results with a temperror are looked for again, in seconds after each check; after the
# last one the temperror stands. A sender's DNS outage of a few hours is covered; mail is never
# held for it (RFC 7208 section 2.6.6: a temperror may resolve itself later).
RECHECK_SCHEDULE = (60, 300, 1800, 7200)

# Text that reaches a header comment or the JSON: printable ASCII without the characters that
# end a comment or a result (RFC 8601 section 2.2, RFC 5322 section 3.2.2), kept short. Reasons
# may quote a sender's DNS (an SPF exp= text): never let them forge a result.
_UNSAFE = re.compile(r"[^\x20-\x7e]|[()\\;\"]")
MAX_REASON_LENGTH = 160
# What may stand as a property value without quoting: a domain name or selector in A-labels.
_DNS_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+$")


def clean_reason(text: str | None) -> str | None:
    """A reason safe for a header comment and the API: one short line of plain ASCII."""
    if not text:
        return None
    cleaned = " ".join(_UNSAFE.sub(" ", text).split())
    if len(cleaned) > MAX_REASON_LENGTH:
        cleaned = cleaned[: MAX_REASON_LENGTH - 3].rstrip() + "..."
    return cleaned or None


def dns_name_or_none(text: str | None) -> str | None:
    """`text` lowercased if it is a plain DNS name (LDH and underscore labels), else None."""
    if not text:
        return None
    name = text.strip().rstrip(".").lower()
    return name if len(name) <= 253 and _DNS_NAME.match(name) else None


@dataclass(frozen=True, slots=True)
class SpfVerdict:
    """RFC 7208: whether the client may send for the identity (MAIL FROM, else HELO)."""

    result: str
    domain: str | None  # the identity's domain; None when it is not a usable domain name
    scope: str  # "mailfrom", or "helo" for the null sender (RFC 7208 section 2.4)
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class DkimVerdict:
    """RFC 6376: one DKIM-Signature field's outcome; `none` stands alone for unsigned mail."""

    result: str
    domain: str | None = None  # d=, the signing domain (SDID)
    selector: str | None = None  # s=
    signature: str | None = None  # the first characters of b=
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class DmarcVerdict:
    """RFC 7489: whether an SPF or DKIM pass is aligned with the From domain, and the policy
    the domain publishes for mail that has neither."""

    result: str
    domain: str | None  # the RFC5322.From domain
    policy: str | None = None  # none, quarantine or reject: p=, or sp= for a subdomain
    spf_aligned: bool = False
    dkim_aligned: bool = False
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ArcVerdict:
    """RFC 8617: the chain of custody intermediaries added, validated."""

    result: str
    sets: int = 0  # ARC sets (instances) in the message
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class AuthenticationResults:
    spf: SpfVerdict
    dkim: tuple[DkimVerdict, ...]
    dmarc: DmarcVerdict
    arc: ArcVerdict

    def __post_init__(self) -> None:
        for result, allowed in self._results():
            if result not in allowed:
                raise ValueError(f"{result!r} is not one of {sorted(allowed)}")
        if not self.dkim:
            raise ValueError("every message has a DKIM result: 'none' when it is unsigned")

    def _results(self) -> Iterator[tuple[str, frozenset[str]]]:
        yield self.spf.result, SPF_RESULTS
        for verdict in self.dkim:
            yield verdict.result, DKIM_RESULTS
        yield self.dmarc.result, DMARC_RESULTS
        yield self.arc.result, ARC_RESULTS

    @property
    def temporary(self) -> bool:
        """Whether a result is a temperror: DNS did not answer, another look may settle it."""
        return any(result == "temperror" for result, _ in self._results())

    def method_results(self) -> Iterator[tuple[str, str]]:
        """(method, result) pairs, one per DKIM signature: what the metrics count."""
        yield "spf", self.spf.result
        for verdict in self.dkim:
            yield "dkim", verdict.result
        yield "dmarc", self.dmarc.result
        yield "arc", self.arc.result

    def header_value(self, authserv_id: str) -> str:
        """The Authentication-Results field's value (RFC 8601 section 2.2), without its name."""
        results: list[Any] = [_spf_clause(self.spf)]
        results += [_dkim_clause(verdict) for verdict in self.dkim]
        results += [_dmarc_clause(self.dmarc), _arc_clause(self.arc)]
        header = AuthenticationResultsHeader(authserv_id=authserv_id, results=results)
        value: str = header.header_value()
        return value

    def as_json(self) -> dict[str, Any]:
        return {
            "spf": {
                "result": self.spf.result,
                "domain": self.spf.domain,
                "scope": self.spf.scope,
                "reason": self.spf.reason,
            },
            "dkim": [
                {
                    "result": verdict.result,
                    "domain": verdict.domain,
                    "selector": verdict.selector,
                    "signature": verdict.signature,
                    "reason": verdict.reason,
                }
                for verdict in self.dkim
            ],
            "dmarc": {
                "result": self.dmarc.result,
                "domain": self.dmarc.domain,
                "policy": self.dmarc.policy,
                "spf_aligned": self.dmarc.spf_aligned,
                "dkim_aligned": self.dmarc.dkim_aligned,
                "reason": self.dmarc.reason,
            },
            "arc": {"result": self.arc.result, "sets": self.arc.sets, "reason": self.arc.reason},
        }


def header_field(value: str) -> bytes:
    """The whole field, folded after each result (RFC 5322 section 2.2.3) so a message with
    many signatures stays under the 998-octet line limit; ends in CRLF. No result contains
    "; " but at its end: reasons are cleaned of semicolons."""
    folded = value.replace("; ", ";\r\n\t")
    return f"{AuthenticationResultsHeader.HEADER_FIELD_NAME}: {folded}\r\n".encode()


_COMMENT = re.compile(rb"\([^()]*\)")
OBSCURED_NAME = b"X-Original-Authentication-Results"


def obscure_forged_results(raw: bytes, authserv_id: str) -> bytes:
    """The message with every Authentication-Results field that claims our authserv-id renamed.

    RFC 8601 section 5: a border MTA must delete or obscure such fields, since only we may
    speak for our name; a sender who wrote "dmarc=pass" under it would otherwise be believed
    by whatever reads the message after us. Renaming keeps them visible for forensics."""
    ours = authserv_id.strip().lower().encode()
    fields, rest = header_fields(raw)
    changed = False
    for index, field in enumerate(fields):
        name, colon, value = field.partition(b":")
        if not colon or name.strip().lower() != b"authentication-results":
            continue
        claimed = _COMMENT.sub(b"", value).split(b";", 1)[0].split()
        if claimed and claimed[0].lower() == ours:
            fields[index] = OBSCURED_NAME + b":" + value
            changed = True
    return b"".join(fields) + rest if changed else raw


def recheck_in(results: AuthenticationResults, checks_made: int) -> int | None:
    """Seconds until the message is checked again, or None when these results are final."""
    if not results.temporary or checks_made > len(RECHECK_SCHEDULE):
        return None
    return RECHECK_SCHEDULE[checks_made - 1]


# -- the header's clauses: values are checked again here, so no caller can forge a result -----


def _spf_clause(verdict: SpfVerdict) -> SPFAuthenticationResult:
    clause = SPFAuthenticationResult(
        result=verdict.result, result_comment=clean_reason(verdict.reason)
    )
    domain = dns_name_or_none(verdict.domain)
    if domain is not None:
        # The identity checked: smtp.mailfrom with its domain only (RFC 8601 section 2.7.2
        # lets the local part go), smtp.helo for the null sender's HELO name.
        if verdict.scope == "helo":
            clause.smtp_helo = domain
        else:
            clause.smtp_mailfrom = domain
    return clause


def _dkim_clause(verdict: DkimVerdict) -> DKIMAuthenticationResult:
    clause = DKIMAuthenticationResult(
        result=verdict.result, result_comment=clean_reason(verdict.reason)
    )
    domain = dns_name_or_none(verdict.domain)
    if domain is not None:
        clause.header_d = domain
    selector = dns_name_or_none(verdict.selector)
    if selector is not None:
        # header.s names the key (RFC 8601 section 2.7.1).
        clause.properties.append(AuthenticationResultProperty("header", "s", selector))
    if verdict.signature is not None and _BASE64.match(verdict.signature):
        clause.header_b = verdict.signature
    return clause


def _dmarc_clause(verdict: DmarcVerdict) -> DMARCAuthenticationResult:
    # The published policy goes in a comment, as large receivers write it: "(p=reject)".
    policy = f"p={verdict.policy}" if verdict.policy in ("none", "quarantine", "reject") else ""
    comment = " ".join(filter(None, (policy, clean_reason(verdict.reason)))) or None
    clause = DMARCAuthenticationResult(result=verdict.result, result_comment=comment)
    domain = dns_name_or_none(verdict.domain)
    if domain is not None:
        clause.header_from = domain
    return clause


def _arc_clause(verdict: ArcVerdict) -> ARCAuthenticationResult:
    return ARCAuthenticationResult(
        result=verdict.result, result_comment=clean_reason(verdict.reason)
    )
