"""Secrets the database keeps for the server (TOTP secrets), sealed at rest: AES-256-GCM under a
key derived (HKDF-SHA-256) from the data directory's `secret` file, which the database does not
hold. A dump or a backup of the database alone gives nothing away; the same `secret` (copied
to every node, as the Record-Route tokens need) opens them again.

A sealed value reads `v1:` + URL-safe base64 of nonce and ciphertext; the additional data binds
it to its purpose and its row (a value copied to another user's row does not open).
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "v1:"


class SealError(Exception):
    """A sealed value that does not open with this key (another `secret`, or altered), or no
    key to seal with."""


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


class Sealer:
    """Seals and opens short secrets for one purpose (e.g. b"totp")."""

    def __init__(self, secret: bytes, purpose: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the server secret is too short to derive a key from")
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"heimbuero seal " + purpose
        ).derive(secret)
        self._aead = AESGCM(key)
        self.purpose = purpose

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"Sealer(purpose={self.purpose!r})"

    def seal(self, text: str, row: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, text.encode(), self._aad(row))
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, value: str, row: str) -> str:
        """The text of a sealed value; SealError when it does not open."""
        if not is_sealed(value):
            raise SealError("the value is not sealed")
        try:
            raw = base64.urlsafe_b64decode(value[len(PREFIX) :])
            return self._aead.decrypt(raw[:12], raw[12:], self._aad(row)).decode()
        except (InvalidTag, ValueError, binascii.Error):
            raise SealError("the value does not open with this data directory's secret") from None

    def _aad(self, row: str) -> bytes:
        return self.purpose + b"\0" + row.encode("utf-8", "surrogateescape")
