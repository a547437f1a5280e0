"""The presence server (SUBSCRIBE/NOTIFY, PUBLISH) driven sans-IO through the SIP core."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

from test_core import DOMAIN, PASSWORDS, Net, answer, authorize, invite, register, req

from heimbuero.domain.model import Directory, Provider, User
from heimbuero.services.calls import CallRouting
from heimbuero.services.credentials import Account
from heimbuero.services.presence import (
    PresenceSettings,
    enable_presence,
    parse_pidf,
    subscription_from_record,
    subscription_record,
)
from heimbuero.sip.auth import ha1
from heimbuero.sip.message import Request, Response

PASSWORDS.update({"carol": "Blume-Stein-11", "dave": "Baum-Wurzel-22", "erin": "Fluss-Kiesel-33"})
ROLES = {"alice": "agent", "bob": "agent", "carol": "client", "dave": "employee", "erin": "client"}
BUSINESS = {"carol": "mueller", "dave": "mueller", "erin": "schulz"}
ALICE = ("udp", "127.0.0.1", 41001)
BOB = ("udp", "127.0.0.1", 41002)
CAROL = ("udp", "127.0.0.1", 41003)
DAVE = ("udp", "127.0.0.1", 41004)
BOB2 = ("udp", "127.0.0.1", 41006)
ERIN = ("udp", "127.0.0.1", 41005)
_seq = itertools.count(1)


class _RoutingStore:
    def override_changed(self, *a: object) -> None:
        return None


def _account(name: str) -> Account | None:
    pw = PASSWORDS.get(name)
    if pw is None:
        return None
    return Account(
        name, ROLES[name], ha1("MD5", name, DOMAIN, pw), ha1("SHA-256", name, DOMAIN, pw)
    )


def make_net(**settings: object) -> Net:
    net = Net()
    net.core.users._fetch = _account  # type: ignore[attr-defined]
    users = {n: User(n, r, BUSINESS.get(n)) for n, r in ROLES.items()}
    net.core.calls = CallRouting(net.core, _RoutingStore(), Directory(Provider("p"), users=users))
    enable_presence(net.core, PresenceSettings(**settings))  # type: ignore[arg-type]
    return net


def subscribe(
    net: Net, watcher: str, presentity: str, src: tuple[str, str, int],
    expires: int | None = None, event: str = "presence",
) -> tuple[Request, list]:  # fmt: skip
    extra = [f"Event: {event}"] + ([f"Expires: {expires}"] if expires is not None else [])
    r = req("SUBSCRIBE", f"sip:{presentity}@{DOMAIN}", src, watcher,
            f"sip:{presentity}@{DOMAIN}", extra=extra)  # fmt: skip
    [(challenge, _)] = net.send(r.serialize(), src)
    assert isinstance(challenge, Response) and challenge.status == 407
    authed = authorize(r, challenge, watcher, "Proxy-Authorization")
    return authed, net.send(authed.serialize(), src)


def split(out: list) -> tuple[list[Response], list[tuple[Request, tuple[str, str, int]]]]:
    return (
        [m for m, _ in out if isinstance(m, Response)],
        [(m, d) for m, d in out if isinstance(m, Request) and m.method == "NOTIFY"],
    )


def ok_notify(net: Net, notify: Request, dest: tuple[str, str, int], status: int = 200) -> list:
    resp = Response(status, "OK", [list(h) for h in notify.headers
                                  if h[0] in ("via", "from", "to", "call-id", "cseq")])  # fmt: skip
    return net.send(resp.serialize(), dest)


def basic(notify: Request) -> str | None:
    return parse_pidf(notify.body)[0]


def activity(notify: Request) -> str | None:
    return parse_pidf(notify.body)[1]


def refresh(net: Net, sub_req: Request, ok: Response, expires: int, cseq: int) -> list:
    r = req("SUBSCRIBE", "sip:127.0.0.1:5060", BOB, "bob", f"sip:alice@{DOMAIN}",
            call_id=sub_req.call_id, cseq=cseq, to_tag=ok.to.tag,
            extra=["Event: presence", f"Expires: {expires}"])  # fmt: skip
    return net.send(r.serialize(), BOB)


def test_subscribe_notifies_at_once_and_on_every_registration_change() -> None:
    net = make_net()
    sub, out = subscribe(net, "bob", "alice", BOB)
    [ok], [(notify, dest)] = split(out)
    assert ok.status == 200 and ok.get("expires") == "3600"
    assert "presence" in (ok.get("allow-events") or "")
    assert dest == BOB and notify.uri == f"sip:bob@{BOB[1]}:{BOB[2]}"
    assert notify.get("event") == "presence"
    assert notify.get("subscription-state") == "active;expires=3600"
    assert notify.get("content-type") == "application/pidf+xml"
    assert notify.to.tag == sub.from_.tag and notify.from_.tag == ok.to.tag
    assert basic(notify) == "closed"
    assert ok_notify(net, notify, dest) == []


def test_registration_open_and_unregister_closed() -> None:
    net = make_net()
    _, out = subscribe(net, "bob", "alice", BOB)
    _, [(n1, d)] = split(out)
    ok_notify(net, n1, d)
    # REGISTER: the NOTIFY leaves with the 200 (same pump)
    r = req("REGISTER", f"sip:{DOMAIN}", ALICE, "alice", f"sip:alice@{DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), ALICE)
    out = net.send(authorize(r, challenge, "alice").serialize(), ALICE)
    _, [(n2, d2)] = split(out)
    assert d2 == BOB and basic(n2) == "open"
    assert n2.cseq[0] == n1.cseq[0] + 1
    ok_notify(net, n2, d2)
    # unregister (Expires: 0): closed
    r = req("REGISTER", f"sip:{DOMAIN}", ALICE, "alice", f"sip:alice@{DOMAIN}",
            extra=["Expires: 0"], call_id=r.call_id, cseq=10)  # fmt: skip
    [(challenge, _)] = net.send(r.serialize(), ALICE)
    out = net.send(authorize(r, challenge, "alice").serialize(), ALICE)
    _, [(n3, _)] = split(out)
    assert basic(n3) == "closed"


def test_registration_expiry_sends_closed() -> None:
    net = make_net()
    register(net, "alice", ALICE)
    _, out = subscribe(net, "bob", "alice", BOB)
    _, [(n1, d)] = split(out)
    assert basic(n1) == "open"
    ok_notify(net, n1, d)
    out = net.advance(3601)
    notifies = [m for m, _ in out if isinstance(m, Request) and m.method == "NOTIFY"]
    assert notifies and basic(notifies[0]) == "closed"


def test_refresh_and_unsubscribe() -> None:
    net = make_net()
    sub, out = subscribe(net, "bob", "alice", BOB, expires=600)
    [ok], [(n1, d)] = split(out)
    assert ok.get("expires") == "600"
    ok_notify(net, n1, d)
    out = refresh(net, sub, ok, 1200, sub.cseq[0] + 1)
    [ok2], [(n2, _)] = split(out)
    assert ok2.status == 200 and ok2.get("expires") == "1200"
    assert n2.get("subscription-state") == "active;expires=1200"
    ok_notify(net, n2, d)
    out = refresh(net, sub, ok, 0, sub.cseq[0] + 2)
    [ok3], [(n3, _)] = split(out)
    assert ok3.status == 200
    assert n3.get("subscription-state") == "terminated;reason=timeout"
    ok_notify(net, n3, d)
    # gone: a refresh now is 481, and registrations notify nobody
    out = refresh(net, sub, ok, 600, sub.cseq[0] + 3)
    assert [m.status for m in split(out)[0]] == [481]
    register(net, "alice", ALICE)
    assert split(net.drain())[1] == []


def test_expiry_sends_terminated_and_min_expires() -> None:
    net = make_net()
    _, out = subscribe(net, "bob", "alice", BOB, expires=10)
    assert [m.status for m in split(out)[0]] == [423]
    assert [m.get("min-expires") for m in split(out)[0]] == ["60"]
    _, out = subscribe(net, "bob", "alice", BOB, expires=7200)
    [ok], [(n1, d)] = split(out)
    assert ok.get("expires") == "3600"  # capped
    ok_notify(net, n1, d)
    out = net.advance(3601)
    notifies = [m for m, _ in out if isinstance(m, Request) and m.method == "NOTIFY"]
    assert notifies[0].get("subscription-state") == "terminated;reason=timeout"
    assert net.core.presence is not None and not net.core.presence.subs


def test_forbidden_and_unknown_both_403() -> None:
    net = make_net()
    statuses = []
    for watcher, presentity, src in (("erin", "dave", ERIN), ("alice", "nobody", ALICE),
                                     ("erin", "carol", ERIN)):  # fmt: skip
        _, out = subscribe(net, watcher, presentity, src)
        resps, notifies = split(out)
        assert notifies == []
        statuses.append((resps[0].status, resps[0].reason))
    assert statuses[0] == statuses[1] == statuses[2] == (403, "Forbidden")


def test_who_may_see_whom() -> None:
    net = make_net()
    for watcher, presentity, src in (("carol", "dave", CAROL), ("carol", "alice", CAROL),
                                     ("dave", "carol", DAVE), ("alice", "erin", ALICE),
                                     ("erin", "bob", ERIN)):  # fmt: skip
        _, out = subscribe(net, watcher, presentity, src)
        assert [m.status for m in split(out)[0]] == [200], (watcher, presentity)


def test_notify_481_ends_the_subscription() -> None:
    net = make_net()
    _, out = subscribe(net, "bob", "alice", BOB)
    _, [(n1, d)] = split(out)
    ok_notify(net, n1, d, status=481)
    assert net.core.presence is not None and not net.core.presence.subs


def test_notify_timeout_ends_the_subscription() -> None:
    net = make_net()
    subscribe(net, "bob", "alice", BOB)
    net.advance(40)
    assert net.core.presence is not None and not net.core.presence.subs


PIDF_AWAY = (
    '<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
    'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
    'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@example.com">'
    '<tuple id="a"><status><basic>open</basic></status></tuple>'
    '<dm:person id="p"><rpid:activities><rpid:ACT/></rpid:activities></dm:person></presence>'
)


def publish(
    net: Net, user: str, src: tuple[str, str, int], body: str | None,
    etag: str | None = None, expires: int | None = None,
) -> Response:  # fmt: skip
    extra = ["Event: presence"]
    if etag:
        extra.append(f"SIP-If-Match: {etag}")
    if expires is not None:
        extra.append(f"Expires: {expires}")
    if body is not None:
        extra.append("Content-Type: application/pidf+xml")
    r = req("PUBLISH", f"sip:{user}@{DOMAIN}", src, user, f"sip:{user}@{DOMAIN}", extra=extra)
    if body is not None:
        r.body = body.encode()
    [(challenge, _)] = net.send(r.serialize(), src)
    assert isinstance(challenge, Response) and challenge.status == 407
    out = net.send(authorize(r, challenge, user, "Proxy-Authorization").serialize(), src)
    resps = [m for m, _ in out if isinstance(m, Response)]
    assert len(resps) == 1
    net.notifies = split(out)[1]  # type: ignore[attr-defined]
    return resps[0]


def test_publish_etag_lifecycle_and_412() -> None:
    net = make_net(min_interval=0)
    register(net, "alice", ALICE)
    _, out = subscribe(net, "bob", "alice", BOB)
    _, [(n1, d)] = split(out)
    assert (basic(n1), activity(n1)) == ("open", None)
    ok_notify(net, n1, d)
    # create
    ok = publish(net, "alice", ALICE, PIDF_AWAY.replace("ACT", "away"), expires=600)
    assert ok.status == 200 and ok.get("expires") == "600"
    etag = ok.get("sip-etag")
    assert etag
    [(n2, _)] = net.notifies
    assert activity(n2) == "away"
    ok_notify(net, n2, d)
    # refresh: no body, new tag, no change for watchers
    ok2 = publish(net, "alice", ALICE, None, etag=etag, expires=600)
    assert ok2.status == 200 and ok2.get("sip-etag") not in (None, etag)
    assert net.notifies == []
    # the old tag is gone
    assert publish(net, "alice", ALICE, None, etag=etag).status == 412
    assert publish(net, "alice", ALICE, None, etag="nonsense").status == 412
    # modify
    ok3 = publish(net, "alice", ALICE, PIDF_AWAY.replace("ACT", "meeting"),
                  etag=ok2.get("sip-etag"))  # fmt: skip
    assert ok3.status == 200
    _, [(n3, _)] = (None, net.notifies)
    assert activity(n3) == "meeting"
    ok_notify(net, n3, d)
    # remove
    ok4 = publish(net, "alice", ALICE, None, etag=ok3.get("sip-etag"), expires=0)
    assert ok4.status == 200
    _, [(n4, _)] = (None, net.notifies)
    assert (basic(n4), activity(n4)) == ("open", None)


def test_publish_is_only_for_oneself_and_needs_pidf() -> None:
    net = make_net()
    r = req("PUBLISH", f"sip:alice@{DOMAIN}", BOB, "bob", f"sip:alice@{DOMAIN}",
            extra=["Event: presence", "Content-Type: application/pidf+xml"])  # fmt: skip
    r.body = PIDF_AWAY.replace("ACT", "away").encode()
    [(challenge, _)] = net.send(r.serialize(), BOB)
    [(resp, _)] = net.send(authorize(r, challenge, "bob", "Proxy-Authorization").serialize(), BOB)
    assert resp.status == 403
    bad = publish(net, "alice", ALICE, "<not-xml")
    assert bad.status == 400


def test_published_changes_are_rate_limited_per_watcher() -> None:
    net = make_net(min_interval=5)
    _, out = subscribe(net, "bob", "alice", BOB)
    _, [(n1, d)] = split(out)
    ok_notify(net, n1, d)
    ok = publish(net, "alice", ALICE, PIDF_AWAY.replace("ACT", "away"))
    assert net.notifies == []  # within 5 s of the first NOTIFY
    publish(net, "alice", ALICE, PIDF_AWAY.replace("ACT", "busy"), etag=ok.get("sip-etag"))
    out = net.advance(5.5)
    notifies = [m for m, _ in out if isinstance(m, Request) and m.method == "NOTIFY"]
    notifies = list({n.cseq[0]: n for n in notifies}.values())  # (UDP retransmissions)
    assert len(notifies) == 1 and activity(notifies[0]) == "busy"  # the latest state only
    # a registration change goes out at once even so
    ok_notify(net, notifies[0], d)
    r = req("REGISTER", f"sip:{DOMAIN}", ALICE, "alice", f"sip:alice@{DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), ALICE)
    out = net.send(authorize(r, challenge, "alice").serialize(), ALICE)
    assert len(split(out)[1]) == 1


def test_on_the_phone_during_a_call_and_dialog_package() -> None:
    net = make_net()
    register(net, "alice", ALICE)
    register(net, "bob", BOB)
    _, out = subscribe(net, "carol", "alice", CAROL)
    _, [(n1, d)] = split(out)
    ok_notify(net, n1, d)
    _, out = subscribe(net, "carol", "alice", CAROL, event="dialog")
    [ok], [(dn1, dd)] = split(out)
    assert ok.status == 200 and dn1.get("content-type") == "application/dialog-info+xml"
    assert b"<state>" not in dn1.body
    ok_notify(net, dn1, dd)
    inv, out = invite(net, "alice", "bob", ALICE)
    [(fwd, dest)] = [(m, d) for m, d in out if isinstance(m, Request) and m.method == "INVITE"]
    out = net.send(answer(fwd, 200, contact=f"sip:bob@{BOB[1]}:{BOB[2]}").serialize(), dest)
    notifies = split(out)[1]
    bodies = {n.get("event"): n for n, _ in notifies}
    assert activity(bodies["presence"]) == "on-the-phone"
    assert b"<state>confirmed</state>" in bodies["dialog"].body
    for n, dst in notifies:
        ok_notify(net, n, dst)
    bye = req("BYE", f"sip:bob@{BOB[1]}:{BOB[2]}", ALICE, "alice", f"sip:bob@{DOMAIN}",
              call_id=inv.call_id, cseq=5, to_tag="callee",
              extra=[f"Route: {fwd.get('record-route')}"])  # fmt: skip
    out = net.send(bye.serialize(), ALICE)
    notifies = split(out)[1]
    bodies = {n.get("event"): n for n, _ in notifies}
    assert activity(bodies["presence"]) is None and basic(bodies["presence"]) == "open"
    ended = dialog_states(bodies["dialog"])
    assert ended == {inv.call_id: "terminated"}  # once, as the call ends


def dialog_states(notify: Request) -> dict[str, str]:
    root = ET.fromstring(notify.body)
    return {d.get("call-id", ""): d.findtext(f"{NS}state", "") for d in root.iter(f"{NS}dialog")}


NS = "{urn:ietf:params:xml:ns:dialog-info}"


def watch_dialogs(net: Net, watcher: str, presentity: str, src: tuple[str, str, int]) -> None:
    _, out = subscribe(net, watcher, presentity, src, event="dialog")
    _, [(first, dest)] = split(out)
    assert dialog_states(first) == {}
    ok_notify(net, first, dest)


def dialog_notify(out: list) -> Request:
    [notify] = [n for n, _ in split(out)[1] if n.get("event") == "dialog"]
    return notify


def test_a_ringing_phone_shows_early_with_the_caller_then_confirmed() -> None:
    """Busy-lamp field: a colleague's lamp blinks while the phone rings, with who calls and
    the early dialog's tags a phone needs to pick the call up (RFC 4235 `early`)."""
    net = make_net()
    register(net, "alice", ALICE)
    register(net, "bob", BOB)
    watch_dialogs(net, "alice", "bob", ALICE)
    inv, out = invite(net, "dave", "bob", DAVE)
    [(fwd, dest)] = [(m, d) for m, d in out if isinstance(m, Request) and m.method == "INVITE"]
    assert not split(out)[1]  # trying: nothing rings yet
    out = net.send(answer(fwd, 180, tag="bobs-phone").serialize(), dest)
    early = dialog_notify(out)
    root = ET.fromstring(early.body)
    [d] = root.iter(f"{NS}dialog")
    assert d.findtext(f"{NS}state") == "early"
    assert d.get("call-id") == inv.call_id and d.get("direction") == "recipient"
    assert d.get("local-tag") == "bobs-phone" and d.get("remote-tag") == inv.from_.tag
    assert d.findtext(f"{NS}remote/{NS}identity") == f"sip:dave@{DOMAIN}"
    ok_notify(net, early, ALICE)
    out = net.send(answer(fwd, 180, tag="bobs-phone").serialize(), dest)
    assert not split(out)[1]  # the same ringing again: no news
    out = net.send(answer(fwd, 200, tag="bobs-phone", contact="sip:bob@127.0.0.1").serialize(),
                   dest)  # fmt: skip
    assert dialog_states(dialog_notify(out)) == {inv.call_id: "confirmed"}


