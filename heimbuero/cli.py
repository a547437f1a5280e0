"""The `heimbuero` command line: init a data directory, manage users, run the server."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy.exc import SQLAlchemyError

from heimbuero import __version__, config
from heimbuero.app import Actor, App, AppError, Invalid
from heimbuero.app._util import country_of
from heimbuero.config import Config, ConfigError
from heimbuero.domain.model import AGENT_STATUSES, Trunk
from heimbuero.net.mail import Mailer
from heimbuero.office import accounts, callpolicy, directory
from heimbuero.ops import logsetup
from heimbuero.sip.locate import is_address
from heimbuero.sip.peer import host_port
from heimbuero.store import SchemaError, Store, StoreError
from heimbuero.store.records import CallRecord, audio_quality

PROG = "heimbuero"
ERROR_PREFIX = f"{PROG}: error: "


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line starting with 'heimbuero: error: ' (exit 2)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{ERROR_PREFIX}{message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _fail(message: str) -> int:
    """Print one error line on stderr; the exit status for errors that are not usage errors."""
    sys.stderr.write(f"{ERROR_PREFIX}{' '.join(message.split())}\n")
    return 1


# -- argument types ------------------------------------------------------------------------


def _listen_type(spec: str) -> tuple[config.ListenAddress, ...]:
    try:
        return config.parse_listen(spec)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _log_levels_type(spec: str) -> str:
    try:
        logsetup.parse_levels(spec)
    except logsetup.LogSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec


def _http_type(spec: str) -> str:
    try:
        config.parse_host_port(spec.strip(), what="HTTP listen address")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec.strip()


def _is_domain(value: str) -> bool:
    """True for an IPv4 address or a DNS host name (labels of a-z, 0-9 and inner hyphens)."""
    try:
        return ipaddress.ip_address(value).version == 4
    except ValueError:
        pass
    if not value or len(value) > 253:
        return False
    return all(
        0 < len(label) < 64
        and label[0] != "-"
        and label[-1] != "-"
        and all(c.isascii() and (c.isalnum() or c == "-") for c in label)
        for label in value.split(".")
    )


def _domain_type(value: str) -> str:
    domain = value.strip().lower()
    if not _is_domain(domain):
        raise argparse.ArgumentTypeError(
            f"invalid domain {value!r}: expected a host name such as office.example.org "
            "or an IPv4 address"
        )
    return domain


def default_domain() -> str:
    """This machine's fully qualified host name in lower case, or 'localhost'."""
    try:
        fqdn = socket.getfqdn().strip().lower().rstrip(".")
    except OSError:
        return "localhost"
    return fqdn if _is_domain(fqdn) else "localhost"


def _warn_dotless_domain(domain: str, data_dir: Path) -> None:
    """Say on stderr that the SIP domain taken from the host name is not a qualified name."""
    sys.stderr.write(
        f"{PROG}: warning: this machine's name ({socket.gethostname()!r}) has no domain part, "
        f"so the SIP domain is {domain!r}, not a fully qualified name; to choose another, "
        f"set [server] domain in {data_dir / config.CONFIG_FILE} before adding users "
        "(or run 'heimbuero init --domain NAME' on a new data directory)\n"
    )


# -- helpers -------------------------------------------------------------------------------


def _write_new(path: Path, text: str, mode: int = 0o666, exact: bool = False) -> None:
    """Create a file that must not exist yet; `exact` sets `mode` regardless of the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        if exact:
            os.fchmod(fd, mode)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _sql_message(exc: SQLAlchemyError) -> str:
    """The driver's one-line reason for a database error."""
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).splitlines()[0]


@contextmanager
def _open_store(data_arg: str | None) -> Iterator[tuple[Config, Store]]:
    """The config and the store of an initialised data directory with a current schema."""
    cfg = config.load(config.resolve_data_dir(data_arg))
    init_hint = f"run 'heimbuero init --data {cfg.data_dir}'"
    where = cfg.db_path if cfg.uses_sqlite_file else _hide_password(cfg.db_url)
    if cfg.uses_sqlite_file and not cfg.db_path.is_file():
        raise ConfigError(f"{cfg.db_path} is missing: {init_hint}")
    store = Store(cfg.db_url)
    try:
        if not store.schema_is_current():
            raise SchemaError(f"the database schema of {where} is not current: {init_hint}")
        yield cfg, store
    except SQLAlchemyError as exc:
        raise StoreError(f"database {where}: {_sql_message(exc)}") from None
    finally:
        store.close()


# The command line acts as the local admin: whoever may open the data directory runs it.
ADMIN = Actor.local_admin()


def _server_secret(cfg: Config) -> bytes | None:
    """The data directory's `secret` (None when it is missing: commands that need it say so)."""
    try:
        return bytes.fromhex(cfg.secret_path.read_text().strip())
    except (OSError, ValueError):
        return None


@contextmanager
def _open_app(data_arg: str | None) -> Iterator[tuple[Config, App]]:
    """The config and the application's handlers over the data directory's store."""
    with _open_store(data_arg) as (cfg, store):

        def own_sip_address(host: str, port: int) -> str | None:
            own = config.own_sip_address(cfg, host, port)
            return None if own is None else str(own)

        hint = f"[sip] in {cfg.data_dir / config.CONFIG_FILE}"
        yield (
            cfg,
            App.build(
                store,
                lambda: cfg.domain,
                own_sip_address=own_sip_address,
                own_hint=hint,
                invoice_mail=Mailer(cfg.mail).deliver,  # `invoices send`: [mail] of config.toml
                data_dir=cfg.data_dir,
                secret=_server_secret(cfg),
            ),
        )


# -- commands ------------------------------------------------------------------------------


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_init(args: argparse.Namespace) -> int:
    """Create the data directory, config.toml, secret, files/ and the database; keep what exists."""
    data_dir = config.resolve_data_dir(args.data)
    if data_dir.exists() and not data_dir.is_dir():
        return _fail(f"{data_dir} exists and is not a directory")
    config_path = data_dir / config.CONFIG_FILE
    if config_path.exists():
        cfg = config.load(data_dir)
        if args.domain is not None and args.domain != cfg.domain:
            return _fail(
                f"{data_dir} is already set up for domain {cfg.domain!r}, not {args.domain!r}; "
                f"change [server] domain in {config_path} to switch"
            )
        if args.database_url is not None and (
            config.check_database_url(args.database_url) != cfg.db_url
        ):
            return _fail(
                f"{data_dir} already uses the database {cfg.db_url!r}; "
                f"change [store] database_url in {config_path} to switch"
            )
        print(f"kept     {config_path} (domain {cfg.domain})")
    else:
        if args.database_url is not None:
            config.check_database_url(args.database_url)
        domain = args.domain or default_domain()
        if args.domain is None and "." not in domain:
            _warn_dotless_domain(domain, data_dir)
        # The database holds HA1 hashes, which let anyone who reads them register as that user.
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_new(config_path, config.default_config_text(domain, args.database_url))
        cfg = config.load(data_dir)
        print(f"created  {config_path} (domain {cfg.domain})")

    if cfg.secret_path.exists():
        print(f"kept     {cfg.secret_path}")
    else:
        _write_new(cfg.secret_path, secrets.token_hex(32), 0o600, exact=True)
        print(f"created  {cfg.secret_path}")

    _init_tls(cfg)

    files_dir = data_dir / config.FILES_DIR
    if files_dir.is_dir():
        print(f"kept     {files_dir}/")
    else:
        files_dir.mkdir()
        print(f"created  {files_dir}/")

    existed = cfg.db_path.exists() or not cfg.uses_sqlite_file
    if not existed:  # SQLite gives its -wal and -shm files the mode of the database file
        _write_new(cfg.db_path, "", 0o600, exact=True)
    store = Store(cfg.db_url)
    try:
        current = existed and store.schema_is_current()
        if not current:
            from heimbuero.ops.upgrade import upgrade_with_backup

            saved = upgrade_with_backup(cfg, store)  # a backup first when a migration is pending
            if saved is not None:
                print(f"backup   {saved} (before the schema upgrade)")
    except SQLAlchemyError as exc:
        where = cfg.db_path if cfg.uses_sqlite_file else _hide_password(cfg.db_url)
        return _fail(f"database {where}: {_sql_message(exc)}")
    finally:
        store.close()
    verb = "kept    " if current else ("migrated" if existed else "created ")
    print(f"{verb} {cfg.db_path if cfg.uses_sqlite_file else _hide_password(cfg.db_url)}")
    if args.demo:
        _seed_demo(cfg)
    return 0


