"""TLS for SIP (RFC 3261 §26): the server's certificate, a self-signed one made at `init`, and
the contexts for inbound connections and for outbound ones to carriers.

Outbound connections verify the peer against the system's CA store by default; a trunk may
instead name a CA file (a private carrier's CA) or pin a certificate's SHA-256 fingerprint.
TLS 1.2 is the least version accepted either way.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path

CERT_DAYS = 3650


def fingerprint(der: bytes) -> str:
    """SHA-256 fingerprint as phones and `openssl x509 -fingerprint -sha256` show it."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def file_fingerprint(cert_path: Path) -> str:
    """The SHA-256 fingerprint of the first certificate in a PEM file."""
    pem = cert_path.read_text(encoding="ascii")
    return fingerprint(ssl.PEM_cert_to_DER_cert(pem))


def normalise_fingerprint(text: str) -> str:
    """`sha256:ab:cd…`, `AB:CD…` or `abcd…` → `AB:CD:…`; ValueError if it is not 32 bytes."""
    value = text.strip()
    if value.lower().startswith("sha256:") and len(value) > 7 and value[7] != " ":
        rest = value[7:]
        if len(rest.replace(":", "")) == 64:
            value = rest
    hexdigits = value.replace(":", "").upper()
    if len(hexdigits) != 64 or any(c not in "0123456789ABCDEF" for c in hexdigits):
        raise ValueError(f"not a SHA-256 fingerprint: {text!r}")
    return ":".join(hexdigits[i : i + 2] for i in range(0, 64, 2))


def generate_self_signed(cert_path: Path, key_path: Path, names: Iterable[str]) -> str:
    """Write a self-signed certificate for `names` (first = CN; all in subjectAltName) and its
    key (mode 0600); return the certificate's SHA-256 fingerprint."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    unique = list(dict.fromkeys(n for n in names if n))
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for n in unique:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, unique[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class SipTls:
    """The TLS contexts of one server: its own certificate for inbound connections, and per
    carrier the verification asked for in `[sip.trunk_tls]` ("HOST" or "HOST:PORT" → a CA
    file, or "sha256:FINGERPRINT")."""

    def __init__(
        self,
        cert: Path | None,
        key: Path | None,
        trunk_tls: Mapping[str, str] | None = None,
    ) -> None:
        self._server: ssl.SSLContext | None = None
        if cert is not None and key is not None:
            ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
            ctx.load_cert_chain(cert, key)
            self._server = ctx
        self._trunk_tls = dict(trunk_tls or {})
        self._clients: dict[tuple[str, int], ssl.SSLContext] = {}

    def reload(self, cert: Path | None, key: Path | None, trunk_tls: Mapping[str, str]) -> None:
        """Read the certificate files again (a renewed certificate) and take new trunk
        settings: connections from now on use them, open ones keep theirs. A pair that does
        not load raises (ssl.SSLError, OSError) and changes nothing."""
        if cert is not None and key is not None:
            ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
            ctx.load_cert_chain(cert, key)
            self._server = ctx
        self._trunk_tls = dict(trunk_tls)
        self._clients = {}

    def server_context(self) -> ssl.SSLContext | None:
        return self._server

    def setting(self, host: str, port: int) -> str | None:
        return self._trunk_tls.get(f"{host}:{port}") or self._trunk_tls.get(host)

    def pin(self, host: str, port: int) -> str | None:
        """The fingerprint an outbound peer's certificate must have, if one is pinned."""
        value = self.setting(host, port)
        if value is None or not value.lower().startswith("sha256:"):
            return None
        return normalise_fingerprint(value)

    def client_context(self, host: str, port: int) -> ssl.SSLContext:
        ctx = self._clients.get((host, port))
        if ctx is not None:
            return ctx
        value = self.setting(host, port)
        if value is not None and value.lower().startswith("sha256:"):
            # Pinned: the fingerprint is checked after the handshake instead of a CA chain.
            ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif value is not None:
            ctx = _harden(ssl.create_default_context(cafile=value))
        else:
            ctx = _harden(ssl.create_default_context())
        self._clients[(host, port)] = ctx
        return ctx
