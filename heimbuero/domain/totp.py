"""Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP): the second factor of the
web console. SHA-1, 30-second steps and 6 digits, as every authenticator app expects.

Pure functions: the caller keeps the secret and the last step used (replay refusal) and says
what time it is."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from urllib.parse import quote, urlencode

STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1  # codes of the step before and after the current one are accepted too
SECRET_BYTES = 20  # 160 bits, RFC 4226's recommended length for HMAC-SHA-1


def new_secret() -> str:
    """A random secret as authenticator apps take it: base32, upper case, no padding."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def secret_bytes(secret: str) -> bytes:
    """The key of a base32 secret (spaces, case and missing padding tolerated); ValueError
    when it is not base32."""
    text = secret.replace(" ", "").upper()
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except (ValueError, TypeError) as exc:
        raise ValueError("not a base32 secret") from exc


def hotp(key: bytes, counter: int, digits: int = DIGITS, digest: str = "sha1") -> str:
    """RFC 4226 HOTP: the `digits`-digit code of `counter` (dynamic truncation)."""
    mac = hmac.new(key, struct.pack(">Q", counter), digest).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def step_of(now: float) -> int:
    """The RFC 6238 time step (T0 = 0) that `now` (Unix seconds) falls in."""
    return int(now // STEP_SECONDS)


def totp(key: bytes, now: float, digits: int = DIGITS, digest: str = "sha1") -> str:
    """The code at `now`."""
    return hotp(key, step_of(now), digits, digest)


def normalize(code: str) -> str:
    """A typed code without the spaces and dashes apps show in it ("123 456")."""
    return code.replace(" ", "").replace("-", "").strip()


def match(secret: str, code: str, now: float, last_step: int | None = None) -> int | None:
    """The step whose code `code` is, within ±DRIFT_STEPS of `now`, and later than
    `last_step` (a code used once is refused); None when it matches none."""
    code = normalize(code)
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    key = secret_bytes(secret)
    current = step_of(now)
    found = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        # every candidate is compared (constant work whichever matches)
        if hmac.compare_digest(hotp(key, step), code) and found is None:
            found = step
    if found is None or (last_step is not None and found <= last_step):
        return None
    return found


def uri(secret: str, account: str, issuer: str) -> str:
    """The otpauth:// URI authenticator apps read from a QR code (Key Uri Format)."""
    label = quote(f"{issuer}:{account}", safe="@:")
    query = urlencode(
        {
            "secret": secret,
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": str(DIGITS),
            "period": str(STEP_SECONDS),
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{query}"


# -- backup codes: for a login without the phone (lost, flat battery); each is good once ----

BACKUP_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off paper
BACKUP_CODES = 10
_BACKUP_LEN = 8  # 31**8: about 40 bits; the login's failure limits stop guessing


def new_backup_codes(count: int = BACKUP_CODES) -> list[str]:
    """`count` random codes as the user writes them down: `abcd-efgh`."""
    out = []
    for _ in range(count):
        raw = "".join(secrets.choice(BACKUP_ALPHABET) for _ in range(_BACKUP_LEN))
        out.append(f"{raw[:4]}-{raw[4:]}")
    return out


def backup_hash(code: str) -> str | None:
    """The stored form of a backup code (SHA-256 of its 8 characters; case, spaces and the
    dash as typed do not matter), or None when `code` is not shaped like one."""
    raw = code.strip().lower().replace("-", "").replace(" ", "")
    if len(raw) != _BACKUP_LEN or any(ch not in BACKUP_ALPHABET for ch in raw):
        return None
    return hashlib.sha256(raw.encode("ascii")).hexdigest()
