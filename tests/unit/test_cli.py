"""The command line, run as a real subprocess (`python -m heimbuero`) in a temporary directory."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
import tomllib
import types
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from heimbuero import __version__, cli
from heimbuero.config import Config, ConfigError, ListenAddress
from heimbuero.store import BindingRecord, Store
from heimbuero.store.db import MIGRATIONS_DIR

HEAD = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()  # the newest migration

DOMAIN = "office.example"
PASSWORD = "correct horse battery"
ERR = "heimbuero: error: "


def run(*args: str, data_env: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI; HEIMBUERO_DATA is set only when data_env is given."""
    env = {k: v for k, v in os.environ.items() if k != "HEIMBUERO_DATA"}
    if data_env is not None:
        env["HEIMBUERO_DATA"] = str(data_env)
    return subprocess.run(
        [sys.executable, "-m", "heimbuero", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def assert_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """Exit status `code` and exactly one stderr line, starting with the error prefix."""
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(ERR), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0]


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory made by `heimbuero init`, copied by the `data` fixture."""
    d = tmp_path_factory.mktemp("template") / "data"
    proc = run("init", "--data", str(d), "--domain", DOMAIN)
    assert proc.returncode == 0, proc.stderr
    return d


@pytest.fixture
def data(initialised: Path, tmp_path: Path) -> Path:
    """A fresh copy of an initialised data directory."""
    return Path(shutil.copytree(initialised, tmp_path / "data"))


def db_rows(data: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(data / "heimbuero.db") as conn:
        return conn.execute(sql).fetchall()


# -- init --------------------------------------------------------------------------------------


def test_init_creates_the_data_directory(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b" / "data"
    proc = run("init", "--data", str(d), "--domain", "Office.Example")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for name in ("config.toml", "secret", "files", "heimbuero.db"):
        assert str(d / name) in proc.stdout
    cfg = tomllib.loads((d / "config.toml").read_text())
    assert cfg["server"]["domain"] == DOMAIN
    secret = (d / "secret").read_text()
    assert len(secret) == 64 and bytes.fromhex(secret)
    assert stat.S_IMODE((d / "secret").stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700  # the database holds HA1 hashes
    assert stat.S_IMODE((d / "heimbuero.db").stat().st_mode) == 0o600
    assert (d / "files").is_dir()
    assert db_rows(d, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    tables = {r[0] for r in db_rows(d, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"users", "bindings"} <= tables


def test_init_secrets_differ(tmp_path: Path) -> None:
    for name in ("x", "y"):
        assert run("init", "--data", str(tmp_path / name), "--domain", DOMAIN).returncode == 0
    assert (tmp_path / "x" / "secret").read_bytes() != (tmp_path / "y" / "secret").read_bytes()


def test_init_again_changes_nothing(data: Path) -> None:
    before = {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()}
    assert set(before) == {"config.toml", "secret", "heimbuero.db"}
    for args in (("--domain", DOMAIN), ()):
        proc = run("init", "--data", str(data), *args)
        assert proc.returncode == 0, proc.stderr
        assert "kept" in proc.stdout and "created" not in proc.stdout
    after = {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()}
    assert after == before


def test_init_with_another_domain_fails_and_keeps_config(data: Path) -> None:
    config_before = (data / "config.toml").read_bytes()
    proc = run("init", "--data", str(data), "--domain", "other.example")
    assert_error(proc, 1, DOMAIN, "other.example")
    assert (data / "config.toml").read_bytes() == config_before


def test_init_default_domain_is_the_host_name(tmp_path: Path) -> None:
    assert run("init", "--data", str(tmp_path / "d")).returncode == 0
    domain = tomllib.loads((tmp_path / "d" / "config.toml").read_text())["server"]["domain"]
    assert domain == cli.default_domain()
    assert domain == domain.lower() and domain


def test_init_completes_a_partial_directory(data: Path) -> None:
    (data / "secret").unlink()
    (data / "files").rmdir()
    config_before = (data / "config.toml").read_bytes()
    proc = run("init", "--data", str(data))
    assert proc.returncode == 0, proc.stderr
    assert (data / "secret").is_file() and (data / "files").is_dir()
    assert (data / "config.toml").read_bytes() == config_before


def test_init_migrates_an_empty_database(data: Path) -> None:
    (data / "heimbuero.db").unlink()
    (data / "heimbuero.db").touch()
    proc = run("init", "--data", str(data))
    assert proc.returncode == 0, proc.stderr
    assert "migrated" in proc.stdout
    assert db_rows(data, "SELECT version_num FROM alembic_version") == [(HEAD,)]


@pytest.mark.parametrize("domain", ["bad domain", "x-.example", "a..b", "[::1]", "ex_ample.org"])
def test_init_rejects_bad_domain(tmp_path: Path, domain: str) -> None:
    proc = run("init", "--data", str(tmp_path / "d"), "--domain", domain)
    assert_error(proc, 2, "invalid domain")
    assert not (tmp_path / "d").exists()


def test_init_on_a_file_fails(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert_error(run("init", "--data", str(tmp_path / "f")), 1, "not a directory")


def test_init_uses_heimbuero_data(tmp_path: Path) -> None:
    d = tmp_path / "env-data"
    proc = run("init", "--domain", DOMAIN, data_env=d)
    assert proc.returncode == 0, proc.stderr
    assert (d / "config.toml").is_file()


# -- users -------------------------------------------------------------------------------------


def test_user_lifecycle(data: Path) -> None:
    proc = run(
        "user", "add", "Alice", "--password", PASSWORD, "--role", "admin", "--data", str(data)
    )
    assert proc.returncode == 0, proc.stderr
    assert "sip:alice@office.example" in proc.stdout
    assert (
        run("user", "add", "bob", "--password", "the other secret", "--data", str(data)).returncode
        == 0
    )
    assert db_rows(data, "SELECT name, role, ha1_md5, ha1_sha256 FROM users ORDER BY name") == [
        (
            "alice",
            "admin",
            "a231d67a800d50dbb7dec525b81c0dc7",  # md5("alice:office.example:correct horse battery")
            "31698d213b48080839d3dfe3b458d969cd8af3968da404e87c48d5cbf0f5b558",
        ),
        (
            "bob",
            "employee",
            "efa77bf8f93262b16ba1f4493ef75f8e",
            "5c722bf3d17ab78cb01619c56652e9237d8b0fe248d27223d901756b2bc89774",
        ),
    ]

    listing = run("user", "list", "--data", str(data))
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "ROLE"]
    assert lines[1].split()[:2] == ["alice", "admin"]
    assert lines[2].split()[:2] == ["bob", "employee"]

    old = db_rows(data, "SELECT ha1_md5, password_hash FROM users WHERE name='alice'")
    proc = run("user", "passwd", "alice", "--password", "a brand new secret", "--data", str(data))
    assert proc.returncode == 0, proc.stderr
    new = db_rows(data, "SELECT ha1_md5, password_hash FROM users WHERE name='alice'")
    assert new[0][0] == "f96825db724ca20ad6abf0a163869a9b"  # md5 of the new A1
    assert new[0][1] != old[0][1]

    proc = run("user", "remove", "bob", "--data", str(data))
    assert proc.returncode == 0, proc.stderr
    assert db_rows(data, "SELECT name FROM users") == [("alice",)]


def test_no_clear_password_in_the_data_directory(data: Path) -> None:
    assert run("user", "add", "alice", "--password", PASSWORD, "--data", str(data)).returncode == 0
    assert (
        run(
            "user", "passwd", "alice", "--password", "second secret!", "--data", str(data)
        ).returncode
        == 0
    )
    blobs = b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
    assert b"alice" in blobs  # the user is really there
    for pw in (PASSWORD, "second secret!"):
        assert pw.encode() not in blobs
        assert pw.encode("utf-16-le") not in blobs


def test_user_list_counts_current_registrations(data: Path) -> None:
    for name in ("alice", "bob"):
        assert run("user", "add", name, "--password", PASSWORD, "--data", str(data)).returncode == 0
    now = time.time()
    store = Store(f"sqlite:///{data / 'heimbuero.db'}")
    store.save_bindings(
        [
            BindingRecord(
                "alice", f"<sip:alice@192.0.2.1:{port}>", "udp:192.0.2.1:5060", exp, "c", 1
            )
            for port, exp in ((5060, now + 600), (5061, now + 600), (5062, now - 5))
        ],
        [],
    )
    store.close()
    proc = run("user", "list", "--data", str(data))
    assert proc.returncode == 0, proc.stderr
    counts = {line.split()[0]: line.split()[-1] for line in proc.stdout.splitlines()[1:]}
    assert counts == {"alice": "2", "bob": "0"}


def test_user_list_when_empty(data: Path) -> None:
    proc = run("user", "list", "--data", str(data))
    assert proc.returncode == 0 and "no users" in proc.stdout


def test_user_commands_use_heimbuero_data(data: Path) -> None:
    assert run("user", "add", "alice", "--password", PASSWORD, data_env=data).returncode == 0
    proc = run("user", "list", data_env=data)
    assert proc.returncode == 0 and "alice" in proc.stdout


def test_remove_user_removes_registrations(data: Path) -> None:
    assert run("user", "add", "alice", "--password", PASSWORD, "--data", str(data)).returncode == 0
    store = Store(f"sqlite:///{data / 'heimbuero.db'}")
    store.save_bindings(
        [
            BindingRecord(
                "alice", "<sip:a@192.0.2.1>", "udp:192.0.2.1:5060", time.time() + 60, "c", 1
            )
        ],
        [],
    )
    store.close()
    assert run("user", "remove", "alice", "--data", str(data)).returncode == 0
    assert db_rows(data, "SELECT count(*) FROM bindings") == [(0,)]


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("user", "add", "bob", "--password", "short"), 1, ("shorter than 10",)),
        (("user", "add", "bob", "--password", ""), 1, ("empty",)),
        (("user", "add", "bob", "--password", "bob-is-the-best"), 1, ("user name",)),
        (("user", "add", "bob", "--password", "password123"), 1, ("common",)),
        (("user", "add", "b@d", "--password", PASSWORD), 1, ("invalid user name",)),
        (("user", "add", "bob", "--password", PASSWORD, "--role", "boss"), 2, ("--role", "boss")),
        (("user", "add", "bob"), 2, ("--password",)),
        (("user", "passwd", "carol", "--password", PASSWORD), 1, ("no such user", "carol")),
        (("user", "remove", "carol"), 1, ("no such user", "carol")),
        (("user", "frobnicate"), 2, ("frobnicate",)),
        (("serve", "--sip", "udp:127.0.0.1"), 2, ("--sip", "malformed")),
        (("serve", "--sip", "sctp:127.0.0.1:5060"), 2, ("--sip", "malformed")),
        (("serve", "--sip", "udp:127.0.0.1:99999"), 2, ("--sip",)),
        (("serve", "--http", "localhost"), 2, ("--http", "malformed")),
    ],
)
def test_bad_input_is_one_error_line(
    data: Path, args: tuple[str, ...], code: int, words: tuple[str, ...]
) -> None:
    assert_error(run(*args, "--data", str(data)), code, *words)


def test_duplicate_user(data: Path) -> None:
    assert run("user", "add", "bob", "--password", PASSWORD, "--data", str(data)).returncode == 0
    assert_error(
        run("user", "add", "BOB", "--password", PASSWORD, "--data", str(data)), 1, "exists"
    )


@pytest.mark.parametrize(
    "args",
    [("user", "list"), ("user", "add", "bob", "--password", PASSWORD), ("serve",)],
)
def test_missing_data_directory(tmp_path: Path, args: tuple[str, ...]) -> None:
    assert_error(run(*args, "--data", str(tmp_path / "nope")), 1, "no such data directory")
    assert_error(run(*args), 1, "HEIMBUERO_DATA")


def test_missing_database(data: Path) -> None:
    (data / "heimbuero.db").unlink()
    assert_error(run("user", "list", "--data", str(data)), 1, "heimbuero.db", "init")


def test_corrupt_database(data: Path) -> None:
    (data / "heimbuero.db").write_bytes(b"this is not an sqlite database" * 100)
    assert_error(run("user", "list", "--data", str(data)), 1, "heimbuero.db")
    assert_error(run("init", "--data", str(data)), 1, "heimbuero.db")


def test_unopenable_database(data: Path) -> None:
    (data / "heimbuero.db").unlink()
    (data / "heimbuero.db").mkdir()
    assert_error(run("init", "--data", str(data)), 1, "heimbuero.db")


def test_outdated_schema(data: Path) -> None:
    with sqlite3.connect(data / "heimbuero.db") as conn:
        conn.execute("DELETE FROM alembic_version")
    assert_error(run("user", "list", "--data", str(data)), 1, "not current", "init")


def test_broken_config(data: Path) -> None:
    (data / "config.toml").write_text("[server\n")
    assert_error(run("user", "list", "--data", str(data)), 1, "config.toml")
    assert_error(run("init", "--data", str(data)), 1, "config.toml")


def test_no_command_is_a_usage_error() -> None:
    assert_error(run(), 2, "COMMAND")


# -- version and help --------------------------------------------------------------------------


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"heimbuero {__version__}"


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("init",),
        ("user",),
        ("user", "add"),
        ("user", "passwd"),
        ("user", "list"),
        ("user", "remove"),
        ("serve",),
    ],
)
def test_help(args: tuple[str, ...]) -> None:
    proc = run(*args, "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: heimbuero")
    assert proc.stderr == ""
    if args and args[-1] in ("init", "add", "passwd", "list", "remove", "serve"):
        assert "--data DIR" in proc.stdout and "HEIMBUERO_DATA" in proc.stdout


def test_user_add_help_names_roles_and_default() -> None:
    out = run("user", "add", "--help").stdout
    assert "admin,agent,client,employee" in out and "default: employee" in out


# -- serve (in process, with a stand-in for the server module) ---------------------------------


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """Replace heimbuero.server by a module whose run() records the config it was given."""
    seen: list[Config] = []
    module = types.ModuleType("heimbuero.server")

    def fake_run(config: Config) -> int:
        seen.append(config)
        return 7

    module.run = fake_run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "heimbuero.server", module)
    return seen


def test_serve_passes_config_from_data_dir(data: Path, fake_server: list[Config]) -> None:
    assert cli.main(["serve", "--data", str(data)]) == 7
    (cfg,) = fake_server
    assert cfg.data_dir == data.resolve() and cfg.domain == DOMAIN
    assert cfg.sip.listen == (
        ListenAddress("udp", "127.0.0.1", 5060),
        ListenAddress("tcp", "127.0.0.1", 5060),
    )
    assert cfg.http.listen is None


def test_serve_flags_override_addresses(data: Path, fake_server: list[Config]) -> None:
    argv = ["serve", "--data", str(data), "--sip", "udp:[::1]:5070,tcp:0.0.0.0:5071"]
    assert cli.main([*argv, "--http", "127.0.0.1:8080"]) == 7
    (cfg,) = fake_server
    assert cfg.sip.listen == (
        ListenAddress("udp", "::1", 5070),
        ListenAddress("tcp", "0.0.0.0", 5071),
    )
    assert cfg.http.listen == "127.0.0.1:8080"
    assert cfg.sip.max_expires == 7200  # the rest of the config is untouched


@pytest.mark.parametrize(
    "exc", [ConfigError("bad setting x"), OSError(98, "Address already in use")]
)
def test_serve_reports_server_errors_in_one_line(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], exc: Exception
) -> None:
    module = types.ModuleType("heimbuero.server")

    def failing_run(config: Config) -> int:
        raise exc

    module.run = failing_run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "heimbuero.server", module)
    assert cli.main(["serve", "--data", str(data)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(ERR) and str(exc.args[-1]) in err[0]


def test_init_makes_a_tls_certificate_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from heimbuero.cli import main

    data = tmp_path / "data"
    assert main(["init", "--data", str(data), "--domain", "office.test"]) == 0
    out = capsys.readouterr().out
    cert, key = data / "tls" / "sip.crt", data / "tls" / "sip.key"
    assert cert.is_file() and (key.stat().st_mode & 0o777) == 0o600
    assert "SIP TLS certificate SHA-256 fingerprint:" in out
    before = cert.read_bytes()
    assert main(["init", "--data", str(data)]) == 0
    assert cert.read_bytes() == before and "kept" in capsys.readouterr().out
    # a data directory from before TLS gets one at the next init
    cert.unlink()
    key.unlink()
    assert main(["init", "--data", str(data)]) == 0
    assert cert.is_file() and cert.read_bytes() != before


def test_user_totp_enable_status_disable(data: Path) -> None:
    """An admin gives a user a second factor (secret and otpauth:// URI printed once), sees
    it on, and takes it away; the secret is stored, never in the config or a log."""
    from heimbuero.domain import totp

    assert run("user", "add", "alice", "--password", PASSWORD, "--data", str(data)).returncode == 0
    assert "off" in run("user", "totp", "alice", "status", "--data", str(data)).stdout
    proc = run("user", "totp", "alice", "enable", "--data", str(data))
    assert proc.returncode == 0, proc.stderr
    secret = proc.stdout.split("secret   ")[1].split()[0]
    assert len(totp.secret_bytes(secret)) == 20
    assert f"otpauth://totp/heimbuero:alice@{DOMAIN}?secret={secret}&" in proc.stdout
    assert db_rows(data, "SELECT secret, enabled FROM user_totp") == [(secret, 1)]
    backup = re.search(r"^backup +(.+)$", proc.stdout, re.M)
    assert backup and len(backup.group(1).split()) == 10  # shown once, here
    status = run("user", "totp", "alice", "status", "--data", str(data)).stdout
    assert ": on, 10 unused backup codes" in status
    proc = run("user", "totp", "alice", "disable", "--data", str(data))
    assert proc.returncode == 0 and "off" in proc.stdout
    assert db_rows(data, "SELECT * FROM user_totp") == []
    assert_error(run("user", "totp", "nobody", "enable", "--data", str(data)), 1, "nobody")