def _init_tls(cfg: config.Config) -> None:
    """Make a self-signed SIP TLS certificate when none exists; show the fingerprint to pin."""
    from heimbuero.net.tls import file_fingerprint, generate_self_signed

    cert, key = cfg.tls_cert_path, cfg.tls_key_path
    if cert.exists() != key.exists():
        there, missing = (cert, key) if cert.exists() else (key, cert)
        print(f"kept     {there} ({missing} is missing: put it back, or remove {there} and run "
              "init again for a new self-signed pair)")  # fmt: skip
        return
    if cert.exists():
        try:
            fp = file_fingerprint(cert)
        except (OSError, ValueError) as exc:
            print(f"kept     {cert} (unreadable: {exc})")
        else:
            print(f"kept     {cert} (SHA-256 {fp})")
        return
    names = [cfg.domain, (cfg.sip.advertise or "").strip("[]")]
    names += [a.host for a in cfg.sip.listen if a.host not in ("0.0.0.0", "::")]
    cert.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fp = generate_self_signed(cert, key, names)
    print(f"created  {cert} (self-signed for {', '.join(dict.fromkeys(n for n in names if n))})")
    print(f"created  {key}")
    print(f"SIP TLS certificate SHA-256 fingerprint: {fp}")


def cmd_user_add(args: argparse.Namespace) -> int:
    """Add a user."""
    with _open_app(args.data) as (cfg, app):
        user = app.users.create(ADMIN, args.name, args.password, args.role)
    print(f"added user {user.name} (role {user.role}, SIP address sip:{user.name}@{cfg.domain})")
    if user.name != args.name:
        print(
            f"note: user names are lower case: {args.name!r} was added as {user.name!r}; "
            f"phones must use {user.name!r} (the name is part of the SIP digest)"
        )
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    """Set a user's password."""
    with _open_app(args.data) as (_cfg, app):
        name = app.users.set_password(ADMIN, args.name, args.password)
    print(f"changed the password of user {name}")
    return 0


def cmd_user_status(args: argparse.Namespace) -> int:
    """Set an agent's own status (as the local admin)."""
    with _open_app(args.data) as (_cfg, app):
        status = app.agents.set(ADMIN, args.name, args.status)
    print(f"status of {status.user}: {status.status}")
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    """Remove a user and its registrations."""
    with _open_app(args.data) as (_cfg, app):
        name = app.users.remove(ADMIN, args.name)
    print(f"removed user {name}")
    return 0


