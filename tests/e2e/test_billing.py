"""Billing end to end: the real `heimbuero serve` with the demo office; a tariff set through
the HTTP API; a carrier call answered by agent `anna` (SIPp on both sides) becomes usage lines
of client `mueller` (one answered call + one started talk unit) that the owner reads through
the API with the month's cost so far; another client's user gets 404; a call nobody answers
costs nothing."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from .harness import Server, free_port, start_sipp, start_sipp_callee, wait_until
from .test_routing import CALLER, DOMAIN, NUMBER, rules_document, werktag_now

pytestmark = [pytest.mark.e2e, pytest.mark.peers("sipp")]

TARIFF = {
    "name": "Handwerk S",
    "base_fee": "2900",
    "per_answered_call": "85",
    "per_talk_unit": "20",
    "increment": "60/60",
    "per_note": "50",
}


def test_an_answered_call_becomes_usage_lines_the_owner_reads(tmp_path: Path) -> None:
    inbound = free_port()
    server = Server(tmp_path / "server", domain=DOMAIN, demo=True, http=True,
                    sip_options={"trusted_peers": [f"127.0.0.1:{inbound}"]})  # fmt: skip
    server.prepare()
    doc = tmp_path / "rules.json"
    doc.write_text(json.dumps(rules_document(werktag_now(), owner_timeout=1)), encoding="utf-8")
    server.cli("rules", "import", "mueller", str(doc), "--data", str(server.data_dir))
    pw = server.demo_passwords
    month = datetime.now(ZoneInfo("Europe/Berlin")).strftime("%Y-%m")
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        admin = stack.enter_context(
            httpx.Client(base_url=server.http_url, auth=("admin", pw["admin"]), timeout=10)
        )
        owner = stack.enter_context(
            httpx.Client(base_url=server.http_url, auth=("mueller", pw["mueller"]), timeout=10)
        )
        other = stack.enter_context(
            httpx.Client(base_url=server.http_url, auth=("schulz", pw["schulz"]), timeout=10)
        )
        assert admin.put("/api/billing/tariffs", json=TARIFF).status_code == 200
        r = admin.post("/api/billing/clients/mueller/tariffs",
                       json={"tariff": "Handwerk S", "valid_from": "2026-01-01"})  # fmt: skip
        assert r.status_code == 204, r.text
        assert owner.put("/api/billing/tariffs", json=TARIFF).status_code == 403
        assert (
            admin.put("/api/billing/tariffs", json={**TARIFF, "per_note": 0.5}).status_code == 422
        )

        with start_sipp_callee(tmp_path, server, user="anna", password=pw["anna"],
                               on_invite="routing_callee_agent.xml", calls=1,
                               timeout=60) as anna:  # fmt: skip
            with start_sipp(tmp_path, "carrier-call", scenario="caller_trusted.xml",
                            remote=server.address, port=inbound, calls=1, timeout=40,
                            service=NUMBER, keys={"domain": DOMAIN, "caller": CALLER},
                            extra=["-d", "300"]) as call:  # fmt: skip
                result = call.wait()
            assert result.returncode == 0, f"{result.report()}\n{server.log_text()}"
            anna.wait(15).check()

        def lines() -> list[dict[str, Any]] | None:
            r = owner.get("/api/billing/clients/mueller/usage", params={"month": month})
            assert r.status_code == 200, r.text
            got: list[dict[str, Any]] = r.json()["lines"]
            return got if len(got) >= 2 else None

        got = wait_until(lines, 40, interval=0.3, what="the call's usage lines")
        assert [(u["kind"], u["source_kind"], u["quantity"], u["amount"]) for u in got] == [
            ("call", "call_record", "1", 85),
            ("talk", "call_record", "1", 20),
        ]
        usage = owner.get("/api/billing/clients/mueller/usage").json()
        assert usage["month"] == month
        st = usage["statement"]
        net = 2900 + 85 + 20
        assert (st["net"], st["vat"], st["gross"]) == (net, (net * 19 + 50) // 100,
                                                       net + (net * 19 + 50) // 100)  # fmt: skip
        # the call record behind the lines is the answered call of anna
        calls = admin.get("/api/calls", params={"client": "mueller"}).json()
        (rec,) = [c for c in calls if str(c["id"]) == got[0]["source_id"]]
        assert (rec["answered_by"], rec["result"]) == ("user:anna", "answered")

        # another business: exactly like a client that does not exist
        for path in ("/api/billing/clients/mueller/usage", "/api/billing/clients/mueller/tariffs"):
            assert other.get(path).status_code == 404
            assert other.get(path.replace("mueller", "nobody")).status_code == 404
        assert other.get("/api/billing/usage", params={"month": month}).status_code == 403
        assert admin.get("/api/billing/usage", params={"month": month}).json() == {"mueller": 105}
        csv = admin.get("/api/billing/usage.csv", params={"month": month}).text
        assert csv.splitlines() == ["month;client;usage_net_cents", f"{month};mueller;105"]
        # invoices: only admins run them, only for a month that has ended; another
        # business's invoice numbers answer 404 like missing ones
        assert owner.post("/api/billing/invoices/run", params={"month": month}).status_code == 403
        r = admin.post("/api/billing/invoices/run", params={"month": month})
        assert r.status_code == 422 and "not ended" in r.text, r.text
        assert other.get("/api/billing/invoices").json() == []
        assert other.get("/api/billing/invoices", params={"client": "mueller"}).status_code == 404
        assert other.get("/api/billing/invoices/RE-2026-000001").status_code == 404
        assert other.post("/api/billing/invoices/RE-2026-000001/cancel").status_code == 403
