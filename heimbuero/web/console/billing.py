"""The console's billing pages: /portal/billing (a business's usage and invoices; live over the
console's event stream, static/billing.js), /admin/billing (the provider's month: usage per
client, live the same way, the invoices with "send" and "cancel", the month's run, the DATEV
export, the provider's invoice data) and /admin/billing/clients/ID (a client's invoice recipient and
tariffs: the buyer form and "assign a tariff from a date").

Every read and write is a handler call (heimbuero/app/billing.py: Billing, Invoices) as the
session's Actor, the same functions as the JSON API: a business's users (owner and employees)
see their own usage and invoices; staff pick a client with `?client=ID` (read only); another
business's client or invoice number is "not found", like a missing one. The invoice PDF and
XML are served through the console's session (the same `Invoices.document` as the API).
Irreversible or outward actions (cancel, run, a second sending) ask for confirmation first:
a POST without `confirm=1` answers the confirmation page, whose button posts it again."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from babel import Locale
from babel.numbers import format_currency, format_decimal
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from heimbuero.app import Actor, App, AppError
from heimbuero.app.billing import parse_month
from heimbuero.app.errors import Conflict, Invalid, NotFound
from heimbuero.billing.einvoice import BUYER_FIELDS, SELLER_FIELDS, missing_buyer
from heimbuero.store.db import UserRecord
from heimbuero.store.websessions import WebSession
from heimbuero.web.console import Area, FormOf, _not_found, _page, _t, lang_of

PORTAL_ROLES = ("client", "employee", "agent", "admin")
BERLIN = ZoneInfo("Europe/Berlin")

# what a usage line is, and where it comes from (the German texts; en.po translates them)
KINDS = {
    "call": "Angenommener Anruf",
    "talk": "Gesprächszeit",
    "forwarding": "Weiterleitung",
    "note": "Telefonnotiz",
    "voicemail": "Sprachnachricht",
    "dictation_minutes": "Diktat (Minuten)",
    "normzeilen": "Diktat (Normzeilen)",
    "base_fee": "Grundgebühr",
    "minimum": "Mindestumsatz",
}
SOURCES = {
    "call_record": "Anruf",
    "call_note": "Telefonnotiz",
    "voicemail": "Sprachnachricht",
    "dictation_job": "Diktat",
}
SELLER_LABELS = {
    "name": "Name",
    "street": "Straße",
    "postcode": "Postleitzahl",
    "city": "Ort",
    "country": "Land (zwei Buchstaben, z. B. DE)",
    "vat_id": "USt-IdNr.",
    "tax_number": "Steuernummer",
    "iban": "IBAN",
    "bic": "BIC",
    "contact": "Ansprechpartner",
    "email": "E-Mail",
    "phone": "Telefon",
}

BUYER_LABELS = {
    "name": "Name",
    "street": "Straße",
    "postcode": "Postleitzahl",
    "city": "Ort",
    "country": "Land (zwei Buchstaben, z. B. DE)",
    "vat_id": "USt-IdNr.",
    "leitweg_id": "Leitweg-ID (öffentliche Auftraggeber: XRechnung)",
    "email": "E-Mail für Rechnungen",
}
# the DATEV export's settings (the form on /admin/billing; Billing.set_settings checks them)
DATEV_LABELS = {
    "datev_berater": "Beraternummer (vom Steuerberater, 1001 bis 9999999)",
    "datev_mandant": "Mandantennummer (vom Steuerberater, 1 bis 99999)",
    "datev_account_length": "Sachkontenlänge (4 bis 8)",
    "datev_fiscal_year_start": "Erster Monat des Wirtschaftsjahres (1 bis 12)",
    "datev_debtor": "Debitorenkonto",
    "datev_revenue_19": "Erlöskonto 19 % USt.",
    "datev_revenue_7": "Erlöskonto 7 % USt.",
    "datev_revenue_0": "Erlöskonto steuerfrei (0 %)",
    "datev_revenue_kleinunternehmer": "Erlöskonto Kleinunternehmer (§ 19 UStG)",
}
MAX_ID = 64  # longer client ids do not exist (the store's column)


def euro(lang: str, cents: int) -> str:
    """An amount of euro cents as the reader writes it: `1.234,56 €` (de), `€1,234.56` (en)."""
    return str(format_currency(Decimal(cents) / 100, "EUR", locale=Locale.parse(lang)))


def quantity(lang: str, text: str) -> str:
    return str(format_decimal(Decimal(text), "#,##0.###", locale=Locale.parse(lang)))


def last_month() -> str:
    first = datetime.now(BERLIN).date().replace(day=1)
    return (first - timedelta(days=1)).strftime("%Y-%m")


def _month(request: Request, default: str | None) -> str | None:
    """The `month` asked for (YYYY-MM; Invalid otherwise), or `default`."""
    given = request.query_params.get("month", "").strip()
    return parse_month(given) if given else default


def billing_pages(router: APIRouter, handlers: App, area: Area, form_of: FormOf) -> None:
    """Add the billing pages' routes to the console's router."""

    def failed(request: Request, s: WebSession, user: UserRecord, exc: AppError) -> Response:
        if isinstance(exc, NotFound):
            return _not_found(request)
        return _page(request, "error.html", getattr(exc, "status", 400), user=user,
                     csrf=s.csrf, message=str(exc))  # fmt: skip

    def status_of(request: Request, inv: dict[str, Any]) -> str:
        if inv["kind"] == "storno":
            return _t(request, "Storno")
        if inv["cancelled"]:
            return _t(request, "storniert")
        sent = inv.get("sent")
        if sent and sent["state"] == "sent":
            return _t(request, "versandt an %(to)s", to=sent["to"])
        if sent and sent["state"] == "sending":
            return _t(request, "Versand ohne Ergebnis")
        return _t(request, "ausgestellt")

    def invoice_rows(request: Request, invoices: list[dict[str, Any]]) -> list[dict[str, Any]]:
        lang = lang_of(request)
        return [
            {**inv, "date": datetime.fromisoformat(inv["issued_at"]).astimezone(BERLIN).date(),
             "total": euro(lang, inv["gross"]), "status": status_of(request, inv),
             "sent_before": bool(inv.get("sent"))}
            for inv in invoices
        ]  # fmt: skip

    # -- the portal: a business's usage and invoices ------------------------------------

    @router.get("/portal/billing")
    async def portal_billing(request: Request) -> Response:
        found = area(request, PORTAL_ROLES)
        if isinstance(found, Response):
            return found
        s, user = found
        actor, lang = Actor.of(user), lang_of(request)
        if user.role in ("client", "employee"):  # another business's id: not found below
            cid = request.query_params.get("client") or user.client or ""
        else:
            cid = request.query_params.get("client", "")
            if not cid:  # staff: pick a client
                return _page(request, "billing_portal.html", user=user, csrf=s.csrf,
                             client=None, clients=handlers.clients.list(actor))  # fmt: skip
        try:
            client = handlers.clients.visible(actor, cid)
            usage = handlers.billing.usage(actor, cid, _month(request, None))
            invoices = handlers.invoices.list(actor, cid)
        except AppError as exc:
            return failed(request, s, user, exc)
        lines = [
            {"at": datetime.fromisoformat(u["at"]),
             "what": _t(request, KINDS[u["kind"]]) if u["kind"] in KINDS else u["kind"],
             "detail": u["description"],
             "source": _t(request, "%(what)s Nr. %(id)s",
                          what=_t(request, SOURCES.get(u["source_kind"], u["source_kind"])),
                          id=u["source_id"]),
             "quantity": quantity(lang, u["quantity"]), "amount": euro(lang, u["amount"])}
            for u in usage["lines"]
        ]  # fmt: skip
        st = usage.get("statement")
        totals = None if st is None else {
            "net": euro(lang, st["net"]), "vat": euro(lang, st["vat"]),
            "gross": euro(lang, st["gross"]), "kleinunternehmer": st["kleinunternehmer"],
            "lines": [{"what": ln["label"], "quantity": quantity(lang, ln["quantity"]),
                       "net": euro(lang, ln["net"])} for ln in st["lines"]],
        }  # fmt: skip
        return _page(
            request,
            "billing_portal.html",
            user=user,
            csrf=s.csrf,
            client=client,
            month=usage["month"],
            current=usage["month"] == datetime.now(ZoneInfo(client.timezone)).strftime("%Y-%m"),
            tariff=usage["tariff"],
            lines=lines,
            totals=totals,
            invoices=invoice_rows(request, invoices),
            query="" if user.role in ("client", "employee") else f"client={quote(cid)}&",
        )

    @router.get("/portal/billing/invoices/{number}/{kind}")
    async def invoice_document(request: Request, number: str, kind: str) -> Response:
        """An invoice's PDF (PDF/A-3, ZUGFeRD) or XML through the console's session; another
        business's invoice is not found."""
        found = area(request, PORTAL_ROLES)
        if isinstance(found, Response):
            return found
        s, user = found
        if kind not in ("pdf", "xml") or len(number) > 64:
            return _not_found(request)
        try:
            name, media, content = await run_in_threadpool(
                handlers.invoices.document, Actor.of(user), number, kind
            )
        except AppError as exc:
            return failed(request, s, user, exc)
        return Response(content, media_type=media, headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})  # fmt: skip

    # -- the provider: the month's usage, invoices, run, DATEV, seller data ---------------

    def admin_page(
        request: Request,
        s: WebSession,
        user: UserRecord,
        month: str,
        status: int = 200,
        errors: dict[str, str] | None = None,
        values: dict[str, str] | None = None,
        error: str = "",
        datev_values: dict[str, str] | None = None,
    ) -> Response:
        actor, lang = Actor.of(user), lang_of(request)
        names = {ci.client.id: ci.client.name for ci in handlers.clients.list(actor)}
        usage = handlers.billing.provider_usage(actor, month)
        seller = handlers.billing.seller(actor)
        settings = handlers.billing.settings(actor)
        datev = {f: "" if settings.get(f) is None else str(settings[f]) for f in DATEV_LABELS}
        datev |= datev_values or {}
        invoices = [i for i in handlers.invoices.list(actor) if i["month"] == month]
        shown = {f: seller.get(f, "") for f in SELLER_FIELDS} | (values or {})
        return _page(
            request,
            "billing_admin.html",
            status,
            user=user,
            csrf=s.csrf,
            month=month,
            usage=[
                {"client": c, "name": names.get(c, c), "amount": euro(lang, n)}
                for c, n in sorted(usage.items())
            ],  # fmt: skip
            usage_total=euro(lang, sum(usage.values())),
            invoices=invoice_rows(request, invoices),
            names=names,
            seller=shown,
            fields=[(f, _t(request, SELLER_LABELS[f])) for f in SELLER_FIELDS],
            missing=seller["missing"],
            datev=datev,
            datev_fields=[(f, _t(request, label)) for f, label in DATEV_LABELS.items()],
            datev_locked=(datev_values or {}).get(
                "datev_festschreibung", settings["datev_festschreibung"]
            ),
            datev_missing=not (settings["datev_berater"] and settings["datev_mandant"]),
            errors=errors or {},
            error=error,
            done=request.query_params.get("done", ""),
        )

    def admin_month(request: Request, form: dict[str, str] | None = None) -> str:
        given = (form or {}).get("month", "") or request.query_params.get("month", "")
        return parse_month(given) if given.strip() else last_month()

    def back(month: str, done: str) -> Response:
        return RedirectResponse(f"/admin/billing?month={month}&done={quote(done)}", 303)

    def confirm(request: Request, s: WebSession, user: UserRecord, action: str, title: str,
                text: str, button: str, month: str, **hidden: str) -> Response:  # fmt: skip
        return _page(request, "billing_confirm.html", user=user, csrf=s.csrf, action=action,
                     title=title, text=text, button=button, month=month,
                     hidden=hidden)  # fmt: skip

    def month_page(request: Request) -> tuple[WebSession, UserRecord, str] | Response:
        """An admin's session and user and the month the query asks for (default: last
        month); the page that refuses either."""
        found = area(request, ("admin",))
        if isinstance(found, Response):
            return found
        s, user = found
        try:
            return s, user, admin_month(request)
        except Invalid as exc:
            return failed(request, s, user, exc)

    @router.get("/admin/billing")
    async def admin_billing(request: Request) -> Response:
        got = month_page(request)
        if isinstance(got, Response):
            return got
        return admin_page(request, *got)

    @router.get("/admin/billing/usage.csv")
    async def usage_csv(request: Request) -> Response:
        got = month_page(request)
        if isinstance(got, Response):
            return got
        s, user, month = got
        try:
            rows = handlers.billing.provider_usage(Actor.of(user), month)
        except AppError as exc:
            return failed(request, s, user, exc)
        text = "month;client;usage_net_cents\r\n" + "".join(
            f"{month};{c};{n}\r\n" for c, n in sorted(rows.items())
        )
        return Response(text, media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="usage-{month}.csv"',
            "Cache-Control": "no-store"})  # fmt: skip

    @router.get("/admin/billing/datev.csv")
    async def datev_csv(request: Request) -> Response:
        got = month_page(request)
        if isinstance(got, Response):
            return got
        s, user, month = got
        try:
            content = await run_in_threadpool(handlers.invoices.datev, Actor.of(user), month)
        except AppError as exc:
            return failed(request, s, user, exc)
        return Response(content, media_type="text/csv; charset=windows-1252", headers={
            "Content-Disposition": f'attachment; filename="EXTF_Buchungsstapel_{month}.csv"',
            "Cache-Control": "no-store"})  # fmt: skip

    async def month_form(
        request: Request,
    ) -> tuple[WebSession, UserRecord, dict[str, str], str] | Response:
        """An admin's posted form (its token checked) and the month it is about; the page
        that refuses either."""
        got = await form_of(request, ("admin",))
        if isinstance(got, Response):
            return got
        s, user, form = got
        try:
            return s, user, form, admin_month(request, form)
        except Invalid as exc:
            return failed(request, s, user, exc)

    @router.post("/admin/billing/run")
    async def run(request: Request) -> Response:
        got = await month_form(request)
        if isinstance(got, Response):
            return got
        s, user, form, month = got
        if form.get("confirm") != "1":
            return confirm(request, s, user, "/admin/billing/run",
                           _t(request, "Rechnungen für %(month)s erstellen?", month=month),
                           _t(request, "Jeder Mandant mit Tarif bekommt seine Rechnung für "
                              "%(month)s mit fortlaufender Nummer. Ausgestellte Rechnungen "
                              "lassen sich nicht mehr ändern, nur stornieren.", month=month),
                           _t(request, "Rechnungen erstellen"), month)  # fmt: skip
        try:
            made = await run_in_threadpool(handlers.invoices.run, Actor.of(user), month)
        except AppError as exc:
            return admin_page(request, s, user, month, getattr(exc, "status", 400),
                              error=str(exc))  # fmt: skip
        if not made:
            text = _t(request, "Keine neuen Rechnungen: jeder Mandant mit Tarif hat seine "
                      "Rechnung für %(month)s schon, oder es gibt nichts abzurechnen.",
                      month=month)  # fmt: skip
        elif len(made) == 1:
            text = _t(request, "1 Rechnung erstellt.")
        else:
            text = _t(request, "%(n)s Rechnungen erstellt.", n=str(len(made)))
        return back(month, text)

    @router.post("/admin/billing/invoices/{number}/send")
    async def send(request: Request, number: str) -> Response:
        got = await month_form(request)
        if isinstance(got, Response):
            return got
        s, user, form, month = got
        try:
            sent = await run_in_threadpool(  # (the mail server: off the event loop)
                handlers.invoices.send, Actor.of(user), number, resend=form.get("confirm") == "1"
            )
        except Conflict as exc:  # sent before: only after a confirmation
            return confirm(request, s, user, f"/admin/billing/invoices/{quote(number)}/send",
                           _t(request, "Rechnung %(number)s erneut senden?", number=number),
                           str(exc), _t(request, "Erneut senden"), month)  # fmt: skip
        except NotFound:
            return _not_found(request)
        except AppError as exc:
            return admin_page(request, s, user, month, getattr(exc, "status", 400),
                              error=str(exc))  # fmt: skip
        to = (sent.get("sent") or {}).get("to", "")
        return back(month, _t(request, "Rechnung %(number)s an %(to)s gesendet.",
                              number=number, to=to))  # fmt: skip

    @router.post("/admin/billing/invoices/{number}/cancel")
    async def cancel(request: Request, number: str) -> Response:
        got = await form_of(request, ("admin",))
        if isinstance(got, Response):
            return got
        s, user, form = got
        try:
            month = admin_month(request, form)
            handlers.invoices.get(Actor.of(user), number)  # exists (else: not found)
        except AppError as exc:
            return failed(request, s, user, exc)
        if form.get("confirm") != "1":
            return confirm(request, s, user, f"/admin/billing/invoices/{quote(number)}/cancel",
                           _t(request, "Rechnung %(number)s stornieren?", number=number),
                           _t(request, "Das lässt sich nicht rückgängig machen: es entsteht "
                              "eine Stornorechnung mit eigener Nummer, die Leistungen werden "
                              "mit dem nächsten Lauf neu abgerechnet."),
                           _t(request, "Endgültig stornieren"), month)  # fmt: skip
        try:
            storno = await run_in_threadpool(handlers.invoices.cancel, Actor.of(user), number)
        except NotFound:
            return _not_found(request)
        except AppError as exc:
            return admin_page(request, s, user, month, getattr(exc, "status", 400),
                              error=str(exc))  # fmt: skip
        return back(month, _t(request, "Rechnung %(number)s storniert (Storno %(storno)s).",
                              number=number, storno=storno["number"]))  # fmt: skip

    @router.post("/admin/billing/seller")
    async def seller(request: Request) -> Response:
        got = await month_form(request)
        if isinstance(got, Response):
            return got
        s, user, form, month = got
        values = {f: form.get(f, "") for f in SELLER_FIELDS}
        try:
            handlers.billing.set_seller(Actor.of(user), **values)
        except Invalid as exc:
            errors = {p.field: p.msg for p in exc.problems}
            return admin_page(
                request,
                s,
                user,
                month,
                422,
                errors=errors,
                values=values,
                error=_t(request, "Die Rechnungsdaten wurden nicht gespeichert."),
            )
        return back(month, _t(request, "Rechnungsdaten gespeichert."))

    @router.post("/admin/billing/datev")
    async def datev_settings(request: Request) -> Response:
        """The DATEV export's numbers and accounts (the same handler as `PATCH
        /api/billing/settings`); a field left empty stays as stored."""
        got = await month_form(request)
        if isinstance(got, Response):
            return got
        s, user, form, month = got
        values = {f: form.get(f, "").strip()[:32] for f in DATEV_LABELS}
        changes: dict[str, Any] = {f: v for f, v in values.items() if v}
        changes["datev_festschreibung"] = form.get("datev_festschreibung") == "1"
        try:
            handlers.billing.set_settings(Actor.of(user), **changes)
        except Invalid as exc:
            return admin_page(request, s, user, month, 422,
                              errors={p.field: p.msg for p in exc.problems},
                              datev_values={**values, "datev_festschreibung":
                                            changes["datev_festschreibung"]},
                              error=_t(request, "Die DATEV-Einstellungen wurden nicht "
                                       "gespeichert."))  # fmt: skip
        return back(month, _t(request, "DATEV-Einstellungen gespeichert."))

    # -- the provider: one client's invoice recipient and tariff ---------------------------

    def client_page(
        request: Request,
        s: WebSession,
        user: UserRecord,
        client_id: str,
        status: int = 200,
        errors: dict[str, str] | None = None,
        values: dict[str, str] | None = None,
        assign: dict[str, str] | None = None,
        error: str = "",
    ) -> Response:
        """The page of /admin/billing/clients/ID (not found for an unknown id)."""
        actor = Actor.of(user)
        try:
            client = handlers.clients.get(actor, client_id).client
            buyer = handlers.billing.buyer(actor, client.id)
            history = handlers.billing.client_tariffs(actor, client.id)
            tariffs = [t["name"] for t in handlers.billing.tariffs(actor)]
        except AppError:
            return _not_found(request)
        today = datetime.now(ZoneInfo(client.timezone)).date()
        rows = [{"valid_from": date.fromisoformat(a["valid_from"]), "name": a["tariff"]["name"]}
                for a in history]  # fmt: skip
        in_force = [r for r in rows if r["valid_from"] <= today]
        current = in_force[-1] if in_force else None
        for r in rows:
            r["current"] = r is current
            r["coming"] = r["valid_from"] > today
        shown = {f: buyer.get(f, "") for f in BUYER_FIELDS} | (values or {})
        return _page(
            request,
            "billing_client.html",
            status,
            user=user,
            csrf=s.csrf,
            client=client,
            buyer=shown,
            fields=[(f, _t(request, BUYER_LABELS[f])) for f in BUYER_FIELDS],
            missing=missing_buyer(buyer),
            errors=errors or {},
            history=list(reversed(rows)),
            current=current,
            tariffs=tariffs,
            assign=assign or {"tariff": current["name"] if current else "",
                              "valid_from": today.replace(day=1).isoformat()},
            error=error,
            done=request.query_params.get("done", ""),
        )  # fmt: skip

    def to_client(client_id: str, done: str, anchor: str) -> Response:
        return RedirectResponse(f"/admin/billing/clients/{quote(client_id, safe='')}"
                                f"?done={quote(done)}#{anchor}", 303)  # fmt: skip

    @router.get("/admin/billing/clients/{client_id}")
    async def client_billing(request: Request, client_id: str) -> Response:
        """A client's invoice recipient (Rechnungsempfänger) and tariffs: the same handlers
        as `PATCH /api/billing/clients/ID/buyer` and `POST …/tariffs`."""
        found = area(request, ("admin",))
        if isinstance(found, Response):
            return found
        s, user = found
        if len(client_id) > MAX_ID:
            return _not_found(request)
        return client_page(request, s, user, client_id)

    @router.post("/admin/billing/clients/{client_id}/buyer")
    async def buyer(request: Request, client_id: str) -> Response:
        got = await form_of(request, ("admin",))
        if isinstance(got, Response):
            return got
        s, user, form = got
        if len(client_id) > MAX_ID:
            return _not_found(request)
        values = {f: form.get(f, "") for f in BUYER_FIELDS}
        try:
            handlers.billing.set_buyer(Actor.of(user), client_id, **values)
        except NotFound:
            return _not_found(request)
        except Invalid as exc:
            errors = {p.field: p.msg for p in exc.problems}
            return client_page(request, s, user, client_id, 422, errors=errors, values=values,
                               error=_t(request, "Der Rechnungsempfänger wurde nicht "
                                        "gespeichert."))  # fmt: skip
        return to_client(client_id, _t(request, "Rechnungsempfänger gespeichert."), "buyer-h")

    @router.post("/admin/billing/clients/{client_id}/tariff")
    async def assign(request: Request, client_id: str) -> Response:
        got = await form_of(request, ("admin",))
        if isinstance(got, Response):
            return got
        s, user, form = got
        if len(client_id) > MAX_ID:
            return _not_found(request)
        chosen = {"tariff": form.get("tariff", "")[:200],
                  "valid_from": form.get("valid_from", "").strip()[:32]}  # fmt: skip

        def refused(status: int, field: str, message: str) -> Response:
            return client_page(request, s, user, client_id, status, assign=chosen,
                               errors={f"assign-{field}": message})  # fmt: skip

        try:
            valid_from = date.fromisoformat(chosen["valid_from"])
        except ValueError:
            return refused(422, "valid_from", _t(request, "Bitte ein Datum angeben."))
        try:
            await run_in_threadpool(handlers.billing.assign, Actor.of(user), client_id,
                                    chosen["tariff"], valid_from)  # fmt: skip
        except NotFound as exc:
            if exc.kind == "tariff":
                return refused(422, "tariff", str(exc))
            return _not_found(request)
        except Conflict as exc:  # an invoiced month never changes
            return refused(409, "valid_from", str(exc))
        except AppError as exc:
            return refused(getattr(exc, "status", 400), "tariff", str(exc))
        text = _t(request, "Tarif %(name)s ab %(date)s zugewiesen.", name=chosen["tariff"],
                  date=valid_from.strftime("%d.%m.%Y") if lang_of(request) == "de"
                  else valid_from.isoformat())  # fmt: skip
        return to_client(client_id, text, "tariff-h")
