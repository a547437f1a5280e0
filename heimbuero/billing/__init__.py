"""Billing: tariffs, the usage meter, month statements. `tariff` is the domain (no SQL, no
HTTP); the store tables live in heimbuero.store.models (the billing block)."""
