#!/usr/bin/env python3
"""Invoice run benchmark (issue 15): `heimbuero invoices run` for many clients with many usage
lines, its time and peak memory.

    python bench/invoices.py [--quick] [--clients N] [--lines N] [--month YYYY-MM]
                             [--json FILE] [--keep]

1. `heimbuero init`, the admin `boss` (bench/heimbuero_users.py) and an API token of it
   (`heimbuero token create`); `heimbuero serve --http`, and through the HTTP API as a user
   would: the provider's invoice data (`PATCH /api/billing/seller`), a tariff template
   (`PUT /api/billing/tariffs`), then per client `POST /api/clients`, its invoice address
   (`PATCH /api/billing/clients/ID/buyer`) and the tariff from the month's first day
   (`POST /api/billing/clients/ID/tariffs`). The server is stopped.
2. Seeding, **not** as a user would (a million calls through the server would take hours):
   per client `--lines / 2` answered calls in the month (default: the month before this one),
   each rated by heimbuero's own `rate_call` with that tariff into its two usage lines (one
   answered call, its talk units), written with one multi-row INSERT per 20,000 rows into
   heimbuero's own tables (`billing_readings`, one reading per call with the facts the meter
   stores; `billing_usage`, the lines) in one transaction. That is what the server's meter
   would have written for these calls.
3. `heimbuero invoices run --month M` as its own process (`python -m heimbuero`); wall time,
   CPU time and peak RSS (`ru_maxrss` of that process, from wait4), and the invoices it made
   (`heimbuero invoices list`). The run writes each invoice with its PDF/A-3 and XML.

Prints one markdown table on stdout (progress on stderr). Default size 500 clients × 2,000
lines (1,000,000 usage lines); `--quick`: 20 × 200. See bench/README.md, section "Invoices".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from run import DOMAIN, HOST, PASSWORD, Ports, Procs, log, sip_options, wait_until  # noqa: E402

ADMIN = "boss"
TARIFF = {"name": "Bench M", "base_fee": "4900", "per_answered_call": "85",
          "per_talk_unit": "20", "increment": "60/60", "per_note": "50"}  # fmt: skip
SELLER = {"name": "Bürodienst Bench GmbH", "street": "Hauptstraße 1", "postcode": "80331",
          "city": "München", "country": "DE", "vat_id": "DE123456789",
          "iban": "DE02120300000000202051", "email": "rechnung@bench.test",
          "phone": "+49 89 1234567"}  # fmt: skip
CHUNK = 20_000


def cli(*argv: str, timeout: float = 120) -> str:
    r = subprocess.run([sys.executable, "-m", "heimbuero", *argv], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout)  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"heimbuero {' '.join(argv[:2])} failed: {r.stderr.strip()[-300:]}")
    return r.stdout


def last_month() -> str:
    first = datetime.now(UTC).date().replace(day=1)
    return (first - timedelta(days=1)).strftime("%Y-%m")


def setup(tmp: Path, procs: Procs, clients: int, month: str) -> Path:
    """Data directory with `clients` clients, each with an invoice address and the tariff."""
    import httpx

    d = tmp / "data"
    cli("init", "--data", str(d), "--domain", DOMAIN)
    r = subprocess.run([sys.executable, str(BENCH / "heimbuero_users.py"), "--data", str(d),
                        "--count", "0", "--extra", ADMIN, "--role", "admin",
                        "--password", PASSWORD], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"creating the admin failed: {r.stderr.strip()[-300:]}")
    m = re.search(r"\b(hb_\S+)", cli("token", "create", "--name", "bench", ADMIN, "--data", str(d)))
    if m is None:
        raise RuntimeError("no API token")
    ports = Ports()
    sip, http = ports.one(), ports.one()
    proc = procs.start([sys.executable, "-m", "heimbuero", "serve", "--data", str(d),
                        "--sip", f"udp:{HOST}:{sip}", "--http", f"{HOST}:{http}"],
                       "heimbuero", cwd=ROOT)  # fmt: skip

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"heimbuero serve exited (rc {proc.returncode})")
        h = sip_options(sip)
        if h is None or not h["status"].startswith("SIP/2.0 200"):
            return False
        with socket.socket() as s:
            return s.connect_ex((HOST, http)) == 0

    wait_until(ready, 60, "heimbuero serve answering OPTIONS and HTTP", interval=0.1)
    try:
        with httpx.Client(base_url=f"http://{HOST}:{http}", timeout=30,
                          headers={"Authorization": f"Bearer {m.group(1)}"}) as api:  # fmt: skip

            def ok(r: Any, what: str) -> None:
                if r.status_code >= 300:
                    raise RuntimeError(f"{what}: {r.status_code} {r.text[:200]}")

            ok(api.patch("/api/billing/seller", json=SELLER), "seller")
            ok(api.put("/api/billing/tariffs", json=TARIFF), "tariff")
            for k in range(clients):
                cid = f"c{k:04d}"
                ok(api.post("/api/clients", json={"id": cid, "name": f"Betrieb {k} GmbH",
                                                  "timezone": "Europe/Berlin"}), cid)  # fmt: skip
                ok(api.patch(f"/api/billing/clients/{cid}/buyer", json={
                    "name": f"Betrieb {k} GmbH", "street": f"Werkstraße {k}",
                    "postcode": "80331", "city": "München", "country": "DE",
                }), f"buyer {cid}")  # fmt: skip
                ok(api.post(f"/api/billing/clients/{cid}/tariffs",
                            json={"tariff": TARIFF["name"], "valid_from": f"{month}-01"}),
                   f"tariff of {cid}")  # fmt: skip
    finally:
        procs.stop(proc)
    return d


def seed(data: Path, clients: int, lines: int, month: str) -> dict[str, Any]:
    """Per client lines/2 answered calls in `month`, rated by heimbuero's rate_call, written
    into billing_readings and billing_usage (one transaction)."""
    from sqlalchemy import create_engine, insert

    from heimbuero import config
    from heimbuero.billing.tariff import CallFacts, rate_call, tariff_from_json
    from heimbuero.store.models import MeterReadingRow, UsageLineRow

    cfg = config.load(data.resolve())
    tariff = tariff_from_json(TARIFF)
    first = datetime.fromisoformat(f"{month}-01T00:00:00+00:00")
    seconds = ((first + timedelta(days=32)).replace(day=1) - first).total_seconds() - 7200
    rnd = random.Random(15)
    engine = create_engine(cfg.db_url)
    readings: list[dict[str, Any]] = []
    usage: list[dict[str, Any]] = []
    rid = n_readings = n_lines = 0
    t0 = time.monotonic()
    try:
        with engine.begin() as conn:

            def flush(final: bool = False) -> None:
                nonlocal readings, usage
                if readings and (final or len(readings) >= CHUNK):
                    conn.execute(insert(MeterReadingRow), readings)
                    readings = []
                if usage and (final or len(usage) >= CHUNK):
                    conn.execute(insert(UsageLineRow), usage)
                    usage = []

            for k in range(clients):
                cid = f"c{k:04d}"
                for _ in range(lines // 2):
                    rid += 1
                    at = first + timedelta(seconds=3600 + rnd.random() * seconds)
                    talk = rnd.uniform(5, 600)
                    facts = {"result": "answered", "answered_by": "user:agent",
                             "talk_seconds": talk}  # fmt: skip
                    readings.append({"id": rid, "client": cid, "month": month,
                                     "source_kind": "call_record", "source_id": str(rid),
                                     "at": at, "facts": facts})  # fmt: skip
                    call = CallFacts(rid, at, "answered", "user:agent", talk)
                    for u in rate_call(call, tariff, "BY", "Europe/Berlin"):
                        usage.append({
                            "reading_id": rid, "client": cid, "month": month, "kind": u.kind,
                            "source_kind": u.source_kind, "source_id": u.source_id, "at": u.at,
                            "quantity": str(u.quantity), "unit_price": str(u.unit_price),
                            "surcharge": u.surcharge, "surcharge_pct": str(u.surcharge_pct),
                            "vat_rate": str(u.vat_rate), "amount": u.amount,
                            "description": u.description[:255],
                        })  # fmt: skip
                        n_lines += 1
                    n_readings += 1
                    flush()
                if (k + 1) % 50 == 0:
                    log(f"  seeded {k + 1} clients, {n_lines:,} usage lines "
                        f"({time.monotonic() - t0:.0f} s)")  # fmt: skip
            flush(final=True)
    finally:
        engine.dispose()
    return {"readings": n_readings, "usage_lines": n_lines,
            "seed_seconds": round(time.monotonic() - t0, 1)}  # fmt: skip


def timed_run(data: Path, month: str, logfile: Path) -> dict[str, Any]:
    """`heimbuero invoices run` as a process: wall and CPU time and peak RSS (wait4)."""
    with open(logfile, "wb") as out:
        t0 = time.monotonic()
        p = subprocess.Popen([sys.executable, "-m", "heimbuero", "invoices", "run", "--month",
                              month, "--data", str(data)], cwd=ROOT, stdin=subprocess.DEVNULL,
                             stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            _pid, status, ru = os.wait4(p.pid, 0)
        except BaseException:
            p.kill()
            p.wait()
            raise
        wall = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        tail = logfile.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"invoices run exited {p.returncode}: {' | '.join(tail)}")
    return {"seconds": round(wall, 2), "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 2),
            "peak_rss_kib": ru.ru_maxrss}  # fmt: skip


def table(res: dict[str, Any]) -> str:
    rows = ["| metric | value | note |", "|---|---|---|"]
    run, sd = res.get("run"), res.get("seed", {})
    size = f"{res['clients']:,} clients × {res['lines']:,} usage lines"
    if run:
        rows += [
            f"| invoice run, {size}: wall time (s)¹ | {run['seconds']:,.1f} | "
            f"CPU {run['cpu_seconds']:,.1f} s; {run['invoices']:,} invoices "
            f"({run['per_invoice_ms']:.0f} ms each) |",
            f"| invoice run, {size}: peak RSS (MiB)¹ | {run['peak_rss_kib'] / 1024:,.0f} | "
            f"`ru_maxrss` of the process |",
        ]
    else:
        rows.append(f"| invoice run, {size}¹ | n/a | {res.get('error', 'not measured')} |")
    rows += [
        "",
        f"¹ `heimbuero invoices run --month {res['month']}` as a process on SQLite; "
        f"{sd.get('usage_lines', 0):,} usage lines of {sd.get('readings', 0):,} answered calls "
        "(each rated by heimbuero's `rate_call`: one call line, one talk line), written into "
        "heimbuero's tables by the bench; every client with an invoice address and the tariff "
        "(set through the HTTP API). The run writes each invoice with its PDF/A-3 and XML.",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 clients × 200 lines")
    ap.add_argument("--clients", type=int, help="clients with a tariff (default 500)")
    ap.add_argument("--lines", type=int, help="usage lines per client, even (default 2000)")
    ap.add_argument("--month", default=last_month(), help="YYYY-MM, ended (default: last month)")
    ap.add_argument("--json", type=Path, help="also write the measurements as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    args = ap.parse_args(argv)
    clients = args.clients or (20 if args.quick else 500)
    lines = args.lines or (200 if args.quick else 2000)
    if not re.fullmatch(r"\d{4}-\d{2}", args.month):
        ap.error("--month: YYYY-MM")
    month_end = (date.fromisoformat(f"{args.month}-01") + timedelta(days=32)).replace(day=1)
    if month_end > datetime.now(UTC).date():
        ap.error(f"--month: {args.month} has not ended")

    tmp = Path(tempfile.mkdtemp(prefix="hb-invoices-"))
    procs = Procs(tmp)
    res: dict[str, Any] = {"clients": clients, "lines": lines, "month": args.month}
    log(f"invoice bench: {clients} clients × {lines} lines, month {args.month}; logs in {tmp}")

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    ok = False
    try:
        t0 = time.monotonic()
        data = setup(tmp, procs, clients, args.month)
        log(f"{clients} clients with invoice address and tariff ({time.monotonic() - t0:.0f} s)")
        res["seed"] = seed(data, clients, lines, args.month)
        db = data / "heimbuero.db"
        res["db_bytes"] = db.stat().st_size if db.exists() else None
        log(f"seeded {res['seed']['usage_lines']:,} usage lines "
            f"in {res['seed']['seed_seconds']} s")  # fmt: skip
        run = timed_run(data, args.month, tmp / "invoices-run.log")
        made = json.loads(cli("invoices", "list", "--data", str(data)) or "[]")
        run["invoices"] = len(made) if isinstance(made, list) else 0
        run["per_invoice_ms"] = run["seconds"] * 1000 / max(1, run["invoices"])
        res["run"] = run
        res["bench_children_cpu_seconds"] = round(
            sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2]), 1
        )
        log(
            f"invoices run: {run['seconds']} s wall, {run['cpu_seconds']} s CPU, peak RSS "
            f"{run['peak_rss_kib'] / 1024:.0f} MiB, {run['invoices']} invoices"
        )
        ok = run["invoices"] == clients
        if not ok:
            res["error"] = f"{run['invoices']} invoices for {clients} clients"
    except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
        log(f"failed: {exc}")
        res["error"] = str(exc)[:300]
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        procs.stop_all()
        if args.keep or not ok:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(table(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
