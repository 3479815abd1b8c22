"""SPF, DKIM, ARC and DMARC checks of one received message: the evidence for policy's verdicts.

pyspf and dkimpy only do blocking DNS and pure-Python canonicalization, so `Authenticator.check`
blocks: the auth-check worker runs it in threads of a process of its own
(mta/authcheck/worker.py), never in the MX's. Every lookup goes to OPENSEND_DNS_SERVERS through
mta.dns.BlockingResolver. pyspf takes no resolver (it calls its module-level `DNSLookup`), so
that name is replaced once with `_spf_lookup`, which asks the DNS of the check running in the
calling thread.
"""

from __future__ import annotations

import binascii
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Any, TypeVar

import dkim
import spf

from mta.dns import BlockingResolver
from policy.authcheck import dmarc
from policy.authcheck.verdicts import (
    SIGNATURE_PREFIX_LENGTH,
    SPF_RESULTS,
    ArcVerdict,
    AuthenticationResults,
    DkimVerdict,
    DmarcVerdict,
    SpfVerdict,
    clean_reason,
    dns_name_or_none,
)
from policy.dns import DnsTemporaryError
from policy.domains.names import DomainNameError, normalize_domain

log = logging.getLogger(__name__)

# RFC 6376 section 6.1: a verifier may limit the signatures it tries; a message with dozens of
# them is an attack on the verifier, not mail.
MAX_DKIM_SIGNATURES = 8
# RFC 7208 section 4.6.4: at least 20 seconds for a whole SPF evaluation.
SPF_QUERY_SECONDS = 20
# RFC 8301 section 3.2: RSA keys under 1024 bits must not be accepted.
MIN_DKIM_KEY_BITS = 1024
# All the DNS of one check (SPF's 20 s included). A check still running when its process stops
# is cut off by the exit watchdog (mta/stopping.py) and checked again later.
CHECK_DNS_SECONDS = 30.0

# dkimpy logs every failed signature at ERROR; a forged signature is an outcome, not our error.
_LIBRARY_LOG = logging.getLogger(__name__ + ".dkimpy")
_LIBRARY_LOG.setLevel(logging.CRITICAL)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the checks read of a stored message: the SMTP envelope and the bytes received."""

    remote_ip: str | None
    helo: str | None
    mail_from: str  # "" for the null reverse-path
    raw: bytes
    # The ingester that handed the message over (api/ingest/raw.py), when it recorded one. Its
    # remote_ip is then the provider's HTTP client, not the SMTP client SPF is about.
    ingest_source: str | None = None

    @property
    def from_our_smtp_session(self) -> bool:
        """Port 25 always has a HELO name (the MX answers MAIL before HELO with 503); the
        ingesters have none, with or without an event id."""
        return self.ingest_source is None and self.helo is not None


class CheckDns:
    """One check's DNS: OPENSEND_DNS_SERVERS, with every lookup of the check sharing one time
    budget, so a sender whose DNS never answers holds a worker thread (and a stopping process)
    for CHECK_DNS_SECONDS at most. Past it, what is left to ask is a temperror."""

    def __init__(self, resolver: BlockingResolver, seconds: float) -> None:
        self._resolver = resolver
        self._deadline = time.monotonic() + seconds

    def answer(self, name: str, rdtype: str) -> Any:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise DnsTemporaryError(f"{rdtype} {name}: the check's time for DNS is used up")
        return self._resolver.answer(name, rdtype, min(remaining, self._resolver.lifetime))

    def txt(self, name: str) -> list[str]:
        """TXT records, each with its character-strings joined (RFC 7208 section 3.3)."""
        answer = self.answer(name, "TXT")
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer or ()]

    def key(self, name: str) -> bytes | None:
        """A DKIM key record's text (RFC 6376 section 3.6.2.2), None when there is none."""
        answer = self.answer(name, "TXT")
        return None if answer is None else b"".join(next(iter(answer)).strings)

    def dkimpy_key(self, name: bytes, timeout: float = 5) -> bytes | None:
        """dkimpy's dnsfunc. DnsTemporaryError is not one of dkimpy's exceptions, so it is not
        mistaken for a failed signature: it ends the verification, and we call it temperror."""
        return self.key(name.decode("ascii", "replace").rstrip("."))