def cmd_user_totp(args: argparse.Namespace) -> int:
    """Show, give or take away a user's second factor (TOTP) for the web console."""
    with _open_app(args.data) as (_cfg, app):
        sf = app.second_factor
        if args.action == "enable":
            e = sf.assign(ADMIN, args.name)
            print(f"second factor of {e.user}: on (a new secret; the old one, if any, is void)")
            print(f"secret   {e.secret}")
            print(f"uri      {e.uri}")
            if args.qr:
                import segno

                segno.make(e.uri, error="m").terminal(compact=True)
            print(f"backup   {' '.join(e.backup_codes)}")
            print(
                "hand it over in person; it is not shown again (each backup code logs in "
                "once without the phone)"
            )
        elif args.action == "disable":
            had = sf.reset(ADMIN, args.name)
            print(f"second factor of {args.name}: off" + ("" if had else " (it had none)"))
        else:
            state = sf.state(ADMIN, args.name)
            text = "off" if state is None else "on" if state.enabled else "pending first code"
            if state is not None and state.enabled:
                left = state.backup_left
                text += f", {left} unused backup code{'' if left == 1 else 's'}"
            print(f"second factor of {args.name}: {text}")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    """Print a table of users with their current registrations."""
    with _open_app(args.data) as (_cfg, app):
        users = app.users.list(ADMIN)
        counts = app.users.registrations(ADMIN, time.time())
    if not users:
        print("no users yet: add one with 'heimbuero user add NAME --password PW'")
        return 0
    rows = [("NAME", "ROLE", "CREATED (UTC)", "REGISTRATIONS")]
    rows += [
        (u.name, u.role, u.created_at.strftime("%Y-%m-%d %H:%M"), str(counts.get(u.name, 0)))
        for u in users
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server with the data directory's config, overridden by --sip / --http."""
    cfg = config.load(config.resolve_data_dir(args.data))
    if args.sip is not None:
        cfg = replace(cfg, sip=replace(cfg.sip, listen=args.sip))
    if args.http is not None:
        cfg = replace(cfg, http=replace(cfg.http, listen=args.http))
    if args.log_level is not None:
        cfg = replace(cfg, log_level=args.log_level)
    if args.log_format is not None:
        cfg = replace(cfg, log_format=args.log_format)
    try:
        from heimbuero.server import run
    except ModuleNotFoundError as exc:
        if exc.name != "heimbuero.server":
            raise
        return _fail("this installation has no server module (heimbuero.server)")
    return run(cfg)


# -- office commands -----------------------------------------------------------------------


def _plural(count: int, word: str) -> str:
    """'1 number', '2 numbers'."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _split(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(f"{c:<{w}}" for c, w in zip(r, widths, strict=False)) + "  " + r[-1])


def _seed_demo(cfg: Config) -> None:
    from heimbuero.office.demo import seed_demo

    with _open_store(str(cfg.data_dir)) as (_cfg, store):
        if store.list_clients():
            print("kept     the office data (it has clients already; no demo seeded)")
            return
        passwords = seed_demo(store, cfg.domain)
    print("seeded   the demo office (see README, 'Demo'); passwords, shown only this once:")
    width = max(len(n) for n in passwords)
    for name, password in passwords.items():
        print(f"  {name:<{width}}  {password}")
    print("change one with 'heimbuero user passwd NAME --password PW'")


def cmd_rules_export(args: argparse.Namespace) -> int:
    """Print a client's rules document (YAML, or JSON with --json)."""
    from heimbuero.office.rules_doc import to_yaml

    with _open_app(args.data) as (_cfg, app):
        doc = app.rules.document(ADMIN, args.client)
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(to_yaml(doc))
    return 0


def cmd_rules_import(args: argparse.Namespace) -> int:
    """Replace a client's rules with a document; every problem is reported, nothing changed."""
    from heimbuero.office.rules_doc import MAX_DOCUMENT_BYTES, RulesError, from_text

    client = directory.validate_slug(args.client)
    limit, size = MAX_DOCUMENT_BYTES, 0
    try:  # the size is checked before the text is read: never more than the limit in memory
        if args.file == "-":
            raw = sys.stdin.buffer.read(limit + 1)
        else:
            with Path(args.file).open("rb") as f:
                size = os.fstat(f.fileno()).st_size  # (0 for a pipe or a device)
                raw = f.read(limit + 1) if size <= limit else b""
        if size > limit or len(raw) > limit:
            what = f"{size} bytes" if size > limit else f"more than {limit} bytes"
            return _fail(
                f"{args.file}: {what}: a rules document may have at most {limit} bytes; "
                "nothing changed"
            )
        text = raw.decode("utf-8")
    except OSError as exc:
        return _fail(f"cannot read rules document {args.file}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        return _fail(f"cannot read rules document {args.file}: it is not UTF-8 text")
    with _open_app(args.data) as (_cfg, app):
        try:
            doc = from_text(text)
            if not isinstance(doc, dict):
                return _fail(f"{args.file}: the rules document must be a mapping")
            parsed = app.rules.replace(ADMIN, client, doc)
        except RulesError as exc:
            problems = list(getattr(exc, "problems", [])) or [("", str(exc))]
            return _rules_problems(args.file, problems)
        except Invalid as exc:
            if not exc.document:
                raise
            return _rules_problems(args.file, [(p.field, p.msg) for p in exc.problems])
    count = sum(len(n.rules) for n in parsed.values())
    numbers = _plural(len(parsed), "number")
    print(f"imported {_plural(count, 'rule')} for {numbers} of client {client}")
    return 0


def _draft_problems(file: str, problems: list[tuple[str, str]]) -> int:
    for where, message in problems:
        sys.stderr.write(f"{ERROR_PREFIX}{file}: {where}: {message}\n")
    return 1


def cmd_client_holidays(args: argparse.Namespace) -> int:
    """The public holidays of the client's Bundesland for the coming months."""
    with _open_app(args.data) as (_cfg, app):
        days = app.forwarding.holidays(ADMIN, args.id, args.months)
    if args.json:
        print(json.dumps([d.to_json() for d in days], ensure_ascii=False))
        return 0
    for d in days:
        print(f"{d.day:%d.%m.%Y}  {d.name}")
    if not days:
        print(f"no public holidays in the coming {args.months} months")
    return 0


def cmd_client_closures(args: argparse.Namespace) -> int:
    """List, add (--add FIRST [LAST]) or remove (--remove ID) a client's closures."""
    with _open_app(args.data) as (_cfg, app):
        if args.add:
            first, last = args.add[0], (args.add[1] if len(args.add) > 1 else None)
            if len(args.add) > 2:
                return _fail("--add takes FIRST and at most LAST")
            c = app.closures.add(ADMIN, args.id, first, last, args.note)
            print(f"closed {c.client} from {c.first:%d.%m.%Y} to {c.last:%d.%m.%Y} (id {c.id})")
            return 0
        if args.remove is not None:
            app.closures.remove(ADMIN, args.id, args.remove)
            print(f"removed closure {args.remove} of {args.id}")
            return 0
        rows = app.closures.list(ADMIN, args.id)
    if args.json:
        print(json.dumps([c.to_json() for c in rows], ensure_ascii=False))
    elif not rows:
        print(f"no closures for {args.id}")
    else:
        _table([("ID", "FIRST", "LAST", "NOTE")] + [
            (str(c.id), f"{c.first:%d.%m.%Y}", f"{c.last:%d.%m.%Y}", c.note) for c in rows
        ])  # fmt: skip
    return 0


def cmd_client_override(args: argparse.Namespace) -> int:
    """Show, set (office | mobile [--until WHEN]) or cancel (off) a client's override."""
    from datetime import datetime as _dt
    from zoneinfo import ZoneInfo

    with _open_app(args.data) as (_cfg, app):
        if args.target is None:
            st = app.overrides.get(ADMIN, args.id)
        elif args.target == "off":
            app.overrides.clear(ADMIN, args.id)
            print(f"override of {args.id} cancelled")
            return 0
        else:
            until = None
            if args.until:
                try:
                    until = _dt.fromisoformat(args.until.strip())
                except ValueError:
                    return _fail(f"invalid --until {args.until!r}: expected '2026-12-24 14:00'")
            try:
                st = app.overrides.set(ADMIN, args.id, args.target, until)
            except Invalid as exc:
                return _fail(f"--until {args.until}: {exc}")
        tz = app.clients.get(ADMIN, args.id).client.timezone
    o = st.override
    end = "until cancelled"
    if o.until is not None:
        end = f"until {o.until.astimezone(ZoneInfo(tz)):%d.%m.%Y %H:%M} ({tz})"
    state = "active" if st.active else "expired"
    print(f"{o.client}: everything to {o.target} {end} ({state})")
    return 0


def _rules_problems(file: str, problems: list[tuple[str, str]]) -> int:
    for where, message in problems:
        sys.stderr.write(f"{ERROR_PREFIX}{file}: {where}: {message}\n")
    sys.stderr.write(f"{ERROR_PREFIX}{file}: rules not imported, nothing changed\n")
    return 1


def cmd_route_simulate(args: argparse.Namespace) -> int:
    """Show which rule a call to NUMBER matches and the steps it rings."""
    with _open_app(args.data) as (_cfg, app):
        if args.draft is None:
            plan = app.simulator.simulate(ADMIN, args.number, args.at, args.caller)
        else:  # an unsaved rules document: the client is the one it names
            from heimbuero.office.rules_doc import MAX_DOCUMENT_BYTES, RulesError, from_text

            try:
                with Path(args.draft).open("rb") as f:
                    raw = f.read(MAX_DOCUMENT_BYTES + 1)
                doc = from_text(raw.decode("utf-8"))
            except OSError as exc:
                return _fail(f"cannot read rules document {args.draft}: {exc.strerror or exc}")
            except UnicodeDecodeError:
                return _fail(f"cannot read rules document {args.draft}: it is not UTF-8 text")
            except RulesError as exc:
                return _draft_problems(args.draft, list(exc.problems))
            client = doc.get("client") if isinstance(doc, dict) else None
            if not isinstance(client, str):
                return _fail(f"{args.draft}: the rules document must name its client")
            try:
                plan = app.forwarding.simulate(
                    ADMIN, client, args.number, args.at, doc, args.caller
                )
            except Invalid as exc:
                if not exc.document:
                    raise
                return _draft_problems(args.draft, [(p.field, p.msg) for p in exc.problems])
    if args.json:
        print(json.dumps(plan.to_json(), ensure_ascii=False))
        return 0
    print(f"number  {plan.number}")
    print(f"client  {plan.client or '-'}")
    print(f"rule    {plan.rule if plan.rule is not None else '(provider default plan)'}")
    print(f"why     {plan.reason}")
    if plan.dictation:
        print("steps   none: the call starts dictation by phone")
    elif not plan.steps:
        print("steps   none: the call is refused")
    for i, step in enumerate(plan.steps, 1):
        print(f"step {i}  ring {', '.join(step.target_texts())} for {step.timeout} s")
    return 0


def cmd_client_add(args: argparse.Namespace) -> int:
    with _open_app(args.data) as (_cfg, app):
        client = app.clients.create(
            ADMIN, args.id, args.name, trade=args.trade, contact_person=args.contact,
            greeting=args.greeting, notes=args.notes, timezone=args.timezone,
            bundesland=args.bundesland,
        ).client  # fmt: skip
    print(f"added client {client.id} ({client.name}, {client.bundesland}, {client.timezone})")
    return 0


def _policy_line(client: str, p: callpolicy.CallPolicy) -> str:
    allowed = sorted(callpolicy.DEFAULT_ALLOWED | p.allow)
    return (
        f"client {client}: calls out to {', '.join(allowed)}"
        f"{'; prefixes ' + ', '.join(p.allow_prefixes) if p.allow_prefixes else ''}"
        f"{'; never ' + ', '.join(p.deny_prefixes) if p.deny_prefixes else ''}; "
        f"at most {callpolicy.client_max_concurrent(p)} at once and "
        f"{callpolicy.client_max_minutes(p)} minutes a day; approved for forwarding: "
        f"{', '.join(p.approved_numbers) or 'none'}"
    )


def _policy_changes(args: argparse.Namespace, policy: callpolicy.CallPolicy) -> dict[str, Any]:
    """The policy as JSON with the options of `client policy` / `trunk set` applied."""
    data = policy.to_json()
    for opt, key in (("allow", "allow"), ("allow_prefixes", "allow_prefixes"),
                     ("deny_prefixes", "deny_prefixes")):  # fmt: skip
        value = getattr(args, opt, None)
        if value is not None:
            data[key] = _split(value)
    for opt in ("max_concurrent", "max_minutes_per_day"):
        value = getattr(args, opt, None)
        if value is not None:
            data[opt] = None if value < 0 else value
    return {k: v for k, v in data.items() if v not in (None, [])}


def cmd_client_policy(args: argparse.Namespace) -> int:
    """Show or change a client's policy for calls out."""
    client_id = directory.validate_slug(args.id)
    with _open_app(args.data) as (_cfg, app):
        policy = app.clients.change_call_policy(
            ADMIN, client_id, lambda old: _policy_changes(args, old)
        )
    print(_policy_line(client_id, policy))
    return 0


def cmd_client_approve(args: argparse.Namespace) -> int:
    """Approve (or with --revoke withdraw) an external number for a client's forwarding."""
    client_id = directory.validate_slug(args.id)
    with _open_app(args.data) as (_cfg, app):
        number = directory.validate_e164(args.number, "number", country_of(app.clients.store))
        if args.revoke:
            app.clients.withdraw_number(ADMIN, client_id, number)
        else:
            try:
                app.clients.approve_number(ADMIN, client_id, number)
            except Invalid as exc:
                hint = f"heimbuero client policy {client_id} --allow CLASS"
                return _fail(f"{number}: {str(exc).lower()} for {client_id} (allow it: {hint})")
    done = "withdrew the approval of" if args.revoke else "approved"
    print(f"{done} {number} for forwarding of client {client_id}")
    return 0


def cmd_client_vip(args: argparse.Namespace) -> int:
    """List, set or remove a client's VIP callers."""
    with _open_app(args.data) as (_cfg, app):
        if args.remove:
            vips = app.clients.remove_vip(ADMIN, args.id, args.remove)
        elif args.number:
            if not args.name:
                return _fail("give the caller's name: heimbuero client vip ID NUMBER --name NAME")
            vips = app.clients.set_vip(ADMIN, args.id, args.number, args.name, args.remark)
        else:
            vips = app.clients.get(ADMIN, args.id).client.vip_callers
    if not vips:
        print(f"client {args.id}: no VIP callers")
        return 0
    _table([("NUMBER", "NAME", "REMARK")] + [(v.number, v.name, v.remark or "-") for v in vips])
    return 0


def cmd_client_list(args: argparse.Namespace) -> int:
    with _open_app(args.data) as (_cfg, app):
        clients = app.clients.list(ADMIN)
    if not clients:
        print("no clients yet: add one with 'heimbuero client add ID --name NAME'")
        return 0
    rows = [("ID", "NAME", "BUNDESLAND", "TIMEZONE", "NUMBERS")]
    rows += [
        (i.client.id, i.client.name, i.client.bundesland, i.client.timezone,
         ", ".join(i.numbers) or "-")
        for i in clients
    ]  # fmt: skip
    _table(rows)
    return 0


def cmd_client_remove(args: argparse.Namespace) -> int:
    with _open_app(args.data) as (_cfg, app):
        client = app.clients.remove(ADMIN, args.id)
    print(f"removed client {client} with its numbers, rules and override")
    return 0


def cmd_number_add(args: argparse.Namespace) -> int:
    with _open_app(args.data) as (_cfg, app):
        number = app.numbers.add(ADMIN, args.number, args.client, args.dictation)
    kind = "dictation number" if number.dictation else "number"
    print(f"added {kind} {number.e164} to client {number.client}")
    return 0


def cmd_number_set(args: argparse.Namespace) -> int:
    with _open_app(args.data) as (_cfg, app):
        number = app.numbers.set_dictation(ADMIN, args.number, args.dictation)
    kind = "the dictation number" if number.dictation else "an ordinary number"
    print(f"{number.e164} is now {kind} of client {number.client}")
    return 0


def cmd_number_list(args: argparse.Namespace) -> int:
    with _open_app(args.data) as (_cfg, app):
        numbers = app.numbers.list(ADMIN, args.client)
    if not numbers:
        print("no numbers yet: add one with 'heimbuero number add NUMBER --client ID'")
        return 0
    rows = [(n.e164, n.client, "dictation" if n.dictation else "calls") for n in numbers]
    _table([("NUMBER", "CLIENT", "USE"), *rows])
    return 0


def cmd_number_remove(args: argparse.Namespace) -> int:
    with _open_app(args.data) as (_cfg, app):
        e164 = app.numbers.remove(ADMIN, args.number)
    print(f"removed number {e164}")
    return 0


def cmd_user_set(args: argparse.Namespace) -> int:
    """Set a user's client, display name and mobile."""
    changes = {
        key: value
        for key, value in (("client", args.client), ("display_name", args.display_name),
                           ("mobile", args.mobile))
        if value is not None
    }  # fmt: skip
    with _open_app(args.data) as (_cfg, app):
        user = app.users.update(ADMIN, args.name, allow_rfc2069=args.allow_rfc2069, **changes)
    print(
        f"user {user.name}: client {user.client or '-'}, display name "
        f"{user.display_name or '-'}, mobile {user.mobile or '-'}"
    )
    if args.allow_rfc2069 is not None:
        state = "allowed" if args.allow_rfc2069 else "refused"
        print(f"user {user.name}: digests without qop (RFC 2069) {state}")
    return 0


def cmd_group_add(args: argparse.Namespace) -> int:
    with _open_app(args.data) as (_cfg, app):
        group = app.groups.create(ADMIN, args.name, args.strategy, _split(args.members))
    members = ", ".join(group.members) or "no members"
    print(f"added group {group.name} ({group.strategy}): {members}")
    return 0


def cmd_group_set(args: argparse.Namespace) -> int:
    members = None if args.members is None else _split(args.members)
    with _open_app(args.data) as (_cfg, app):
        group = app.groups.update(ADMIN, args.name, args.strategy, members)
    print(f"group {group.name} ({group.strategy}): {', '.join(group.members) or 'no members'}")
    return 0


def cmd_group_list(args: argparse.Namespace) -> int:
    with _open_app(args.data) as (_cfg, app):
        groups = app.groups.list(ADMIN)
    if not groups:
        print("no groups yet: add one with 'heimbuero group add NAME --members a,b'")
        return 0
    _table(
        [("NAME", "STRATEGY", "MEMBERS")]
        + [(g.name, g.strategy, ", ".join(g.members) or "-") for g in groups]
    )
    return 0


def cmd_group_remove(args: argparse.Namespace) -> int:
    with _open_app(args.data) as (_cfg, app):
        app.groups.remove(ADMIN, args.name)
    print(f"removed group {args.name}")
    return 0


def _trunk_changes(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.transport is not None:
        changes["transport"] = directory.validate_trunk_transport(args.transport)
    if args.address is not None:
        changes["host"], changes["port"] = directory.parse_address(args.address)
        if not re.search(r":\d+$", args.address.strip()):
            if changes.get("transport") == "tls":
                changes["port"] = 5061  # SIP over TLS (RFC 3261 §26)
            elif not is_address(changes["host"]):
                changes["port"] = 0  # a name without a port: by its SRV records (RFC 3263)
    if args.prefixes is not None:
        changes["prefixes"] = tuple(directory.validate_prefix(p) for p in _split(args.prefixes))
    if args.username is not None:
        changes["username"] = args.username or None
    if args.password is not None:
        changes["password"] = args.password or None
    if args.register is not None:
        changes["register"] = args.register
    return changes


def _trunk_where(t: Trunk) -> str:
    if t.port:
        return host_port(t.host, t.port)  # an IPv6 address in brackets: [2001:db8::1]:5060
    return f"{t.host} (DNS NAPTR)" if t.transport == "auto" else f"{t.host} (DNS SRV)"


def _trunk_inbound(args: argparse.Namespace) -> dict[str, Any]:
    """--inbound-auth and its credentials, for the handler to check and hash."""
    keys = ("inbound_auth", "inbound_username", "inbound_password")
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def _trunk_policy(args: argparse.Namespace, policy: callpolicy.CallPolicy) -> dict[str, Any]:
    """The trunk's call policy as JSON with --allow/--allow-prefixes/... applied."""
    data = _policy_changes(args, policy)
    data.pop("max_minutes_per_day", None)
    return data


def _trunk_line(t: Trunk) -> str:
    cap = t.call_policy.max_concurrent
    reg = f", registers as {t.username}" if t.register else ""
    reg += "" if cap is None else f"; at most {cap} calls out at once"
    i = t.inbound
    inbound = f"digest as {i.username}" if i.auth == "digest" else f"by {i.auth}"
    return (
        f"trunk {t.name}: {t.transport}:{_trunk_where(t)}, "
        f"outbound prefixes {', '.join(t.prefixes) or 'none'}{reg}, inbound calls {inbound}; "
        f"classes {', '.join(sorted(callpolicy.DEFAULT_ALLOWED | t.call_policy.allow))}"
    )


def cmd_trunk_add(args: argparse.Namespace) -> int:
    changes = _trunk_changes(args) | _trunk_inbound(args)
    with _open_app(args.data) as (_cfg, app):
        trunk = app.trunks.create(
            ADMIN, args.name, policy_json=_trunk_policy(args, callpolicy.CallPolicy()), **changes
        )
    print("added " + _trunk_line(trunk))
    return 0


def cmd_trunk_set(args: argparse.Namespace) -> int:
    changes = _trunk_changes(args) | _trunk_inbound(args)
    with _open_app(args.data) as (_cfg, app):
        trunk = app.trunks.update(
            ADMIN, args.name, change_policy=lambda old: _trunk_policy(args, old), **changes
        )
    print(_trunk_line(trunk))
    return 0


def cmd_trunk_list(args: argparse.Namespace) -> int:
    with _open_app(args.data) as (_cfg, app):
        trunks = app.trunks.list(ADMIN)
    if not trunks:
        print("no trunks yet: add one with 'heimbuero trunk add NAME --address HOST:PORT'")
        return 0
    _table(
        [("NAME", "ADDRESS", "PREFIXES", "REGISTER", "INBOUND")]
        + [
            (
                t.name,
                f"{t.transport}:{_trunk_where(t)}",
                ",".join(t.prefixes) or "-",
                t.username if t.register and t.username else "no",
                t.inbound.auth,
            )
            for t in trunks
        ]
    )
    return 0


def cmd_trunk_remove(args: argparse.Namespace) -> int:
    with _open_app(args.data) as (_cfg, app):
        app.trunks.remove(ADMIN, args.name)
    print(f"removed trunk {args.name}")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    with _open_app(args.data) as (_cfg, app):
        meta, token = app.tokens.create(ADMIN, args.user, args.name)
    name = meta.user
    print(f"API token {args.name!r} of user {name} (shown only this once; send it as")
    print("'Authorization: Bearer TOKEN'):")
    print(token)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    with _open_app(args.data) as (_cfg, app):
        tokens = app.tokens.list(ADMIN, args.user)
    if not tokens:
        print("no API tokens")
        return 0
    fmt = "%Y-%m-%d %H:%M"
    _table(
        [("USER", "NAME", "CREATED (UTC)", "LAST USED (UTC)")]
        + [
            (
                t.user,
                t.name,
                t.created_at.strftime(fmt),
                t.last_used.strftime(fmt) if t.last_used else "never",
            )
            for t in tokens
        ]
    )
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    name = accounts.validate_name(args.user)
    with _open_app(args.data) as (_cfg, app):
        app.tokens.revoke(ADMIN, name, args.name)
    print(f"revoked API token {args.name!r} of user {name}")
    return 0


def _audio(media: dict[str, Any] | None) -> tuple[str, str]:
    """The worse direction's packet loss and jitter, as the relay counted them and the phones
    reported them in RTCP ("-": not relayed)."""
    quality = audio_quality(media)
    if quality is None:
        return "-", "-"
    return f"{quality[0]:.1f} %", f"{quality[1]:.1f}"


def _utc_moment(flag: str, text: str | None) -> datetime | None:
    """An ISO date or date-time of a command-line flag; without an offset: UTC."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise Invalid(flag, f"invalid {flag} {text!r}: expected 2026-12-24 or "
                      "2026-12-24T14:00") from None  # fmt: skip
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _record_json(r: CallRecord) -> dict[str, Any]:
    return {
        "id": r.id, "call_id": r.call_id, "client": r.client, "number": r.number,
        "caller": r.caller, "rule": r.rule, "step": r.step, "answered_by": r.answered_by,
        "started_at": r.started_at.isoformat(),
        "answered_at": r.answered_at.isoformat() if r.answered_at else None,
        "ended_at": r.ended_at.isoformat() if r.ended_at else None,
        "ring_seconds": r.ring_seconds, "talk_seconds": r.talk_seconds, "result": r.result,
        "audio_loss_pct": r.audio_loss_pct, "audio_jitter_ms": r.audio_jitter_ms,
        "media": r.media, "transferred_from": r.transferred_from, "end_reason": r.end_reason,
    }  # fmt: skip


def cmd_calls_list(args: argparse.Namespace) -> int:
    since = _utc_moment("--since", args.since)
    until = _utc_moment("--until", args.until)
    with _open_app(args.data) as (_cfg, app):
        records = app.calls.list(ADMIN, args.client, limit=args.limit, since=since, until=until)
    if args.json:
        print(json.dumps([_record_json(r) for r in records], indent=2))
        return 0
    if not records:
        print("no call records")
        return 0
    rows = [("ID", "STARTED (UTC)", "CLIENT", "NUMBER", "CALLER", "RULE", "STEP", "ANSWERED BY",
             "RING s", "TALK s", "RESULT", "AUDIO LOSS", "JITTER ms",
             "TRANSFERRED FROM", "END REASON")]  # fmt: skip
    rows += [
        (
            str(r.id),
            r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.client or "-",
            r.number,
            r.caller,
            r.rule or "-",
            "-" if r.step is None else str(r.step),
            r.answered_by or "-",
            f"{r.ring_seconds:.1f}",
            f"{r.talk_seconds:.1f}",
            r.result or "in progress",
            *_audio(r.media),
            "-" if r.transferred_from is None else str(r.transferred_from),
            r.end_reason or "-",
        )
        for r in records
    ]
    _table(rows)
    return 0


def _add_office_parsers(commands: Any, data: argparse.ArgumentParser) -> None:
    """Parsers of rules, route, client, number, group, trunk, token and calls."""
    rules = commands.add_parser(
        "rules",
        help="export or import a client's rules document",
        description="A client's call-forwarding rules as a YAML document (docs/ROUTING.md).",
    )
    sub = rules.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    p = sub.add_parser("export", parents=[data], help="print a client's rules (YAML)")
    p.add_argument("client", metavar="CLIENT", help="client id")
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    p.set_defaults(func=cmd_rules_export)
    p = sub.add_parser(
        "import",
        parents=[data],
        help="replace a client's rules with a document",
        description="Validate FILE (YAML or JSON; - reads stdin) and make it the client's "
        "rules. When it is invalid every problem is printed with its path and nothing changes; "
        "a file over 256 KiB is refused unread.",
    )
    p.add_argument("client", metavar="CLIENT", help="client id")
    p.add_argument("file", metavar="FILE", help="rules document (YAML or JSON), - for stdin")
    p.set_defaults(func=cmd_rules_import)

    route = commands.add_parser("route", help="simulate the routing of a call")
    sub = route.add_subparsers(dest="route_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "simulate",
        parents=[data],
        help="show which rule a call matches and the steps it rings",
        description="Route a call to NUMBER with the stored rules and overrides (nobody "
        "registered) and print the matched rule and steps.",
    )
    p.add_argument(
        "number",
        metavar="NUMBER",
        help="dialled number as written: 089 1234567, 089/1234567, +49 89 1234567",
    )
    p.add_argument(
        "--at",
        metavar="ISO-8601",
        help="when the call comes in (default now); without an offset it is the client's "
        "local time",
    )
    p.add_argument(
        "--caller",
        metavar="NUMBER",
        help="the calling number as written (0171 2222222, +43 1 234567) for rules with a "
        "caller condition (VIP callers, numbers, prefixes); default: an unknown caller",
    )
    p.add_argument(
        "--draft",
        metavar="FILE",
        help="simulate with this unsaved rules document (YAML or JSON) instead of the stored "
        "rules; NUMBER must be one of its client's; nothing is stored",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_route_simulate)

    client = commands.add_parser(
        "client", help="add, list or remove client businesses; their calls-out policy"
    )
    sub = client.add_subparsers(dest="client_command", metavar="ACTION", required=True)
    p = sub.add_parser("add", parents=[data], help="add a client business")
    p.add_argument("id", metavar="ID", help="client id: a-z 0-9 _ - (e.g. mueller)")
    p.add_argument("--name", required=True, help='business name ("Tischlerei Müller")')
    p.add_argument("--trade", default="", help="trade, e.g. Tischlerei")
    p.add_argument("--contact", default="", help="contact person")
    p.add_argument("--greeting", default="", help="what agents say when answering")
    p.add_argument("--notes", default="", help="notes for agents")
    p.add_argument("--timezone", default="Europe/Berlin", help="IANA zone (Europe/Berlin)")
    p.add_argument("--bundesland", default="BY", help="German state for holidays (default BY)")
    p.set_defaults(func=cmd_client_add)
    p = sub.add_parser(
        "holidays", parents=[data],
        help="list the public holidays of a client's Bundesland for the coming months",
    )  # fmt: skip
    p.add_argument("id", metavar="ID", help="client id")
    p.add_argument("--months", type=int, default=12, help="how many months ahead (1-24, 12)")
    p.add_argument("--json", action="store_true", help="print them as JSON")
    p.set_defaults(func=cmd_client_holidays)
    p = sub.add_parser(
        "closures", parents=[data],
        help="list, add or remove a client's closures (Betriebsurlaub)",
        description="Closure days are date ranges; rules with 'closures: only' decide where "
        "the client's calls go on them.",
    )  # fmt: skip
    p.add_argument("id", metavar="ID", help="client id")
    p.add_argument("--add", nargs="+", metavar="DAY", help="close FIRST [LAST] (YYYY-MM-DD)")
    p.add_argument("--note", default="", help="with --add: a note (Betriebsurlaub)")
    p.add_argument("--remove", type=int, metavar="CLOSURE_ID", help="remove that closure")
    p.add_argument("--json", action="store_true", help="print them as JSON")
    p.set_defaults(func=cmd_client_closures)
    p = sub.add_parser(
        "override", parents=[data],
        help="show, set or cancel a client's override (like *21 / *22 / #21)",
        description="'office' or 'mobile' sends every call there (until --until, an absolute "
        "time in the client's timezone, e.g. '2026-12-24 14:00'; after it the rules apply "
        "again by themselves); 'off' cancels; without a target it is shown.",
    )  # fmt: skip
    p.add_argument("id", metavar="ID", help="client id")
    p.add_argument("target", nargs="?", choices=("office", "mobile", "off"), help="where to")
    p.add_argument("--until", metavar="WHEN", help="end, e.g. '2026-12-24 14:00' (local time)")
    p.set_defaults(func=cmd_client_override)
    p = sub.add_parser("list", parents=[data], help="list client businesses")
    p.set_defaults(func=cmd_client_list)
    classes = ", ".join(c for c in callpolicy.CLASSES if c not in callpolicy.DEFAULT_ALLOWED)
    p = sub.add_parser(
        "policy",
        parents=[data],
        help="show or change what a client may call out to, and its caps",
        description="A client's calls out (forwarding through the trunk, dialling out): German "
        "fixed, mobile, freephone and emergency numbers are allowed; other classes only when "
        f"allowed here ({classes}). Caps: calls out at once (default "
        f"{callpolicy.DEFAULT_CLIENT_MAX_CONCURRENT}) and talk minutes a day (default "
        f"{callpolicy.DEFAULT_CLIENT_MAX_MINUTES}); -1 restores a default. The trunk must "
        "allow a class too (heimbuero trunk set --allow).",
    )
    p.add_argument("id", metavar="ID")
    p.add_argument("--allow", metavar="CLASS,...", help="classes allowed on top of the defaults "
                   "(replaces the list; empty: none)")  # fmt: skip
    p.add_argument("--allow-prefixes", metavar="+4319,...", help="E.164 prefixes allowed "
                   "whatever their class")  # fmt: skip
    p.add_argument("--deny-prefixes", metavar="+4932,...", help="prefixes always refused")
    p.add_argument("--max-concurrent", type=int, metavar="N", help="calls out at once")
    p.add_argument("--max-minutes-per-day", type=int, metavar="N", help="talk minutes a day")
    p.set_defaults(func=cmd_client_policy)
    p = sub.add_parser(
        "approve-number",
        parents=[data],
        help="approve an external number for a client's forwarding rules",
        description="Rules (heimbuero rules import, PUT /api/clients/ID/rules) may forward only "
        "to external numbers approved here, within the client's destination policy.",
    )
    p.add_argument("id", metavar="ID")
    p.add_argument("number", metavar="NUMBER", help="e.g. 0170 1111111 or +491701111111")
    p.add_argument("--revoke", action="store_true", help="withdraw the approval")
    p.set_defaults(func=cmd_client_approve)
    p = sub.add_parser(
        "vip", parents=[data], help="list, set or remove a client's VIP callers",
        description="Callers the client wants treated specially: when one calls, the agent's "
        "card names them and shows the remark before the call is answered.",
    )  # fmt: skip
    p.add_argument("id", metavar="ID")
    p.add_argument("number", metavar="NUMBER", nargs="?", help="add or change this caller")
    p.add_argument("--name", default="", help='with NUMBER: who it is ("Herr Meier, Architekt")')
    p.add_argument("--remark", default="", help='with NUMBER: what to do ("sofort durchstellen")')
    p.add_argument("--remove", metavar="NUMBER", help="remove that caller")
    p.set_defaults(func=cmd_client_vip)
    p = sub.add_parser("remove", parents=[data], help="remove a client and its numbers/rules")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmd_client_remove)

    number = commands.add_parser("number", help="add, change, list or remove client phone numbers")
    sub = number.add_subparsers(dest="number_command", metavar="ACTION", required=True)
    p = sub.add_parser("add", parents=[data], help="give a client a phone number")
    p.add_argument("number", metavar="NUMBER", help="e.g. 089 1234567 or +49891234567")
    p.add_argument("--client", required=True, metavar="ID", help="client id")
    p.add_argument(
        "--dictation",
        action="store_true",
        help="the client's dictation number: a call to it starts dictation by phone for the "
        "client (from the client's own phones, or from the mobile number of one of its users "
        "as the carrier states it; anyone else is refused); its calls follow no rule",
    )
    p.set_defaults(func=cmd_number_add)
    p = sub.add_parser("set", parents=[data], help="make a number a dictation number or not")
    p.add_argument("number", metavar="NUMBER")
    on = p.add_mutually_exclusive_group(required=True)
    on.add_argument("--dictation", dest="dictation", action="store_true",
                    help="calls to it start dictation by phone for its client")  # fmt: skip
    on.add_argument("--calls", dest="dictation", action="store_false",
                    help="an ordinary number again (its calls follow the rules)")  # fmt: skip
    p.set_defaults(func=cmd_number_set)
    p = sub.add_parser("list", parents=[data], help="list numbers")
    p.add_argument("--client", metavar="ID", help="only this client's numbers")
    p.set_defaults(func=cmd_number_list)
    p = sub.add_parser("remove", parents=[data], help="remove a number")
    p.add_argument("number", metavar="NUMBER")
    p.set_defaults(func=cmd_number_remove)

    group = commands.add_parser("group", help="add, change, list or remove agent groups")
    sub = group.add_subparsers(dest="group_command", metavar="ACTION", required=True)
    strategies = "ring_all (default), longest_idle or round_robin"
    p = sub.add_parser("add", parents=[data], help="add an agent group")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--strategy", default="ring_all", help=strategies)
    p.add_argument("--members", default="", metavar="a,b", help="user names, comma separated")
    p.set_defaults(func=cmd_group_add)
    p = sub.add_parser("set", parents=[data], help="change a group's strategy or members")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--strategy", help=strategies)
    p.add_argument("--members", metavar="a,b", help="replace the members (comma separated)")
    p.set_defaults(func=cmd_group_set)
    p = sub.add_parser("list", parents=[data], help="list groups")
    p.set_defaults(func=cmd_group_list)
    p = sub.add_parser("remove", parents=[data], help="remove a group no rule uses")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_group_remove)

    trunk = commands.add_parser("trunk", help="add, change, list or remove carrier trunks")
    sub = trunk.add_subparsers(dest="trunk_command", metavar="ACTION", required=True)
    for action, func, required in (("add", cmd_trunk_add, True), ("set", cmd_trunk_set, False)):
        p = sub.add_parser(
            action,
            parents=[data],
            help="add a carrier trunk" if required else "change a trunk (e.g. its address)",
        )
        p.add_argument("name", metavar="NAME")
        p.add_argument(
            "--address",
            required=required,
            metavar="HOST:PORT",
            help="the carrier's SIP peer: an address (port 5060 when left out) or a host name "
            "(without a port: found by its DNS SRV records, RFC 3263, else port 5060; the "
            "addresses found are tried in turn); this server's own SIP addresses are refused",
        )
        p.add_argument(
            "--transport",
            help="udp (default), tcp, tls (port default 5061; the carrier's certificate is "
            "checked against the system's CAs, or as set in [sip.trunk_tls]) or auto (a host "
            "name without a port: its DNS NAPTR records choose UDP or TCP, RFC 3263 §4.1)",
        )
        p.add_argument(
            "--prefixes", metavar="+49,+43", help="number prefixes allowed outbound (default +49)"
        )
        p.add_argument("--username", help="user name for registering to the carrier")
        p.add_argument(
            "--password",
            help="password for registering to the carrier (stored in clear: it is sent to the "
            "carrier; visible in the process list while the command runs)",
        )
        p.add_argument("--allow", metavar="CLASS,...", help="number classes the trunk carries "
                       "on top of German fixed/mobile/freephone/emergency")  # fmt: skip
        p.add_argument("--allow-prefixes", metavar="+4319,...", help="prefixes always carried")
        p.add_argument("--deny-prefixes", metavar="+4932,...", help="prefixes never carried")
        p.add_argument(
            "--max-concurrent", type=int, metavar="N", help="calls out at once (-1: no cap)"
        )
        p.add_argument(
            "--register",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="register to the carrier with --username/--password (both required)",
        )
        p.add_argument(
            "--inbound-auth",
            metavar="MODE",
            help="how the carrier's calls to our numbers are recognised: address (source "
            "address, the default; UDP sources can be forged), address-tcp (source address over "
            "TCP/TLS only) or digest (the carrier answers our challenge with "
            "--inbound-username/--inbound-password; preferred when the carrier can)",
        )
        p.add_argument("--inbound-username", help="user name the carrier authenticates with")
        p.add_argument(
            "--inbound-password",
            help="password the carrier authenticates with (at least 12 characters; only its "
            "hashes are stored)",
        )
        p.set_defaults(func=func)
    p = sub.add_parser("list", parents=[data], help="list trunks")
    p.set_defaults(func=cmd_trunk_list)
    p = sub.add_parser("remove", parents=[data], help="remove a trunk")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_trunk_remove)

    token = commands.add_parser("token", help="create, list or revoke API tokens")
    sub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    p = sub.add_parser("create", parents=[data], help="create an API token (shown once)")
    p.add_argument("user", metavar="USER")
    p.add_argument("--name", required=True, help="what the token is for, e.g. ci")
    p.set_defaults(func=cmd_token_create)
    p = sub.add_parser("list", parents=[data], help="list API tokens")
    p.add_argument("--user", metavar="USER", help="only this user's tokens")
    p.set_defaults(func=cmd_token_list)
    p = sub.add_parser("revoke", parents=[data], help="revoke an API token")
    p.add_argument("user", metavar="USER")
    p.add_argument("--name", required=True)
    p.set_defaults(func=cmd_token_revoke)

    calls = commands.add_parser("calls", help="list call records")
    sub = calls.add_subparsers(dest="calls_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "list", parents=[data],
        help="list call records, newest first (END REASON: why each ended, see README)",
    )  # fmt: skip
    p.add_argument("--client", metavar="ID", help="only this client's calls")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p.add_argument(
        "--since", metavar="WHEN", help="started at or after (2026-12-01 or 2026-12-01T08:00; UTC)"
    )
    p.add_argument("--until", metavar="WHEN", help="started before (as --since)")
    p.add_argument(
        "--json", action="store_true",
        help="print them as JSON, with the media relay's statistics of both directions",
    )  # fmt: skip
    p.set_defaults(func=cmd_calls_list)


# -- parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    data = _Parser(add_help=False)
    data.add_argument(
        "--data",
        metavar="DIR",
        help=f"data directory (default: ${config.DATA_ENV})",
    )

    parser = _Parser(
        prog=PROG,
        description="heimbuero: self-hosted virtual office server with a SIP server at its core.",
        epilog="Run 'heimbuero COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "init",
        parents=[data],
        help="create a data directory (safe to run again)",
        description="Create DIR with config.toml, a random secret (mode 0600), files/, a "
        "self-signed SIP TLS certificate (tls/sip.crt, tls/sip.key; its SHA-256 fingerprint is "
        "printed) and the database, and apply pending database migrations. Existing files are "
        "kept unchanged.",
    )
    p.add_argument(
        "--domain",
        metavar="NAME",
        type=_domain_type,
        help="SIP domain and digest realm, the host part of sip:USER@DOMAIN "
        "(default: this machine's fully qualified host name, else localhost; a default "
        "without a dot is used with a warning on stderr)",
    )
    p.add_argument(
        "--database-url",
        metavar="URL",
        help="the database, written to [store] database_url in a new config.toml: "
        "postgresql+psycopg://USER:PASSWORD@HOST/DB (the database must exist); "
        "default: the SQLite file heimbuero.db in DIR",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="seed the demo office (provider, agents, two clients with numbers and rules, a "
        "trunk) when it has no clients yet, and print the generated passwords once",
    )
    p.set_defaults(func=cmd_init)

    user = commands.add_parser(
        "user",
        help="add, list, change or remove users",
        description="Manage the users who may register phones and log in.",
    )
    user_commands = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    name_help = (
        "user name: 1-64 of a-z 0-9 . _ - (upper case is stored as lower case, and said so; "
        "phones must use the lower-case name)"
    )
    password_help = (
        f"at least {accounts.MIN_PASSWORD_LENGTH} characters, not containing the user name "
        "and not a common password (note: visible in the process list while the command runs)"
    )

    p = user_commands.add_parser(
        "add",
        parents=[data],
        help="add a user",
        description="Add a user. Only password hashes are stored, never the password.",
    )
    p.add_argument("name", metavar="NAME", help=name_help)
    p.add_argument("--password", metavar="PW", required=True, help=password_help)
    p.add_argument(
        "--role",
        choices=accounts.ROLES,
        default=accounts.DEFAULT_ROLE,
        help=f"what the user may do (default: {accounts.DEFAULT_ROLE})",
    )
    p.set_defaults(func=cmd_user_add)

    p = user_commands.add_parser(
        "passwd",
        parents=[data],
        help="set a user's password",
        description="Set a new password for an existing user (SIP and login).",
    )
    p.add_argument("name", metavar="NAME", help="user name")
    p.add_argument("--password", metavar="PW", required=True, help=password_help)
    p.set_defaults(func=cmd_user_passwd)

    p = user_commands.add_parser(
        "status",
        parents=[data],
        help="set an agent's status (break, end of shift, ...)",
        description="Set an agent's own status: only available agents are rung by team calls; "
        "presence shows break and away as away, dnd as busy, off (end of shift) as offline.",
    )
    p.add_argument("name", metavar="NAME", help="user name (an agent or admin)")
    p.add_argument("status", choices=AGENT_STATUSES)
    p.set_defaults(func=cmd_user_status)

    p = user_commands.add_parser(
        "list",
        parents=[data],
        help="list users",
        description="List users: name, role, creation time and current SIP registrations.",
    )
    p.set_defaults(func=cmd_user_list)

    p = user_commands.add_parser(
        "remove",
        parents=[data],
        help="remove a user",
        description="Remove a user and its stored SIP registrations.",
    )
    p.add_argument("name", metavar="NAME", help="user name")
    p.set_defaults(func=cmd_user_remove)

    p = user_commands.add_parser(
        "totp",
        parents=[data],
        help="show, switch on or take away a user's second factor (web console)",
        description="The web console's optional second factor (TOTP, RFC 6238: 6 digits, "
        "30 s, SHA-1, as authenticator apps use). 'enable' gives the user a new secret, on at "
        "once, and prints it with its otpauth:// URI to hand over (users can also switch it on "
        "themselves in the console, under Zweiter Faktor); 'disable' takes it away (a lost "
        "phone); 'status' shows whether it is on. API tokens and SIP phones do not use it; "
        "the JSON API takes no password alone from a user who has it.",
    )
    p.add_argument("name", metavar="NAME", help="user name")
    p.add_argument("action", choices=("status", "enable", "disable"))
    p.add_argument("--qr", action="store_true", help="with enable: print the QR code too")
    p.set_defaults(func=cmd_user_totp)

    p = user_commands.add_parser(
        "set",
        parents=[data],
        help="set a user's client, display name or mobile",
        description="Set the client business a user belongs to, its display name and its "
        "mobile number (an empty value clears it).",
    )
    p.add_argument("name", metavar="NAME", help="user name")
    p.add_argument("--client", metavar="ID", help="client id (client and employee users)")
    p.add_argument("--display-name", metavar="TEXT", help="name shown on phones")
    p.add_argument("--mobile", metavar="NUMBER", help="mobile number, e.g. 0170 1111111")
    p.add_argument(
        "--allow-rfc2069",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="accept SIP digests without qop (RFC 2069) from this user's old phones; "
        "refused by default",
    )
    p.set_defaults(func=cmd_user_set)

    p = commands.add_parser(
        "serve",
        parents=[data],
        help="run the server",
        description="Run the SIP server (and HTTP, when configured) until SIGINT or SIGTERM. "
        "--sip and --http override the addresses in config.toml, --log-level and --log-format "
        "its log settings. SIGHUP rereads config.toml and applies the log settings and the "
        "/metrics allow-list and token without dropping calls or registrations.",
    )
    p.add_argument(
        "--sip",
        metavar="ADDRS",
        type=_listen_type,
        help="SIP sockets, comma separated: udp:HOST:PORT,tcp:HOST:PORT,tls:HOST:PORT (IPv6 "
        "hosts in brackets; TLS default port 5061, certificate from [sip] tls_cert/tls_key)",
    )
    p.add_argument(
        "--http",
        metavar="HOST:PORT",
        type=_http_type,
        help="HTTP listen address",
    )
    p.add_argument(
        "--log-level",
        metavar="LEVELS",
        type=_log_levels_type,
        help="what to log on stderr: debug, info, warning or error, optionally per area "
        "('warning,sip=debug,web=error'; areas: " + ", ".join(logsetup.AREAS) + "); info logs "
        "one line per registration change and per call (default: [server] log_level in "
        "config.toml, else info)",
    )
    p.add_argument(
        "--log-format",
        choices=logsetup.FORMATS,
        help="log line format (default: [server] log_format in config.toml, else text)",
    )
    p.set_defaults(func=cmd_serve)
    _add_office_parsers(commands, data)
    from heimbuero.ops.cli import add_parsers as add_ops_parsers

    add_ops_parsers(commands, data)  # backup, restore, install-service
    from heimbuero.dictation_cli import add_parsers as add_dictation_parsers

    add_dictation_parsers(commands, data)  # dictation list|show|take|deliver
    from heimbuero.billing_cli import add_invoice_parsers
    from heimbuero.billing_cli import add_parsers as add_billing_parsers

    add_billing_parsers(commands, data, _open_app)  # billing (issue 15)
    add_invoice_parsers(commands, data, _open_app)
    from heimbuero.greetings_cli import add_parsers as add_greeting_parsers

    add_greeting_parsers(commands, data, _open_app)  # greeting, announcement
    from heimbuero.voicemail_cli import add_parsers as add_voicemail_parsers

    add_voicemail_parsers(commands, data, _open_app)  # voicemail list|heard|delete
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit status (2 usage error, 1 other error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (
        ConfigError, AppError, accounts.AccountError, StoreError, directory.DirectoryError,
        callpolicy.PolicyError,
    ) as exc:  # fmt: skip
        return _fail(str(exc))  # the one mapping of handler errors to the command line
    except SQLAlchemyError as exc:
        return _fail(f"database: {_sql_message(exc)}")
    except OSError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
