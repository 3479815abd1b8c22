"""The `opensend` command: the composition root, where settings, storage and listeners meet.

It is the one module that knows every part (it starts the API beside the MX), so it may import
`api`; nothing else in `mta/` does. Exit codes: 0 done, 1 the operation failed (the message says
why), 2 bad configuration or usage (systemd does not restart on 2).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any
from uuid import UUID

from mta.dns import Resolver
from mta.logs import configure_logging
from policy.dashboard import totp
from policy.dashboard.passwords import WeakPassword, hash_password
from policy.domains import dkim_keys
from policy.domains.names import DomainNameError, normalize_domain
from policy.domains.public import DomainView
from policy.domains.records import Status, records_to_publish, setup_of, with_last_results
from policy.settings import Settings, SettingsError, check_serve, load_settings
from storage.account import directory, domains
from storage.account.domains import DomainDetails
from storage.dashboard import users as dashboard_users
from storage.database import Pool, open_pool
from storage.embedded import embedded_database_url, stop_embedded
from storage.errors import Conflict, StorageError
from storage.migrate import MigrationError, migrate
from storage.sending import replies

log = logging.getLogger("opensend")

MIGRATE_WAIT_SECONDS = 60.0

EXIT_FAILED = 1
EXIT_CONFIG = 2


class CommandError(Exception):
    """The operation cannot be done as asked; the message tells the operator what to change."""


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    return embedded_database_url(settings.data_dir)


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, UUID):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(_jsonable(payload), indent=2))
    else:
        print(text)


async def _with_pool(settings: Settings, work: Callable[[Pool], Coroutine[Any, Any, None]]) -> None:
    url = database_url(settings)
    await migrate(url)
    pool = await open_pool(url, min_size=1, max_size=2)
    try:
        await work(pool)
    finally:
        await pool.close()


async def _tenant_id(pool: Pool, name_or_id: str) -> UUID:
    tenant = await directory.find_tenant(pool, name_or_id)
    if tenant is None:
        raise CommandError(
            f"no tenant named {name_or_id!r}; create it with `opensend tenant create`"
        )
    return tenant.id


# -- administration ---------------------------------------------------------------------------


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    # `opensend migrate` runs first at boot (systemd's migrate unit): wait for the database
    # rather than fail, for a bounded time.
    applied = await migrate(database_url(settings), wait=MIGRATE_WAIT_SECONDS)
    emit(
        args,
        {"applied": applied},
        "applied: " + ", ".join(applied) if applied else "schema is up to date",
    )


async def cmd_tenant_create(settings: Settings, args: argparse.Namespace) -> None:
    async def work(pool: Pool) -> None:
        try:
            tenant = await directory.create_tenant(pool, args.name)
        except StorageError as error:
            raise CommandError(f"tenant {args.name!r} not created: {error}") from error
        emit(args, asdict(tenant), f"tenant {tenant.name} created: {tenant.id}")

    await _with_pool(settings, work)


async def cmd_tenant_set_limit(settings: Settings, args: argparse.Namespace) -> None:
    limit = None if args.limit == "none" else int(args.limit)
    if limit is not None and limit < 0:
        raise CommandError("the limit is a number of emails (0 or more), or `none`")

    async def work(pool: Pool) -> None:
        tenant_id = await _tenant_id(pool, args.name)
        await replies.set_sending_limit(pool, tenant_id, limit)
        shown = "unlimited" if limit is None else f"{limit} emails a month (UTC calendar month)"
        emit(args, {"tenant_id": tenant_id, "monthly_send_limit": limit}, f"{args.name}: {shown}")

    await _with_pool(settings, work)


def _limit(text: str) -> str:
    if text != "none" and not text.isdigit():
        raise argparse.ArgumentTypeError("a number of emails, or `none` for no limit")
    return text


def records_payload(settings: Settings, domain: DomainDetails) -> list[dict[str, Any]]:
    """The records to publish, with the last check's result for each (policy.domains.records)."""
    specs = records_to_publish(setup_of(domain), settings.hostname)
    return [check.as_json() for check in with_last_results(specs, domain.records)]


