"""Signed Via branches: a proxy knows its own branch again without keeping state.

A stateful proxy forwards a 2xx that outlived its client transaction statelessly, to the Via
below its own (RFC 3261 §16.7 step 10, §18.1.2). Only a response to a request the proxy really
forwarded may go that way: otherwise a forged response with a branch of the right shape would
be relayed to any address its second Via names. The branch therefore ends in a MAC over its
body and what it is bound to (the Call-ID and the address the request came from, where a
response goes next); `check` accepts only a branch this key signed for that binding, so a
branch a callee saw cannot be replayed in a response sent elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac

from .message import Via
from .peer import Peer

__all__ = ["BranchSigner", "response_address", "stray_binding"]

_MAC_LEN = 10  # hex digits: 40 bits, checked once per stray response


class BranchSigner:
    """Signs and checks the branches of requests the server forwards (`prefix` + body + MAC)."""

    __slots__ = ("_key", "prefix")

    def __init__(self, key: bytes, prefix: str) -> None:
        self._key = key
        self.prefix = prefix

    def _mac(self, body: str, bound: str) -> str:
        data = f"{body}\0{bound}".encode("utf-8", "surrogateescape")
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()[:_MAC_LEN]

    def sign(self, body: str, bound: str = "") -> str:
        """A branch: the prefix, `body` (no "." at its end) and the MAC after a dot, over the
        body and `bound` (which the branch does not carry)."""
        return f"{self.prefix}{body}.{self._mac(body, bound)}"

    def check(self, branch: str | None, bound: str = "") -> bool:
        """Whether `branch` is one this signer made for `bound`."""
        if not branch or not branch.startswith(self.prefix):
            return False
        body, dot, mac = branch[len(self.prefix) :].rpartition(".")
        return (
            bool(dot) and len(mac) == _MAC_LEN and hmac.compare_digest(mac, self._mac(body, bound))
        )


def response_address(via: Via) -> Peer:
    """Where a response to the request with this top Via goes (RFC 3261 §18.2.2, RFC 3581)."""
    host = via.params.get("received") or via.host
    rport = via.params.get("rport")
    port = int(rport) if rport and rport.isascii() and rport.isdigit() else (via.port or 5060)
    return Peer(via.transport.lower(), host.strip("[]").lower(), port)


def stray_binding(call_id: str, upstream: Via) -> str:
    """What a forwarded request's branch is signed for: its Call-ID and where its answers go
    next. A stray 2xx is relayed only there (§18.1.2), so a branch someone saw (a callee
    gets it in every request) is no key to send a 2xx anywhere else."""
    dest = response_address(upstream)
    return f"{call_id}\0{dest.transport}\0{dest.host}\0{dest.port}"
