"""The office commands of the CLI, run as a real subprocess on a demo data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ERR = "heimbuero: error: "
NUMBER = "+49891234567"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HEIMBUERO_DATA"}
    return subprocess.run([sys.executable, "-m", "heimbuero", *args],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    data = tmp_path_factory.mktemp("office") / "data"
    first = run("init", "--data", str(data), "--domain", "office.example", "--demo")
    assert first.returncode == 0, first.stderr
    return data, first.stdout


def test_init_demo_prints_passwords_once_and_is_idempotent(demo: tuple[Path, str]) -> None:
    data, out = demo
    lines = [ln.split() for ln in out.splitlines() if ln.startswith("  ")]
    passwords = {ln[0]: ln[1] for ln in lines}
    assert {"anna", "ben", "mueller", "schulz"} <= set(passwords)
    assert all(len(p) >= 10 for p in passwords.values())
    again = run("init", "--data", str(data), "--demo")
    assert again.returncode == 0, again.stderr
    assert not any(p in again.stdout for p in passwords.values())
    assert "no demo seeded" in again.stdout
    listed = run("client", "list", "--data", str(data)).stdout
    assert "mueller" in listed and "schulz" in listed and NUMBER in listed


def _simulate(data: Path, at: str) -> dict[str, object]:
    proc = run("route", "simulate", NUMBER, "--at", at, "--json", "--data", str(data))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_route_simulate_json(demo: tuple[Path, str]) -> None:
    data, _ = demo
    tuesday = _simulate(data, "2026-03-03T09:00")
    assert tuesday["client"] == "mueller" and tuesday["rule"] == "Werktag"
    assert tuesday["steps"] == [{"targets": ["user:mueller"], "timeout": 15},
                                {"targets": ["group:team"], "timeout": 30}]  # fmt: skip
    sonst = [{"targets": ["group:team"], "timeout": 30},
             {"targets": ["external:+491701111111"], "timeout": 20}]  # fmt: skip
    saturday = _simulate(data, "2026-03-07T09:00+01:00")
    assert saturday["rule"] == "Sonst" and saturday["steps"] == sonst
    epiphany = _simulate(data, "2026-01-06T09:00")  # Heilige Drei Könige: Bavaria only
    assert epiphany["rule"] == "Sonst" and epiphany["steps"] == sonst
    text = run("route", "simulate", NUMBER, "--at", "2026-03-03T09:00", "--data", str(data))
    assert "Werktag" in text.stdout and "user:mueller" in text.stdout


def test_route_simulate_bad_number_is_one_error_line(demo: tuple[Path, str]) -> None:
    data, _ = demo
    for bad in (["089 12x"], ["0"], [NUMBER, "--at", "yesterday"]):
        proc = run("route", "simulate", *bad, "--data", str(data))
        assert proc.returncode == 1
        assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(ERR)


def test_rules_export_import_round_trip(demo: tuple[Path, str], tmp_path: Path) -> None:
    data, _ = demo
    exported = run("rules", "export", "mueller", "--data", str(data))
    assert exported.returncode == 0, exported.stderr
    assert "Werktag" in exported.stdout
    f = tmp_path / "mueller.yaml"
    f.write_text(exported.stdout.replace("timeout: 15", "timeout: 25"), encoding="utf-8")
    imported = run("rules", "import", "mueller", str(f), "--data", str(data))
    assert imported.returncode == 0, imported.stderr
    again = run("rules", "export", "mueller", "--data", str(data)).stdout
    assert "timeout: 25" in again
    f.write_text(exported.stdout, encoding="utf-8")
    assert run("rules", "import", "mueller", str(f), "--data", str(data)).returncode == 0
    assert run("rules", "export", "mueller", "--data", str(data)).stdout == exported.stdout
    as_json = json.loads(run("rules", "export", "mueller", "--json", "--data", str(data)).stdout)
    assert as_json["client"] == "mueller"


def test_rules_import_invalid_reports_every_problem(demo: tuple[Path, str], tmp_path: Path) -> None:
    data, _ = demo
    before = run("rules", "export", "mueller", "--data", str(data)).stdout
    f = tmp_path / "bad.yaml"
    f.write_text(
        "client: mueller\nnumbers:\n  '+49891234567':\n    rules:\n"
        "      - name: A\n        when: {time: '17:00-16:00'}\n"
        "        steps: [{targets: ['group:ghosts'], timeout: 30}]\n",
        encoding="utf-8",
    )
    proc = run("rules", "import", "mueller", str(f), "--data", str(data))
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert all(ln.startswith(ERR) for ln in lines) and len(lines) >= 3
    assert any("rules[0].when.time" in ln for ln in lines)
    assert any("rules[0].steps[0]" in ln and "ghosts" in ln for ln in lines)
    assert run("rules", "export", "mueller", "--data", str(data)).stdout == before


def test_office_management_commands(demo: tuple[Path, str]) -> None:
    data, _ = demo
    d = ["--data", str(data)]
    assert run("client", "add", "baecker", "--name", "Bäckerei", "--bundesland", "HH", *d
               ).returncode == 0  # fmt: skip
    assert run("number", "add", "+494012345", "--client", "baecker", *d).returncode == 0
    dup = run("number", "add", "+494012345", "--client", "baecker", *d)
    assert dup.returncode == 1 and dup.stderr.startswith(ERR)
    assert run("group", "add", "spaet", "--members", "anna", *d).returncode == 0
    assert run("trunk", "set", "carrier", "--address", "192.0.2.9:5070", *d).returncode == 0
    assert "192.0.2.9:5070" in run("trunk", "list", *d).stdout
    token = run("token", "create", "anna", "--name", "ci", *d)
    assert token.returncode == 0 and token.stdout.splitlines()[-1].startswith("hb_")
    assert run("calls", "list", "--client", "mueller", *d).stdout.strip() == "no call records"
    bad = run("client", "add", "x", "--name", "X", "--bundesland", "ZZ", *d)
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1


def test_calls_out_policy_commands(tmp_path: Path) -> None:
    """`client policy`, `client approve-number` and `trunk set --allow/--max-concurrent`; a
    bad value is one error line and changes nothing."""
    data = tmp_path / "data"
    assert run("init", "--data", str(data), "--demo").returncode == 0
    d = ("--data", str(data))
    shown = run("client", "policy", "schulz", *d)
    assert shown.returncode == 0, shown.stderr
    assert "calls out to emergency, fixed, freephone, mobile;" in shown.stdout
    assert "at most 4 at once and 240 minutes a day; approved for forwarding: none" in shown.stdout
    assert "+491701111111" in run("client", "policy", "mueller", *d).stdout  # init --demo
    bad = run("client", "approve-number", "schulz", "+4319876543", *d)
    assert bad.returncode == 1 and bad.stderr.startswith(ERR) and bad.stderr.count("\n") == 1
    assert "destination not allowed: international" in bad.stderr
    changed = run("client", "policy", "schulz", "--allow", "international",
                  "--max-concurrent", "2", "--max-minutes-per-day", "60", *d)  # fmt: skip
    assert (
        "international" in changed.stdout and "at most 2 at once and 60 minutes" in changed.stdout
    )
    # the trunk must carry it too
    assert run("client", "approve-number", "schulz", "+4319876543", *d).returncode == 1
    trunk = run("trunk", "set", "carrier", "--prefixes", "+49,+43", "--allow", "international",
                "--max-concurrent", "30", *d)  # fmt: skip
    assert trunk.returncode == 0, trunk.stderr
    assert "international" in trunk.stdout and "at most 30 calls out at once" in trunk.stdout
    ok = run("client", "approve-number", "schulz", "+4319876543", *d)
    assert ok.returncode == 0, ok.stderr
    assert "approved for forwarding: +4319876543" in run("client", "policy", "schulz", *d).stdout
    revoked = run("client", "approve-number", "schulz", "+4319876543", "--revoke", *d)
    assert revoked.returncode == 0
    assert "forwarding: none" in run("client", "policy", "schulz", *d).stdout
    wrong = run("client", "policy", "schulz", "--allow", "moon", *d)
    assert wrong.returncode == 1 and "call policy.allow" in wrong.stderr
    assert "international" in run("client", "policy", "schulz", *d).stdout  # unchanged


def test_numbers_typed_as_germans_write_them(demo: tuple[Path, str]) -> None:
    data, _ = demo
    for written in ("0891234567", "089/1234567", "(0 89) 12 34 56-7", "0049 89 1234567"):
        proc = run("route", "simulate", written, "--at", "2026-03-03T09:00", "--json",
                   "--data", str(data))  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["number"] == NUMBER
    proc = run("client", "approve-number", "schulz", "0170/4444444", "--data", str(data))
    assert proc.returncode == 0, proc.stderr
    assert "+491704444444" in proc.stdout
    proc = run("client", "approve-number", "schulz", "0170/44x", "--data", str(data))
    assert proc.returncode == 1 and proc.stderr.startswith(ERR + "invalid number: ")
    assert len(proc.stderr.splitlines()) == 1


def test_route_simulate_with_a_draft_and_client_holidays(
    demo: tuple[Path, str], tmp_path: Path
) -> None:
    data, _ = demo
    draft = tmp_path / "draft.yaml"
    draft.write_text(
        "client: mueller\nnumbers:\n  089 1234567:\n    rules:\n      - name: Entwurf\n"
        "        steps:\n          - targets: [group:team]\n            timeout: 44\n"
    )
    before = run("rules", "export", "mueller", "--data", str(data)).stdout
    proc = run("route", "simulate", "089/1234567", "--at", "2026-12-24 14:00", "--draft",
               str(draft), "--json", "--data", str(data))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["rule"] == "Entwurf" and plan["steps"] == [{"targets": ["group:team"],
                                                             "timeout": 44}]  # fmt: skip
    assert run("rules", "export", "mueller", "--data", str(data)).stdout == before
    draft.write_text(draft.read_text().replace("group:team", "user:nobody"))
    proc = run("route", "simulate", NUMBER, "--draft", str(draft), "--data", str(data))
    assert proc.returncode == 1
    assert proc.stderr == (f"{ERR}{draft}: numbers.089 1234567.rules[0].steps[0].targets[0]: "
                           "unknown user 'nobody'\n")  # fmt: skip
    proc = run("client", "holidays", "mueller", "--months", "24", "--json", "--data", str(data))
    assert proc.returncode == 0, proc.stderr
    days = json.loads(proc.stdout)
    assert any(d["name"] == "Erster Weihnachtstag" for d in days)
    for bad in (["mueller", "--months", "0"], ["nosuch"]):
        proc = run("client", "holidays", *bad, "--data", str(data))
        assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1
        assert proc.stderr.startswith(ERR)


def test_client_closures_and_override_until(demo: tuple[Path, str]) -> None:
    data, _ = demo
    d = ["--data", str(data)]
    proc = run("client", "closures", "mueller", "--add", "2026-08-03", "2026-08-14",
               "--note", "Betriebsurlaub", *d)  # fmt: skip
    assert proc.returncode == 0 and "03.08.2026 to 14.08.2026" in proc.stdout, proc.stderr
    listed = run("client", "closures", "mueller", "--json", *d)
    [closure] = json.loads(listed.stdout)
    plan = json.loads(run("route", "simulate", NUMBER, "--at", "2026-08-04 10:00", "--json",
                          *d).stdout)  # fmt: skip
    assert plan["rule"] is None and plan["reason"].startswith("closure day")
    assert run("client", "closures", "mueller", "--remove", str(closure["id"]), *d).returncode == 0
    bad = run("client", "closures", "mueller", "--add", "2026-08-14", "2026-08-03", *d)
    assert bad.returncode == 1 and bad.stderr.startswith(ERR) and len(bad.stderr.splitlines()) == 1

    proc = run("client", "override", "mueller", "mobile", "--until", "2099-01-02 08:00", *d)
    assert proc.returncode == 0, proc.stderr
    assert "mobile until 02.01.2099 08:00 (Europe/Berlin) (active)" in proc.stdout
    before = json.loads(run("route", "simulate", NUMBER, "--at", "2099-01-02 07:59", "--json",
                            *d).stdout)  # fmt: skip
    after = json.loads(run("route", "simulate", NUMBER, "--at", "2099-01-02 08:00", "--json",
                           *d).stdout)  # fmt: skip
    assert before["rule"] == "Override Handy" and after["rule"] != "Override Handy"
    past = run("client", "override", "mueller", "office", "--until", "2020-01-01 08:00", *d)
    assert past.returncode == 1 and "lies in the past" in past.stderr
    assert run("client", "override", "mueller", "off", *d).returncode == 0