def record_lines(records: list[dict[str, Any]]) -> list[str]:
    """One line per record, marked by its status, and what was wrong under it."""
    marks = {"verified": "ok", "failed": "FAIL", "temporary_failure": "TEMP"}
    lines = []
    for record in records:
        optional = " (suggested)" if record["record"] == "DMARC" else ""
        priority = f"{record['priority']} " if "priority" in record else ""
        mark = marks.get(record["status"], "")
        value = f"{priority}{record['value']}{optional}"
        lines.append(f"  {mark:<4} {record['type']:<4} {record['name']}  {value}")
        lines += [f"         found: {value}" for value in record.get("found", [])]
        if record.get("reason"):
            lines.append(f"         {record['reason']}")
    return lines


def _domain_name(text: str, what: str = "domain") -> str:
    try:
        return normalize_domain(text)
    except DomainNameError as error:
        raise CommandError(f"bad {what}: {error}") from None


async def cmd_domain_add(settings: Settings, args: argparse.Namespace) -> None:
    name = _domain_name(args.domain)
    reply_domain = _domain_name(args.reply_domain, "reply domain") if args.reply_domain else None
    if reply_domain and not args.receiving:
        raise CommandError("--reply-domain needs --receiving: replies arrive by receiving mail")

    async def work(pool: Pool) -> None:
        tenant_id = await _tenant_id(pool, args.tenant)
        try:
            domain = await domains.insert_domain(
                pool,
                tenant_id,
                name,
                receiving=args.receiving,
                reply_domain=reply_domain,
                verified=args.verified,
                dkim=dkim_keys.generate_key_pair(),  # the private key stays in the database
                event_data=DomainView(settings.hostname).event_data,
            )
        except StorageError as error:
            raise CommandError(f"domain {name} not added: {error}") from error
        records = records_payload(settings, domain)
        lines = [f"domain {domain.name} added: {domain.id}"]
        if not domain.verified:
            lines.append(
                f"not verified yet: publish these records, then `opensend domain verify {name}`"
            )
        lines += record_lines(records)
        emit(args, {**asdict(domain), "records": records}, "\n".join(lines))

    await _with_pool(settings, work)


async def cmd_domain_verify(settings: Settings, args: argparse.Namespace) -> None:
    # Imported here: api.app imports prometheus_client, which must not load before `serve`
    # has chosen its multiprocess directory (see run_server).
    from api.account.domains import verify_domain

    name = _domain_name(args.domain)

    async def work(pool: Pool) -> None:
        claims = await domains.find_domains_by_name(pool, name)
        if not claims:
            raise CommandError(f"no domain named {name}; add it with `opensend domain add`")
        resolver = Resolver(settings.dns_servers)
        view = DomainView(settings.hostname)
        # Several tenants may have claimed the name: the one whose DKIM key is published is
        # verified (each claim has its own key); the verified one, if any, is checked first.
        for claim in claims:
            try:
                domain, check = await verify_domain(pool, resolver, view, claim)
            except Conflict as refused:
                raise CommandError(f"{name}: {refused}") from None
            if check.status is not Status.FAILED:
                break  # verified, or DNS did not answer: no other claim can be told apart
        records = [record.as_json() for record in check.records]
        payload = {
            "id": domain.id,
            "name": domain.name,
            "status": check.status.value,
            "verified": domain.verified,
            "records": records,
        }
        emit(args, payload, "\n".join([f"{name}: {check.status.value}", *record_lines(records)]))
        if check.status is Status.TEMPORARY_FAILURE:
            raise CommandError(f"{name}: DNS did not answer every lookup; try again later")
        if check.status is not Status.VERIFIED:
            wrong = ", ".join(f"{c.spec.purpose.value} at {c.spec.name}" for c in check.problems)
            raise CommandError(f"{name} is not verified: fix {wrong}")

    await _with_pool(settings, work)


