"""Typed settings, read once from the environment and passed explicitly.

Every name here is part of the operator contract (DESIGN.md section 5);
`deploy/opensend.env.example` comments each one. A bad value raises `SettingsError`, which the
command line turns into exit code 2.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, unquote

from policy.aws.sns import DEFAULT_CERT_HOST_PATTERN
from policy.proxies import InvalidProxies, Network, parse_trusted


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and what was wrong."""


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class ParseLater(StrEnum):
    """When the MX stores plain mail before parsing its body (mta/mx/fill_in.py)."""

    BUSY = "busy"  # while other messages of the process are in DATA: a burst
    ALWAYS = "always"
    NEVER = "never"


class BareNewline(StrEnum):
    """What a DATA line ending in a bare LF (or holding a CR outside CRLF) gets."""

    # Refused, 550 5.5.2: RFC 5321 section 2.3.8 allows CR and LF only together, and a server
    # that takes anything else may read a line end where the next hop does not (SMTP smuggling).
    REJECT = "reject"
    # Taken as CRLF (a stray CR as a space), as Postfix 3.9's default, normalize, does.
    NORMALIZE = "normalize"


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int


class RelayTls(StrEnum):
    """How a relay (smarthost) session is protected."""

    OPPORTUNISTIC = "opportunistic"  # STARTTLS when offered (RFC 3207), unverified, as MTAs do
    STARTTLS = "starttls"  # STARTTLS or no delivery (RFC 3207 section 4)
    IMPLICIT = "implicit"  # TLS from the first byte (RFC 8314 section 3.3), port 465


@dataclass(frozen=True, slots=True)
class Relay:
    """OPENSEND_RELAY, parsed: where all outbound mail goes when no transport route applies."""

    host: str
    port: int
    tls: RelayTls
    verify: bool  # check the relay's certificate and name (when TLS is required, by default)
    cafile: Path | None
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class SesIngester:
    """The SES (S3 action, SNS notification) ingester. No topic: every notification is refused."""

    topic_arns: frozenset[str]
    # Full-matched against the host (with ":port" when not 443) of SigningCertURL and
    # SubscribeURL, the only places a certificate is fetched from or a GET is sent to.
    cert_host: re.Pattern[str]
    # A PEM bundle trusted, besides the system's CAs, for those HTTPS fetches.
    ca_file: Path | None
    # Older notifications are refused as replays (seconds).
    max_age: int
    s3_region: str | None  # None: botocore's own (AWS_REGION, the config file)
    s3_endpoint: str | None  # None: AWS's endpoint for the region
    # The buckets a notification may name; empty: any the credentials can read.
    s3_buckets: frozenset[str] = frozenset()

    @property
    def enabled(self) -> bool:
        return bool(self.topic_arns)

    def reads_bucket(self, bucket: str) -> bool:
        """Whether an object of `bucket` may be read. A notification that passed every check
        of its topic still names the bucket and key: with the list, a topic that takes other
        accounts' SES rules (a policy without aws:SourceAccount) cannot have the server read
        any other object its credentials reach into a tenant's mail."""
        return not self.s3_buckets or bucket in self.s3_buckets


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """Delivery of webhooks (mta/webhooks): retries, timeouts, caps and endpoint safety."""

    # Loopback, private, link-local and multicast endpoints allowed (development and tests).
    allow_private: bool
    # Whether `serve` and `serve --only mta` run the workers beside the MTA; off where other
    # hosts run `serve --only webhooks`.
    beside_mta: bool
    # Seconds between attempts after the first (Resend's: 5s, 5m, 30m, 2h, 5h, 10h, 10h).
    retry_schedule: tuple[int, ...]
    connect_timeout: float
    timeout: float  # the whole request: connect, send, the answer's status and first KiB
    # Requests in flight to one healthy endpoint, across every worker (one while it fails).
    # Sixteen: an endpoint 100 ms away then takes up to 160 events a second, where four held a
    # busy tenant's mail notices to 40; and the more requests end together, the more outcomes
    # share a cycle's statement (tests/perf/README.md, webhooks: a third less CPU an event).
    endpoint_concurrency: int
    lease: int  # seconds a worker owns a claimed delivery before another may take it over
    secret_grace: int  # seconds the old secret still signs after a rotation
    max_payload: int  # bytes of JSON body; larger payloads lose their attachment list
    # Seconds an event is kept once every delivery of it succeeded or failed for good.
    retention: int


