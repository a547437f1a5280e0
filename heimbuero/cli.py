"""The `heimbuero` command line: init a data directory, manage users, run the server."""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

from sqlalchemy.exc import SQLAlchemyError

from heimbuero import __version__, config
from heimbuero.config import Config, ConfigError
from heimbuero.office import accounts
from heimbuero.store import SchemaError, Store, StoreError

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
    if not cfg.db_path.is_file():
        raise ConfigError(f"{cfg.db_path} is missing: {init_hint}")
    store = Store(cfg.db_url)
    try:
        if not store.schema_is_current():
            raise SchemaError(f"the database schema of {cfg.db_path} is not current: {init_hint}")
        yield cfg, store
    except SQLAlchemyError as exc:
        raise StoreError(f"database {cfg.db_path}: {_sql_message(exc)}") from None
    finally:
        store.close()


# -- commands ------------------------------------------------------------------------------


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
        print(f"kept     {config_path} (domain {cfg.domain})")
    else:
        domain = args.domain or default_domain()
        # The database holds HA1 hashes, which let anyone who reads them register as that user.
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_new(config_path, config.default_config_text(domain))
        cfg = config.load(data_dir)
        print(f"created  {config_path} (domain {cfg.domain})")

    if cfg.secret_path.exists():
        print(f"kept     {cfg.secret_path}")
    else:
        _write_new(cfg.secret_path, secrets.token_hex(32), 0o600, exact=True)
        print(f"created  {cfg.secret_path}")

    files_dir = data_dir / config.FILES_DIR
    if files_dir.is_dir():
        print(f"kept     {files_dir}/")
    else:
        files_dir.mkdir()
        print(f"created  {files_dir}/")

    existed = cfg.db_path.exists()
    if not existed:  # SQLite gives its -wal and -shm files the mode of the database file
        _write_new(cfg.db_path, "", 0o600, exact=True)
    store = Store(cfg.db_url)
    try:
        current = existed and store.schema_is_current()
        if not current:
            store.upgrade()
    except SQLAlchemyError as exc:
        return _fail(f"database {cfg.db_path}: {_sql_message(exc)}")
    finally:
        store.close()
    verb = "kept    " if current else ("migrated" if existed else "created ")
    print(f"{verb} {cfg.db_path}")
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    """Add a user."""
    with _open_store(args.data) as (cfg, store):
        user = accounts.add_user(store, cfg.domain, args.name, args.password, args.role)
    print(f"added user {user.name} (role {user.role}, SIP address sip:{user.name}@{cfg.domain})")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    """Set a user's password."""
    with _open_store(args.data) as (cfg, store):
        accounts.set_password(store, cfg.domain, args.name, args.password)
    print(f"changed the password of user {accounts.validate_name(args.name)}")
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    """Remove a user and its registrations."""
    with _open_store(args.data) as (_cfg, store):
        accounts.remove_user(store, args.name)
    print(f"removed user {accounts.validate_name(args.name)}")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    """Print a table of users with their current registrations."""
    with _open_store(args.data) as (_cfg, store):
        users = accounts.list_users(store)
        counts = store.count_bindings(time.time())
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
    try:
        from heimbuero.server import run
    except ModuleNotFoundError as exc:
        if exc.name != "heimbuero.server":
            raise
        return _fail("this installation has no server module (heimbuero.server)")
    return run(cfg)


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
        description="Create DIR with config.toml, a random secret (mode 0600), files/ and the "
        "database, and apply pending database migrations. Existing files are kept unchanged.",
    )
    p.add_argument(
        "--domain",
        metavar="NAME",
        type=_domain_type,
        help="SIP domain and digest realm, the host part of sip:USER@DOMAIN "
        "(default: this machine's fully qualified host name, else localhost)",
    )
    p.set_defaults(func=cmd_init)

    user = commands.add_parser(
        "user",
        help="add, list, change or remove users",
        description="Manage the users who may register phones and log in.",
    )
    user_commands = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    name_help = "user name: 1-64 of a-z 0-9 . _ - (stored in lower case)"
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

    p = commands.add_parser(
        "serve",
        parents=[data],
        help="run the server",
        description="Run the SIP server (and HTTP, when configured) until SIGINT or SIGTERM. "
        "--sip and --http override the addresses in config.toml.",
    )
    p.add_argument(
        "--sip",
        metavar="ADDRS",
        type=_listen_type,
        help="SIP sockets, comma separated: udp:HOST:PORT,tcp:HOST:PORT (IPv6 hosts in brackets)",
    )
    p.add_argument(
        "--http",
        metavar="HOST:PORT",
        type=_http_type,
        help="HTTP listen address",
    )
    p.set_defaults(func=cmd_serve)
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
    except (ConfigError, accounts.AccountError, StoreError) as exc:
        return _fail(str(exc))
    except SQLAlchemyError as exc:
        return _fail(f"database: {_sql_message(exc)}")
    except OSError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
