"""Signed tokens for the proxy's own dialogs (sans-IO, no clock, the key passed in).

A proxy that record-routes a dialog is asked again for every later request of it, and such a
request arrives without credentials (a BYE from the callee, an ACK for a 2xx). What lets it
through must be something only the proxy can have made, so this module signs two things with
an HMAC (SHA-256) under the server's secret:

- a Record-Route token: the Call-ID, the tag of the dialog's first From, and the two flows
  (transport, host, port) between which the proxy forwarded the dialog-creating request. An
  in-dialog request is accepted only with a token that verifies for its Call-ID and one of its
  tags (callee to caller swaps From and To), and is sent only to one of the signed flows (over
  TCP/TLS: to the signed host at any port, `is_party`);
- an `alias` value (where a phone behind NAT is really reached): host, port and transport
  together with the Call-ID, so that an alias cannot be carried into another dialog or be
  made up by a phone.

Nothing here expires: a call lasts as long as it lasts, and the signature binds the token to
one Call-ID; a new secret (`heimbuero init`) invalidates all.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from .peer import Peer

Flow = Peer  # (transport, host, port), transport lower case, host without []

TOKEN_PARAM = "hbd"  # the Record-Route URI parameter that carries the token
_MAC_BYTES = 12  # 96 bits: forging one takes 2**95 guesses on average
_ALIAS_MAC_BYTES = 9


def b64(data: bytes) -> str:
    """URL-safe base64 without padding (tokens inside URI parameters)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def normal_flow(flow: Flow) -> Flow:
    """The same flow written one way: transport lower case, host without IPv6 brackets."""
    return Peer(flow[0].lower(), flow[1].strip("[]").lower(), int(flow[2]))


def is_party(flow: Flow, flows: tuple[Flow, Flow]) -> bool:
    """Whether `flow` reaches one of a dialog's two signed `flows`: the same flow, or over
    TCP/TLS the same host by the same transport. A connection-oriented peer is one host: its
    connections to us come from passing ports, while its Record-Route and Path name the port
    it listens on (an edge proxy in front of phones, reached again once its connection closed).
    """
    return any(same_party(flow, other) for other in flows)


def same_party(a: Flow, b: Flow) -> bool:
    """Whether flows `a` and `b` reach the same peer (the rule of `is_party`)."""
    t, h, p = normal_flow(a)
    bt, bh, bp = normal_flow(b)
    return (t, h) == (bt, bh) and (p == bp or t in ("tcp", "tls"))


def _flow_text(flow: Flow) -> str:
    t, h, p = normal_flow(flow)
    return f"{t}|{h}|{p}"


def _parse_flow(parts: list[str]) -> Flow | None:
    if len(parts) != 3 or not parts[2].isdigit() or not parts[0] or not parts[1]:
        return None
    port = int(parts[2])
    if not 0 < port < 65536:
        return None
    return Peer(parts[0], parts[1], port)


class DialogSigner:
    """Makes and checks Record-Route tokens and alias values under one secret."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the dialog signing secret must have at least 16 bytes")
        # A key of its own, so that nothing signed here can stand in for a digest nonce.
        self._key = hashlib.sha256(b"heimbuero dialog tokens\0" + secret).digest()

    def derive(self, purpose: bytes) -> bytes:
        """A key of its own for another kind of token (e.g. b"gruu") under the same secret:
        replaced together with the dialog tokens' key, never usable as that key."""
        return hmac.new(self._key, b"derive\0" + purpose, hashlib.sha256).digest()

    def _mac(self, kind: bytes, *fields: str, size: int) -> bytes:
        msg = kind + b"\0" + "\0".join(fields).encode("utf-8", "surrogateescape")
        return hmac.new(self._key, msg, hashlib.sha256).digest()[:size]

    # ------------------------------------------------------------------ Record-Route

    def route_token(self, call_id: str, tag: str, flows: tuple[Flow, Flow]) -> str:
        """The token for a dialog of `call_id` whose first From carried `tag`, forwarded
        between the two `flows` (order does not matter)."""
        payload = "|".join(sorted(_flow_text(f) for f in flows))
        mac = self._mac(b"rr", call_id, tag, payload, size=_MAC_BYTES)
        return f"{b64(payload.encode('utf-8'))}.{b64(mac)}"

    def check_route(
        self, token: str, call_id: str, tags: tuple[str, ...]
    ) -> tuple[Flow, Flow] | None:
        """The dialog's two flows if `token` was made by `route_token` for `call_id` and one
        of `tags`; None for anything else."""
        payload_b64, sep, mac_b64 = token.partition(".")
        if not sep or len(token) > 400:
            return None
        raw = unb64(payload_b64)
        mac = unb64(mac_b64)
        if raw is None or mac is None or len(mac) != _MAC_BYTES:
            return None
        try:
            payload = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not any(
            hmac.compare_digest(mac, self._mac(b"rr", call_id, tag, payload, size=_MAC_BYTES))
            for tag in dict.fromkeys(tags)
        ):
            return None
        parts = payload.split("|")
        if len(parts) != 6:
            return None
        a, b = _parse_flow(parts[:3]), _parse_flow(parts[3:])
        if a is None or b is None:
            return None
        return (a, b)

    # ------------------------------------------------------------------ alias

    def alias(self, flow: Flow, call_id: str) -> str:
        """An `alias` parameter value naming `flow`, valid in the dialog of `call_id` only:
        `host~port~transport~signature`."""
        t, h, p = normal_flow(flow)
        host = f"[{h}]" if ":" in h else h
        mac = self._mac(b"alias", call_id, _flow_text(flow), size=_ALIAS_MAC_BYTES)
        return f"{host}~{p}~{t}~{b64(mac)}"

    def check_alias(self, value: str, call_id: str) -> Flow | None:
        """The flow an alias value names, if this signer made it for `call_id`; else None."""
        parts = value.split("~")
        if len(parts) != 4 or len(value) > 200:
            return None
        flow = _parse_flow([parts[2].lower(), parts[0].strip("[]").lower(), parts[1]])
        mac = unb64(parts[3])
        if flow is None or mac is None or len(mac) != _ALIAS_MAC_BYTES:
            return None
        good = self._mac(b"alias", call_id, _flow_text(flow), size=_ALIAS_MAC_BYTES)
        return flow if hmac.compare_digest(mac, good) else None
