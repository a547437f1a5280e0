"""Command-line answers an operator following the README meets first, run as a real subprocess
on a temporary demo data directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from heimbuero import config

ERR = "heimbuero: error: "


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "HEIMBUERO_DATA"}
    return subprocess.run(
        [sys.executable, "-m", "heimbuero", *args],
        capture_output=True,
        text=True,
        env=base | (env or {}),
        timeout=60,
    )


def assert_one_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit status 1 and exactly one stderr line with the error prefix and `words`."""
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERR), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("ops") / "data"
    first = run("init", "--data", str(data), "--domain", "office.example", "--demo")
    assert first.returncode == 0, first.stderr
    return data


def test_rules_import_of_a_missing_file_names_it(demo: Path, tmp_path: Path) -> None:
    missing = tmp_path / "regeln.yaml"
    line = assert_one_error(
        run("rules", "import", "mueller", str(missing), "--data", str(demo)),
        str(missing),
        "No such file or directory",
    )
    assert "Errno" not in line
    line = assert_one_error(
        run("rules", "import", "mueller", str(tmp_path), "--data", str(demo)), str(tmp_path)
    )
    assert "Errno" not in line


def test_calls_list_of_an_unknown_client_says_so(demo: Path) -> None:
    unknown = run("calls", "list", "--client", "nobody", "--data", str(demo))
    assert_one_error(unknown, "no such client", "nobody")
    known = run("calls", "list", "--client", "mueller", "--data", str(demo))
    assert known.returncode == 0 and known.stdout.strip() == "no call records"
    later = run("calls", "list", "--since", "2026-12-01", "--until", "2026-12-02T08:00",
                "--data", str(demo))  # fmt: skip
    assert later.returncode == 0 and later.stdout.strip() == "no call records", later.stderr
    assert_one_error(run("calls", "list", "--since", "gestern", "--data", str(demo)),
                     "--since", "gestern")  # fmt: skip


def test_counts_in_output_are_singular_for_one(demo: Path, tmp_path: Path) -> None:
    doc = tmp_path / "one.yaml"
    doc.write_text(
        "client: mueller\n"
        "numbers:\n"
        "  '+49891234567':\n"
        "    rules:\n"
        "      - name: Immer\n"
        "        steps:\n"
        "          - targets: ['group:team']\n"
        "            timeout: 30\n",
        encoding="utf-8",
    )
    proc = run("rules", "import", "mueller", str(doc), "--data", str(demo))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "imported 1 rule for 1 number of client mueller"


def test_user_add_in_upper_case_says_the_name_phones_must_use(demo: Path) -> None:
    proc = run("user", "add", "Carla", "--password", "Tanne-Moos-4711", "--data", str(demo))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("added user carla ") and "sip:carla@office.example" in lines[0]
    assert len(lines) == 2 and "'Carla' was added as 'carla'" in lines[1]
    assert "phones must use 'carla'" in lines[1]
    plain = run("user", "add", "dora", "--password", "Tanne-Moos-4711", "--data", str(demo))
    assert plain.returncode == 0 and len(plain.stdout.splitlines()) == 1, plain.stdout


