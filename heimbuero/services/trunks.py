"""Registration to carriers: a trunk configured with `register` and credentials is kept
registered (REGISTER with digest authentication, refreshed before it expires, retried after
failures), so that the carrier sends the client numbers' calls here."""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING

from heimbuero.domain.model import INBOUND_AUTH, Trunk, TrunkInbound
from heimbuero.services.calls import direct_peer
from heimbuero.sip import transaction as tx
from heimbuero.sip.auth import client_authorization, ha1
from heimbuero.sip.message import Request, Response
from heimbuero.sip.peer import host_text

if TYPE_CHECKING:
    from .core import SipCore

log = logging.getLogger("heimbuero.trunks")

REGISTER_EXPIRES = 600
RETRY_AFTER = 60.0


def inbound_auth(auth: str, username: str | None, password: str | None, realm: str) -> TrunkInbound:
    """How a trunk's inbound calls are authenticated, from what an admin typed: `address`,
    `address-tcp`, or `digest` with the user name and password the carrier must answer our
    challenge with (kept as HA1 hashes for `realm`, the SIP domain). ValueError when wrong."""
    auth = auth.strip().lower()
    if auth not in INBOUND_AUTH:
        raise ValueError(f"invalid inbound authentication {auth!r}: choose one of "
                         f"{', '.join(INBOUND_AUTH)}")  # fmt: skip
    if auth != "digest":
        if username or password:
            raise ValueError("an inbound user name and password go with digest only")
        return TrunkInbound(auth)
    if not username or not password:
        raise ValueError("digest inbound authentication needs a user name and a password")
    if not username.isprintable() or any(c in username for c in ' "\\:'):
        raise ValueError(f"invalid inbound user name {username!r}")
    if len(password) < 12:
        raise ValueError("the inbound password must have at least 12 characters")
    return TrunkInbound(
        "digest", username, ha1("MD5", username, realm, password),
        ha1("SHA-256", username, realm, password),
    )  # fmt: skip


class TrunkRegistration:
    """One trunk's registration: its dialog-less REGISTER sequence and state."""

    __slots__ = ("trunk", "call_id", "from_tag", "cseq", "state", "expires_at", "timer",
                 "authorized")  # fmt: skip

    def __init__(self, trunk: Trunk) -> None:
        self.trunk = trunk
        self.call_id = secrets.token_hex(12)
        self.from_tag = secrets.token_hex(6)
        self.cseq = 0
        self.state = "new"  # new | registering | registered | failed | stopped
        self.expires_at = 0.0
        self.timer: list[object] | None = None
        self.authorized = False  # the last REGISTER already carried credentials


