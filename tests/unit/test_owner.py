"""SipCore.send_request and the TransactionOwner its client transaction reports to."""

from __future__ import annotations

from test_core import DOMAIN, Net

from heimbuero.sip import transaction as tx
from heimbuero.sip.message import Request, Response
from heimbuero.sip.peer import Peer

PEER = Peer("udp", "127.0.0.1", 45000)


class Owner:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def on_response(self, txn: tx.ClientTransaction, resp: Response, now: float) -> None:
        self.seen.append(("response", resp.status))

    def on_timeout(self, txn: tx.ClientTransaction, now: float) -> None:
        self.seen.append(("timeout", 0))

    def on_transport_error(self, txn: tx.ClientTransaction, now: float) -> None:
        self.seen.append(("transport", 0))


def options(n: int) -> Request:
    r = Request("OPTIONS", f"sip:{PEER.host}:{PEER.port}")
    for name, value in (
        ("Max-Forwards", "70"), ("From", f"<sip:{DOMAIN}>;tag=o{n}"), ("To", "<sip:x@y>"),
        ("Call-ID", f"owner-{n}"), ("CSeq", f"{n} OPTIONS"),
    ):  # fmt: skip
        r.add(name, value)
    return r


def test_the_owner_hears_the_answer_and_the_timeout() -> None:
    net = Net()
    owner = Owner()
    net.core.send_request(options(1), PEER, owner, net.now)
    net.core.pump(net.now)
    [(sent, dest)] = net.drain()
    assert dest == PEER and isinstance(sent, Request)
    via = sent.top_via
    assert via.branch is not None and via.branch.startswith("z9hG4bKhbL.")
    assert via.transport == "UDP" and "rport" in via.params
    resp = Response(200, "OK", [list(h) for h in sent.headers
                                if h[0] in ("via", "from", "to", "call-id", "cseq")])  # fmt: skip
    net.send(resp.serialize(), PEER)
    assert owner.seen == [("response", 200)]
    other = Owner()
    net.core.send_request(options(2), PEER, other, net.now)
    net.core.pump(net.now)
    net.advance(40)  # Timer F (64 x T1)
    assert other.seen == [("timeout", 0)]
    assert owner.seen == [("response", 200)]
