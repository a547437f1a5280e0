"""End-to-end tests of SIP over TLS (RFC 3261 §26): the certificate `init` makes, phones that
register and call over TLS, and the limits on TLS handshakes."""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import DOMAIN, USERS
from .harness import (
    LOCALHOST,
    Baresip,
    Linphonec,
    Server,
    SipClient,
    SipMessage,
    digest_response,
    pick_challenge,
    wait_until,
)


def file_fingerprint(cert: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert.read_text(encoding="ascii"))
    return hashlib.sha256(der).hexdigest()


pytestmark = pytest.mark.e2e


@pytest.fixture
def tls_server(server_factory: Callable[..., Server]) -> Server:
    return server_factory(transports=("udp", "tcp", "tls"))


def test_register_and_message_over_tls(tls_server: Server) -> None:
    assert tls_server.tls_port is not None
    with (
        SipClient(tls_server.tls_port, transport="tls", cafile=tls_server.tls_cert) as bob,
        SipClient(tls_server.port) as alice,
    ):
        # The server's certificate verifies against the file init wrote (name 127.0.0.1).
        assert isinstance(bob.sock, ssl.SSLSocket)
        assert bob.sock.version() in ("TLSv1.2", "TLSv1.3")
        aor = f"sip:bob@{DOMAIN}"
        contact = f"<sip:bob@{LOCALHOST}:{bob.local_port};transport=tls>"
        _, reg = bob.authenticated_request(
            "REGISTER", f"sip:{DOMAIN}", username="bob", password=USERS["bob"],
            from_uri=aor, to_uri=aor, headers=[("Contact", contact), ("Expires", "600")],
        )  # fmt: skip
        assert reg.status == 200, reg.summary()
        # alice (UDP) sends bob a MESSAGE: it reaches bob over his TLS connection.
        alice_aor = f"sip:alice@{DOMAIN}"
        kw = {"from_uri": alice_aor, "to_uri": aor, "body": b"hallo per TLS",
              "content_type": "text/plain"}  # fmt: skip
        first = alice.request("MESSAGE", aor, **kw)  # type: ignore[arg-type]
        challenge = alice.final_response(first, 5)
        assert challenge.status == 407, challenge.summary()
        auth = digest_response(
            pick_challenge(challenge), method="MESSAGE", uri=aor, username="alice",
            password=USERS["alice"],
        )  # fmt: skip
        second = alice.request(
            "MESSAGE", aor, call_id=first.call_id, from_tag=first.from_tag, cseq=first.cseq + 1,
            headers=[("Proxy-Authorization", auth)], **kw,  # type: ignore[arg-type]
        )  # fmt: skip
        got = bob.recv(10)
        assert got is not None and got.method == "MESSAGE", got
        assert got.body == b"hallo per TLS"
        assert (got.header("Via") or "").startswith("SIP/2.0/TLS "), got.header("Via")
        bob.send_raw(_response_to(got, 200))
        final = alice.final_response(second, 10)
        assert final.status == 200, final.summary()