def test_two_phones_of_one_user_ring_as_one_call_until_one_answers() -> None:
    net = make_net()
    register(net, "bob", BOB)
    register(net, "bob", BOB2, contact=f"sip:bob@{BOB2[1]}:{BOB2[2]}")
    watch_dialogs(net, "alice", "bob", ALICE)
    inv, out = invite(net, "dave", "bob", DAVE)
    fwds = {d: m for m, d in out if isinstance(m, Request) and m.method == "INVITE"}
    assert set(fwds) == {BOB, BOB2}
    out = net.send(answer(fwds[BOB], 180, tag="desk").serialize(), BOB)
    notify = dialog_notify(out)
    assert dialog_states(notify) == {inv.call_id: "early"}
    ok_notify(net, notify, ALICE)
    out = net.send(answer(fwds[BOB2], 180, tag="app").serialize(), BOB2)
    assert not split(out)[1]  # the same call, ringing at bob's second phone: no news
    out = net.send(answer(fwds[BOB2], 200, tag="app", contact="sip:bob@x").serialize(), BOB2)
    notify = dialog_notify(out)
    assert dialog_states(notify) == {inv.call_id: "confirmed"}
    ok_notify(net, notify, ALICE)
    out = net.send(answer(fwds[BOB], 487, tag="desk").serialize(), BOB)  # (the CANCELled desk)
    assert not split(out)[1]  # bob took it: the other phone stopping is no news
    presence = net.core.presence
    assert presence is not None and presence.ringing == {}