class Authenticator:
    def __init__(self, resolver: BlockingResolver, *, hostname: str) -> None:
        self._resolver = resolver
        self._hostname = hostname  # %{r} in SPF macros (RFC 7208 section 7.3)

    def check(self, evidence: Evidence) -> AuthenticationResults:
        """Every method's verdict. Blocks on DNS: call it from a worker thread."""
        dns = CheckDns(self._resolver, CHECK_DNS_SECONDS)
        raw = evidence.raw
        scope = "mailfrom" if evidence.mail_from else "helo"
        spf_verdict = _guarded(
            "spf", lambda: self.spf(evidence, dns), SpfVerdict("permerror", None, scope, _BUG)
        )
        dkim_verdicts = _guarded(
            "dkim", lambda: self.dkim(raw, dns), [DkimVerdict("permerror", reason=_BUG)]
        )
        arc_verdict = _guarded("arc", lambda: self.arc(raw, dns), ArcVerdict("fail", reason=_BUG))
        dmarc_verdict = _guarded(
            "dmarc",
            lambda: dmarc.evaluate(from_domains(raw), spf_verdict, dkim_verdicts, dns.txt),
            DmarcVerdict("permerror", None, reason=_BUG),
        )
        return AuthenticationResults(spf_verdict, tuple(dkim_verdicts), dmarc_verdict, arc_verdict)

    # -- SPF (RFC 7208) ---------------------------------------------------------------------

    def spf(self, evidence: Evidence, dns: CheckDns) -> SpfVerdict:
        # The null sender is checked by its HELO name (RFC 7208 section 2.4).
        scope = "mailfrom" if evidence.mail_from else "helo"
        identity = evidence.mail_from.rpartition("@")[2] if evidence.mail_from else evidence.helo
        domain = _domain_or_none(identity)
        if not evidence.from_our_smtp_session:
            return SpfVerdict("none", domain, scope, "handed over by a provider: client unknown")
        if not evidence.remote_ip:
            return SpfVerdict("none", domain, scope, "no client IP address to check")
        if domain is None:
            return SpfVerdict("none", None, scope, "the identity is not a domain name")
        query = spf.query(
            i=evidence.remote_ip,
            s=evidence.mail_from,
            h=evidence.helo or "",
            receiver=self._hostname,
            querytime=SPF_QUERY_SECONDS,
        )
        token = _SPF_DNS.set(dns)
        try:
            result, _code, explanation = query.check()
        finally:
            _SPF_DNS.reset(token)
        if result not in SPF_RESULTS:
            return SpfVerdict("permerror", domain, scope, f"unexpected SPF result {result!r}")
        if result == "temperror":
            # pyspf's text names our resolver's address: not the tenant's business.
            return SpfVerdict(result, domain, scope, "DNS did not answer")
        return SpfVerdict(result, domain, scope, clean_reason(explanation))

    # -- DKIM (RFC 6376) --------------------------------------------------------------------

    def dkim(self, raw: bytes, dns: CheckDns) -> list[DkimVerdict]:
        try:
            message = dkim.DKIM(raw, logger=_LIBRARY_LOG, minkey=MIN_DKIM_KEY_BITS)
        except dkim.DKIMException as error:
            return [DkimVerdict("permerror", reason=f"unreadable header: {_gist(error)}")]
        count = sum(1 for name, _ in message.headers if name.lower() == b"dkim-signature")
        if count == 0:
            return [DkimVerdict("none", reason="message not signed")]
        signatures = range(min(count, MAX_DKIM_SIGNATURES))
        return [self._verify(message, index, dns) for index in signatures]

    def _verify(self, message: Any, index: int, dns: CheckDns) -> DkimVerdict:
        """One signature, top down, with RFC 6376 section 6.1's outcomes told apart: a broken
        signature or key is permerror, a failed hash fail, an unanswered lookup temperror."""
        try:
            signature, signed, fields = message.verify_headerprep(index)
        except dkim.DKIMException as error:
            return DkimVerdict("permerror", reason=f"invalid signature: {_gist(error)}")
        named = {
            "domain": dns_name_or_none(_text(signature.get(b"d"))),
            "selector": dns_name_or_none(_text(signature.get(b"s"))),
            "signature": "".join(_text(signature.get(b"b")).split())[:SIGNATURE_PREFIX_LENGTH],
        }
        if named["domain"] is None or named["selector"] is None:
            return DkimVerdict("permerror", **named, reason="d= or s= is not a domain name")
        key_name = f"{named['selector']}._domainkey.{named['domain']}"
        try:
            key = dns.key(key_name)
        except DnsTemporaryError:
            return DkimVerdict("temperror", **named, reason="DNS did not answer for the key")
        try:
            dkim.evaluate_pk(key_name.encode(), key)
        except (dkim.DKIMException, binascii.Error, ValueError) as error:
            # No record, a revoked (empty p=) or unreadable key (RFC 6376 section 6.1.2).
            return DkimVerdict("permerror", **named, reason=f"no usable key: {_gist(error)}")
        try:
            valid = message.verify_sig(signature, signed, fields[index], lambda *_a, **_k: key)
        except dkim.ValidationError as error:
            return DkimVerdict("fail", **named, reason=_gist(error))  # body hash mismatch
        except dkim.DKIMException as error:
            return DkimVerdict("permerror", **named, reason=_gist(error))  # key too small
        if not valid:
            return DkimVerdict("fail", **named, reason="signature did not verify")
        return DkimVerdict("pass", **named)

    # -- ARC (RFC 8617) ---------------------------------------------------------------------

    def arc(self, raw: bytes, dns: CheckDns) -> ArcVerdict:
        try:
            chain = dkim.ARC(raw, logger=_LIBRARY_LOG, minkey=MIN_DKIM_KEY_BITS)
            sets = chain.sorted_arc_headers()[0]
            validation, _results, reason = chain.verify(dnsfunc=dns.dkimpy_key)
        except DnsTemporaryError:
            return ArcVerdict("temperror", reason="DNS did not answer for a key")
        except dkim.DKIMException as error:
            return ArcVerdict("fail", reason=_gist(error))
        if validation == dkim.CV_None:
            return ArcVerdict("none", sets)
        if validation == dkim.CV_Pass:
            return ArcVerdict("pass", sets)
        # None: an earlier intermediary already recorded a failed chain (cv=fail).
        return ArcVerdict("fail", sets, clean_reason(reason))


