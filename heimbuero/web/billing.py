"""The billing API: tariffs and settings (admin), a client's usage this month with its lines
(the portal's "usage this month" page reads it), the provider's usage per client and its CSV
export. Thin: every rule and check is in heimbuero/app/billing.py.

(No `from __future__ import annotations`: FastAPI must see the route-local `Who`.)"""

import csv
import io
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel

from heimbuero.app.billing import Billing, Invoices
from heimbuero.app.policy import Actor

MONTH = Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$", description="YYYY-MM")]


class AssignIn(BaseModel):
    tariff: str
    valid_from: date


class SettingsIn(BaseModel):
    kleinunternehmer: bool | None = None
    default_bundesland: str | None = None
    datev_debtor: str | None = None  # the DATEV export's accounts (SKR03 by default)
    datev_revenue_19: str | None = None
    datev_revenue_7: str | None = None
    datev_revenue_0: str | None = None
    datev_revenue_kleinunternehmer: str | None = None
    datev_berater: int | None = None  # the EXTF header: Beraternummer 1001 to 9999999
    datev_mandant: int | None = None  # Mandantennummer 1 to 99999
    datev_account_length: int | None = None  # Sachkontenlänge 4 to 8 (default 4)
    datev_fiscal_year_start: int | None = None  # the fiscal year's first month (default 1)
    datev_festschreibung: bool | None = None  # Festschreibung (default false)


class SellerIn(BaseModel):
    """The provider's invoice data; a field left out stays, an empty string clears it."""

    name: str | None = None
    street: str | None = None
    postcode: str | None = None
    city: str | None = None
    country: str | None = None
    vat_id: str | None = None
    tax_number: str | None = None
    iban: str | None = None
    bic: str | None = None
    contact: str | None = None
    email: str | None = None
    phone: str | None = None


class BuyerIn(BaseModel):
    """A client's invoice address; a Leitweg-ID makes its invoices XRechnung."""

    name: str | None = None
    street: str | None = None
    postcode: str | None = None
    city: str | None = None
    country: str | None = None
    vat_id: str | None = None
    leitweg_id: str | None = None
    email: str | None = None


