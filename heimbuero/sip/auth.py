"""SIP digest authentication, server side (RFC 3261 §22, RFC 8760; grammar of RFC 7616).

Sans-IO: the clock comes in as `now`, credentials come from a `lookup_ha1(username, algorithm)`
callback, nothing here touches a socket, a file or a database.

Nonces are stateless: base64url(issue time | 12 random octets | MAC), the MAC being
HMAC-SHA256(secret, issue time | random | realm) truncated to 128 bits. A nonce with a bad MAC
is invalid; one older than `nonce_ttl` with a good MAC (and a correct digest) is stale, so the
phone retries with a fresh nonce without asking its user for the password again.

The only state is the highest nonce-count seen per nonce, kept to reject replays (answered as
stale: the digest was right, only the nonce is used up). It is bounded:
nonces older than the TTL are dropped, and beyond `max_tracked_nonces` the oldest go first. A
nonce that is no longer tracked although it was issued no later than one we dropped is answered
as stale, so dropping state can never let a captured request be replayed.

A verify costs one HMAC and two hashes (HA2 and the response), whether or not the user exists:
an unknown user is checked against a dummy HA1 and gets the same answer as a wrong password.
`AuthResult.reason` says which, for logs only; never send it to the peer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import math
import re
import secrets
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .message import ParseError, SipURI, parse_uri

__all__ = ["AuthResult", "DigestAuthenticator", "ha1", "parse_credentials", "same_uri"]

_HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
}
_HEX_LEN = {"MD5": 32, "SHA-256": 64}

_RANDOM_LEN = 12
_MAC_LEN = 16
_NONCE_RAW_LEN = 8 + _RANDOM_LEN + _MAC_LEN  # 36 octets: a multiple of 3, so no padding
_NONCE_LEN = _NONCE_RAW_LEN // 3 * 4  # 48 characters
_USED_WITHOUT_QOP = -1  # tracked "nc" of a nonce spent by an RFC 2069 (qop-less) response
_NEVER = -(2**63)

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SCHEME_RE = re.compile(r"[ \t]*(" + _TOKEN + r")(?:[ \t]+(.*))?\Z", re.S)
_SEP_RE = re.compile(r"[ \t,]*")
_PARAM_RE = re.compile(
    r"(" + _TOKEN + r")[ \t]*=[ \t]*"
    r'(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^\s,"]+))'
    r"[ \t]*(?:,|\Z)",
    re.S,
)
_UNESCAPE_RE = re.compile(r"\\(.)", re.S)
_NC_RE = re.compile(r"[0-9a-fA-F]{8}\Z")
_HEX_RE = re.compile(r"[0-9a-f]+\Z")


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of one verify. `username` is the one the credentials named (case kept)."""

    ok: bool
    username: str | None
    stale: bool = False
    reason: str = ""  # for logs only
    # A wrong password or unknown user, answered to a nonce we issued: what guessing looks
    # like. A foreign nonce, a malformed or refused credential is no guess (its source may be
    # forged, nothing was learnt): count only these for back-off and ban lists.
    guess: bool = False
    # Non-zero: answer this status (with `public`) instead of a fresh challenge; the request
    # itself is wrong (400: the digest names another uri; 403: a digest without qop).
    status: int = 0
    public: str = ""


def _b(text: str) -> bytes:
    # Header text is decoded with surrogateescape; the peer hashed the original octets.
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _h(algorithm: str, text: str) -> str:
    return _HASHES[algorithm](_b(text)).hexdigest()