@dataclass(frozen=True, slots=True)
class Settings:
    env: Environment
    data_dir: Path
    database_url: str | None
    hostname: str

    mx_listen: ListenAddress
    submission_listen: ListenAddress
    submissions_listen: ListenAddress
    api_listen: ListenAddress
    metrics_listen: ListenAddress

    tls_cert: Path | None
    tls_key: Path | None

    dns_servers: tuple[HostPort, ...]
    relay: str | None
    transports: Mapping[str, HostPort]
    retry_schedule: tuple[int, ...]
    max_queue_age: int
    # The port of MX hosts (RFC 5321 section 4.5.4: 25); tests point it at loopback sinks.
    smtp_port: int
    # How long a worker owns the deliveries it claimed before another may take them over.
    delivery_lease: int

    reply_token_secret: bytes | None
    reply_token_secrets_previous: tuple[bytes, ...]
    ingester_inbound_token: str | None

    # POST /events/inbound/ses-s3: Amazon SES receipt rules with an S3 action, announced by SNS.
    ses: SesIngester
    webhooks: WebhookSettings

    max_message_size: int
    # The bytes of message content one listener's sessions may hold in memory at once; past it
    # a message is deferred 452 4.3.1 (mta.smtp.data.DataBudget). At least max_message_size.
    data_memory: int
    max_recipients: int
    max_connections: int
    command_timeout: float
    data_timeout: float
    max_received_headers: int
    mx_processes: int
    # Whether the MX may store plain mail before parsing its body, filling it in after the
    # commit (OPENSEND_MX_PARSE_LATER).
    mx_parse_later: ParseLater
    # Whether a message with a bare LF or CR in it is refused or stored with CRLF line ends, on
    # the MX and the submission ports alike (OPENSEND_BARE_NEWLINE).
    bare_newline: BareNewline
    # Whether `serve` (and `serve --only mta`) runs the SPF/DKIM/DMARC/ARC checks of received
    # mail beside the MX; off where another host runs them (`serve --only authcheck`).
    auth_checks: bool

    # Submission logins (RFC 4954): failed AUTH attempts from one client address before it is
    # locked out, for how long, and the delay before answering the first failure (doubling).
    auth_max_failures: int
    auth_lockout: float
    auth_failure_delay: float

    # How long a stop (SIGTERM) may take: sessions and deliveries in flight finish within it,
    # then the database pool is terminated and the process exits. systemd's TimeoutStopSec must
    # be longer (mta/stopping.py adds a margin).
    shutdown_drain: float

    # The reverse proxies in front of the API whose X-Forwarded-For is believed
    # (policy.proxies): none by default, so the connection's peer is the client.
    trusted_proxies: tuple[Network, ...]

    log_level: str
    log_format: str

    # Not settings an operator writes, but facts the composition root needs.
    env_names: tuple[str, ...] = field(default=(), repr=False)

    @property
    def production(self) -> bool:
        return self.env is Environment.PRODUCTION

    @property
    def relay_route(self) -> Relay | None:
        return parse_relay("OPENSEND_RELAY", self.relay) if self.relay else None

    @property
    def tls_configured(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None


# Development listens on loopback and unprivileged ports so `opensend serve` runs without root;
# production listens on the standard ports (RFC 5321 section 4.5.4 port 25, RFC 6409 port 587,
# RFC 8314 port 465). The API stays on loopback in both, behind the operator's reverse proxy.
_DEFAULT_LISTEN = {
    Environment.DEVELOPMENT: {
        "OPENSEND_MX_LISTEN": "127.0.0.1:2525",
        "OPENSEND_SUBMISSION_LISTEN": "127.0.0.1:2587",
        "OPENSEND_SUBMISSIONS_LISTEN": "127.0.0.1:2465",
        "OPENSEND_API_LISTEN": "127.0.0.1:8025",
        "OPENSEND_METRICS_LISTEN": "127.0.0.1:9025",
    },
    Environment.PRODUCTION: {
        "OPENSEND_MX_LISTEN": "0.0.0.0:25",
        "OPENSEND_SUBMISSION_LISTEN": "0.0.0.0:587",
        "OPENSEND_SUBMISSIONS_LISTEN": "0.0.0.0:465",
        "OPENSEND_API_LISTEN": "127.0.0.1:8025",
        "OPENSEND_METRICS_LISTEN": "127.0.0.1:9025",
    },
}

DEFAULT_RETRY_SCHEDULE = "1m,5m,15m,1h,4h,12h"
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _is_number(text: str) -> bool:
    # str.isdigit() is true for "¹⁰⁰" too, which int() then refuses.
    return text.isascii() and text.isdecimal()


def parse_host_port(name: str, raw: str, default_port: int | None = None) -> HostPort:
    text = raw.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise SettingsError(f"{name}: {raw!r} opens '[' without closing it")
        if rest and not rest.startswith(":"):
            raise SettingsError(f"{name}: {raw!r} has {rest!r} after ']'; expected [host]:port")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise SettingsError(f"{name}: {raw!r} has no host")
    if not port_text:
        if default_port is None:
            raise SettingsError(f"{name}: {raw!r} needs a port, as host:port")
        return HostPort(host, default_port)
    if not _is_number(port_text) or not 0 <= int(port_text) <= 65535:
        raise SettingsError(f"{name}: {raw!r} has port {port_text!r}; expected 0 to 65535")
    return HostPort(host, int(port_text))


def parse_duration(name: str, raw: str) -> int:
    """'90s', '5m', '4h', '5d' or plain seconds, as whole seconds."""
    text = raw.strip().lower()
    unit = text[-1:] if text[-1:] in _DURATION_UNITS else "s"
    number = text[:-1] if text[-1:] in _DURATION_UNITS else text
    if not _is_number(number) or int(number) <= 0:
        raise SettingsError(f"{name}: {raw!r} is not a duration such as 90s, 5m, 4h or 5d")
    return int(number) * _DURATION_UNITS[unit]


def parse_delay(name: str, raw: str) -> float:
    """A short delay: '0', '250ms', '2s' or plain seconds, as seconds."""
    text = raw.strip().lower()
    scale, number = (0.001, text[:-2]) if text.endswith("ms") else (1.0, text.removesuffix("s"))
    if not _is_number(number):
        raise SettingsError(f"{name}: {raw!r} is not a delay such as 0, 500ms or 2s")
    return int(number) * scale


def _on_off(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("on", "true", "yes", "1"):
        return True
    if raw in ("off", "false", "no", "0"):
        return False
    raise SettingsError(f"{name}: {raw!r} is not one of on, off")


def _trusted_proxies(env: Mapping[str, str]) -> tuple[Network, ...]:
    try:
        return parse_trusted(env.get("OPENSEND_TRUSTED_PROXIES", ""))
    except InvalidProxies as problem:
        raise SettingsError(f"OPENSEND_TRUSTED_PROXIES: {problem}") from None


_Choice = TypeVar("_Choice", bound=StrEnum)


def _choice(env: Mapping[str, str], name: str, default: _Choice) -> _Choice:
    raw = env.get(name, "").strip().lower() or default.value
    try:
        return type(default)(raw)
    except ValueError:
        allowed = ", ".join(member.value for member in type(default))
        raise SettingsError(f"{name}: {raw!r} is not one of {allowed}") from None


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not _is_number(raw) or int(raw) < minimum:
        raise SettingsError(f"{name}: {raw!r} must be a whole number of at least {minimum}")
    return int(raw)


def _listen(env: Mapping[str, str], name: str, environment: Environment) -> ListenAddress:
    raw = env.get(name, "").strip() or _DEFAULT_LISTEN[environment][name]
    hp = parse_host_port(name, raw)
    return ListenAddress(hp.host, hp.port)


def _optional_path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw)
    # Checked now, as the user the server runs as: a key only root can read (certbot's default)
    # must stop the start with a clear message, not fail at the first STARTTLS.
    if not path.is_file() or not os.access(path, os.R_OK):
        raise SettingsError(f"{name}: {raw!r} is not a file this user can read")
    return path


def _transports(raw: str) -> dict[str, HostPort]:
    routes: dict[str, HostPort] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        domain, sep, target = item.partition("=")
        if not sep or not domain.strip() or not target.strip():
            raise SettingsError(
                f"OPENSEND_TRANSPORTS: {item!r} is not domain=host:port "
                "(for example example.net=127.0.0.1:2526)"
            )
        routes[domain.strip().lower().rstrip(".")] = parse_host_port(
            "OPENSEND_TRANSPORTS", target, default_port=25
        )
    return routes


# OPENSEND_RELAY schemes: how the session is protected, and the port when none is given.
_RELAY_SCHEMES = {
    "smtp": (RelayTls.OPPORTUNISTIC, 25),
    "smtp+starttls": (RelayTls.STARTTLS, 587),
    "smtps": (RelayTls.IMPLICIT, 465),
}
_RELAY_OPTIONS = ("verify", "cafile")


def parse_relay(name: str, raw: str) -> Relay:
    """`smtp://[user:pass@]host[:port]`, `smtp+starttls://...`, `smtps://...`, or a bare
    `host[:port]` (Postfix's relayhost form, read as smtp://). Options: `?verify=no` (do not
    check the certificate), `?cafile=/path.pem` (trust this CA for it).

    Credentials are only ever sent inside TLS (RFC 4954 section 4), so a plain `smtp://` URL
    with credentials requires STARTTLS; a relay that checks credentials gets a verified TLS
    session unless verify=no says otherwise.
    """
    text = raw.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "smtp", text
    scheme = scheme.lower()
    if scheme not in _RELAY_SCHEMES:
        raise SettingsError(
            f"{name}: scheme {scheme!r} is not one of {', '.join(_RELAY_SCHEMES)} "
            "(for example smtp+starttls://USER:PASSWORD@smtp.example.net:587)"
        )
    tls, default_port = _RELAY_SCHEMES[scheme]
    authority, _, query = rest.partition("?")
    userinfo, at, hostport_text = authority.rpartition("@")
    if "/" in hostport_text or "#" in hostport_text:
        raise SettingsError(f"{name}: {raw!r} has a path; expected scheme://host:port")
    hostport = parse_host_port(name, hostport_text, default_port=default_port)
    user_text, colon, password_text = userinfo.partition(":")
    username = unquote(user_text) if at and user_text else None
    password = unquote(password_text) if at and colon else None
    options = parse_qs(query, keep_blank_values=True)
    for option in options:
        if option not in _RELAY_OPTIONS:
            raise SettingsError(f"{name}: unknown option {option!r}; known: verify, cafile")
    if username is not None and tls is RelayTls.OPPORTUNISTIC:
        tls = RelayTls.STARTTLS
    # Opportunistic TLS is not verified, as between MTAs (RFC 7435); required TLS is.
    default_verify = "no" if tls is RelayTls.OPPORTUNISTIC else "yes"
    verify_text = options.get("verify", [default_verify])[-1].lower()
    if verify_text not in ("yes", "no"):
        raise SettingsError(f"{name}: verify={verify_text!r} must be yes or no")
    cafile = Path(options["cafile"][-1]) if options.get("cafile") else None
    if cafile is not None and not cafile.is_file():
        raise SettingsError(f"{name}: cafile {str(cafile)!r} is not a readable file")
    return Relay(
        host=hostport.host,
        port=hostport.port,
        tls=tls,
        verify=verify_text == "yes",
        cafile=cafile,
        username=username,
        password=password,
    )


def _smtp_port(env: Mapping[str, str]) -> int:
    raw = env.get("OPENSEND_SMTP_PORT", "").strip() or "25"
    if not _is_number(raw) or not 1 <= int(raw) <= 65535:
        raise SettingsError(f"OPENSEND_SMTP_PORT: {raw!r} is not a port from 1 to 65535")
    return int(raw)


def _secret(name: str, raw: str) -> bytes:
    value = raw.strip()
    if len(value) < 32:
        raise SettingsError(f"{name}: must be at least 32 characters (use `openssl rand -hex 32`)")
    return value.encode()


# An SNS topic ARN (arn:aws:sns:us-east-1:123456789012:ses-inbound), in any AWS partition.
_TOPIC_ARN = re.compile(r"arn:aws(-[a-z]+)*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}")
DEFAULT_SES_MAX_AGE = "75m"
# Amazon S3's bucket naming rules: 3 to 63 characters, lowercase letters, digits, dots, hyphens,
# starting and ending with a letter or digit.
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


# Resend's schedule (resend.com/docs/webhooks/retries-and-replays): after the first attempt.
DEFAULT_WEBHOOK_RETRY_SCHEDULE = "5s,5m,30m,2h,5h,10h,10h"


def _webhook_settings(env: Mapping[str, str], environment: Environment) -> WebhookSettings:
    schedule_raw = (
        env.get("OPENSEND_WEBHOOK_RETRY_SCHEDULE", "").strip() or DEFAULT_WEBHOOK_RETRY_SCHEDULE
    )

    def seconds(name: str, default: str) -> int:
        return parse_duration(name, env.get(name, "").strip() or default)

    settings = WebhookSettings(
        allow_private=_on_off(
            env, "OPENSEND_WEBHOOK_ALLOW_PRIVATE", environment is Environment.DEVELOPMENT
        ),
        beside_mta=_on_off(env, "OPENSEND_WEBHOOK_WORKERS", True),
        retry_schedule=tuple(
            parse_duration("OPENSEND_WEBHOOK_RETRY_SCHEDULE", step)
            for step in schedule_raw.split(",")
        ),
        connect_timeout=float(seconds("OPENSEND_WEBHOOK_CONNECT_TIMEOUT", "5s")),
        timeout=float(seconds("OPENSEND_WEBHOOK_TIMEOUT", "15s")),
        endpoint_concurrency=_int(env, "OPENSEND_WEBHOOK_ENDPOINT_CONCURRENCY", 16),
        lease=seconds("OPENSEND_WEBHOOK_LEASE", "1m"),
        secret_grace=seconds("OPENSEND_WEBHOOK_SECRET_GRACE", "24h"),
        max_payload=_int(env, "OPENSEND_WEBHOOK_MAX_PAYLOAD", 256 * 1024, minimum=4096),
        retention=seconds("OPENSEND_WEBHOOK_RETENTION", "30d"),
    )
    if settings.lease <= settings.timeout:
        # A request still running when its lease ends would be sent again by another worker.
        raise SettingsError(
            "OPENSEND_WEBHOOK_LEASE: must be longer than OPENSEND_WEBHOOK_TIMEOUT "
            f"({settings.lease}s is not more than {settings.timeout:g}s)"
        )
    return settings


def _names(
    env: Mapping[str, str], name: str, form: re.Pattern[str], not_one: str
) -> frozenset[str]:
    """A comma-separated list of names, each of `form`; SettingsError naming the first that
    is not (`not_one` says what it should be)."""
    names = frozenset(item.strip() for item in env.get(name, "").split(",") if item.strip())
    for item in sorted(names):
        if form.fullmatch(item) is None:
            raise SettingsError(f"{name}: {item!r} {not_one}")
    return names


def _ses_ingester(env: Mapping[str, str]) -> SesIngester:
    topics = _names(
        env,
        "OPENSEND_SES_TOPIC_ARNS",
        _TOPIC_ARN,
        "is not an SNS topic ARN (for example arn:aws:sns:eu-west-1:123456789012:ses-inbound)",
    )
    pattern = env.get("OPENSEND_SES_CERT_HOST_PATTERN", "").strip() or DEFAULT_CERT_HOST_PATTERN
    try:
        cert_host = re.compile(pattern)
    except re.error as error:
        raise SettingsError(
            f"OPENSEND_SES_CERT_HOST_PATTERN: {pattern!r} is not a regular expression ({error})"
        ) from None
    region = env.get("OPENSEND_SES_S3_REGION", "").strip() or None
    if region is not None and re.fullmatch(r"[a-z0-9-]+", region) is None:
        raise SettingsError(f"OPENSEND_SES_S3_REGION: {region!r} is not a region name")
    endpoint = env.get("OPENSEND_SES_S3_ENDPOINT", "").strip() or None
    if endpoint is not None and re.fullmatch(r"https?://[^/?#@\s]+/?", endpoint) is None:
        raise SettingsError(
            f"OPENSEND_SES_S3_ENDPOINT: {endpoint!r} is not http(s)://host[:port] "
            "(for example https://s3.eu-west-1.amazonaws.com)"
        )
    buckets = _names(
        env,
        "OPENSEND_SES_S3_BUCKETS",
        _S3_BUCKET,
        "is not an S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens)",
    )
    return SesIngester(
        topic_arns=topics,
        cert_host=cert_host,
        ca_file=_optional_path(env, "OPENSEND_SES_CA_FILE"),
        max_age=parse_duration(
            "OPENSEND_SES_MAX_AGE",
            env.get("OPENSEND_SES_MAX_AGE", "").strip() or DEFAULT_SES_MAX_AGE,
        ),
        s3_region=region,
        s3_endpoint=endpoint,
        s3_buckets=buckets,
    )


def check_serve(settings: Settings, only: str | None) -> None:
    """What `opensend serve` needs beyond what every command needs; SettingsError if missing.

    The submission ports (part of the MTA) let clients log in only over TLS (RFC 8314, RFC 4954
    section 4), so production needs a certificate before listening on them. Development
    generates a self-signed one instead (mta.smtp.tls). Administration commands do not need one.
    """
    if only in (None, "mta") and settings.production and not settings.tls_configured:
        raise SettingsError(
            "OPENSEND_TLS_CERT and OPENSEND_TLS_KEY: required when OPENSEND_ENV=production, "
            "for the submission ports (587 STARTTLS, 465 TLS), where clients log in only over "
            "TLS (a certificate for OPENSEND_HOSTNAME, e.g. from Let's Encrypt)"
        )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting once; raise SettingsError naming the first bad one."""
    env = os.environ if env is None else env

    raw_env = env.get("OPENSEND_ENV", "development").strip().lower() or "development"
    try:
        environment = Environment(raw_env)
    except ValueError:
        raise SettingsError(
            f"OPENSEND_ENV: {raw_env!r} is not one of development, production"
        ) from None

    secret_raw = env.get("OPENSEND_REPLY_TOKEN_SECRET", "")
    secret = _secret("OPENSEND_REPLY_TOKEN_SECRET", secret_raw) if secret_raw.strip() else None
    if secret is None and environment is Environment.PRODUCTION:
        # DESIGN.md section 4: no built-in default in production, or tokens would be forgeable
        # by anyone who read the source and would die with every deploy.
        raise SettingsError(
            "OPENSEND_REPLY_TOKEN_SECRET: required when OPENSEND_ENV=production "
            "(generate one with `openssl rand -hex 32`)"
        )
    previous = tuple(
        _secret("OPENSEND_REPLY_TOKEN_SECRET_PREVIOUS", item)
        for item in env.get("OPENSEND_REPLY_TOKEN_SECRET_PREVIOUS", "").split(",")
        if item.strip()
    )

    database_url = env.get("OPENSEND_DATABASE_URL", "").strip() or None
    if database_url is None and environment is Environment.PRODUCTION:
        # The embedded cluster is a development convenience, not a place for customers' mail.
        raise SettingsError(
            "OPENSEND_DATABASE_URL: required when OPENSEND_ENV=production "
            "(postgresql://user:password@host/dbname)"
        )
    hostname = env.get("OPENSEND_HOSTNAME", "").strip()
    if not hostname and environment is Environment.PRODUCTION:
        # It names us in the banner, in Received fields and in HELO (RFC 5321 section 4.1.4);
        # a guessed "localhost" or container id breaks forward-confirmed reverse DNS checks.
        raise SettingsError(
            "OPENSEND_HOSTNAME: required when OPENSEND_ENV=production (the MX's public name)"
        )

    tls_cert = _optional_path(env, "OPENSEND_TLS_CERT")
    tls_key = _optional_path(env, "OPENSEND_TLS_KEY")
    if (tls_cert is None) != (tls_key is None):
        raise SettingsError("OPENSEND_TLS_CERT and OPENSEND_TLS_KEY must be set together")

    dns_servers = tuple(
        parse_host_port("OPENSEND_DNS_SERVERS", item, default_port=53)
        for item in env.get("OPENSEND_DNS_SERVERS", "").split(",")
        if item.strip()
    )

    schedule_raw = env.get("OPENSEND_RETRY_SCHEDULE", "").strip() or DEFAULT_RETRY_SCHEDULE
    retry_schedule = tuple(
        parse_duration("OPENSEND_RETRY_SCHEDULE", step) for step in schedule_raw.split(",")
    )

    relay = env.get("OPENSEND_RELAY", "").strip() or None
    if relay is not None:
        parse_relay("OPENSEND_RELAY", relay)  # a bad URL stops the start, not the first delivery

    log_format = env.get("OPENSEND_LOG_FORMAT", "").strip().lower() or (
        "json" if environment is Environment.PRODUCTION else "text"
    )
    if log_format not in ("json", "text"):
        raise SettingsError(f"OPENSEND_LOG_FORMAT: {log_format!r} is not one of json, text")
    log_level = env.get("OPENSEND_LOG_LEVEL", "").strip().upper() or "INFO"
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(
            f"OPENSEND_LOG_LEVEL: {log_level!r} is not one of DEBUG, INFO, WARNING, ERROR"
        )

    ingester_token = env.get("INGESTER_INBOUND_TOKEN", "").strip() or None
    # 25 MiB, a common MX ceiling; advertised in EHLO SIZE (RFC 1870).
    max_message_size = _int(env, "OPENSEND_MAX_MESSAGE_SIZE", 26_214_400)

    return Settings(
        env=environment,
        data_dir=Path(env.get("OPENSEND_DATA_DIR", "").strip() or ".opensend").resolve(),
        database_url=database_url,
        hostname=hostname or socket.getfqdn(),
        mx_listen=_listen(env, "OPENSEND_MX_LISTEN", environment),
        submission_listen=_listen(env, "OPENSEND_SUBMISSION_LISTEN", environment),
        submissions_listen=_listen(env, "OPENSEND_SUBMISSIONS_LISTEN", environment),
        api_listen=_listen(env, "OPENSEND_API_LISTEN", environment),
        # `serve --only mta` has no API; it serves /metrics and /healthz here instead.
        metrics_listen=_listen(env, "OPENSEND_METRICS_LISTEN", environment),
        tls_cert=tls_cert,
        tls_key=tls_key,
        dns_servers=dns_servers,
        relay=relay,
        transports=_transports(env.get("OPENSEND_TRANSPORTS", "")),
        retry_schedule=retry_schedule,
        max_queue_age=parse_duration(
            "OPENSEND_MAX_QUEUE_AGE", env.get("OPENSEND_MAX_QUEUE_AGE", "").strip() or "5d"
        ),
        smtp_port=_smtp_port(env),
        # How long a crashed worker's deliveries wait before another worker takes them over.
        # A live worker renews its leases while it works, so a slow session never loses them.
        delivery_lease=parse_duration(
            "OPENSEND_DELIVERY_LEASE", env.get("OPENSEND_DELIVERY_LEASE", "").strip() or "2m"
        ),
        reply_token_secret=secret,
        reply_token_secrets_previous=previous,
        ingester_inbound_token=ingester_token,
        ses=_ses_ingester(env),
        webhooks=_webhook_settings(env, environment),
        max_message_size=max_message_size,
        # Twenty of the largest messages at once (500 MiB at the default size) before a
        # message is deferred; an MX with more memory to give may raise it.
        data_memory=_int(env, "OPENSEND_DATA_MEMORY", 20 * max_message_size, max_message_size),
        # RFC 5321 section 4.5.3.1.8: a server must accept at least 100 recipients.
        max_recipients=_int(env, "OPENSEND_MAX_RECIPIENTS", 100),
        max_connections=_int(env, "OPENSEND_MAX_CONNECTIONS", 500),
        # RFC 5321 section 4.5.3.2: 5 minutes for commands, 10 minutes between DATA blocks.
        command_timeout=float(
            parse_duration(
                "OPENSEND_COMMAND_TIMEOUT", env.get("OPENSEND_COMMAND_TIMEOUT", "").strip() or "5m"
            )
        ),
        data_timeout=float(
            parse_duration(
                "OPENSEND_DATA_TIMEOUT", env.get("OPENSEND_DATA_TIMEOUT", "").strip() or "10m"
            )
        ),
        # Postfix's hopcount_limit is 50; RFC 5321 section 6.3 asks for loop detection by count.
        max_received_headers=_int(env, "OPENSEND_MAX_RECEIVED_HEADERS", 50),
        mx_processes=_int(env, "OPENSEND_MX_PROCESSES", 1),
        mx_parse_later=_choice(env, "OPENSEND_MX_PARSE_LATER", ParseLater.BUSY),
        bare_newline=_choice(env, "OPENSEND_BARE_NEWLINE", BareNewline.REJECT),
        auth_checks=_on_off(env, "OPENSEND_AUTH_CHECKS", True),
        # Dovecot's and Postfix's anvil-style defaults are of this order: a person who mistypes
        # a key a few times is not locked out; a guesser gets a handful of tries per quarter hour.
        auth_max_failures=_int(env, "OPENSEND_AUTH_MAX_FAILURES", 5),
        auth_lockout=float(
            parse_duration(
                "OPENSEND_AUTH_LOCKOUT", env.get("OPENSEND_AUTH_LOCKOUT", "").strip() or "15m"
            )
        ),
        auth_failure_delay=parse_delay(
            "OPENSEND_AUTH_FAILURE_DELAY",
            env.get("OPENSEND_AUTH_FAILURE_DELAY", "").strip() or "1s",
        ),
        shutdown_drain=float(_int(env, "OPENSEND_SHUTDOWN_DRAIN_SECONDS", 20)),
        trusted_proxies=_trusted_proxies(env),
        log_level=log_level,
        log_format=log_format,
        env_names=tuple(sorted(name for name in env if name.startswith("OPENSEND_"))),
    )