def billing_routes(
    billing: Billing, invoices: Invoices, current_actor: Callable[..., Awaitable[Actor]]
) -> APIRouter:
    router = APIRouter(tags=["billing"])
    Who = Annotated[Actor, Depends(current_actor)]

    @router.get("/api/billing/settings")
    def get_settings(actor: Who) -> dict[str, Any]:
        return billing.settings(actor)

    @router.patch("/api/billing/settings")
    def patch_settings(actor: Who, body: SettingsIn) -> dict[str, Any]:
        return billing.set_settings(actor, **body.model_dump(exclude_none=True))

    @router.get("/api/billing/seller")
    def get_seller(actor: Who) -> dict[str, Any]:
        """Admin: the provider's invoice data and what EN 16931 still misses of it."""
        return billing.seller(actor)

    @router.patch("/api/billing/seller")
    def patch_seller(actor: Who, body: SellerIn) -> dict[str, Any]:
        return billing.set_seller(actor, **body.model_dump(exclude_none=True))

    @router.get("/api/billing/clients/{client}/buyer")
    def get_buyer(actor: Who, client: str) -> dict[str, Any]:
        """A client's invoice address (its own users may read it)."""
        return billing.buyer(actor, client)

    @router.patch("/api/billing/clients/{client}/buyer")
    def patch_buyer(actor: Who, client: str, body: BuyerIn) -> dict[str, Any]:
        return billing.set_buyer(actor, client, **body.model_dump(exclude_none=True))

    @router.get("/api/billing/tariffs")
    def list_tariffs(actor: Who) -> list[dict[str, Any]]:
        return billing.tariffs(actor)

    @router.put("/api/billing/tariffs")
    def put_tariff(actor: Who, doc: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        """Create or replace a tariff template (prices in euro cents, as strings: "85",
        "1.5"; never float)."""
        return billing.put_tariff(actor, doc)

    @router.get("/api/billing/clients/{client}/tariffs")
    def client_tariffs(actor: Who, client: str) -> list[dict[str, Any]]:
        return billing.client_tariffs(actor, client)

    @router.post("/api/billing/clients/{client}/tariffs", status_code=204)
    def assign(actor: Who, client: str, body: AssignIn) -> None:
        """The client's tariff from `valid_from` (a copy of the template as it is now); its
        open usage from that day on is rated again. 409 when the date lies in a month the
        client has an invoice of (cancel that invoice first)."""
        billing.assign(actor, client, body.tariff, body.valid_from)

    @router.get("/api/billing/clients/{client}/usage")
    def client_usage(actor: Who, client: str, month: MONTH = None) -> dict[str, Any]:
        """This month's (or `month`'s) usage lines of a client, each with its source, and
        what the month costs so far (net, VAT, gross in cents)."""
        return billing.usage(actor, client, month)

    @router.post("/api/billing/clients/{client}/recompute")
    def recompute(actor: Who, client: str, month: Annotated[str, Query()]) -> dict[str, int]:
        return {"rated": billing.recompute(actor, client, month)}

    @router.get("/api/billing/usage")
    def provider_usage(actor: Who, month: Annotated[str, Query()]) -> dict[str, int]:
        """Staff: per client, the month's usage lines summed (cents, net)."""
        return billing.provider_usage(actor, month)

    @router.get("/api/billing/usage.csv")
    def provider_usage_csv(actor: Who, month: Annotated[str, Query()]) -> Response:
        rows = billing.provider_usage(actor, month)
        out = io.StringIO()
        w = csv.writer(out, delimiter=";")
        w.writerow(["month", "client", "usage_net_cents"])
        for client, amount in sorted(rows.items()):
            w.writerow([month, client, amount])
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8")

    @router.get("/api/billing/datev.csv", response_class=Response,
                responses={200: {"content": {"text/csv": {}}}})  # fmt: skip
    def datev_csv(actor: Who, month: Annotated[str, Query(pattern=r"^\d{4}-\d{2}$")]) -> Response:
        """Admin: the DATEV Buchungsstapel (EXTF, format version 13: the header line, the
        125 column names, one booking line per invoice and VAT rate) of the invoices issued
        in `month`."""
        name = f"EXTF_Buchungsstapel_{month}.csv"  # DATEV imports files named EXTF_…
        return Response(
            invoices.datev(actor, month),
            media_type="text/csv; charset=windows-1252",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @router.post("/api/billing/invoices/run")
    def run_invoices(actor: Who, month: Annotated[str, Query()]) -> list[dict[str, Any]]:
        """Admin: invoice every client for an ended month (gapless numbers)."""
        return invoices.run(actor, month)

    @router.get("/api/billing/invoices")
    def list_invoices(actor: Who, client: str | None = None) -> list[dict[str, Any]]:
        """Staff: every invoice (or a client's); a client's user: its own business's."""
        return invoices.list(actor, client)

    @router.get("/api/billing/invoices/{number}")
    def get_invoice(actor: Who, number: str) -> dict[str, Any]:
        """An invoice, its lines and the usage lines (with their sources) behind each."""
        return invoices.get(actor, number)

    @router.get("/api/billing/invoices/{number}/pdf", response_class=Response,
                responses={200: {"content": {"application/pdf": {}}}})  # fmt: skip
    def invoice_pdf(actor: Who, number: str) -> Response:
        """The invoice as PDF/A-3 with its CII XML embedded (ZUGFeRD / Factur-X)."""
        return _download(*invoices.document(actor, number, "pdf"))

    @router.get("/api/billing/invoices/{number}/xml", response_class=Response,
                responses={200: {"content": {"application/xml": {}}}})  # fmt: skip
    def invoice_xml(actor: Who, number: str) -> Response:
        """The invoice's CII XML (Factur-X EN 16931, or XRechnung for public-sector clients)."""
        return _download(*invoices.document(actor, number, "xml"))

    @router.post("/api/billing/invoices/{number}/send")
    def send_invoice(actor: Who, number: str, resend: bool = False) -> dict[str, Any]:
        """Admin: e-mail the invoice to the client's billing address (PDF/A-3, or the
        XRechnung XML for a buyer with a Leitweg-ID); 409 when it was sent before (unless
        `resend=true`), 503 when the mail server did not take it (the invoice stays unsent).
        Answers once the sending is stored; `sent` says to whom and when."""
        return invoices.send(actor, number, resend=resend)

    @router.post("/api/billing/invoices/{number}/cancel")
    def cancel_invoice(actor: Who, number: str) -> dict[str, Any]:
        """Admin: a cancellation invoice (Storno); the next run issues the corrected one."""
        return invoices.cancel(actor, number)

    return router


def _download(name: str, media_type: str, content: bytes) -> Response:
    return Response(content, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip
