"""The provider's invoice data (EN 16931 seller) that tests running invoices set first: a run
refuses while it is incomplete."""

from __future__ import annotations

SELLER = {
    "name": "Büroservice Sommer GmbH",
    "street": "Hauptstraße 1",
    "postcode": "80331",
    "city": "München",
    "country": "DE",
    "vat_id": "DE123456789",
    "iban": "DE02 1203 0000 0000 2020 51",
    "bic": "BYLADEM1001",
    "contact": "Petra Sommer",
    "email": "rechnung@sommer.example",
    "phone": "+49 89 1234567",
}