async def cmd_route_add(settings: Settings, args: argparse.Namespace) -> None:
    address = args.address.lower()
    local, at, domain_name = address.rpartition("@")
    if not at or not local or not domain_name:
        raise CommandError(f"{args.address!r} is not local@domain or *@domain")

    async def work(pool: Pool) -> None:
        tenant_id = await _tenant_id(pool, args.tenant)
        try:
            route = await directory.add_route(pool, tenant_id, address, args.to)
        except StorageError as error:
            raise CommandError(f"route {address} not added: {error}") from error
        target = f" -> {route.target}" if route.target else ""
        emit(args, asdict(route), f"route {route.address}{target} added ({route.kind})")

    await _with_pool(settings, work)


async def cmd_apikey_create(settings: Settings, args: argparse.Namespace) -> None:
    async def work(pool: Pool) -> None:
        tenant_id = await _tenant_id(pool, args.tenant)
        key, secret = await directory.create_api_key(pool, tenant_id, args.name)
        emit(
            args,
            {**asdict(key), "token": secret},
            f"API key {key.name} created: {secret}\n(shown once; only its hash is stored)",
        )

    await _with_pool(settings, work)


def read_password() -> str:
    """Asked twice at a terminal; from a script, the first line of standard input."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != password:
        raise CommandError("the two passwords differ; nothing was created")
    return password


async def cmd_user_create(settings: Settings, args: argparse.Namespace) -> None:
    try:
        password_hash = hash_password(read_password())
    except WeakPassword as error:
        raise CommandError(f"user {args.email} not created: {error}") from None

    async def work(pool: Pool) -> None:
        tenant_id = await _tenant_id(pool, args.tenant)
        try:
            user = await dashboard_users.create_user(pool, tenant_id, args.email, password_hash)
        except StorageError as error:
            raise CommandError(f"user {args.email} not created: {error}") from error
        emit(
            args,
            {"id": user.id, "email": user.email, "tenant_id": user.tenant_id},
            f"dashboard user {user.email} created: {user.id}",
        )

    await _with_pool(settings, work)


async def cmd_user_totp(settings: Settings, args: argparse.Namespace) -> None:
    secret = None if args.off else totp.new_secret()

    async def work(pool: Pool) -> None:
        if not await dashboard_users.set_totp(pool, args.email, secret):
            raise CommandError(f"no dashboard user {args.email}; create it with `user create`")
        if secret is None:
            emit(args, {"email": args.email, "totp": False}, f"two-factor off for {args.email}")
            return
        uri = totp.provisioning_uri(secret, args.email)
        emit(
            args,
            {"email": args.email, "totp": True, "secret": secret, "uri": uri},
            f"two-factor on for {args.email}; add it to an authenticator app (shown once):\n{uri}",
        )

    await _with_pool(settings, work)


async def cmd_db_url(settings: Settings, args: argparse.Namespace) -> None:
    print(database_url(settings))


async def cmd_db_stop(settings: Settings, args: argparse.Namespace) -> None:
    if settings.database_url:
        raise CommandError("OPENSEND_DATABASE_URL is set: that database is not ours to stop")
    stopped = stop_embedded(settings.data_dir)
    print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")


async def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    raise AssertionError("serve runs through run_server(), on its own event loop")


def run_server(settings: Settings, only: str | None) -> None:
    check_serve(settings, only)  # before anything listens: a refusal is exit code 2
    if only in (None, "mta", "authcheck"):
        # The MTA part always has a second process (the auth checks), and more MX processes
        # with OPENSEND_MX_PROCESSES. Must be set before prometheus_client is imported (it picks
        # its value store then), so every process writes samples where /metrics merges them.
        metrics_dir = settings.data_dir / "metrics"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in metrics_dir.glob("*.db"):
            stale.unlink()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    from mta.event_loop import run_in_loop
    from mta.serve import serve

    url = database_url(settings)
    run_in_loop(lambda: serve(settings, only, url))


# -- argument parsing ------------------------------------------------------------------------

Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, None]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opensend", description="OpenSend MTA: a mail server with reply threading built in."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Command, help_text: str, parent: Any = commands) -> Any:
        sub = parent.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(func=func)
        sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        return sub

    serve = add("serve", cmd_serve, "run the server (MX, submission, delivery, API, metrics)")
    serve.add_argument(
        "--only",
        choices=["mta", "api", "authcheck", "webhooks"],
        help="run one part only (authcheck: the SPF/DKIM/DMARC/ARC checks of received mail; "
        "webhooks: webhook delivery)",
    )
    add("migrate", cmd_migrate, "apply database migrations")

    tenant = commands.add_parser("tenant", help="manage tenants").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add("create", cmd_tenant_create, "create a tenant", tenant).add_argument("name")
    set_limit = add(
        "set-limit",
        cmd_tenant_set_limit,
        "set the plan's monthly sending limit (sends past it answer 429, submission 450)",
        tenant,
    )
    set_limit.add_argument("name", help="tenant name or id")
    set_limit.add_argument("limit", type=_limit, help="emails per calendar month, or `none`")

    domain = commands.add_parser("domain", help="manage domains").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    domain_add = add("add", cmd_domain_add, "add a domain to a tenant", domain)
    domain_add.add_argument("domain")
    domain_add.add_argument("--tenant", required=True, help="tenant name or id")
    domain_add.add_argument("--receiving", action="store_true", help="receive mail for it here")
    domain_add.add_argument("--reply-domain", help="subdomain for reply addresses")
    domain_add.add_argument(
        "--verified", action="store_true", help="skip the DNS check (development and tests only)"
    )
    domain_verify = add(
        "verify", cmd_domain_verify, "check a domain's DNS records; exit 1 unless verified", domain
    )
    domain_verify.add_argument("domain")

    route = commands.add_parser("route", help="manage receiving routes").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    route_add = add("add", cmd_route_add, "route an address (or *@domain) to a tenant", route)
    route_add.add_argument("address", help="local@domain, or *@domain for a catch-all")
    route_add.add_argument("--tenant", required=True, help="tenant name or id")
    route_add.add_argument("--to", help="make it an alias: store its mail under this address")

    apikey = commands.add_parser("apikey", help="manage API keys").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    apikey_create = add("create", cmd_apikey_create, "create an API key", apikey)
    apikey_create.add_argument("--tenant", required=True, help="tenant name or id")
    apikey_create.add_argument("--name", default="default", help="a name to recognise it by")

    user = commands.add_parser("user", help="manage dashboard users").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    user_create = add(
        "create",
        cmd_user_create,
        "create a dashboard user (password asked, or read from standard input)",
        user,
    )
    user_create.add_argument("email")
    user_create.add_argument("--tenant", required=True, help="tenant name or id")
    user_totp = add(
        "totp", cmd_user_totp, "turn two-factor sign-in on (prints a new secret) or off", user
    )
    user_totp.add_argument("email")
    user_totp.add_argument("--off", action="store_true", help="turn it off")

    db = commands.add_parser("db", help="the database").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add("url", cmd_db_url, "print the database URL (for psql)", db)
    add("stop", cmd_db_stop, "stop the embedded development database", db)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"opensend: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.log_format)
    try:
        if args.command == "serve":
            run_server(settings, args.only)
        else:
            asyncio.run(args.func(settings, args))
    except SettingsError as error:
        print(f"opensend: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except (CommandError, MigrationError) as error:
        print(f"opensend: {error}", file=sys.stderr)
        return EXIT_FAILED
    except StorageError as error:
        print(f"opensend: database error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
