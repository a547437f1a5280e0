"""End-to-end presence: the real `heimbuero serve` with baresip watching, and hand-built
SUBSCRIBE/PUBLISH/NOTIFY exchanges (linphonec cannot publish its own status, see PEERS.md, so
PUBLISH is shown with a SipClient)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import DOMAIN, USERS
from .harness import Baresip, HarnessError, Server, SipClient, SipMessage, wait_until

pytestmark = pytest.mark.e2e

PIDF_AWAY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" '
    'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
    f'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@{DOMAIN}">'
    '<tuple id="a1"><status><basic>open</basic></status></tuple>'
    '<dm:person id="p1"><rpid:activities><rpid:away/></rpid:activities></dm:person>'
    "</presence>"
).encode()


def register(client: SipClient, user: str, expires: int = 600) -> SipMessage:
    _, ok = client.authenticated_request(
        "REGISTER", f"sip:{DOMAIN}", username=user, password=USERS[user],
        from_uri=f"sip:{user}@{DOMAIN}", to_uri=f"sip:{user}@{DOMAIN}",
        headers=[("Contact", f"<sip:{user}@127.0.0.1:{client.local_port}>"),
                 ("Expires", str(expires))],
    )  # fmt: skip
    assert ok.status == 200, ok.summary()
    return ok


def answer_notify(client: SipClient, msg: SipMessage) -> None:
    """200 OK to a NOTIFY (Via, From, To, Call-ID, CSeq copied)."""
    lines = ["SIP/2.0 200 OK"]
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        lines += [f"{name}: {v}" for v in msg.header_values(name)]
    lines.append("Content-Length: 0")
    client.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode())


def next_notify(
    client: SipClient, timeout: float = 10, want: Callable[[SipMessage], bool] | None = None
) -> SipMessage:
    """The next NOTIFY (answered 200) for which `want` holds."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        msg = client.recv(left)
        if msg is None:
            break
        if msg.method == "NOTIFY":
            answer_notify(client, msg)
            if want is None or want(msg):
                return msg
    raise HarnessError(f"no matching NOTIFY within {timeout} s")


def subscribe(client: SipClient, watcher: str, presentity: str, password: str) -> SipMessage:
    _, ok = client.authenticated_request(
        "SUBSCRIBE", f"sip:{presentity}@{DOMAIN}", username=watcher, password=password,
        from_uri=f"sip:{watcher}@{DOMAIN}", to_uri=f"sip:{presentity}@{DOMAIN}",
        headers=[("Contact", f"<sip:{watcher}@127.0.0.1:{client.local_port}>"),
                 ("Event", "presence"), ("Expires", "600"),
                 ("Accept", "application/pidf+xml")],
    )  # fmt: skip
    return ok


def body(msg: SipMessage) -> str:
    return msg.body.decode()


@pytest.mark.peers("baresip")
def test_baresip_watcher_sees_online_and_offline(server: Server, tmp_path: Path) -> None:
    contacts = [f'"Alice" <sip:alice@{DOMAIN}>;presence=p2p']
    with Baresip(tmp_path, user="bob", password=USERS["bob"], server=server,
                 contacts=contacts) as bob:  # fmt: skip
        bob.wait_registered()

        def status() -> str:
            data = str(bob.command("contacts").get("data", ""))
            text = re.sub(r"\x1b\[[0-9;]*m", "", data)
            m = re.search(r"(Online|Offline|Busy|Unknown)\s.*alice@", text)
            return m.group(1) if m else text

        wait_until(lambda: status() == "Offline", 15, interval=0.3, what="bob sees alice Offline")
        with SipClient(server.port) as alice:
            register(alice, "alice")
            wait_until(lambda: status() == "Online", 10, interval=0.2, what="alice Online")
            register(alice, "alice", expires=0)
            wait_until(lambda: status() == "Offline", 10, interval=0.2, what="alice Offline")


