"""The billing tables (settings, tariffs, client tariffs, meter readings, usage lines): the
only SQL of billing. Values go in and out as the billing domain's types."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from heimbuero.billing.tariff import (
    Tariff,
    TariffAssignment,
    Usage,
    tariff_from_json,
    tariff_to_json,
)
from heimbuero.store.base import Repository
from heimbuero.store.models import (
    BillingSettingRow,
    BuyerRow,
    CallRecordRow,
    ClientRow,
    ClientTariffRow,
    InvoiceCounterRow,
    InvoiceFileRow,
    InvoiceMailRow,
    InvoiceRow,
    MeterReadingRow,
    TariffTemplateRow,
    UsageLineRow,
    as_utc,
)

BUYER_COLUMNS = ("name", "street", "postcode", "city", "country", "vat_id", "leitweg_id", "email")


@dataclass(frozen=True, slots=True)
class Reading:
    """A stored meter reading: one billable event's facts."""

    id: int
    client: str
    month: str
    source_kind: str
    source_id: str
    at: datetime
    facts: dict[str, Any]


def _usage(row: UsageLineRow) -> Usage:
    return Usage(
        kind=row.kind, source_kind=row.source_kind, source_id=row.source_id, at=as_utc(row.at),
        quantity=Decimal(row.quantity), unit_price=Decimal(row.unit_price),
        surcharge=row.surcharge, surcharge_pct=Decimal(row.surcharge_pct),
        vat_rate=Decimal(row.vat_rate), description=row.description,
    )  # fmt: skip


def _reading(row: MeterReadingRow) -> Reading:
    return Reading(row.id, row.client, row.month, row.source_kind, row.source_id,
                   as_utc(row.at), dict(row.facts))  # fmt: skip