def test_a_caller_who_gives_up_stops_the_lamp() -> None:
    """A caller who hangs up while it rings: terminated, once."""
    net = make_net()
    register(net, "alice", ALICE)
    register(net, "bob", BOB)
    watch_dialogs(net, "carol", "alice", CAROL)  # (a client watching its agent)
    # dave calls alice, who rings; dave gives up
    inv, out = invite(net, "dave", "alice", DAVE)
    [(fwd, dest)] = [(m, d) for m, d in out if isinstance(m, Request) and m.method == "INVITE"]
    out = net.send(answer(fwd, 180, tag="a1").serialize(), dest)
    notify = dialog_notify(out)
    assert dialog_states(notify) == {inv.call_id: "early"}
    ok_notify(net, notify, CAROL)
    keep = ("via", "from", "to", "call-id", "max-forwards")
    cancel = Request("CANCEL", inv.uri, [list(h) for h in inv.headers if h[0] in keep])
    cancel.add("CSeq", f"{inv.cseq[0]} CANCEL")
    out = net.send(cancel.serialize(), DAVE)
    assert [m.method for m, _ in out if isinstance(m, Request)] == ["CANCEL"]
    assert not split(out)[1]  # still ringing until the phone says so
    out = net.send(answer(fwd, 487, tag="a1").serialize(), dest)
    notify = dialog_notify(out)
    assert dialog_states(notify) == {inv.call_id: "terminated"}
    ok_notify(net, notify, CAROL)
    presence = net.core.presence
    assert presence is not None and presence.ringing == {}