def test_published_away_reaches_watcher_and_survives_restart(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(sip_options={"presence_min_interval": 0})
    with SipClient(server.port) as bob, SipClient(server.port) as alice:
        ok = subscribe(bob, "bob", "alice", USERS["bob"])
        assert ok.status == 200 and "presence" in (ok.header("Allow-Events") or "")
        first = next_notify(bob)
        assert (first.header("Subscription-State") or "").startswith("active")
        assert "<basic>closed</basic>" in body(first)
        register(alice, "alice")
        assert "<basic>open</basic>" in body(next_notify(bob))
        _, pub = alice.authenticated_request(
            "PUBLISH", f"sip:alice@{DOMAIN}", username="alice", password=USERS["alice"],
            from_uri=f"sip:alice@{DOMAIN}", to_uri=f"sip:alice@{DOMAIN}",
            headers=[("Event", "presence"), ("Expires", "600")],
            body=PIDF_AWAY, content_type="application/pidf+xml",
        )  # fmt: skip
        assert pub.status == 200 and pub.header("SIP-ETag")
        away = next_notify(bob)
        assert "<rpid:away/>" in body(away)
        # an unknown entity tag is 412
        _, bad = alice.authenticated_request(
            "PUBLISH", f"sip:alice@{DOMAIN}", username="alice", password=USERS["alice"],
            from_uri=f"sip:alice@{DOMAIN}", to_uri=f"sip:alice@{DOMAIN}",
            headers=[("Event", "presence"), ("SIP-If-Match", "no-such-tag")],
        )  # fmt: skip
        assert bad.status == 412
        # restart: the subscription is kept and bob gets a fresh NOTIFY, still away
        server.restart()
        again = next_notify(bob, timeout=15)
        assert again.header("Call-ID") == first.header("Call-ID")
        assert "<rpid:away/>" in body(again)


def test_forbidden_watcher_gets_403(server: Server) -> None:
    server.add_user("carol", "Tannen-Zapfen-55", role="client")
    server.add_user("dave", "Moos-Polster-66", role="client")
    with SipClient(server.port) as dave:
        ok = subscribe(dave, "dave", "carol", "Moos-Polster-66")
        assert ok.status == 403, ok.summary()
        unknown = subscribe(dave, "dave", "nobody", "Moos-Polster-66")
        assert (unknown.status, unknown.reason) == (ok.status, ok.reason)
        allowed = subscribe(dave, "dave", "alice", "Moos-Polster-66")  # a client sees staff
        assert allowed.status == 200


def test_http_presence_and_live_stream(server_factory: Callable[..., Server]) -> None:
    import json

    import httpx

    server = server_factory(http=True)
    auth = ("alice", USERS["alice"])
    r = httpx.get(f"{server.http_url}/api/presence", auth=auth, timeout=10)
    assert r.status_code == 200
    states = {p["user"]: p["status"] for p in r.json()["presence"]}
    assert states.get("bob") == "offline"
    assert httpx.get(f"{server.http_url}/api/presence", timeout=10).status_code == 401
    with (
        httpx.stream("GET", f"{server.http_url}/api/presence/stream", auth=auth,
                     timeout=10) as stream,
        SipClient(server.port) as bob,
    ):  # fmt: skip
        assert stream.status_code == 200
        lines = stream.iter_lines()
        events: list[tuple[str, object]] = []
        kind = ""
        for line in lines:
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                if kind == "snapshot":
                    register(bob, "bob")
                elif kind == "presence":
                    break
        assert events[0][0] == "snapshot"
        assert events[-1] == ("presence", events[-1][1])
        assert events[-1][1]["user"] == "bob" and events[-1][1]["status"] == "online"  # type: ignore[index]


def test_subscription_behind_an_edge_proxy_keeps_its_route_set(server: Server) -> None:
    """A SUBSCRIBE that came through an edge proxy (its Record-Route): the 200 carries that
    Record-Route (RFC 3261 §12.1.1, so the watcher's refreshes take the route too) and the
    NOTIFYs go through the edge with it as Route, the watcher's Contact as Request-URI."""
    with SipClient(server.port) as edge:
        rr = f"<sip:127.0.0.1:{edge.local_port};lr;edge=1>"
        _, ok = edge.authenticated_request(
            "SUBSCRIBE", f"sip:alice@{DOMAIN}", username="bob", password=USERS["bob"],
            from_uri=f"sip:bob@{DOMAIN}", to_uri=f"sip:alice@{DOMAIN}",
            headers=[("Record-Route", rr), ("Contact", "<sip:bob@192.0.2.44:5062>"),
                     ("Event", "presence"), ("Expires", "600"),
                     ("Accept", "application/pidf+xml")],
        )  # fmt: skip
        assert ok.status == 200, ok.summary()
        assert ok.header_values("Record-Route") == [rr], ok.raw
        notify = next_notify(edge)
        assert notify.header_values("Route") == [rr], notify.raw
        assert notify.start_line.split()[1] == "sip:bob@192.0.2.44:5062"
