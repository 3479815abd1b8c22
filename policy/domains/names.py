"""Whether a string a tenant typed is a domain name this server can take mail for and sign as.

One normal form for every name we store and compare: ASCII (IDNA A-labels), lowercase, without
the trailing dot. A refusal says what is wrong in words a person who typed a URL understands.
"""

from __future__ import annotations

import ipaddress
import re

import idna

# RFC 1035 section 2.3.4: 255 octets on the wire, which is 253 characters of dotted text.
MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63
# RFC 1123 section 2.1: letters, digits and hyphens; a label may start with a digit.
_LDH_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
# Names that can never be a tenant's mail domain, whatever DNS says (RFC 6761 section 6).
_SPECIAL_SUFFIXES = ("localhost", "invalid")


class DomainNameError(ValueError):
    """The text is not a usable domain name; the message says why."""


def normalize_domain(text: str) -> str:
    """The stored form of a domain name, or DomainNameError with the reason."""
    name = text.strip()
    if name.endswith("."):
        name = name[:-1]  # the root label: "example.com." and "example.com" are one name
    if not name:
        raise DomainNameError("the domain name is empty")
    if "://" in name or "/" in name or "@" in name:
        raise DomainNameError(
            f"{text!r} is not a domain name: give only the name, e.g. example.com"
        )
    if _is_ip_address(name):
        raise DomainNameError(f"{text!r} is an IP address; mail domains are names")
    if any(char.isspace() for char in name):
        raise DomainNameError(f"{text!r} contains white space")
    ascii_name = _to_ascii(name)
    if len(ascii_name) > MAX_NAME_LENGTH:
        raise DomainNameError(f"the domain name is longer than {MAX_NAME_LENGTH} characters")
    labels = ascii_name.split(".")
    for label in labels:
        _check_label(label)
    if len(labels) < 2:
        raise DomainNameError(f"{ascii_name!r} is a single label: a domain needs a dot, e.g. .com")
    if labels[-1].isdigit():
        # RFC 3696 section 2: a top-level domain is never all-numeric.
        raise DomainNameError(f"{ascii_name!r} ends in a numeric label; no such top-level domain")
    if labels[-1] in _SPECIAL_SUFFIXES:
        raise DomainNameError(f"{ascii_name!r} is a reserved name that never resolves")
    return ascii_name


def is_subdomain(name: str, parent: str) -> bool:
    """Whether `name` lies strictly under `parent` (both normalised)."""
    return name.endswith("." + parent)


def _is_ip_address(name: str) -> bool:
    candidate = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def _to_ascii(name: str) -> str:
    if name.isascii():
        return name.lower()
    try:
        # UTS 46 maps case and compatibility forms first, then IDNA 2008 (RFC 5891) encodes.
        return idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError as error:
        raise DomainNameError(
            f"{name!r} is not a valid internationalised domain name: {error}"
        ) from None


def _check_label(label: str) -> None:
    if not label:
        raise DomainNameError("the domain name has an empty label (two dots in a row?)")
    if len(label) > MAX_LABEL_LENGTH:
        raise DomainNameError(f"the label {label[:20]!r}… is longer than 63 characters")
    if not _LDH_LABEL.match(label):
        raise DomainNameError(
            f"the label {label!r} may hold only letters, digits and inner hyphens (RFC 1123)"
        )
    if label[2:4] == "--":
        # RFC 5891 section 4.2.3.1: "??--" labels are reserved; "xn--" must be a real A-label.
        if not label.startswith("xn--"):
            raise DomainNameError(f"the label {label!r} has hyphens in its 3rd and 4th places")
        try:
            idna.decode(label)
        except idna.IDNAError:
            raise DomainNameError(f"the label {label!r} is not a valid IDNA A-label") from None
