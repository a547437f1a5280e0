"""Keep the forwarding that worked before the destination policy: every `external:` number in
a stored rules document whose class the default policy allows (German fixed, mobile,
freephone, emergency) becomes an approved number of its client. Numbers the policy refuses
(premium, international, …) are not approved: those rules fall back to the provider's default
plan until an admin allows them (`heimbuero client policy`, `client approve-number`).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from heimbuero.domain.callpolicy import DEFAULT_ALLOWED, classify

revision = "0007"
down_revision: str | None = "0006"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def _external_numbers(node: Any) -> set[str]:
    """Every `external:+E164` string anywhere in a rules document."""
    if isinstance(node, str):
        kind, sep, number = node.strip().partition(":")
        return {number.strip()} if sep and kind == "external" else set()
    if isinstance(node, dict):
        return set().union(*(_external_numbers(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_external_numbers(v) for v in node))
    return set()


def _allowed_by_default(number: str) -> bool:
    try:
        return classify(number) in DEFAULT_ALLOWED
    except ValueError:
        return False


def upgrade() -> None:
    bind = op.get_bind()
    rules = sa.table(
        "rule_documents", sa.column("client", sa.String), sa.column("document", sa.JSON)
    )
    clients = sa.table("clients", sa.column("id", sa.String), sa.column("call_policy", sa.JSON))
    wanted: dict[str, set[str]] = {}
    for client, document in bind.execute(sa.select(rules.c.client, rules.c.document)):
        numbers = {n for n in _external_numbers(document) if _allowed_by_default(n)}
        if numbers:
            wanted.setdefault(client, set()).update(numbers)
    for client, numbers in wanted.items():
        policy = bind.execute(
            sa.select(clients.c.call_policy).where(clients.c.id == client)
        ).scalar_one_or_none()
        policy = dict(policy or {})
        approved = set(policy.get("approved_numbers") or ())
        policy["approved_numbers"] = sorted(approved | numbers)
        bind.execute(clients.update().where(clients.c.id == client).values(call_policy=policy))


def downgrade() -> None:
    pass  # approvals are kept: they only allow what worked before the upgrade