def _canonical_algorithm(name: str) -> str:
    alg = name.strip().upper()
    if alg not in _HASHES:
        raise ValueError(f"unsupported digest algorithm {name!r} (use MD5 or SHA-256)")
    return alg


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password) as lower-case hex: what a user store keeps per algorithm."""
    return _h(_canonical_algorithm(algorithm), f"{username}:{realm}:{password}")


def parse_credentials(value: str) -> dict[str, str] | None:
    """Split 'Digest k=v, k="v"' into {k: v} (keys lower-cased, quoted values unescaped).

    None when the scheme is not Digest or the parameter list breaks the grammar, including a
    parameter given twice (two readers of the header could otherwise see different values).
    """
    m = _SCHEME_RE.match(value)
    if m is None or m.group(1).lower() != "digest":
        return None
    rest = m.group(2) or ""
    params: dict[str, str] = {}
    pos = 0
    end = len(rest)
    while True:
        pos = _SEP_RE.match(rest, pos).end()  # type: ignore[union-attr]
        if pos >= end:
            return params
        p = _PARAM_RE.match(rest, pos)
        if p is None:
            return None
        key = p.group(1).lower()
        if key in params:
            return None
        quoted = p.group(2)
        if quoted is None:
            params[key] = p.group(3)
        elif "\\" in quoted:
            params[key] = _UNESCAPE_RE.sub(r"\1", quoted)
        else:
            params[key] = quoted
        pos = p.end()


def client_authorization(
    challenge: str, method: str, uri: str, username: str, password: str, cnonce: str, nc: int = 1
) -> str | None:
    """The Authorization value a client sends in answer to one WWW-/Proxy-Authenticate value
    (when heimbuero registers to a carrier); None for a challenge it cannot answer."""
    ch = parse_credentials(challenge)
    if ch is None or "nonce" not in ch or "realm" not in ch:
        return None
    try:
        algorithm = _canonical_algorithm(ch.get("algorithm", "MD5"))
    except ValueError:
        return None
    if algorithm not in _HASHES:
        return None
    a1 = ha1(algorithm, username, ch["realm"], password)
    a2 = _h(algorithm, f"{method}:{uri}")
    qops = [q.strip() for q in ch.get("qop", "").split(",") if q.strip()]
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(ch['realm'])}",
        f"nonce={_quote(ch['nonce'])}",
        f"uri={_quote(uri)}",
        f"algorithm={algorithm}",
    ]
    if "auth" in qops:
        count = f"{nc:08x}"
        response = _h(algorithm, f"{a1}:{ch['nonce']}:{count}:{cnonce}:auth:{a2}")
        parts += ["qop=auth", f"nc={count}", f"cnonce={_quote(cnonce)}"]
    elif qops:
        return None  # auth-int only
    else:
        response = _h(algorithm, f"{a1}:{ch['nonce']}:{a2}")
    parts.insert(4, f"response={_quote(response)}")
    if "opaque" in ch:
        parts.append(f"opaque={_quote(ch['opaque'])}")
    return "Digest " + ", ".join(parts)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_URI_PARAMS_THAT_MATTER = ("user", "ttl", "method", "maddr", "transport")


def _unescape(text: str | None) -> str | None:
    if text is None or "%" not in text:
        return text
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


def _uri_key(uri: SipURI) -> tuple[object, ...]:
    if uri.opaque is not None:
        return (uri.scheme, uri.opaque)
    params = {k.lower(): (v or "").lower() for k, v in uri.params.items()}
    return (
        uri.scheme,
        _unescape(uri.user),
        _unescape(uri.password),
        uri.host.lower(),
        uri.port,
        tuple(params.get(k) for k in _URI_PARAMS_THAT_MATTER),
    )


def same_uri(digest_uri: str, request_uri: str) -> bool:
    """Whether a digest's `uri` names the Request-URI (RFC 3261 §22.4): equal as written, or
    equal by the rules of §19.1.4 (scheme, user and host compared as URIs, host and the
    parameters transport, user, ttl, method and maddr without case, the others ignored)."""
    if digest_uri == request_uri:
        return True
    try:
        a, b = parse_uri(digest_uri), parse_uri(request_uri)
    except ParseError:
        return False
    return _uri_key(a) == _uri_key(b)


class DigestAuthenticator:
    """Issues digest challenges and verifies Authorization / Proxy-Authorization values."""

    __slots__ = (
        "realm",
        "algorithms",
        "nonce_ttl",
        "max_tracked_nonces",
        "_secret",
        "_realm_b",
        "_realm_q",
        "_dummy_ha1",
        "_seen",
        "_heap",
        "_floor",
    )

    def __init__(
        self,
        realm: str,
        secret: bytes,
        algorithms: Sequence[str] = ("MD5", "SHA-256"),
        nonce_ttl: float = 300.0,
        max_tracked_nonces: int = 100_000,
    ) -> None:
        if not secret:
            raise ValueError("the nonce secret must not be empty")
        if not realm or any(c in realm for c in "\r\n\0"):
            raise ValueError(f"bad realm {realm!r}")
        if isinstance(algorithms, str):
            raise TypeError("algorithms must be a sequence of names, not one string")
        algs: list[str] = []
        for name in algorithms:
            alg = _canonical_algorithm(name)
            if alg not in algs:
                algs.append(alg)
        if not algs:
            raise ValueError("at least one digest algorithm is needed")
        if not nonce_ttl > 0 or math.isinf(nonce_ttl):
            raise ValueError("nonce_ttl must be a positive number of seconds")
        if max_tracked_nonces < 1:
            raise ValueError("max_tracked_nonces must be at least 1")
        self.realm = realm
        self.algorithms: tuple[str, ...] = tuple(algs)
        self.nonce_ttl = float(nonce_ttl)
        self.max_tracked_nonces = max_tracked_nonces
        self._secret = bytes(secret)
        self._realm_b = _b(realm)
        self._realm_q = _quote(realm)
        # Unknown users are checked against this, so they cost what a known user costs.
        self._dummy_ha1 = {alg: secrets.token_hex(_HEX_LEN[alg] // 2) for alg in _HASHES}
        self._seen: dict[str, int] = {}  # nonce -> highest nc accepted (or _USED_WITHOUT_QOP)
        self._heap: list[tuple[int, str]] = []  # (issue time in ms, nonce) of the tracked ones
        self._floor = _NEVER  # newest issue time (ms) among nonces we stopped tracking

    # ---- nonces ---------------------------------------------------------------------------

    def _mac(self, head: bytes) -> bytes:
        return hmac.digest(self._secret, head + self._realm_b, "sha256")[:_MAC_LEN]

    def _new_nonce(self, now: float) -> str:
        head = struct.pack(">q", math.floor(now * 1000)) + secrets.token_bytes(_RANDOM_LEN)
        return base64.urlsafe_b64encode(head + self._mac(head)).decode("ascii")

    def _nonce_issued(self, nonce: str) -> int | None:
        """The issue time (ms) of one of our nonces, or None when it is not one of ours."""
        if len(nonce) != _NONCE_LEN or not nonce.isascii():
            return None
        encoded = nonce.encode("ascii")
        try:
            raw = base64.urlsafe_b64decode(encoded)
        except (binascii.Error, ValueError):
            return None
        # The decoder skips foreign characters; insist on the one canonical spelling.
        if len(raw) != _NONCE_RAW_LEN or base64.urlsafe_b64encode(raw) != encoded:
            return None
        head = raw[: 8 + _RANDOM_LEN]
        if not hmac.compare_digest(self._mac(head), raw[8 + _RANDOM_LEN :]):
            return None
        issued: int = struct.unpack(">q", raw[:8])[0]
        return issued

    def _expired(self, issued_ms: int, now: float) -> bool:
        return now - issued_ms / 1000.0 > self.nonce_ttl

    def _forget_expired(self, now: float) -> None:
        heap = self._heap
        while heap and self._expired(heap[0][0], now):
            issued, nonce = heapq.heappop(heap)
            del self._seen[nonce]
            self._floor = max(self._floor, issued)

    def _track(self, nonce: str, issued: int, nc: int) -> None:
        if nonce in self._seen:
            self._seen[nonce] = nc
            return
        self._seen[nonce] = nc
        heapq.heappush(self._heap, (issued, nonce))
        while len(self._seen) > self.max_tracked_nonces:
            old_issued, old = heapq.heappop(self._heap)
            del self._seen[old]
            self._floor = max(self._floor, old_issued)

    @property
    def tracked_nonces(self) -> int:
        """How many nonces currently have a remembered nonce-count (for metrics)."""
        return len(self._seen)

    # ---- public API -----------------------------------------------------------------------

    def challenges(self, now: float, stale: bool = False, md5_only: bool = False) -> list[str]:
        """One WWW-/Proxy-Authenticate value per configured algorithm, in the configured order.

        All of them carry the same fresh nonce; the client answers one. `md5_only` serves
        clients that fail on any challenge whose algorithm they do not know.
        """
        nonce = self._new_nonce(now)
        tail = ", stale=true" if stale else ""
        algorithms = ("MD5",) if md5_only and "MD5" in self.algorithms else self.algorithms
        return [
            f'Digest realm={self._realm_q}, nonce="{nonce}", algorithm={alg}, qop="auth"{tail}'
            for alg in algorithms
        ]

    def verify(
        self,
        method: str,
        authorization: str,
        now: float,
        lookup_ha1: Callable[[str, str], str | None],
        expected_realm_only: bool = True,
        request_uri: str | None = None,
        allow_rfc2069: Callable[[str], bool] | None = None,
    ) -> AuthResult:
        """Check one Authorization / Proxy-Authorization value for a request with `method`.

        `lookup_ha1(username, algorithm)` gives the hex HA1 of that user for "MD5" or "SHA-256",
        or None for an unknown user. With `expected_realm_only` (the default) credentials for any
        other realm are refused outright; without it the realm parameter is not compared and the
        HA1 from `lookup_ha1` alone decides. The uri parameter must be present; with
        `request_uri` it must name that URI (`same_uri`), else the result carries status 400.
        A response without qop (RFC 2069) is refused with status 403 unless
        `allow_rfc2069(username)` says that user's phone needs it (no callback: refused).
        Both checks come before the password is looked at, so they tell an attacker nothing.
        Malformed input gives ok=False, never an exception (a callback's exception passes on).
        """
        params = parse_credentials(authorization)
        if params is None:
            return AuthResult(False, None, reason="not a well-formed Digest credential")
        username = params.get("username")
        if username is None:
            return AuthResult(False, None, reason="no username parameter")
        for key in ("realm", "nonce", "uri", "response"):
            if not params.get(key):
                return AuthResult(False, username, reason=f"no {key} parameter")
        if expected_realm_only and params["realm"] != self.realm:
            return AuthResult(False, username, reason="credentials for another realm")
        if request_uri is not None and not same_uri(params["uri"], request_uri):
            why = "digest uri does not match the Request-URI"
            return AuthResult(False, username, reason=why, status=400, public=why)
        alg = params.get("algorithm", "MD5").upper()
        if alg not in self.algorithms:
            return AuthResult(False, username, reason=f"algorithm {alg!r} not offered")
        response = params["response"].lower()
        if len(response) != _HEX_LEN[alg] or not _HEX_RE.match(response):
            return AuthResult(False, username, reason="malformed response parameter")
        qop = params.get("qop")
        nc = _USED_WITHOUT_QOP
        if qop is not None:
            if qop.lower() != "auth":
                return AuthResult(False, username, reason=f"qop {qop!r} not offered")
            nc_text = params.get("nc", "")
            cnonce = params.get("cnonce", "")
            if not _NC_RE.match(nc_text) or not cnonce:
                return AuthResult(False, username, reason="qop without a valid nc and cnonce")
            nc = int(nc_text, 16)
            if nc == 0:
                return AuthResult(False, username, reason="nonce count 0")
        elif alg != "MD5":
            return AuthResult(False, username, reason="qop is required with SHA-256")
        elif allow_rfc2069 is None or not allow_rfc2069(username):
            why = "digest without qop (RFC 2069) not allowed"
            return AuthResult(False, username, reason=why, status=403, public=why)
        nonce = params["nonce"]
        issued = self._nonce_issued(nonce)
        if issued is None:
            return AuthResult(False, username, reason="nonce not issued by us")

        # From here on, known and unknown users take the same path and cost.
        stored = lookup_ha1(username, alg)
        known = stored is not None
        ha1_hex = stored if stored is not None else self._dummy_ha1[alg]
        ha2 = _h(alg, f"{method}:{params['uri']}")
        if qop is not None:
            expected = _h(alg, f"{ha1_hex}:{nonce}:{nc_text}:{cnonce}:{qop}:{ha2}")
        else:
            expected = _h(alg, f"{ha1_hex}:{nonce}:{ha2}")
        matched = hmac.compare_digest(expected.encode("ascii"), response.encode("ascii"))
        if not (matched and known):
            why = "wrong password" if known else "unknown user"
            return AuthResult(False, username, reason=why, guess=True)

        # A correct digest: now decide between fresh, stale and replayed.
        if self._expired(issued, now):
            return AuthResult(False, username, stale=True, reason="nonce expired")
        self._forget_expired(now)
        seen = self._seen.get(nonce)
        if seen is None and issued <= self._floor:
            return AuthResult(False, username, stale=True, reason="nonce no longer tracked")
        if seen == _USED_WITHOUT_QOP:
            return AuthResult(False, username, stale=True, reason="nonce already spent without qop")
        if qop is None:
            if seen is not None:
                return AuthResult(False, username, stale=True, reason="nonce reused without qop")
        elif seen is not None and nc <= seen:
            # A replayed or out-of-order count is stale (RFC 7616 §3.4.5 leaves the answer
            # open; RFC 2617 §3.2.3 "stale" fits): the phone retries with a fresh nonce instead
            # of taking the password for wrong (PJSIP sends requests out of order under load).
            return AuthResult(
                False, username, stale=True, reason=f"nonce count {nc} replayed (seen {seen})"
            )
        self._track(nonce, issued, nc)
        return AuthResult(True, username)
