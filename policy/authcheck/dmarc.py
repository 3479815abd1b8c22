"""DMARC (RFC 7489): find the From domain's policy record and judge identifier alignment.

Pure: the one DNS question DMARC asks (TXT at `_dmarc.<domain>`) is passed in. The
Organizational Domain comes from the Public Suffix List shipped with `publicsuffixlist`.
OpenSend reports the verdict and the published policy; it never refuses or hides mail by them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from publicsuffixlist import PublicSuffixList

from policy.authcheck.verdicts import DkimVerdict, DmarcVerdict, SpfVerdict
from policy.dns import DnsTemporaryError

POLICIES = ("none", "quarantine", "reject")
ALIGNMENTS = ("r", "s")  # relaxed, strict (RFC 7489 section 3.1)
# RFC 7489 section 6.4: the version tag comes first and its value is case-sensitive.
_VERSION = re.compile(r"^\s*v\s*=\s*DMARC1\s*(;|$)")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s,]+$")


class TxtLookup(Protocol):
    def __call__(self, name: str) -> list[str]:
        """The TXT records at `name`, each with its strings joined; [] when there are none.
        Raises DnsTemporaryError when DNS did not answer."""
        ...


class DmarcRecordError(ValueError):
    """A DMARC record without a usable policy (RFC 7489 section 6.6.3 step 6)."""


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    policy: str  # p=
    subdomain_policy: str | None  # sp=; None: p= applies to subdomains too
    dkim_alignment: str  # adkim=
    spf_alignment: str  # aspf=


@dataclass(frozen=True, slots=True)
class Discovery:
    record: DmarcRecord
    at: str  # the domain whose _dmarc record it is: the From domain or its Organizational one


@lru_cache(maxsize=1)
def _public_suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # the list shipped in the wheel; parsed once per process


def organizational_domain(domain: str) -> str:
    """RFC 7489 section 3.2: the public suffix plus one label. A name that is itself a public
    suffix has none; it stands for itself, so it aligns only with itself."""
    return _public_suffixes().privatesuffix(domain) or domain


def aligned(from_domain: str, authenticated: str, mode: str) -> bool:
    """RFC 7489 section 3.1: strict is the same name; relaxed is the same Organizational
    Domain (so a parent that is a public suffix never aligns)."""
    if from_domain == authenticated:
        return True
    if mode == "s":
        return False
    return organizational_domain(from_domain) == organizational_domain(authenticated)


def is_dmarc_record(text: str) -> bool:
    """RFC 7489 section 6.6.3 steps 2 and 4: other TXT records at the name are discarded."""
    return _VERSION.match(text) is not None


def parse_record(text: str) -> DmarcRecord:
    """The tags a verdict needs (RFC 7489 section 6.3). Unknown tags and bad values of optional
    tags are ignored in favour of the defaults; a bad or missing p= is an error, unless rua=
    names a report address, when the record counts as p=none (section 6.6.3 step 6)."""
    tags: dict[str, str] = {}
    for part in text.split(";")[1:]:
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
    policy = tags.get("p", "").lower()
    subdomain = tags.get("sp", "").lower() or None
    if policy not in POLICIES or (subdomain is not None and subdomain not in POLICIES):
        if not _has_report_uri(tags.get("rua", "")):
            raise DmarcRecordError(f"the record has no valid p= policy: {text[:80]!r}")
        policy, subdomain = "none", None
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    return DmarcRecord(
        policy=policy,
        subdomain_policy=subdomain,
        dkim_alignment=adkim if adkim in ALIGNMENTS else "r",
        spf_alignment=aspf if aspf in ALIGNMENTS else "r",
    )


def _has_report_uri(rua: str) -> bool:
    # Each URI may carry a size limit after "!" (RFC 7489 section 6.4).
    return any(_URI.match(uri.strip().split("!")[0]) for uri in rua.split(","))


def discover(from_domain: str, txt: TxtLookup) -> Discovery | None:
    """RFC 7489 section 6.6.3: the record at the From domain, else at its Organizational Domain.

    None when DMARC does not apply (no record, or more than one). Raises DnsTemporaryError, and
    DmarcRecordError for a record without a usable policy.
    """
    organizational = organizational_domain(from_domain)
    for domain in dict.fromkeys((from_domain, organizational)):
        records = [text for text in txt(f"_dmarc.{domain}") if is_dmarc_record(text)]
        if len(records) > 1:
            return None  # step 5: more than one record and DMARC does not apply
        if records:
            return Discovery(parse_record(records[0]), domain)
    return None


def evaluate(
    from_domains: Sequence[str], spf: SpfVerdict, dkim: Sequence[DkimVerdict], txt: TxtLookup
) -> DmarcVerdict:
    """The DMARC verdict for a message whose From field names `from_domains` (normalised)."""
    domains = list(dict.fromkeys(from_domains))
    if not domains:
        return DmarcVerdict("permerror", None, reason="no From address with a domain")
    if len(domains) > 1:
        # RFC 7489 section 6.6.1: one author domain or no verdict that means anything.
        return DmarcVerdict("permerror", None, reason="From names more than one domain")
    [domain] = domains
    try:
        found = discover(domain, txt)
    except DnsTemporaryError:
        return DmarcVerdict("temperror", domain, reason="DNS did not answer for the policy")
    except DmarcRecordError:
        return DmarcVerdict("permerror", domain, reason="the DMARC record has no valid policy")
    if found is None:
        return DmarcVerdict("none", domain, reason="no DMARC record")
    record = found.record
    policy = record.policy
    if found.at != domain and record.subdomain_policy is not None:
        policy = record.subdomain_policy  # the Organizational Domain's word on its subdomains
    spf_aligned = (
        spf.result == "pass"
        and spf.domain is not None
        and aligned(domain, spf.domain, record.spf_alignment)
    )
    dkim_aligned = any(
        verdict.result == "pass"
        and verdict.domain is not None
        and aligned(domain, verdict.domain, record.dkim_alignment)
        for verdict in dkim
    )
    if spf_aligned or dkim_aligned:
        result = "pass"
    elif spf.result == "temperror" or any(v.result == "temperror" for v in dkim):
        result = "temperror"  # a pass may be hiding behind the failed lookup
    else:
        result = "fail"
    return DmarcVerdict(result, domain, policy, spf_aligned, dkim_aligned)
