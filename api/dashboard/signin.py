"""Sign-in, sign-out and the list of one's sessions; failed sign-ins are slowed down and then
locked out per client address by the same rules as submission AUTH (policy.submission.throttle)."""

from __future__ import annotations

import asyncio
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp import web

from api.context import POOL, client_ip
from api.dashboard.context import PREFIX, SESSION, PageNotFound, path_id, render, see_other
from policy.dashboard import account_limits, totp
from policy.dashboard import sessions as rules
from policy.dashboard.account_limits import AccountFailures
from policy.dashboard.passwords import verify_password
from policy.submission import throttle as auth_throttle
from policy.submission.throttle import AuthLimits, FailureRecord, Outcome
from storage.dashboard import sessions, users

routes = web.RouteTableDef()


class LoginThrottle:
    """Failures remembered per client address (an IPv6 /64 counts as one) and per account
    (policy.dashboard.account_limits, with the device tokens of browsers that signed in), in
    this process."""

    MAX_ADDRESSES = 100_000  # and as many accounts
    DEVICES_PER_ACCOUNT = 5

    def __init__(self, limits: AuthLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._failures: OrderedDict[str, FailureRecord] = OrderedDict()
        self._checking: dict[str, int] = {}  # sign-ins being checked now, per address
        self._accounts: OrderedDict[str, AccountFailures] = OrderedDict()
        self._accounts_checking: dict[str, int] = {}  # sign-ins being checked, per account
        self._devices: OrderedDict[str, list[str]] = OrderedDict()  # per account, newest last

    def locked_out(self, ip: str | None) -> bool:
        key = auth_throttle.client_key(ip)
        return (
            auth_throttle.before_login(self._failures.get(key), self._clock(), self.limits)
            is not None
        )

    def begin(self, ip: str | None, account: str, device: str | None) -> str | None:
        """None when a sign-in from `ip` for `account` (account_limits.account_key) may be
        checked now (then `end` it), else what to tell the person. Not while the address is
        locked out, nor past as many at once as failures are left before a lockout: a password
        check takes a while (argon2), and sign-ins sent together would otherwise all be checked
        before the first failure is counted, however low the limit. The same per account
        (account_limits.refusal_wait), except from a browser that signed in to it before."""
        key = auth_throttle.client_key(ip)
        now = self._clock()
        record = auth_throttle.current(self._failures.get(key), now, self.limits)
        if auth_throttle.before_login(record, now, self.limits) is not None:
            return LOCKED_OUT_TEXT
        failed = record.failures if record is not None else 0
        if failed + self._checking.get(key, 0) >= self.limits.max_failures:
            return BUSY_TEXT
        if not self._known_device(account, device):
            in_flight = self._accounts_checking.get(account, 0)
            wait = account_limits.refusal_wait(self._accounts.get(account), in_flight, now)
            if wait is not None:
                return ACCOUNT_SLOWED_TEXT.format(seconds=math.ceil(wait))
        self._checking[key] = self._checking.get(key, 0) + 1
        self._accounts_checking[account] = self._accounts_checking.get(account, 0) + 1
        return None

    def end(self, ip: str | None, account: str) -> None:
        _count_down(self._checking, auth_throttle.client_key(ip))
        _count_down(self._accounts_checking, account)

    def failed(self, ip: str | None, account: str) -> tuple[Outcome, float]:
        """Remember a failure, of the address and of the account: the outcome, and how long
        to wait before answering."""
        key = auth_throttle.client_key(ip)
        now = self._clock()
        verdict = auth_throttle.after_failure(self._failures.get(key), now, self.limits)
        if verdict.record is not None:
            _remember(self._failures, key, verdict.record, self.MAX_ADDRESSES)
        counted = account_limits.after_failure(self._accounts.get(account), now)
        _remember(self._accounts, account, counted, self.MAX_ADDRESSES)
        return verdict.outcome, verdict.delay

    def succeeded(self, account: str) -> str:
        """The account's user signed in: this browser gets a device token (returned, for its
        cookie) that spares it the account's slowdown. The failures stay until they expire:
        they may be someone else's, whose count a sign-in of the owner must not start again."""
        device = rules.new_secret()
        devices = [*self._devices.get(account, [])[-(self.DEVICES_PER_ACCOUNT - 1) :], device]
        _remember(self._devices, account, devices, self.MAX_ADDRESSES)
        return device

    def _known_device(self, account: str, device: str | None) -> bool:
        known = self._devices.get(account, [])
        return device is not None and any(hmac.compare_digest(device, d) for d in known)


def _count_down(counts: dict[str, int], key: str) -> None:
    left = counts.pop(key, 1) - 1
    if left:
        counts[key] = left


def _remember(records: OrderedDict[str, Any], key: str, record: Any, most: int) -> None:
    """The newest record last; past `most`, the oldest forgotten."""
    records[key] = record
    records.move_to_end(key)
    while len(records) > most:
        records.popitem(last=False)


THROTTLE = web.AppKey("dashboard_login_throttle", LoginThrottle)

LOCKED_OUT_TEXT = (
    "Too many failed sign-ins from your address. Wait a quarter of an hour and try again."
)
WRONG_TEXT = "Wrong email address, password or code."
BUSY_TEXT = "Too many sign-ins from your address at once. Wait a moment and try again."
# RFC 5321 section 4.5.3.1.3's longest path, less its brackets: no account has a longer address.
MAX_EMAIL_LENGTH = 254
# The browser's proof that its user signed in to an account here before (account_limits).
DEVICE_COOKIE = "__Host-opensend_device"
DEVICE_COOKIE_ATTRIBUTES = {**rules.cookie_attributes(), "max_age": 180 * 86400}
ACCOUNT_SLOWED_TEXT = (
    "Too many failed sign-ins for this account. Wait {seconds} seconds and try again."
)


def _next_path(value: str | None) -> str:
    """Only a path of the dashboard itself: `next` must not send anyone elsewhere."""
    if value and value.startswith(PREFIX + "/") and not value.startswith("//"):
        return value
    return PREFIX + "/emails"


@routes.get("/login")
async def login_form(request: web.Request) -> web.Response:
    return render(request, "login.html", {"next": _next_path(request.query.get("next"))})


@routes.post("/login")
async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    email, password = str(form.get("email", "")).strip(), str(form.get("password", ""))
    next_path = _next_path(str(form.get("next", "")))
    throttle = request.app[THROTTLE]
    ip = client_ip(request)
    pool = request.app[POOL]
    if len(email) > MAX_EMAIL_LENGTH:  # no account has one: refused unchecked, unremembered
        page = {"error": WRONG_TEXT, "email": "", "next": next_path}
        return render(request, "login.html", page, status=401)
    account = account_limits.account_key(await users.compared_email(pool, email))
    refusal = throttle.begin(ip, account, request.cookies.get(DEVICE_COOKIE))
    if refusal is not None:
        page = {"error": refusal, "email": email, "next": next_path}
        return render(request, "login.html", page, status=429)
    try:
        user = await users.find_user(pool, email) if email else None
        loop = asyncio.get_running_loop()
        valid = await loop.run_in_executor(
            None, verify_password, user.password_hash if user else None, password
        )
        if valid and user is not None and user.totp_secret is not None:
            # Two-factor: the code of this time step (or one either side), used at most once.
            step = totp.matching_step(user.totp_secret, str(form.get("code", "")))
            valid = step is not None and await users.use_totp_step(pool, user.id, step)
        if user is None or not valid:
            outcome, delay = throttle.failed(ip, account)
            await asyncio.sleep(delay)  # RFC 4954 section 4's advice for AUTH, applied here too
            locked = outcome is Outcome.LOCKOUT
            return render(
                request,
                "login.html",
                {
                    "error": LOCKED_OUT_TEXT if locked else WRONG_TEXT,
                    "email": email,
                    "next": next_path,
                },
                status=429 if locked else 401,
            )
        if throttle.locked_out(ip):  # a sign-in checked beside this one started a lockout
            page = {"error": LOCKED_OUT_TEXT, "email": email, "next": next_path}
            return render(request, "login.html", page, status=429)
    finally:
        throttle.end(ip, account)
    device = throttle.succeeded(account)
    secret = rules.new_secret()
    await sessions.create_session(
        pool,
        secret=secret,
        user_id=user.id,
        tenant_id=user.tenant_id,
        csrf_token=rules.new_secret(),
        lifetime_seconds=rules.LIFETIME_SECONDS,
        user_agent=request.headers.get("User-Agent", "")[:300] or None,
        remote_ip=ip,
    )
    response = see_other(next_path)
    response.set_cookie(rules.COOKIE_NAME, secret, **rules.cookie_attributes())  # type: ignore[arg-type]
    response.set_cookie(DEVICE_COOKIE, device, **DEVICE_COOKIE_ATTRIBUTES)  # type: ignore[arg-type]
    raise response


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    session = request[SESSION]
    await sessions.revoke_session(request.app[POOL], session.user_id, session.id)
    response = see_other(PREFIX + "/login")
    # A browser takes a `__Host-` cookie's removal only with the same Secure attribute.
    response.del_cookie(rules.COOKIE_NAME, path="/", secure=True, httponly=True, samesite="Lax")
    raise response


@routes.get("/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    session = request[SESSION]
    found = await sessions.list_sessions(request.app[POOL], session.user_id)
    return render(request, "sessions.html", {"sessions": found, "current": session.id})


@routes.post("/sessions/{id}/revoke")
async def revoke(request: web.Request) -> web.StreamResponse:
    session = request[SESSION]
    if not await sessions.revoke_session(request.app[POOL], session.user_id, path_id(request)):
        raise PageNotFound()
    raise see_other(PREFIX + "/sessions")
