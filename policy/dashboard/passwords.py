"""Dashboard passwords: argon2id hashes (argon2-cffi, RFC 9106 parameters), checked in constant
time; CPU-heavy by design, so callers run them off the event loop."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# argon2-cffi's defaults are RFC 9106's second recommended option (64 MiB, t=3, p=4).
_HASHER = PasswordHasher()

MIN_LENGTH = 10
MAX_LENGTH = 1024  # argon2 takes any length; a megabyte "password" is a denial of service


class WeakPassword(ValueError):
    """The message says what a password must be."""


def check_strength(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"a password has at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    check_strength(password)
    return _HASHER.hash(password)


# Verified against when the address has no account, so a wrong address costs what a wrong
# password does and the response time does not tell which addresses exist.
_DUMMY_HASH = _HASHER.hash("not a password of anyone")


def verify_password(password_hash: str | None, password: str) -> bool:
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False