class BillingRepository(Repository):
    # settings
    def settings(self) -> dict[str, str]:
        return {r.key: r.value for r in self._session.scalars(select(BillingSettingRow))}

    def set_setting(self, key: str, value: str) -> None:
        row = self._session.get(BillingSettingRow, key)
        if row is None:
            self._session.add(BillingSettingRow(key=key, value=value))
        else:
            row.value = value

    # tariffs
    def put_template(self, tariff: Tariff) -> None:
        row = self._session.get(TariffTemplateRow, tariff.name)
        now = datetime.now(UTC)
        if row is None:
            self._session.add(TariffTemplateRow(name=tariff.name, doc=tariff_to_json(tariff),
                                                updated_at=now))  # fmt: skip
        else:
            row.doc = tariff_to_json(tariff)
            row.updated_at = now

    def template(self, name: str) -> Tariff | None:
        row = self._session.get(TariffTemplateRow, name)
        return None if row is None else tariff_from_json(row.doc)

    def templates(self) -> list[Tariff]:
        rows = self._session.scalars(select(TariffTemplateRow).order_by(TariffTemplateRow.name))
        return [tariff_from_json(r.doc) for r in rows]

    def assign(self, client: str, tariff: Tariff, valid_from: date) -> None:
        """The client's tariff from `valid_from` (replaces an assignment of that same day)."""
        day = valid_from.isoformat()
        row = self._session.scalars(
            select(ClientTariffRow).where(
                ClientTariffRow.client == client, ClientTariffRow.valid_from == day
            )
        ).first()
        if row is None:
            doc = tariff_to_json(tariff)
            row = ClientTariffRow(client=client, valid_from=day, template=tariff.name, doc=doc)
            self._session.add(row)
        else:
            row.template, row.doc = tariff.name, tariff_to_json(tariff)

    def assignments(self, client: str) -> list[TariffAssignment]:
        rows = self._session.scalars(
            select(ClientTariffRow)
            .where(ClientTariffRow.client == client)
            .order_by(ClientTariffRow.valid_from)
        )
        return [TariffAssignment(client, tariff_from_json(r.doc),
                                 date.fromisoformat(r.valid_from)) for r in rows]  # fmt: skip

    # readings and usage
    def reading(self, source_kind: str, source_id: str) -> Reading | None:
        row = self._session.scalars(
            select(MeterReadingRow).where(
                MeterReadingRow.source_kind == source_kind,
                MeterReadingRow.source_id == source_id,
            )
        ).first()
        return None if row is None else _reading(row)

    def record(self, client: str, month: str, source_kind: str, source_id: str, at: datetime,
               facts: dict[str, Any], *, new: bool = False) -> Reading:  # fmt: skip
        """Store (or replace the facts of) the reading of one source; `new`: the caller read
        in this transaction that the source has no reading yet (one query fewer)."""
        row = None if new else self._session.scalars(
            select(MeterReadingRow).where(
                MeterReadingRow.source_kind == source_kind,
                MeterReadingRow.source_id == source_id,
            )
        ).first()  # fmt: skip
        if row is None:
            row = MeterReadingRow(client=client, month=month, source_kind=source_kind,
                                  source_id=source_id, at=at, facts=facts)  # fmt: skip
            self._session.add(row)
        else:
            row.client, row.month, row.at, row.facts = client, month, at, facts
        self._session.flush()
        return _reading(row)

    def readings(self, client: str, month: str) -> list[Reading]:
        rows = self._session.scalars(
            select(MeterReadingRow)
            .where(MeterReadingRow.client == client, MeterReadingRow.month == month)
            .order_by(MeterReadingRow.at, MeterReadingRow.id)
        )
        return [_reading(r) for r in rows]

    def lock_client(self, client: str) -> None:
        """Take the client's row for this transaction: metering a reading and assigning a
        tariff take turns per client (PostgreSQL: a row lock; SQLite has one writer anyway),
        so a reading never misses a tariff assigned meanwhile."""
        self._session.execute(select(ClientRow.id).where(ClientRow.id == client).with_for_update())

    def open_readings_since(self, client: str, since: datetime) -> list[Reading]:
        """The client's readings from `since` on that no invoice took a line of."""
        taken = select(UsageLineRow.reading_id).where(UsageLineRow.invoice_id.is_not(None))
        rows = self._session.scalars(
            select(MeterReadingRow)
            .where(
                MeterReadingRow.client == client,
                MeterReadingRow.at >= since,
                MeterReadingRow.id.not_in(taken),
            )
            .order_by(MeterReadingRow.at, MeterReadingRow.id)
        )
        return [_reading(r) for r in rows]

    def invoiced(self, reading_id: int) -> bool:
        return (
            self._session.scalars(
                select(UsageLineRow.id).where(
                    UsageLineRow.reading_id == reading_id, UsageLineRow.invoice_id.is_not(None)
                )
            ).first()
            is not None
        )

    def replace_usage(
        self, reading: Reading, lines: Iterable[Usage], *, new: bool = False
    ) -> list[int]:
        """The usage lines of a reading, replacing its earlier (uninvoiced) ones; `new`: the
        reading was stored in this transaction, so it has none (one query fewer)."""
        if not new:
            self._session.execute(
                delete(UsageLineRow).where(
                    UsageLineRow.reading_id == reading.id, UsageLineRow.invoice_id.is_(None)
                )
            )
        rows = [
            UsageLineRow(
                reading_id=reading.id,
                client=reading.client,
                month=reading.month,
                kind=u.kind,
                source_kind=u.source_kind,
                source_id=u.source_id,
                at=u.at,
                quantity=str(u.quantity),
                unit_price=str(u.unit_price),
                surcharge=u.surcharge,
                surcharge_pct=str(u.surcharge_pct),
                vat_rate=str(u.vat_rate),
                amount=u.amount,
                description=u.description[:255],
            )  # fmt: skip
            for u in lines
        ]
        self._session.add_all(rows)
        self._session.flush()
        return [r.id for r in rows]

    def usage(self, client: str, month: str, open_only: bool = False) -> list[tuple[int, Usage]]:
        q = select(UsageLineRow).where(UsageLineRow.client == client, UsageLineRow.month == month)
        if open_only:
            q = q.where(UsageLineRow.invoice_id.is_(None))
        rows = self._session.scalars(q.order_by(UsageLineRow.at, UsageLineRow.id))
        return [(r.id, _usage(r)) for r in rows]

    def usage_months(self, month: str) -> dict[str, int]:
        """Per client: the sum of the usage lines' amounts in `month` (cents)."""
        out: dict[str, int] = {}
        rows = self._session.execute(
            select(UsageLineRow.client, UsageLineRow.amount).where(UsageLineRow.month == month)
        )
        for client, amount in rows:
            out[client] = out.get(client, 0) + int(amount)
        return out

    def unmetered_calls(self, limit: int = 1000) -> list[CallRecordRow]:
        """Ended call records of a client that have no reading yet."""
        metered = select(MeterReadingRow.source_id).where(
            MeterReadingRow.source_kind == "call_record"
        )
        return list(
            self._session.scalars(
                select(CallRecordRow)
                .where(
                    CallRecordRow.result.is_not(None),
                    CallRecordRow.client.is_not(None),
                    CallRecordRow.id.cast(MeterReadingRow.source_id.type).not_in(metered),
                )
                .order_by(CallRecordRow.id)
                .limit(limit)
            )
        )

    # invoices
    def next_invoice_seq(self) -> int:
        """Take the next invoice number (locks the counter until the unit of work ends: on
        SQLite the write transaction is already exclusive, on PostgreSQL FOR UPDATE)."""
        row = self._session.scalars(
            select(InvoiceCounterRow).where(InvoiceCounterRow.id == 1).with_for_update()
        ).first()
        if row is None:
            row = InvoiceCounterRow(id=1, last=0)
            self._session.add(row)
        row.last += 1
        self._session.flush()
        return row.last

    def invoice_of(self, client: str, month: str) -> InvoiceRow | None:
        """The client's current (not cancelled) invoice of a month."""
        return self._session.scalars(
            select(InvoiceRow).where(
                InvoiceRow.client == client, InvoiceRow.month == month,
                InvoiceRow.kind == "invoice", InvoiceRow.cancelled_by.is_(None),
            )
        ).first()  # fmt: skip

    def add_invoice(self, row: InvoiceRow, usage_ids: Iterable[int]) -> InvoiceRow:
        self._session.add(row)
        self._session.flush()
        ids = list(usage_ids)
        for i in range(0, len(ids), 500):
            self._session.execute(
                update(UsageLineRow)
                .where(UsageLineRow.id.in_(ids[i : i + 500]), UsageLineRow.invoice_id.is_(None))
                .values(invoice_id=row.id)
            )
        return row

    def release_usage(self, invoice_id: int) -> None:
        """A cancelled invoice's usage lines are open again (for the corrected invoice)."""
        self._session.execute(
            update(UsageLineRow).where(UsageLineRow.invoice_id == invoice_id)
            .values(invoice_id=None)
        )  # fmt: skip

    def invoice(self, invoice_id: int) -> InvoiceRow | None:
        return self._session.get(InvoiceRow, invoice_id)

    def invoice_by_number(self, number: str) -> InvoiceRow | None:
        return self._session.scalars(select(InvoiceRow).where(InvoiceRow.number == number)).first()

    def invoices(self, client: str | None = None) -> list[InvoiceRow]:
        q = select(InvoiceRow).order_by(InvoiceRow.seq)
        if client is not None:
            q = q.where(InvoiceRow.client == client)
        return list(self._session.scalars(q))

    def usage_by_ids(self, ids: Iterable[int]) -> list[tuple[int, Usage]]:
        out: list[tuple[int, Usage]] = []
        ids = list(ids)
        for i in range(0, len(ids), 500):
            rows = self._session.scalars(
                select(UsageLineRow).where(UsageLineRow.id.in_(ids[i : i + 500]))
            )
            out += [(r.id, _usage(r)) for r in rows]
        return sorted(out, key=lambda p: p[0])

    def billed_clients(self) -> list[str]:
        """Clients that have a tariff assignment."""
        rows = self._session.scalars(select(ClientTariffRow.client).distinct())
        return sorted(set(rows))

    # e-invoices: buyers' invoice addresses, the invoices' documents
    def buyer(self, client: str) -> dict[str, str] | None:
        row = self._session.get(BuyerRow, client)
        if row is None:
            return None
        return {f: getattr(row, f) for f in BUYER_COLUMNS}

    def set_buyer(self, client: str, fields: dict[str, str]) -> None:
        row = self._session.get(BuyerRow, client)
        if row is None:
            row = BuyerRow(client=client, **{f: "" for f in BUYER_COLUMNS})
            row.country = "DE"
            self._session.add(row)
        for key, value in fields.items():
            setattr(row, key, value)
        self._session.flush()

    def add_files(self, invoice_id: int, profile: str, pdf: bytes, xml: bytes) -> bool:
        """Store an invoice's documents unless it has them (then nothing changes: another
        process made them first); whether these were stored."""
        if self.with_files([invoice_id]):
            return False
        try:
            with self._session.begin_nested():
                self._session.add(
                    InvoiceFileRow(invoice_id=invoice_id, profile=profile, pdf=pdf, xml=xml)
                )
        except IntegrityError:  # PostgreSQL: stored by a concurrent transaction meanwhile
            return False
        return True

    def with_files(self, invoice_ids: Iterable[int]) -> set[int]:
        """Those of the invoices that have their documents."""
        ids, out = list(invoice_ids), set()
        for i in range(0, len(ids), 500):
            out |= set(self._session.scalars(
                select(InvoiceFileRow.invoice_id)
                .where(InvoiceFileRow.invoice_id.in_(ids[i : i + 500]))
            ))  # fmt: skip
        return out

    def invoices_without_files(self) -> list[int]:
        """Issued e-invoices (their doc names the seller) whose documents are not stored."""
        rows = self._session.execute(
            select(InvoiceRow.id, InvoiceRow.doc)
            .outerjoin(InvoiceFileRow, InvoiceFileRow.invoice_id == InvoiceRow.id)
            .where(InvoiceFileRow.invoice_id.is_(None))
            .order_by(InvoiceRow.seq)
        )  # fmt: skip
        return [rid for rid, doc in rows if isinstance(doc, dict) and "seller" in doc]

    def files(self, invoice_id: int) -> InvoiceFileRow | None:
        return self._session.get(InvoiceFileRow, invoice_id)

    # e-mails of invoices
    def mails(self, invoice_id: int) -> list[InvoiceMailRow]:
        """An invoice's e-mails, oldest first."""
        q = select(InvoiceMailRow).where(InvoiceMailRow.invoice_id == invoice_id)
        return list(self._session.scalars(q.order_by(InvoiceMailRow.attempt)))

    def last_mails(self, invoice_ids: Iterable[int]) -> dict[int, InvoiceMailRow]:
        """Per invoice its latest e-mail that was sent or may have been (state sent or
        sending); invoices without one are left out."""
        ids, out = list(invoice_ids), {}
        for i in range(0, len(ids), 500):
            rows = self._session.scalars(
                select(InvoiceMailRow)
                .where(InvoiceMailRow.invoice_id.in_(ids[i : i + 500]),
                       InvoiceMailRow.state.in_(("sent", "sending")))
                .order_by(InvoiceMailRow.attempt)
            )  # fmt: skip
            out.update({r.invoice_id: r for r in rows})
        return out

    def start_mail(self, invoice_id: int, recipient: str, document: str, sent_by: str,
                   at: datetime) -> InvoiceMailRow | None:  # fmt: skip
        """Record an e-mail about to be handed to the mail server (state "sending"); None
        when another sender recorded the same attempt meanwhile."""
        attempt = len(self.mails(invoice_id)) + 1
        row = InvoiceMailRow(invoice_id=invoice_id, attempt=attempt, state="sending",
                             recipient=recipient, document=document, sent_by=sent_by,
                             started_at=at, error="")  # fmt: skip
        try:
            with self._session.begin_nested():
                self._session.add(row)
        except IntegrityError:
            return None
        return row

    def end_mail(self, mail_id: int, at: datetime, error: str | None = None) -> None:
        """The mail server took the e-mail (state "sent" at `at`), or did not (`error`)."""
        row = self._session.get(InvoiceMailRow, mail_id)
        assert row is not None
        if error is None:
            row.state, row.sent_at = "sent", at
        else:
            row.state, row.error = "failed", error[:500]
