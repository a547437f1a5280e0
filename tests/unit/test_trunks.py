"""Registration to a carrier, sans-IO: REGISTER, digest answer, refresh, retry after refusal.

The carrier side is played by heimbuero's own digest verifier, so the Authorization the trunk
sends is checked by an independent implementation of the server half."""

from __future__ import annotations

import test_core as t  # the sans-IO harness of the core tests (same folder)

from heimbuero.domain.model import Trunk
from heimbuero.services.trunks import TrunkRegistrations
from heimbuero.sip.auth import DigestAuthenticator, ha1
from heimbuero.sip.message import Request, Response

CARRIER = ("udp", "127.0.0.5", 5070)
TRUNK = Trunk(
    "carrier", "127.0.0.5", 5070, username="hb123", password="Carrier-Secret-9", register=True
)


def answer(req: Request, status: int, headers: list[tuple[str, str]] = ()) -> bytes:  # type: ignore[assignment]
    hdrs = [list(h) for h in req.headers if h[0] in ("via", "from", "to", "call-id", "cseq")]
    resp = Response(status, "Reason", hdrs)
    for name, value in headers:
        resp.add(name, value)
    return resp.serialize()


def registers(out: list) -> list[Request]:
    return [m for m, d in out if d == CARRIER and isinstance(m, Request) and m.method == "REGISTER"]


def test_registers_with_digest_and_refreshes_before_expiry() -> None:
    net = t.Net()
    carrier = DigestAuthenticator("carrier.example", b"c" * 32, ("MD5",))
    trunks = TrunkRegistrations(net.core)
    net.core.trunks = trunks
    trunks.update([TRUNK], net.now)
    net.core.pump(net.now)
    [first] = registers(net.drain())
    assert first.uri == "sip:127.0.0.5:5070" and first.get("expires") == "600"
    assert "authorization" not in first

    net.core.receive(
        answer(first, 401, [("WWW-Authenticate", carrier.challenges(net.now)[0])]), CARRIER, net.now
    )
    [second] = registers(net.drain())
    assert second.cseq[0] == first.cseq[0] + 1 and second.call_id == first.call_id
    stored = ha1("MD5", "hb123", "carrier.example", "Carrier-Secret-9")
    result = carrier.verify(
        "REGISTER", second.get("authorization") or "", net.now, lambda u, a: stored
    )
    assert result.ok and result.username == "hb123"

    net.core.receive(
        answer(second, 200, [("Contact", f"{second.get('contact')};expires=120")]), CARRIER, net.now
    )
    assert trunks.status()[0]["state"] == "registered"
    assert registers(net.advance(95.0)) == []
    refresh = registers(net.advance(2.0))  # at 80 % of the granted 120 s (+ retransmissions)
    assert refresh and {r.cseq[0] for r in refresh} == {second.cseq[0] + 1}


def test_refusal_is_retried_and_a_removed_trunk_stops() -> None:
    net = t.Net()
    trunks = TrunkRegistrations(net.core)
    net.core.trunks = trunks
    trunks.update([TRUNK], net.now)
    net.core.pump(net.now)
    [first] = registers(net.drain())
    net.core.receive(answer(first, 403), CARRIER, net.now)
    assert trunks.status()[0]["state"] == "failed"
    [again] = registers(net.advance(60.2))
    assert again.call_id == first.call_id
    trunks.update([], net.now)
    assert trunks.status() == []
    net.advance(40.0)  # the REGISTER already on its way runs out (Timer F)
    assert registers(net.advance(700.0)) == []