def test_limits_per_user_and_per_presentity() -> None:
    net = make_net(max_subscriptions_per_user=2, max_watchers_per_presentity=2)
    for presentity in ("bob", "carol"):
        _, out = subscribe(net, "alice", presentity, ALICE)
        assert split(out)[0][0].status == 200
    _, out = subscribe(net, "alice", "dave", ALICE)
    [resp] = split(out)[0]
    assert resp.status == 403 and resp.reason == "Too many subscriptions for this user"
    _, out = subscribe(net, "bob", "carol", BOB)
    assert split(out)[0][0].status == 200
    _, out = subscribe(net, "dave", "carol", DAVE)
    [resp] = split(out)[0]
    assert resp.status == 503 and resp.reason == "Too many watchers of this user"


def test_options_announces_allow_events() -> None:
    net = make_net()
    r = req("OPTIONS", f"sip:{DOMAIN}", ALICE, "alice", f"sip:{DOMAIN}")
    [(resp, _)] = net.send(r.serialize(), ALICE)
    assert resp.get("allow-events") == "presence, dialog, message-summary"
    assert "PUBLISH" in (resp.get("allow") or "")


def test_subscriptions_and_publications_survive_a_restart(db_url) -> None:  # type: ignore[no-untyped-def]
    """On SQLite and PostgreSQL (which refuses NUL in text: the keys must not hold one)."""
    from heimbuero.services.presence import (
        publication_from_record,
        publication_record,
        subscription_from_record,
        subscription_record,
    )
    from heimbuero.store.db import Store

    net = make_net(min_interval=0)
    register(net, "alice", ALICE)
    _, out = subscribe(net, "bob", "alice", BOB)
    _, [(n1, d)] = split(out)
    ok_notify(net, n1, d)
    ok = publish(net, "alice", ALICE, PIDF_AWAY.replace("ACT", "vacation"))
    [(n2, _)] = net.notifies
    presence = net.core.presence
    assert presence is not None
    store = Store(db_url)
    store.upgrade()
    subs, gone_subs, pubs, gone_pubs = presence.take_changes()
    store.save_presence([subscription_record(s) for s in subs], gone_subs,
                        [publication_record(p) for p in pubs], gone_pubs)  # fmt: skip
    # a new server process: same registrations, presence loaded from the store
    net2 = make_net()
    net2.now = net.now + 5
    register(net2, "alice", ALICE)
    rows, pub_rows = store.load_presence(net2.now)
    store.close()
    assert len(rows) == 1 and len(pub_rows) == 1
    # a key stored by a version that joined Call-ID and tag with NUL is read as today's
    assert (
        subscription_from_record({**rows[0], "key": rows[0]["key"].replace(" ", "\0")}).key
        == rows[0]["key"]
    )
    p2 = net2.core.presence
    assert p2 is not None
    p2.load([subscription_from_record(r) for r in rows],
            [publication_from_record(r) for r in pub_rows], net2.now)  # fmt: skip
    p2.notify_all(net2.now)
    net2.core.pump(net2.now)
    [(n3, d3)] = split(net2.drain())[1]
    assert d3 == BOB and n3.call_id == n1.call_id and n3.to.tag == n1.to.tag
    assert n3.cseq[0] > n2.cseq[0]
    assert activity(n3) == "vacation"
    assert n3.get("subscription-state", "").startswith("active;expires=")
    # the old ETag still works after the restart
    assert publish(net2, "alice", ALICE, None, etag=ok.get("sip-etag"), expires=0).status == 200


