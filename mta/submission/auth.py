"""Logins on the submission ports: an API key as the password, failures slowed and locked out.

The key is checked as the HTTP API checks a bearer key (storage.account_caches.KeyCache, the same
hashed lookup and cache); the user name is not checked (clients must send one: any will do, the
key's name reads well in logs). `policy.submission.throttle` decides what a failure costs; the
failure records live here, in this process, per client address (an IPv6 /64 counts as one address).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from mta import metrics
from policy.submission import throttle as auth_throttle
from policy.submission.throttle import AuthLimits, AuthVerdict, FailureRecord, Outcome
from storage.account_caches import KeyCache
from storage.database import Pool
from storage.errors import StorageError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Account:
    """Who logged in: kept in the SMTP session, scoping everything it sends."""

    tenant_id: UUID
    api_key_id: UUID
    key_name: str
    domain_id: UUID | None  # a sending_access key may be limited to one domain


@dataclass(frozen=True, slots=True)
class Login:
    verdict: AuthVerdict
    account: Account | None  # set when the key is valid


class Logins:
    # Addresses remembered at most; the oldest are forgotten first. A scan from more addresses
    # than this gets no lockout for the excess, only the per-failure delay.
    MAX_ADDRESSES = 100_000

    def __init__(
        self, pool: Pool, limits: AuthLimits, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._pool = pool
        self._limits = limits
        self._clock = clock
        self._keys = KeyCache()
        self._failures: OrderedDict[str, FailureRecord] = OrderedDict()

    def refused(self, peer_ip: str | None) -> AuthVerdict | None:
        """A locked-out address is refused before it may send credentials."""
        key = auth_throttle.client_key(peer_ip)
        verdict = auth_throttle.before_login(self._failures.get(key), self._clock(), self._limits)
        if verdict is None:
            return None
        metrics.SUBMISSION_AUTH_ATTEMPTS.labels(verdict.outcome.value).inc()
        log.info("login refused: address locked out", extra={"client": key})
        return verdict

    async def login(self, peer_ip: str | None, mechanism: str, user: str, password: str) -> Login:
        key = auth_throttle.client_key(peer_ip)
        try:
            found = await self._keys.authenticate(self._pool, password) if password else None
        except StorageError as error:
            metrics.SUBMISSION_STORAGE_FAILURES.labels("auth").inc()
            log.warning("login not checked", extra={"client": key, "error": str(error)})
            record = self._failures.get(key)
            verdict = auth_throttle.lookup_failed(record, self._clock(), self._limits)
            return self._settled(key, verdict)
        # Read after the lookup, with no await until it is written back: failures of parallel
        # sessions from one address all count, and one that started a lockout meanwhile holds.
        record, now = self._failures.get(key), self._clock()
        locked = auth_throttle.before_login(record, now, self._limits)
        if locked is not None:
            return self._settled(key, locked)
        if found is None:
            verdict = auth_throttle.after_failure(record, now, self._limits)
            self._log_failure(key, mechanism, user, verdict)
            return self._settled(key, verdict)
        account = Account(found.tenant_id, found.id, found.name, found.domain_id)
        return self._settled(key, auth_throttle.after_success(record, now, self._limits), account)

    async def current(self, account: Account) -> Account | None:
        """The session's account as its key is now: None once the key is deleted, so a session
        kept open cannot outlive its key's revocation. StorageError when it cannot be read."""
        key = await self._keys.by_id(self._pool, account.api_key_id)
        if key is None or key.tenant_id != account.tenant_id:
            return None
        return Account(key.tenant_id, key.id, key.name, key.domain_id)

    def _settled(self, key: str, verdict: AuthVerdict, account: Account | None = None) -> Login:
        metrics.SUBMISSION_AUTH_ATTEMPTS.labels(verdict.outcome.value).inc()
        self._failures.pop(key, None)
        if verdict.record is not None:
            self._failures[key] = verdict.record  # last: the most recently failed is kept longest
            while len(self._failures) > self.MAX_ADDRESSES:
                self._failures.popitem(last=False)
        return Login(verdict, account)

    def _log_failure(self, key: str, mechanism: str, user: str, verdict: AuthVerdict) -> None:
        failures = verdict.record.failures if verdict.record is not None else 0
        # The user name is the client's text: printable characters only reach the log.
        shown = "".join(c if c.isprintable() else "?" for c in user[:64])
        details = {"client": key, "mechanism": mechanism, "user": shown, "failures": failures}
        if verdict.outcome is Outcome.LOCKOUT:
            metrics.SUBMISSION_AUTH_LOCKOUTS.inc()
            log.warning(
                "login failed: address locked out",
                extra={**details, "lockout_seconds": self._limits.lockout_seconds},
            )
        else:
            log.info("login failed", extra={**details, "delay_seconds": verdict.delay})
