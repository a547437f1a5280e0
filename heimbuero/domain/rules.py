"""What the store needs to know about a client's rules document without knowing its rules:
the signature of the parser the office layer supplies, and the error it raises."""

from __future__ import annotations

from typing import Protocol

from heimbuero.domain.model import Directory, Number


class RulesInvalid(ValueError):
    """A rules document that does not validate; str() lists every problem, one per line."""


class RulesParser(Protocol):
    """Validate a client's rules document against a directory: every number of the client
    with its rules, or RulesInvalid (office/rules_doc.parse_rules_document is the one)."""

    def __call__(
        self, doc: object, client_id: str, directory: Directory, /
    ) -> dict[str, Number]: ...
