"""`heimbuero billing …`: tariffs, client tariffs, settings, usage and recompute, as the local
admin. Thin: the handlers (heimbuero/app/billing.py) check and write; errors reach the CLI's
one error line through its main()."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from heimbuero.app.errors import Invalid
from heimbuero.app.policy import Actor
from heimbuero.billing.einvoice import BUYER_FIELDS, SELLER_FIELDS
from heimbuero.billing.tariff import format_euro

OpenApp = Callable[[str | None], AbstractContextManager[tuple[Any, Any]]]
ADMIN = Actor.local_admin()


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, not {text!r}") from None


def add_parsers(commands: Any, data: argparse.ArgumentParser, open_app: OpenApp) -> None:
    billing = commands.add_parser("billing", help="tariffs, usage and billing settings")
    sub = billing.add_subparsers(dest="billing_command", metavar="ACTION", required=True)

    def run(fn: Callable[[Any, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        def cmd(args: argparse.Namespace) -> int:
            with open_app(args.data) as (_cfg, app):
                return fn(app.billing, args)

        return cmd

    p = sub.add_parser(
        "tariff-set", parents=[data], help="create or replace a tariff template (JSON file)",
        description="Read a tariff as JSON (prices in euro cents as strings, e.g. "
        '{"name": "Handwerk S", "base_fee": "2900", "per_answered_call": "85", '
        '"per_talk_unit": "20", "increment": "60/60"}; see README, Billing).',
    )  # fmt: skip
    p.add_argument("file", metavar="FILE", help="the tariff as JSON ('-' for stdin)")
    p.set_defaults(func=run(_tariff_set))

    p = sub.add_parser("tariff-list", parents=[data], help="list tariff templates (JSON)")
    p.set_defaults(func=run(lambda b, a: _print_json(b.tariffs(ADMIN))))

    p = sub.add_parser(
        "assign",
        parents=[data],
        help="give a client a tariff from a date (refused in a month it has an invoice of)",
    )
    p.add_argument("client", metavar="CLIENT")
    p.add_argument("tariff", metavar="TARIFF", help="a tariff template's name")
    p.add_argument("--from", dest="valid_from", type=_date, required=True, metavar="YYYY-MM-DD")
    p.set_defaults(func=run(_assign))

    p = sub.add_parser("settings", parents=[data], help="show or change billing settings")
    p.add_argument("--kleinunternehmer", choices=("yes", "no"),
                   help="§19 UStG: no VAT on any invoice line")  # fmt: skip
    p.add_argument("--bundesland", metavar="XX",
                   help="holidays of this state when a client names none (default BY)")  # fmt: skip
    p.add_argument("--datev-berater", type=int, metavar="N",
                   help="the DATEV export's Beraternummer (1001 to 9999999)")  # fmt: skip
    p.add_argument("--datev-mandant", type=int, metavar="N",
                   help="the DATEV export's Mandantennummer (1 to 99999)")  # fmt: skip
    p.add_argument("--datev-account-length", type=int, metavar="N",
                   help="the DATEV Sachkontenlänge (4 to 8, default 4)")  # fmt: skip
    p.add_argument("--datev-fiscal-year-start", type=int, metavar="MONTH",
                   help="the fiscal year's first month (1 to 12, default 1)")  # fmt: skip
    p.add_argument("--datev-festschreibung", choices=("yes", "no"),
                   help="the DATEV export's Festschreibung flag (default no)")  # fmt: skip
    p.set_defaults(func=run(_settings))

    p = sub.add_parser("seller", parents=[data], help="show or change the provider's invoice data",
                       description="The provider's data every invoice names (EN 16931): name, "
                       "address, VAT ID or tax number, bank, contact. An invoice run refuses "
                       "while any of it is missing. '' clears a field.")  # fmt: skip
    for f in SELLER_FIELDS:
        p.add_argument(f"--{f.replace('_', '-')}", dest=f, metavar="TEXT")
    p.set_defaults(func=run(_seller))

    p = sub.add_parser("buyer", parents=[data], help="show or change a client's invoice address",
                       description="The client's invoice address; a Leitweg-ID makes its "
                       "invoices XRechnung (public sector). '' clears a field.")  # fmt: skip
    p.add_argument("client", metavar="CLIENT")
    for f in BUYER_FIELDS:
        p.add_argument(f"--{f.replace('_', '-')}", dest=f, metavar="TEXT")
    p.set_defaults(func=run(_buyer))

    p = sub.add_parser("usage", parents=[data], help="a client's usage lines and month total")
    p.add_argument("client", metavar="CLIENT")
    p.add_argument("--month", metavar="YYYY-MM", help="default: this month")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run(_usage))

    p = sub.add_parser("recompute", parents=[data],
                       help="rate an open month again after a tariff correction")  # fmt: skip
    p.add_argument("client", metavar="CLIENT")
    p.add_argument("--month", metavar="YYYY-MM", required=True)
    p.set_defaults(func=run(_recompute))


def add_invoice_parsers(commands: Any, data: argparse.ArgumentParser, open_app: OpenApp) -> None:
    inv = commands.add_parser("invoices", help="month invoices: run, list, show, send, cancel, "
                              "export, datev")  # fmt: skip
    sub = inv.add_subparsers(dest="invoices_command", metavar="ACTION", required=True)

    def run(fn: Callable[[Any, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        def cmd(args: argparse.Namespace) -> int:
            with open_app(args.data) as (_cfg, app):
                return fn(app.invoices, args)

        return cmd

    p = sub.add_parser("run", parents=[data], help="invoice every client for an ended month",
                       description="One invoice per client with a tariff (gapless numbers); "
                       "a client invoiced for the month already is skipped.")  # fmt: skip
    p.add_argument("--month", metavar="YYYY-MM", required=True)
    p.set_defaults(func=run(_invoices_run))
    p = sub.add_parser("list", parents=[data], help="list invoices")
    p.add_argument("--client", metavar="ID")
    p.set_defaults(func=run(lambda i, a: _print_json(i.list(ADMIN, a.client))))
    p = sub.add_parser("show", parents=[data],
                       help="an invoice, its lines and the usage lines behind them")  # fmt: skip
    p.add_argument("number", metavar="NUMBER")
    p.set_defaults(func=run(lambda i, a: _print_json(i.get(ADMIN, a.number))))
    p = sub.add_parser(
        "send", parents=[data], help="e-mail invoices to the clients' billing addresses",
        description="E-mail an invoice (or with --all-unsent every invoice and Storno never "
        "sent) to the client's billing e-mail address (heimbuero billing buyer CLIENT --email "
        "ADDRESS) through the [mail] SMTP server of config.toml: the PDF/A-3 (ZUGFeRD) "
        "attached, or the XRechnung XML for a client with a Leitweg-ID. The sending is "
        "stored before this says OK. An invoice sent before is refused unless --resend; a "
        "mail server that does not take the mail leaves the invoice unsent (exit 1).",
    )  # fmt: skip
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("number", metavar="NUMBER", nargs="?", help="the invoice's number")
    which.add_argument("--all-unsent", action="store_true",
                       help="every invoice and Storno not sent yet, oldest first")  # fmt: skip
    p.add_argument("--resend", action="store_true",
                   help="send NUMBER again although it was sent before")  # fmt: skip
    p.set_defaults(func=run(_invoices_send))
    p = sub.add_parser("cancel", parents=[data],
                       help="cancel an invoice with a cancellation invoice (Storno)")  # fmt: skip
    p.add_argument("number", metavar="NUMBER")
    p.set_defaults(func=run(lambda i, a: _print_json(i.cancel(ADMIN, a.number))))
    p = sub.add_parser("export", parents=[data],
                       help="write an invoice's PDF/A-3 and XML to a folder")  # fmt: skip
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--to", metavar="DIR", required=True, type=Path)
    p.set_defaults(func=run(_invoices_export))
    p = sub.add_parser("datev", parents=[data],
                       help="DATEV Buchungsstapel (EXTF CSV) of a month's invoices",
                       description="The EXTF header line (Berater- and Mandantennummer: "
                       "heimbuero billing settings --datev-berater N --datev-mandant N), the "
                       "125 column names of format version 13, one booking line of 125 fields "
                       "per invoice and VAT rate, by issue date (SKR03 accounts unless set: "
                       "PATCH /api/billing/settings); Windows-1252, CRLF. DATEV imports files "
                       "named EXTF_…, e.g. --out EXTF_Buchungsstapel_2027-01.csv.")  # fmt: skip
    p.add_argument("--month", metavar="YYYY-MM", required=True)
    p.add_argument("--out", metavar="FILE", type=Path, help="default: standard output")
    p.set_defaults(func=run(_invoices_datev))


def _invoices_run(invoices: Any, args: argparse.Namespace) -> int:
    made = invoices.run(ADMIN, args.month)
    for i in made:
        print(f"{i['number']}  {i['client']:<16} {format_euro(i['gross']):>12}")
    print(f"{len(made)} invoices for {args.month}")
    return 0


def _invoices_send(invoices: Any, args: argparse.Namespace) -> int:
    if args.all_unsent:
        if args.resend:
            raise Invalid("resend", "--resend goes with one NUMBER, not --all-unsent")
        results = invoices.send_unsent(ADMIN)
        for r in results:
            if "error" in r:
                print(f"{r['number']}  not sent: {r['error']}", file=sys.stderr)
            else:
                print(f"{r['number']}  sent to {r['sent']['to']} ({r['sent']['document']})")
        failed = sum("error" in r for r in results)
        print(f"{len(results) - failed} invoices sent" + (f", {failed} not sent" if failed else ""))
        return 1 if failed else 0
    inv = invoices.send(ADMIN, args.number, resend=args.resend)
    print(f"{inv['number']}  sent to {inv['sent']['to']} ({inv['sent']['document']}) "
          f"at {inv['sent']['at']}")  # fmt: skip
    return 0


def _invoices_export(invoices: Any, args: argparse.Namespace) -> int:
    args.to.mkdir(parents=True, exist_ok=True)
    for kind in ("pdf", "xml"):
        name, _media, content = invoices.document(ADMIN, args.number, kind)
        (args.to / name).write_bytes(content)
        print(args.to / name)
    return 0


def _invoices_datev(invoices: Any, args: argparse.Namespace) -> int:
    content = invoices.datev(ADMIN, args.month)
    if args.out is None:
        sys.stdout.buffer.write(content)
    else:
        args.out.write_bytes(content)
        print(args.out)
    return 0


def _seller(billing: Any, args: argparse.Namespace) -> int:
    changes = {f: getattr(args, f) for f in SELLER_FIELDS if getattr(args, f) is not None}
    return _print_json(billing.set_seller(ADMIN, **changes) if changes else billing.seller(ADMIN))


def _buyer(billing: Any, args: argparse.Namespace) -> int:
    changes = {f: getattr(args, f) for f in BUYER_FIELDS if getattr(args, f) is not None}
    if changes:
        return _print_json(billing.set_buyer(ADMIN, args.client, **changes))
    return _print_json(billing.buyer(ADMIN, args.client))


def _print_json(value: object) -> int:
    print(json.dumps(value, indent=2, ensure_ascii=False))
    return 0


def _tariff_set(billing: Any, args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise Invalid("file", f"not JSON: {e}") from None
    t = billing.put_tariff(ADMIN, doc)
    print(f"tariff {t['name']!r} saved")
    return 0


def _assign(billing: Any, args: argparse.Namespace) -> int:
    billing.assign(ADMIN, args.client, args.tariff, args.valid_from)
    print(f"client {args.client} bills with {args.tariff!r} from {args.valid_from}")
    return 0


def _settings(billing: Any, args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    if args.kleinunternehmer is not None:
        changes["kleinunternehmer"] = args.kleinunternehmer == "yes"
    if args.bundesland is not None:
        changes["default_bundesland"] = args.bundesland
    for key in ("datev_berater", "datev_mandant", "datev_account_length",
                "datev_fiscal_year_start"):  # fmt: skip
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.datev_festschreibung is not None:
        changes["datev_festschreibung"] = args.datev_festschreibung == "yes"
    s = billing.set_settings(ADMIN, **changes) if changes else billing.settings(ADMIN)
    return _print_json(s)


def _usage(billing: Any, args: argparse.Namespace) -> int:
    u = billing.usage(ADMIN, args.client, args.month)
    if args.json:
        return _print_json(u)
    print(f"{u['client']} {u['month']} (tariff: {u['tariff'] or 'none'})")
    for ln in u["lines"]:
        print(f"  {ln['at'][:16]}  {ln['kind']:<18} {ln['source_kind']}:{ln['source_id']:<8} "
              f"{ln['quantity']:>6} x {format_euro(Decimal(ln['unit_price'])):>10}"
              f" = {format_euro(ln['amount']):>10}")  # fmt: skip
    st = u.get("statement")
    if st:
        print(f"net {format_euro(st['net'])}, VAT {format_euro(st['vat'])}, "
              f"gross {format_euro(st['gross'])}")  # fmt: skip
    return 0


def _recompute(billing: Any, args: argparse.Namespace) -> int:
    n = billing.recompute(ADMIN, args.client, args.month)
    print(f"rated {n} events of {args.client} in {args.month} again")
    return 0