def test_notify_follows_the_record_route_of_the_subscribe() -> None:
    """RFC 6665 §4.1.2.1 with RFC 3261 §12.1.1: the SUBSCRIBE's Record-Route is the route set
    of the subscription dialog; every NOTIFY carries it as Route (loose routing: the
    Request-URI stays the watcher's Contact), also after a restart (the stored record)."""
    net = make_net()
    rr = ["Record-Route: <sip:edge.example.net;lr>", "Record-Route: <sip:10.0.0.9:5070;lr>"]
    r = req("SUBSCRIBE", f"sip:alice@{DOMAIN}", BOB, "bob", f"sip:alice@{DOMAIN}",
            extra=["Event: presence", *rr])  # fmt: skip
    [(challenge, _)] = net.send(r.serialize(), BOB)
    authed = authorize(r, challenge, "bob", "Proxy-Authorization")
    [ok], [(notify, dest)] = split(net.send(authed.serialize(), BOB))
    # the 200 carries the Record-Route (§12.1.1): the watcher's refreshes take the route too
    assert ok.status == 200
    assert ok.get_all("record-route") == ["<sip:edge.example.net;lr>", "<sip:10.0.0.9:5070;lr>"]
    assert notify.get_all("route") == ["<sip:edge.example.net;lr>", "<sip:10.0.0.9:5070;lr>"]
    assert notify.uri == f"sip:bob@{BOB[1]}:{BOB[2]}" and dest == BOB
    presence = net.core.presence
    assert presence is not None
    [sub] = presence.subs.values()
    again = subscription_from_record(subscription_record(sub))
    assert again.route_set == sub.route_set
    plain = subscription_record(sub)
    del plain["route_set"]  # a record stored before route sets were kept
    assert subscription_from_record(plain).route_set == ()


