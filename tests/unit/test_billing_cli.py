"""`heimbuero billing …` as a real subprocess on a demo data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from heimbuero.app.billing import Billing
from heimbuero.store import Store

ERR = "heimbuero: error: "


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HEIMBUERO_DATA"}
    return subprocess.run([sys.executable, "-m", "heimbuero", *args],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip


def test_billing_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run("init", "--data", str(data), "--domain", "office.example", "--demo").returncode == 0
    d = ("--data", str(data))
    tariff = tmp_path / "t.json"
    tariff.write_text(json.dumps({"name": "S", "base_fee": "2900", "per_answered_call": "85",
                                  "per_talk_unit": "20", "increment": "30/30"}))  # fmt: skip
    r = run("billing", "tariff-set", str(tariff), *d)
    assert r.returncode == 0 and "tariff 'S' saved" in r.stdout, r.stderr
    r = run("billing", "assign", "mueller", "S", "--from", "2026-01-01", *d)
    assert r.returncode == 0, r.stderr
    store = Store(f"sqlite:///{data / 'heimbuero.db'}")
    at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    rid = store.add_call_record("c1", "+49891234567", "+4930999", at, "mueller")
    store.update_call_record(rid, answered_by="user:anna", talk_seconds=61.0, result="answered")
    Billing(store).meter_calls()  # what the running server does after a call ends
    store.close()
    r = run("billing", "usage", "mueller", "--month", "2026-12", "--json", *d)
    assert r.returncode == 0, r.stderr
    u = json.loads(r.stdout)
    assert [(x["kind"], x["quantity"], x["amount"]) for x in u["lines"]] == [
        ("call", "1", 85),
        ("talk", "3", 60),
    ]
    r = run("billing", "usage", "mueller", "--month", "2026-12", *d)
    assert "net 30,45 €, VAT 5,79 €, gross 36,24 €" in r.stdout, r.stdout
    # bad input: one error line
    r = run("billing", "assign", "mueller", "nope", "--from", "2026-01-01", *d)
    assert r.returncode == 1 and r.stderr.startswith(ERR) and "nope" in r.stderr, r.stderr
    tariff.write_text('{"name": "x", "per_note": 0.5}')
    r = run("billing", "tariff-set", str(tariff), *d)
    assert r.returncode == 1 and r.stderr.startswith(ERR) and "float" in r.stderr, r.stderr
    r = run("billing", "usage", "mueller", "--month", "2026-13", *d)
    assert r.returncode == 1 and r.stderr.startswith(ERR), r.stderr
    r = run("billing", "settings", "--kleinunternehmer", "yes", *d)
    assert json.loads(r.stdout)["kleinunternehmer"] is True
