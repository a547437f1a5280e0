"""Signed Via branches: a proxy knows its own branch again without keeping state.

A stateful proxy forwards a 2xx that outlived its client transaction statelessly, to the Via
below its own (RFC 3261 §16.7 step 10, §18.1.2). Only a response to a request the proxy really
forwarded may go that way: otherwise a forged response with a branch of the right shape would
be relayed to any address its second Via names. The branch therefore ends in a MAC over its
body; `check` accepts only a branch this key signed.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["BranchSigner"]

_MAC_LEN = 10  # hex digits: 40 bits, checked once per stray response


class BranchSigner:
    """Signs and checks the branches of requests the server forwards (`prefix` + body + MAC)."""

    __slots__ = ("_key", "prefix")

    def __init__(self, key: bytes, prefix: str) -> None:
        self._key = key
        self.prefix = prefix

    def _mac(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode("utf-8", "surrogateescape"), hashlib.sha256)
        return digest.hexdigest()[:_MAC_LEN]

    def sign(self, body: str) -> str:
        """A branch: the prefix, `body` (no "." at its end) and the MAC after a dot."""
        return f"{self.prefix}{body}.{self._mac(body)}"

    def check(self, branch: str | None) -> bool:
        """Whether `branch` is one this signer made."""
        if not branch or not branch.startswith(self.prefix):
            return False
        body, dot, mac = branch[len(self.prefix) :].rpartition(".")
        return bool(dot) and len(mac) == _MAC_LEN and hmac.compare_digest(mac, self._mac(body))