def _response_to(req: SipMessage, status: int) -> bytes:
    lines = [f"SIP/2.0 {status} OK"]
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in req.header_values(name):
            if name == "To" and ";tag=" not in value:
                value += ";tag=tlsbob"
            lines.append(f"{name}: {value}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _closed_after(sock: socket.socket) -> float:
    """Seconds until the server closes `sock` (anything it sends is returned in the clear)."""
    start = time.monotonic()
    sock.settimeout(10)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(4096):
            data += chunk
    assert b"SIP/2.0" not in data
    return time.monotonic() - start


def test_plain_tcp_and_half_open_clients_on_tls_port_are_closed(
    server_factory: Callable[..., Server],
) -> None:
    srv = server_factory(
        transports=("udp", "tls"),
        sip_options={"tls_handshake_timeout": 2, "max_tls_handshakes": 2},
    )
    assert srv.tls_port is not None
    address = (LOCALHOST, srv.tls_port)
    with socket.create_connection(address, timeout=10) as sock:
        # A SIP request in the clear is not a ClientHello: closed at once, nothing answered.
        sock.sendall(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9\r\n\r\n")
        assert _closed_after(sock) < 1.5
    with (
        socket.create_connection(address, timeout=10) as idle1,
        socket.create_connection(address, timeout=10) as idle2,
    ):
        # Two half-open clients hold the two handshake slots (the listen queue is accepted in
        # order): a third is closed at once ...
        with socket.create_connection(address, timeout=10) as third:
            assert _closed_after(third) < 1.5
        # ... and they themselves at the handshake timeout.
        assert 1.0 < _closed_after(idle1) < 6
        assert _closed_after(idle2) < 6
    # The slots are free again: a real TLS client gets through.
    with SipClient(srv.tls_port, transport="tls", cafile=srv.tls_cert) as ok:
        assert isinstance(ok.sock, ssl.SSLSocket)
    assert srv.alive()


@pytest.mark.peers("baresip")
def test_baresip_over_tls_calls_phone_on_udp(tls_server: Server, tmp_path: Path) -> None:
    with (
        Baresip(
            tmp_path, user="alice", password=USERS["alice"], server=tls_server, transport="tls"
        ) as alice,
        Baresip(
            tmp_path, user="bob", password=USERS["bob"], server=tls_server, answermode="auto"
        ) as bob,
    ):
        alice.wait_registered()
        bob.wait_registered()
        alice.command("dial", f"sip:bob@{DOMAIN}")
        alice.wait_for_event("CALL_ESTABLISHED", timeout=15)
        bob.wait_for_event("CALL_ESTABLISHED", timeout=15)
        bob.command("hangup")
        alice.wait_for_event("CALL_CLOSED", timeout=15)
        bob.wait_for_event("CALL_CLOSED", timeout=15)
        # and the other way round: the UDP phone calls the TLS phone, the TLS phone hangs up
        bob.command("dial", f"sip:alice@{DOMAIN}")
        bob.wait_for_event("CALL_RINGING", timeout=15)
        alice.command("accept")
        bob.wait_for_event("CALL_ESTABLISHED", timeout=15)
        alice.command("hangup")
        bob.wait_for_event("CALL_CLOSED", timeout=15)


# --------------------------------------------------------------------------------------------
# a carrier trunk over TLS: the carrier is a second heimbuero with a TLS listener, so its
# certificate is self-signed and must be pinned (or its CA named) in [sip.trunk_tls]

TRUNK_USER = "hb4711"
TRUNK_PASS = "Carrier-Secret-9"


def _office_with_trunk(tmp_path: Path, name: str, carrier: Server, trunk_tls: str | None) -> Server:
    office = Server(tmp_path / name, domain=DOMAIN, users={"alice": USERS["alice"]})
    office.prepare()
    if trunk_tls is not None:
        with office.config_path.open("a", encoding="utf-8") as f:
            f.write(f'\n[sip.trunk_tls]\n"127.0.0.1" = "{trunk_tls}"\n')
    office.cli(
        "trunk", "add", "carrier", "--address", f"127.0.0.1:{carrier.tls_port}",
        "--transport", "tls", "--username", TRUNK_USER, "--password", TRUNK_PASS,
        "--register", "--data", str(office.data_dir),
    )  # fmt: skip
    return office


def test_trunk_registers_over_tls_with_pinned_certificate(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    carrier = server_factory(
        "carrier", domain="127.0.0.1", users={TRUNK_USER: TRUNK_PASS},
        transports=("udp", "tls"),
    )  # fmt: skip
    pin = "sha256:" + file_fingerprint(carrier.tls_cert)
    with _office_with_trunk(tmp_path, "office", carrier, pin) as office:
        wait_until(
            lambda: "registered at carrier trunk carrier" in office.log_text(), 15,
            what="trunk registration over TLS",
        )  # fmt: skip
        assert "TLS connection to" not in office.log_text()


def test_trunk_over_tls_refuses_an_unverified_carrier(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    carrier = server_factory(
        "carrier", domain="127.0.0.1", users={TRUNK_USER: TRUNK_PASS},
        transports=("udp", "tls"),
    )  # fmt: skip
    # No setting: the carrier's self-signed certificate is checked against the system's CAs.
    with _office_with_trunk(tmp_path, "office-ca", carrier, None) as office:
        wait_until(
            lambda: "certificate verify failed" in office.log_text(), 15,
            what="a refused TLS handshake",
        )  # fmt: skip
    # A wrong pin is refused as well.
    wrong = "sha256:" + "00" * 32
    with _office_with_trunk(tmp_path, "office-pin", carrier, wrong) as office:
        wait_until(
            lambda: "differs from the pinned one" in office.log_text(), 15,
            what="a refused certificate",
        )  # fmt: skip
        assert "registered at carrier trunk" not in office.log_text()


def test_sips_needs_tls_on_every_hop(tls_server: Server) -> None:
    """RFC 5630: a sips: request arrives and leaves over TLS only; sips: contacts bind to TLS."""
    assert tls_server.tls_port is not None
    bob_aor, alice_aor = f"sip:bob@{DOMAIN}", f"sip:alice@{DOMAIN}"
    with (
        SipClient(tls_server.port) as bob,
        SipClient(tls_server.tls_port, transport="tls", cafile=tls_server.tls_cert) as alice,
        SipClient(tls_server.port) as alice_udp,
    ):
        # A sips: contact registered over UDP is refused ...
        sips_contact = f"<sips:bob@{LOCALHOST}:{bob.local_port}>"
        _, refused = bob.authenticated_request(
            "REGISTER", f"sip:{DOMAIN}", username="bob", password=USERS["bob"],
            from_uri=bob_aor, to_uri=bob_aor,
            headers=[("Contact", sips_contact), ("Expires", "600")],
        )  # fmt: skip
        assert refused.status == 400 and "TLS" in refused.reason, refused.summary()
        # ... a sip: one is fine.
        _, reg = bob.authenticated_request(
            "REGISTER", f"sip:{DOMAIN}", username="bob", password=USERS["bob"],
            from_uri=bob_aor, to_uri=bob_aor,
            headers=[("Contact", f"<sip:bob@{LOCALHOST}:{bob.local_port}>"), ("Expires", "600")],
        )  # fmt: skip
        assert reg.status == 200, reg.summary()
        sips_bob = f"sips:bob@{DOMAIN}"
        # A sips: INVITE that came over UDP: 416.
        _, over_udp = alice_udp.authenticated_request(
            "INVITE", sips_bob, username="alice", password=USERS["alice"],
            from_uri=alice_aor, to_uri=sips_bob,
        )  # fmt: skip
        assert over_udp.status == 416 and "TLS" in over_udp.reason, over_udp.summary()
        # Over TLS, but bob is only on UDP: 480, and bob's phone never rings.
        _, no_tls = alice.authenticated_request(
            "INVITE", sips_bob, username="alice", password=USERS["alice"],
            from_uri=alice_aor, to_uri=sips_bob,
        )  # fmt: skip
        assert no_tls.status == 480 and "TLS" in no_tls.reason, no_tls.summary()
        assert bob.recv(0.5) is None


@pytest.mark.peers("linphonec")
def test_linphonec_over_tls_chats_with_phone_on_udp(tls_server: Server, tmp_path: Path) -> None:
    tls = f"<sip:{LOCALHOST}:{tls_server.tls_port};transport=tls"
    over_tls = {
        # its own TLS socket on a random port; trust only the server's certificate
        "sip": {
            "sip_tls_port": -1,
            "root_ca": str(tls_server.tls_cert),
            "verify_server_certs": 1,
            # its mbedTLS matches names only, not IP addresses in subjectAltName
            "verify_server_cn": 0,
        },
        "proxy_0": {"reg_proxy": f"{tls}>", "reg_route": f"{tls};lr>"},
    }
    with (
        Linphonec(
            tmp_path, user="alice", password=USERS["alice"], server=tls_server, extra_rc=over_tls
        ) as alice,
        Linphonec(tmp_path, user="bob", password=USERS["bob"], server=tls_server) as bob,
    ):
        alice.wait_registered()
        bob.wait_registered()
        alice.command(f"chat sip:bob@{DOMAIN} Termin um drei per TLS")
        bob.wait_output(
            rf"Message received from sip:alice@{re.escape(DOMAIN)}[^:]*: Termin um drei"
        )
        bob.command(f"chat sip:alice@{DOMAIN} Passt")
        alice.wait_output(rf"Message received from sip:bob@{re.escape(DOMAIN)}[^:]*: Passt$")