def test_message_waiting_subscription_of_ones_own_mailbox() -> None:
    """RFC 3842: a phone subscribes to message-summary of its own account; it gets the counts
    at once and again when a voicemail arrives; another user's mailbox is refused."""
    net = make_net()
    presence = net.core.presence
    assert presence is not None
    r = req("SUBSCRIBE", f"sip:bob@{DOMAIN}", BOB, "bob", f"sip:bob@{DOMAIN}",
            extra=["Event: message-summary"])  # fmt: skip
    [(resp, _)] = net.send(r.serialize(), BOB)
    assert resp.status == 489  # no mailboxes (a server without voicemail)
    counts = {"bob": (0, 2)}
    presence.mailbox = lambda user: counts.get(user, (0, 0))
    _, out = subscribe(net, "bob", "bob", BOB, event="message-summary")
    [ok], [(notify, dest)] = split(out)
    assert ok.status == 200 and dest == BOB
    assert notify.get("event") == "message-summary"
    assert notify.get("content-type") == "application/simple-message-summary"
    assert b"Messages-Waiting: no\r\n" in notify.body and b"Voice-Message: 0/2\r\n" in notify.body
    ok_notify(net, notify, dest)
    counts["bob"] = (1, 2)
    assert presence.mailbox_changed("bob", net.now) is True
    net.core.pump(net.now)
    [(again, _)] = split(net.drain())[1]
    assert b"Messages-Waiting: yes" in again.body and b"Voice-Message: 1/2" in again.body
    assert presence.mailbox_changed("alice", net.now) is False  # nobody subscribed: unsolicited
    _, out = subscribe(net, "bob", "alice", BOB, event="message-summary")
    [resp], notifies = split(out)
    assert resp.status == 403 and not notifies  # not someone else's mailbox