def from_domains(raw: bytes) -> list[str]:
    """The domains of the addresses in every From field (RFC 5322 section 3.6.2), normalised
    as stored domains are (IDNA A-labels, lowercase); a domain that is not a name is left out."""
    try:
        fields, _body = dkim.rfc822_parse(raw)  # the header as DKIM reads it, bytes untouched
    except dkim.DKIMException:
        return []  # no header to read a From from
    # RFC 6532: header fields may be UTF-8; unfolded before the addresses are read.
    values = [
        " ".join(value.decode("utf-8", "replace").split())
        for name, value in fields
        if name.lower() == b"from"
    ]
    domains: list[str] = []
    for _name, address in getaddresses(values):
        local, at, domain = address.rpartition("@")
        normalized = _domain_or_none(domain) if at and local else None
        if normalized is not None:
            domains.append(normalized)
    return domains


def _domain_or_none(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return normalize_domain(text)
    except DomainNameError:
        return None


def _gist(error: Exception) -> str:
    """dkimpy's message without the values it quotes in parentheses (hashes, whole keys)."""
    return str(error).split(" (", 1)[0].split(": b'", 1)[0]


def _text(value: bytes | None) -> str:
    return value.decode("ascii", "replace") if value else ""


# -- pyspf's DNS, per thread ------------------------------------------------------------------

_SPF_DNS: ContextVar[CheckDns] = ContextVar("opensend_spf_dns")
_PYSPF_LOOKUP = spf.DNSLookup


def _spf_lookup(
    name: str, qtype: str, strict: Any = True, timeout: float = SPF_QUERY_SECONDS
) -> list[tuple[tuple[str, str], Any]]:
    """pyspf's DNSLookup (same arguments, same answers as its dnspython one) through the DNS of
    the check running in this thread; pyspf's own for anyone else."""
    dns = _SPF_DNS.get(None)
    if dns is None:
        records: list[tuple[tuple[str, str], Any]] = _PYSPF_LOOKUP(name, qtype, strict, timeout)
        return records
    try:
        # Our lifetime per lookup and the check's budget; pyspf's querytime counts as well.
        answer = dns.answer(name, qtype)
    except DnsTemporaryError as error:
        raise spf.TempError(f"DNS {error}") from error
    return [((name, qtype), value) for value in _spf_values(answer, qtype)]


def _spf_values(answer: Any, qtype: str) -> Iterator[Any]:
    for rdata in answer or ():
        if qtype in ("A", "AAAA"):
            yield rdata.address
        elif qtype == "MX":
            yield (rdata.preference, rdata.exchange)
        elif qtype == "PTR":
            yield rdata.target.to_text(True)
        elif qtype in ("TXT", "SPF"):
            yield rdata.strings


spf.DNSLookup = _spf_lookup


# -- a bug in one check must not cost the others their verdict --------------------------------

_BUG = "could not be evaluated"
V = TypeVar("V")


def _guarded(method: str, check: Callable[[], V], fallback: V) -> V:
    """Run one method's check. An exception the libraries should not raise (input they choke
    on) is logged with its trace and becomes the fallback verdict: the message still gets its
    results, and a poison message cannot keep coming back."""
    try:
        return check()
    except Exception:
        log.exception("authentication check failed unexpectedly", extra={"method": method})
        return fallback
