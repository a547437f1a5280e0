"""`heimbuero route simulate --caller` and caller conditions through `rules import`, run as a
real subprocess on a demo data directory."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.test_cli import assert_error, run

RULES = """\
client: mueller
numbers:
  "089 1234567":
    rules:
      - name: VIP
        when: {caller: {vip: true}}
        steps: [{targets: ["external:0170 1111111"], timeout: 20}]
      - name: Wien
        when: {caller: {prefixes: ["0043 1"]}}
        steps: [{targets: ["voicemail:mueller"]}]
      - name: Büro
        steps: [{targets: ["group:team"]}]
"""


def test_route_simulate_with_a_caller(tmp_path: Path) -> None:
    data = ["--data", str(tmp_path / "data")]
    assert run("init", "--demo", "--domain", "office.example", *data).returncode == 0
    assert run("client", "vip", "mueller", "0171 2222222", "--name", "Herr Meier",
               *data).returncode == 0  # fmt: skip
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    imported = run("rules", "import", "mueller", str(path), *data)
    assert imported.returncode == 0, imported.stderr

    def rule(*caller: str) -> str:
        res = run("route", "simulate", "089 1234567", "--json", *caller, *data)
        assert res.returncode == 0, res.stderr
        return str(json.loads(res.stdout)["rule"])

    assert rule("--caller", "0171 2222222") == "VIP"
    assert rule("--caller", "+43 1 5551234") == "Wien"
    assert rule("--caller", "030 1234567") == "Büro"
    assert rule() == "Büro"
    assert_error(run("route", "simulate", "089 1234567", "--caller", "0171 22x", *data), 1,
                 "invalid caller", "is not a phone number")  # fmt: skip
    # a document with an invalid caller condition is refused with its path; nothing changes
    path.write_text(RULES.replace('["0043 1"]', '["43 1"]'), encoding="utf-8")
    refused = run("rules", "import", "mueller", str(path), *data)
    assert refused.returncode == 1
    assert "numbers.089 1234567.rules[1].when.caller.prefixes[0]: '43 1': write" in refused.stderr
    assert rule("--caller", "+43 1 5551234") == "Wien"