class TrunkRegistrations:
    """Keeps every trunk that asks for it registered at its carrier."""

    def __init__(self, core: SipCore) -> None:
        self.core = core
        self.active: dict[str, TrunkRegistration] = {}

    def update(self, trunks: Iterable[Trunk], now: float) -> None:
        """Follow the configuration: start new registrations, stop removed or changed ones."""
        wanted = {t.name: t for t in trunks if t.register and t.username and t.password}
        for name, reg in list(self.active.items()):
            if wanted.get(name) != reg.trunk:
                self.core.timers.cancel(reg.timer)
                reg.state = "stopped"
                del self.active[name]
        for name, trunk in wanted.items():
            if name not in self.active:
                reg = self.active[name] = TrunkRegistration(trunk)
                self._send(reg, now, None)

    def retry_failed(self, now: float) -> None:
        """Registrations that failed try again now (their carrier's address just changed)."""
        for reg in self.active.values():
            if reg.state == "failed":
                self._send(reg, now, None)

    def status(self) -> list[dict[str, object]]:
        return [
            {"trunk": r.trunk.name, "state": r.state, "expires_at": r.expires_at}
            for r in self.active.values()
        ]

    def _send(
        self, reg: TrunkRegistration, now: float, authorization: tuple[str, str] | None
    ) -> None:
        core = self.core
        t = reg.trunk
        if core.calls is not None:
            peers = core.calls.trunk_peers(t)
        else:
            direct = direct_peer(t)
            peers = (direct,) if direct is not None else ()
        if not peers:  # a host name DNS has not answered for (yet): try again later
            log.warning("carrier trunk %s: %s has no address (DNS); registration waits",
                        t.name, t.host)  # fmt: skip
            self._failed(reg, now)
            return
        transport = peers[0].transport  # (transport "auto": the one DNS chose)
        host, port = core.local_address(transport, peers[0].host)
        reg.cseq += 1
        aor = f"sip:{t.username}@{host_text(t.host)}"
        uri = registrar_uri(t)
        req = Request("REGISTER", uri)
        req.add("Max-Forwards", "70")
        req.add("From", f"<{aor}>;tag={reg.from_tag}")
        req.add("To", f"<{aor}>")
        req.add("Call-ID", reg.call_id)
        req.add("CSeq", f"{reg.cseq} REGISTER")
        param = "" if transport == "udp" else f";transport={transport}"
        req.add("Contact", f"<sip:{t.username}@{host}:{port}{param}>")
        req.add("Expires", str(REGISTER_EXPIRES))
        if authorization is not None:
            req.add(*authorization)
        reg.authorized = authorization is not None
        reg.state = "registering"
        core.send_request(req, peers[0], _RegisterOwner(self, reg), now)

    def on_response(self, reg: TrunkRegistration, resp: Response, now: float) -> None:
        if reg.state == "stopped" or resp.status < 200:
            return
        t = reg.trunk
        if resp.status in (401, 407) and not reg.authorized:
            name = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
            header = "Authorization" if resp.status == 401 else "Proxy-Authorization"
            uri = registrar_uri(t)
            for challenge in resp.get_all(name):
                value = client_authorization(
                    challenge, "REGISTER", uri, t.username or "", t.password or "",
                    secrets.token_hex(8),
                )  # fmt: skip
                if value is not None:
                    self._send(reg, now, (header, value))
                    return
        if 200 <= resp.status < 300:
            expires = _granted_expires(resp)
            reg.state = "registered"
            reg.expires_at = now + expires
            log.info("registered at carrier trunk %s for %d s", t.name, expires)
            self._schedule(reg, now + max(30.0, expires * 0.8))
            return
        log.warning(
            "carrier trunk %s refused registration: %d %s", t.name, resp.status, resp.reason
        )
        self._failed(reg, now)

    def on_failure(self, reg: TrunkRegistration, now: float) -> None:
        if reg.state != "stopped":
            log.warning("carrier trunk %s did not answer the registration", reg.trunk.name)
            self._failed(reg, now)

    def _failed(self, reg: TrunkRegistration, now: float) -> None:
        reg.state = "failed"
        self._schedule(reg, now + RETRY_AFTER)

    def _schedule(self, reg: TrunkRegistration, at: float) -> None:
        self.core.timers.cancel(reg.timer)
        reg.timer = self.core.timers.call_at(at, functools.partial(self._refresh, reg))

    def _refresh(self, reg: TrunkRegistration, now: float) -> None:
        if reg.state != "stopped":
            self._send(reg, now, None)


class _RegisterOwner:
    """The owner of one REGISTER's client transaction: its answer goes to the registration."""

    __slots__ = ("trunks", "reg")

    def __init__(self, trunks: TrunkRegistrations, reg: TrunkRegistration) -> None:
        self.trunks = trunks
        self.reg = reg

    def on_response(self, txn: tx.ClientTransaction, resp: Response, now: float) -> None:
        self.trunks.on_response(self.reg, resp, now)

    def on_timeout(self, txn: tx.ClientTransaction, now: float) -> None:
        self.trunks.on_failure(self.reg, now)

    def on_transport_error(self, txn: tx.ClientTransaction, now: float) -> None:
        self.trunks.on_failure(self.reg, now)


def _granted_expires(resp: Response) -> int:
    """What the carrier granted: the Contact's expires, else Expires, else what we asked."""
    for c in resp.get_all("contact"):
        for part in c.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "expires" and value.isdigit():
                return max(1, int(value))
    header = resp.get("expires")
    return max(1, int(header)) if header and header.isdigit() else REGISTER_EXPIRES


def registrar_uri(trunk: Trunk) -> str:
    """The REGISTER's Request-URI: the carrier's host, with its port when one is set."""
    return f"sip:{host_text(trunk.host)}" + (f":{trunk.port}" if trunk.port else "")