def _init_on_host(hostname: str, data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`heimbuero init` in a new UTS namespace with this host name (and a network namespace of
    its own, so resolving the name asks nobody)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    probe = subprocess.run(["unshare", "--uts", "--net", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare --uts --net is not permitted here (needs root)")
    env = {k: v for k, v in os.environ.items() if k != "HEIMBUERO_DATA"}
    script = 'hostname "$1" && shift && exec "$@"'
    return subprocess.run(
        ["unshare", "--uts", "--net", "sh", "-c", script, "sh", hostname,
         sys.executable, "-m", "heimbuero", "init", "--data", str(data), *args],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def _domain_of(data: Path) -> str:
    domain = tomllib.loads((data / "config.toml").read_text())["server"]["domain"]
    assert isinstance(domain, str)
    return domain


@pytest.mark.parametrize("hostname", ["heimbuero-box", "localhost"])
def test_init_says_when_the_host_name_gives_no_qualified_domain(
    tmp_path: Path, hostname: str
) -> None:
    proc = _init_on_host(hostname, tmp_path / "data")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("heimbuero: warning: "), proc.stderr
    assert f"({hostname!r}) has no domain part" in lines[0]
    assert f"the SIP domain is {hostname!r}" in lines[0]
    assert "[server] domain" in lines[0] and "--domain" in lines[0]
    assert _domain_of(tmp_path / "data") == hostname
    assert "config.toml" in proc.stdout  # the directory is still set up


def test_init_is_quiet_with_a_qualified_host_name_or_domain(tmp_path: Path) -> None:
    proc = _init_on_host("pbx.office.example", tmp_path / "a")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert _domain_of(tmp_path / "a") == "pbx.office.example"
    proc = _init_on_host("heimbuero-box", tmp_path / "b", "--domain", "office.example")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert _domain_of(tmp_path / "b") == "office.example"


def test_trunk_at_the_servers_own_address_is_refused(demo: Path) -> None:
    d = ["--data", str(demo)]
    before = run("trunk", "list", *d).stdout
    for address in ("127.0.0.1", "127.0.0.1:5060", "localhost", "office.example:5060"):
        line = assert_one_error(
            run("trunk", "set", "carrier", "--address", address, *d),
            "trunk carrier would point at this server itself",
            "udp:127.0.0.1:5060",
        )
        assert "config.toml" in line
    assert_one_error(run("trunk", "add", "loop", "--address", "127.0.0.1", *d), "trunk loop")
    assert run("trunk", "list", *d).stdout == before  # nothing changed
    other_port = run("trunk", "set", "carrier", "--address", "127.0.0.1:5070", *d)
    assert other_port.returncode == 0, other_port.stderr
    assert "udp:127.0.0.1:5070" in other_port.stdout


def test_trunk_refusal_follows_the_configured_listen_and_advertise(
    demo: Path, tmp_path: Path
) -> None:
    data = Path(shutil.copytree(demo, tmp_path / "data"))
    cfg = data / "config.toml"
    text = cfg.read_text(encoding="utf-8")
    text = text.replace(
        'listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]',
        'listen = ["udp:0.0.0.0:5080"]\nadvertise = "192.0.2.10"',
    )
    cfg.write_text(text, encoding="utf-8")
    d = ["--data", str(data)]
    for address in ("192.0.2.10:5080", "127.0.0.1:5080", "127.0.0.7:5080"):
        assert_one_error(
            run("trunk", "set", "carrier", "--address", address, *d), "udp:0.0.0.0:5080"
        )
    for address in ("127.0.0.1:5060", "192.0.2.10:5060", "192.0.2.11:5080"):
        proc = run("trunk", "set", "carrier", "--address", address, *d)
        assert proc.returncode == 0, (address, proc.stderr)


def test_log_level_from_config_and_flag(demo: Path, tmp_path: Path) -> None:
    data = Path(shutil.copytree(demo, tmp_path / "data"))
    cfg = data / "config.toml"
    assert config.load(data).log_level == "info"
    assert 'log_level = "info"' in cfg.read_text(encoding="utf-8")  # init writes the default
    cfg.write_text(
        cfg.read_text(encoding="utf-8").replace('log_level = "info"', 'log_level = "warning"'),
        encoding="utf-8",
    )
    assert config.load(data).log_level == "warning"
    cfg.write_text(
        cfg.read_text(encoding="utf-8").replace('log_level = "warning"', 'log_level = "loud"'),
        encoding="utf-8",
    )
    assert_one_error(run("serve", "--data", str(data)), "[server] log_level", "debug, info")
    usage = run("serve", "--log-level", "loud", "--data", str(demo))
    assert usage.returncode == 2 and usage.stderr.startswith(ERR), usage.stderr
    assert "--log-level" in run("serve", "--help").stdout
