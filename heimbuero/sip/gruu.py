"""Globally Routable User Agent URIs (RFC 5627), sans-IO: the text of GRUUs and the temporary
GRUU token (no clock, the key passed in).

A GRUU names one device (one `+sip.instance`) of a user rather than all of them:

- the public GRUU is the address-of-record with the instance as its `gr` parameter,
  `sip:anna@example.com;gr=urn:uuid:…` (§3.1). It reveals the instance, and stays the same
  for as long as the device keeps its instance id;
- a temporary GRUU, `sip:tgruu.TOKEN@example.com;gr`, reveals nothing (§3.2): TOKEN is the
  user, the instance, the CSeq and a hash of the Call-ID of the registration, encrypted and
  authenticated under the server's secret (a synthetic IV: an HMAC of the plain text is both
  the tag and the nonce of an HMAC-SHA-256 keystream). Nobody without the secret can make one,
  change one, or read whose it is. The server keeps no list of them: a token is valid while
  the instance's binding from that Call-ID lives (`TempGruu.matches`), so a REGISTER with a new
  Call-ID (a rebooted phone) invalidates the earlier ones, and each refresh hands out a new one
  while the older ones of the same Call-ID stay valid.
"""

from __future__ import annotations

import hashlib
import hmac
import string
from dataclasses import dataclass
from urllib.parse import unquote

from heimbuero.sip.dialogtoken import b64, unb64

GR_PARAM = "gr"
TEMP_PREFIX = "tgruu."  # the user part of a temporary GRUU starts so
MAX_INSTANCE_CHARS = 256  # an instance id (and a `gr` value) longer than this is refused
MAX_TOKEN_CHARS = 600  # a temporary GRUU token's longest possible form, with room

_TAG_BYTES = 12  # 96 bits: forging a token takes 2**95 guesses on average
_CALL_HASH_BYTES = 8
# RFC 3261 §25.1: the characters a URI parameter value may carry unescaped (paramchar)
_PARAMCHAR = frozenset(string.ascii_letters + string.digits + "-_.!~*'()[]/:&+$")


def instance_id(value: str | None) -> str | None:
    """The instance URN of a `+sip.instance` value (`"<urn:uuid:…>"`, RFC 5626 §4.1) without
    its quotes and angle brackets, lower case (URNs compare so); None when it is no URN or too
    long."""
    if not value:
        return None
    text = value.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    text = text.strip().lower()
    if not text.startswith("urn:") or len(text) > MAX_INSTANCE_CHARS:
        return None
    if any(c <= " " or c in '"<>\\' or c > "~" for c in text):
        return None
    return text


def escape_param(text: str) -> str:
    """`text` as a URI parameter value: every character not allowed there %-escaped."""
    return "".join(
        c if c in _PARAMCHAR else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in text
    )


def gr_instance(value: str) -> str | None:
    """The instance a public GRUU's `gr` value names (unescaped, as `instance_id` writes it)."""
    if len(value) > 3 * MAX_INSTANCE_CHARS:
        return None
    try:
        return instance_id(unquote(value, errors="strict") if "%" in value else value)
    except UnicodeDecodeError:
        return None


def public_gruu(user: str, domain: str, instance: str) -> str:
    """The public GRUU of `instance` (an `instance_id`) of `user` (RFC 5627 §3.1)."""
    return f"sip:{user}@{domain};{GR_PARAM}={escape_param(instance)}"


def temp_gruu(token: str, domain: str) -> str:
    """The temporary GRUU for a token of `TempGruuSigner.make` (RFC 5627 §3.2)."""
    return f"sip:{TEMP_PREFIX}{token}@{domain};{GR_PARAM}"


def contact_params(
    user: str, domain: str, instance: str, token: str, *, with_instance: bool = True
) -> str:
    """The Contact parameters of a 200 to REGISTER for a binding of `instance` (RFC 5627 §5):
    `;+sip.instance="<…>";pub-gruu="…";temp-gruu="…"` (without the first when the Contact
    carries its `+sip.instance` already)."""
    own = f';+sip.instance="<{instance}>"' if with_instance else ""
    return (
        f'{own};pub-gruu="{public_gruu(user, domain, instance)}"'
        f';temp-gruu="{temp_gruu(token, domain)}"'
    )


def call_hash(call_id: str) -> bytes:
    """What a temporary GRUU keeps of a registration's Call-ID."""
    return hashlib.sha256(call_id.encode("utf-8", "surrogateescape")).digest()[:_CALL_HASH_BYTES]


@dataclass(frozen=True, slots=True)
class TempGruu:
    """What a verified temporary GRUU names: a user's instance, registered under a Call-ID (its
    hash) with at least this CSeq."""

    aor: str
    instance: str
    cseq: int
    call: bytes

    def matches(self, instance: str | None, call_id: str, cseq: int) -> bool:
        """Whether a binding (its `+sip.instance`, Call-ID and CSeq) is the one this names."""
        return (
            instance_id(instance) == self.instance
            and hmac.compare_digest(call_hash(call_id), self.call)
            and cseq >= self.cseq
        )


class TempGruuSigner:
    """Makes and opens temporary GRUU tokens under one key."""

    __slots__ = ("_tag_key", "_stream_key")

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the GRUU key must have at least 16 bytes")
        self._tag_key = hmac.new(key, b"tgruu tag", hashlib.sha256).digest()
        self._stream_key = hmac.new(key, b"tgruu stream", hashlib.sha256).digest()

    def _stream(self, iv: bytes, size: int) -> bytes:
        out = b""
        block = 0
        while len(out) < size:
            out += hmac.new(self._stream_key, iv + block.to_bytes(4, "big"), "sha256").digest()
            block += 1
        return out[:size]

    def make(self, aor: str, instance: str, call_id: str, cseq: int) -> str:
        """The token of a temporary GRUU for `instance` of `aor` registered under `call_id`
        with `cseq` (the user part after `TEMP_PREFIX`: base64url, case-sensitive)."""
        plain = (
            call_hash(call_id)
            + min(max(cseq, 0), 0xFFFFFFFF).to_bytes(4, "big")
            + "\0".join((aor, instance)).encode("utf-8", "surrogateescape")
        )
        iv = hmac.new(self._tag_key, plain, hashlib.sha256).digest()[:_TAG_BYTES]
        cipher = bytes(a ^ b for a, b in zip(plain, self._stream(iv, len(plain)), strict=True))
        return b64(iv + cipher)

    def open(self, token: str) -> TempGruu | None:
        """What a token names if this signer made it; None for anything else (forged, changed,
        made under another secret, oversize)."""
        if len(token) > MAX_TOKEN_CHARS:
            return None
        raw = unb64(token)
        if raw is None or len(raw) < _TAG_BYTES + _CALL_HASH_BYTES + 4 + 3:
            return None
        iv, cipher = raw[:_TAG_BYTES], raw[_TAG_BYTES:]
        plain = bytes(a ^ b for a, b in zip(cipher, self._stream(iv, len(cipher)), strict=True))
        good = hmac.new(self._tag_key, plain, hashlib.sha256).digest()[:_TAG_BYTES]
        if not hmac.compare_digest(iv, good):
            return None
        at = _CALL_HASH_BYTES + 4
        call, cseq = plain[:_CALL_HASH_BYTES], int.from_bytes(plain[_CALL_HASH_BYTES:at], "big")
        aor, sep, instance = plain[at:].decode("utf-8", "surrogateescape").partition("\0")
        if not sep or not aor or instance_id(instance) != instance:
            return None
        return TempGruu(aor, instance, cseq, call)
