"""GRUUs (RFC 5627) for the registrar and the proxy: which GRUUs a binding gets, and which
bindings a request to a GRUU may reach.

The registrar adds a binding's public and temporary GRUU to the Contact of the 200 when the
REGISTER said `Supported: gruu` and the Contact carried a `+sip.instance` (§5); nothing is
stored for them. The proxy sends a request whose Request-URI is a GRUU of ours only to the
bindings of that one instance of that one user (never forked to the user's other devices):

- a public GRUU names the user in its user part and the instance in `gr`: only that user's
  bindings with that instance (a `gr` naming another user's instance finds nothing);
- a temporary GRUU is opened with the server's key: forged, altered or foreign ones are
  404, as is a `gr` with no instance id; one too long to be ours is 400;
- a GRUU whose instance has no live binding (from that Call-ID, for a temporary one) is 480.

Who may send to a GRUU is what decides who may send to the user's address: a GRUU is a more
specific target, not another door.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from heimbuero.sip.gruu import (
    GR_PARAM,
    MAX_INSTANCE_CHARS,
    MAX_TOKEN_CHARS,
    TEMP_PREFIX,
    TempGruuSigner,
    contact_params,
    gr_instance,
    instance_id,
)
from heimbuero.sip.message import SipURI

from .location import Binding


@dataclass(frozen=True, slots=True)
class GruuTarget:
    """The user a GRUU belongs to, and which of its bindings it names."""

    aor: str
    matches: Callable[[Binding], bool]


class Gruus:
    """Makes the GRUUs of bindings in `domain` and resolves requests to them."""

    __slots__ = ("domain", "_signer")

    def __init__(self, domain: str, key: bytes) -> None:
        self.domain = domain
        self._signer = TempGruuSigner(key)

    def contact_params(self, b: Binding, *, instance: bool = True) -> str:
        """The GRUU parameters for the Contact of `b` in a 200 to REGISTER, with its
        `+sip.instance` unless `instance` is False ("" when the binding has no instance id)."""
        urn = instance_id(b.instance)
        if urn is None:
            return ""
        token = self._signer.make(b.aor, urn, b.call_id, b.cseq)
        return contact_params(b.aor, self.domain, urn, token, with_instance=instance)

    @staticmethod
    def is_gruu(uri: SipURI) -> bool:
        return GR_PARAM in uri.params

    def resolve(self, uri: SipURI) -> GruuTarget | tuple[int, str]:
        """What the GRUU `uri` (a local URI with a `gr` parameter) reaches, or (status, reason)
        when it reaches nothing."""
        user = uri.user or ""
        value = uri.params.get(GR_PARAM)
        if value is None:  # a temporary GRUU: `sip:tgruu.TOKEN@domain;gr`
            if not user.startswith(TEMP_PREFIX):
                return 404, "Not Found: unknown GRUU"
            token = user[len(TEMP_PREFIX) :]
            if len(token) > MAX_TOKEN_CHARS:
                return 400, "GRUU too long"
            temp = self._signer.open(token)
            if temp is None:
                return 404, "Not Found: unknown GRUU"
            return GruuTarget(temp.aor, lambda b: temp.matches(b.instance, b.call_id, b.cseq))
        if len(value) > 3 * MAX_INSTANCE_CHARS:
            return 400, "GRUU too long"
        instance = gr_instance(value)
        if instance is None or not user:
            return 404, "Not Found: unknown GRUU"
        return GruuTarget(user.lower(), lambda b: instance_id(b.instance) == instance)
