"""The messenger (MESSAGE relay, store-and-forward, history operations) driven sans-IO through
the SIP core; and the pure message-content functions."""

from __future__ import annotations

from typing import Any

import pytest
from test_core import DOMAIN, PASSWORDS, Net, answer, authorize, register, req

from heimbuero.domain.model import Directory, Provider, User
from heimbuero.office.messaging import MessageError, content_view, describe, parse_cpim
from heimbuero.services.calls import CallRouting
from heimbuero.services.credentials import Account
from heimbuero.services.messaging import MessagingSettings, Messenger, enable_messaging
from heimbuero.sip.auth import ha1
from heimbuero.sip.message import Request, Response, parse, parse_address

PASSWORDS.update({"carol": "Blume-Stein-11", "dave": "Baum-Wurzel-22", "erin": "Fluss-Kiesel-33"})
ROLES = {"alice": "agent", "bob": "agent", "carol": "client", "dave": "employee", "erin": "client"}
BUSINESS = {"carol": "mueller", "dave": "mueller", "erin": "schulz"}
ALICE = ("udp", "127.0.0.1", 42001)
BOB1 = ("udp", "127.0.0.1", 42002)
BOB2 = ("udp", "127.0.0.1", 42003)
CAROL = ("udp", "127.0.0.1", 42004)
ERIN = ("udp", "127.0.0.1", 42005)


class _RoutingStore:
    def override_changed(self, *a: object) -> None:
        return None


class _Files:
    """The file service as messages see it: file f1 belongs to carol."""

    def __init__(self) -> None:
        self.parties: dict[str, set[str]] = {"f1": {"carol"}}

    def file_id_of(self, url: str) -> str | None:
        prefix = "http://files.test/ft/"
        return url[len(prefix) :] if url.startswith(prefix) else None

    def grant(self, file_id: str, sender: str, recipient: str) -> bool:
        parties = self.parties.get(file_id)
        if parties is None or sender not in parties:
            return False
        parties.add(recipient)
        return True


def _account(name: str) -> Account | None:
    pw = PASSWORDS.get(name)
    if pw is None:
        return None
    return Account(
        name, ROLES[name], ha1("MD5", name, DOMAIN, pw), ha1("SHA-256", name, DOMAIN, pw)
    )


def make_net(**settings: Any) -> tuple[Net, Messenger, list[tuple[Any, ...]]]:
    net = Net()
    net.core.users._fetch = _account  # type: ignore[attr-defined]
    users = {n: User(n, r, BUSINESS.get(n)) for n, r in ROLES.items()}
    net.core.calls = CallRouting(net.core, _RoutingStore(), Directory(Provider("p"), users=users))
    ops: list[tuple[Any, ...]] = []
    messenger = enable_messaging(net.core, MessagingSettings(**settings), ops.append, _Files())
    return net, messenger, ops


def message(
    net: Net, sender: str, to: str, src: tuple[str, str, int], body: bytes = b"Hallo",
    ctype: str = "text/plain;charset=UTF-8",
) -> list:  # fmt: skip
    r = req("MESSAGE", f"sip:{to}@{DOMAIN}", src, sender, f"sip:{to}@{DOMAIN}",
            extra=[f"Content-Type: {ctype}"])  # fmt: skip
    r.body = body
    [(challenge, _)] = net.send(r.serialize(), src)
    assert isinstance(challenge, Response) and challenge.status == 407
    return net.send(authorize(r, challenge, sender, "Proxy-Authorization").serialize(), src)


def register_all(net: Net, user: str, src: tuple[str, str, int]) -> list:
    """REGISTER with digest; everything the server sends in answer (200 and stored messages)."""
    r = req("REGISTER", f"sip:{DOMAIN}", src, user, f"sip:{user}@{DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), src)
    out = net.send(authorize(r, challenge, user).serialize(), src)
    assert isinstance(out[0][0], Response) and out[0][0].status == 200  # the 200 leaves first
    return out


def responses(out: list) -> list[Response]:
    return [m for m, _ in out if isinstance(m, Response)]


def messages(out: list) -> list[tuple[Request, tuple[str, str, int]]]:
    return [(m, d) for m, d in out if isinstance(m, Request) and m.method == "MESSAGE"]


def ok(net: Net, r: Request, dest: tuple[str, str, int], status: int = 200) -> list:
    return net.send(answer(r, status).serialize(), dest)


def states(ops: list[tuple[Any, ...]]) -> list[tuple[str, str]]:
    return [(op[1], op[2]) for op in ops if op[0] == "state"]


def test_online_recipient_gets_it_on_every_device_with_asserted_sender() -> None:
    net, _, ops = make_net()
    register(net, "bob", BOB1)
    register(net, "bob", BOB2)
    out = message(net, "alice", "bob", ALICE)
    fwd = messages(out)
    assert sorted(d for _, d in fwd) == [BOB1, BOB2]
    for m, _ in fwd:
        assert m.body == b"Hallo"
        assert m.get("p-asserted-identity") == f"<sip:alice@{DOMAIN}>"
        assert m.get("record-route") is None
        assert m.get("proxy-authorization") is None
    assert responses(out) == []
    first, dest = fwd[0]
    [(resp, to)] = ok(net, first, dest)
    assert isinstance(resp, Response) and resp.status == 200 and to == ALICE
    # the second device's 200 is not a second final answer upstream
    assert ok(net, fwd[1][0], fwd[1][1]) == []
    [add] = [op for op in ops if op[0] == "add"]
    assert add[1]["sender"] == "alice" and add[1]["recipient"] == "bob"
    assert add[1]["body"] == b"Hallo" and add[1]["state"] == "sending"
    assert states(ops) == [(add[1]["id"], "delivered")]


def test_offline_recipient_gets_202_then_messages_in_order_once_at_registration() -> None:
    net, messenger, ops = make_net()
    for text in (b"eins", b"zwei", b"drei"):
        [resp] = responses(message(net, "alice", "bob", ALICE, text))
        assert resp.status == 202
    assert messenger.waiting() == 3
    got = []
    fwd = messages(register_all(net, "bob", BOB1))
    while fwd:
        [(m, dest)] = fwd
        assert dest == BOB1
        assert m.get("p-asserted-identity") == f"<sip:alice@{DOMAIN}>"
        assert m.from_.uri.user == "alice" and m.to.uri.user == "bob"
        assert m.get("date")
        got.append(m.body)
        fwd = messages(ok(net, m, dest))
    assert got == [b"eins", b"zwei", b"drei"]
    assert messenger.waiting() == 0
    # a refresh or a second device brings nothing again
    assert messages(register_all(net, "bob", BOB1)) == []
    assert messages(register_all(net, "bob", BOB2)) == []
    assert [s for _, s in states(ops)].count("delivered") == 3


def test_unanswered_devices_mean_stored_then_delivered_at_next_registration() -> None:
    net, messenger, ops = make_net(delivery_timeout=5.0)
    register(net, "bob", BOB1)
    out = message(net, "alice", "bob", ALICE, b"wichtig")
    [(m, dest)] = messages(out)
    out = net.advance(5.1)
    assert [r.status for r in responses(out)] == [202]
    assert messenger.waiting() == 1
    net.advance(40)  # the first copy's transaction times out: still stored
    assert messenger.waiting() == 1
    [(again, dest)] = messages(register_all(net, "bob", BOB1))
    assert again.body == b"wichtig" and again.call_id != m.call_id
    ok(net, again, dest)
    assert messenger.waiting() == 0
    assert [s for _, s in states(ops)] == ["queued", "delivered"]


def test_late_answer_after_storing_removes_it_from_the_queue() -> None:
    net, messenger, ops = make_net(delivery_timeout=2.0)
    register(net, "bob", BOB1)
    [(m, dest)] = messages(message(net, "alice", "bob", ALICE))
    assert [r.status for r in responses(net.advance(2.5))] == [202]
    assert messenger.waiting() == 1
    assert ok(net, m, dest) == []
    assert messenger.waiting() == 0
    assert [s for _, s in states(ops)] == ["queued", "delivered"]


def test_temporary_failure_keeps_it_permanent_refusal_fails_it() -> None:
    net, messenger, ops = make_net()
    message(net, "alice", "bob", ALICE, b"a")
    message(net, "alice", "bob", ALICE, b"b")
    [(m, dest)] = messages(register_all(net, "bob", BOB1))
    assert m.body == b"a"
    assert messages(ok(net, m, dest, 480)) == []  # temporary: kept, nothing more now
    assert messenger.waiting() == 2
    messenger.kick("bob", net.now)
    net.core.pump(net.now)
    [(m, dest)] = messages(net.drain())
    assert m.body == b"a"
    [(m2, dest)] = messages(ok(net, m, dest, 415))  # refused for good: failed, next one
    assert m2.body == b"b"
    assert messages(ok(net, m2, dest)) == [] and messenger.waiting() == 0
    assert [s for _, s in states(ops)] == ["queued", "queued", "failed", "delivered"]


def test_stored_messages_expire() -> None:
    net, messenger, ops = make_net(store_expiry=60.0)
    message(net, "alice", "bob", ALICE)
    net.advance(61)
    assert messenger.expire(net.now) == 1
    assert messenger.waiting() == 0
    assert messages(register_all(net, "bob", BOB1)) == []
    assert states(ops)[-1][1] == "expired"


@pytest.mark.parametrize(
    ("sender", "src", "to", "status"),
    [
        ("carol", CAROL, "erin", 403),  # another client's user
        ("carol", CAROL, "nobody", 403),  # unknown: the same answer
        ("alice", ALICE, "nobody", 404),  # staff may learn that a user does not exist
    ],
)
def test_who_may_message_whom(sender: str, src: tuple, to: str, status: int) -> None:
    net, _, ops = make_net()
    [resp] = responses(message(net, sender, to, src))
    assert resp.status == status
    assert ops == []


def test_client_may_message_staff_and_own_business() -> None:
    net, _, _ = make_net()
    assert responses(message(net, "carol", "alice", CAROL))[0].status == 202
    assert responses(message(net, "carol", "dave", CAROL))[0].status == 202


def test_size_type_and_cpim_sender_checks() -> None:
    net, _, ops = make_net(max_bytes=100)
    [r413] = responses(message(net, "alice", "bob", ALICE, b"x" * 101))
    assert r413.status == 413 and "100" in r413.reason
    [r415] = responses(message(net, "alice", "bob", ALICE, b"<a/>", "application/xml"))
    assert r415.status == 415 and "message/cpim" in (r415.get("accept") or "")
    spoof = b"From: <sip:bob@example.com>\r\nTo: <sip:bob@example.com>\r\n\r\n" \
            b"Content-Type: text/plain\r\n\r\nhi"  # fmt: skip
    [r403] = responses(message(net, "alice", "bob", ALICE, spoof, "message/cpim"))
    assert r403.status == 403 and "CPIM" in r403.reason
    assert ops == []


def test_file_announcement_grants_the_recipient_only_for_the_owner() -> None:
    net, messenger, ops = make_net()
    doc = (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<file xmlns="urn:gsma:params:xml:ns:rcs:rcs:fthttp">'
        b'<file-info type="file"><file-size>3</file-size><file-name>d.wav</file-name>'
        b'<content-type>audio/wav</content-type><data url="http://files.test/ft/f1" '
        b'until="2030-01-01T00:00:00Z"/></file-info></file>'
    )
    ft = "application/vnd.gsma.rcs-ft-http+xml"
    [resp] = responses(message(net, "alice", "bob", ALICE, doc, ft))
    assert resp.status == 403  # alice may not pass on carol's file
    [resp] = responses(message(net, "carol", "alice", CAROL, doc, ft))
    assert resp.status == 202
    assert messenger.files.parties["f1"] == {"carol", "alice"}  # type: ignore[union-attr]
    [add] = [op for op in ops if op[0] == "add"]
    assert add[1]["file_id"] == "f1"


def test_imdn_report_is_relayed_and_marks_the_original() -> None:
    net, _, ops = make_net()
    report = (
        b"From: <sip:bob@example.com>\r\nTo: <sip:alice@example.com>\r\n"
        b"NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: r1\r\n\r\n"
        b"Content-Type: message/imdn+xml\r\nContent-Disposition: notification\r\n\r\n"
        b'<?xml version="1.0" encoding="UTF-8"?><imdn xmlns="urn:ietf:params:xml:ns:imdn">'
        b"<message-id>m-42</message-id><datetime>2026-11-27T10:00:00Z</datetime>"
        b"<delivery-notification><status><delivered/></status></delivery-notification></imdn>"
    )
    [resp] = responses(message(net, "bob", "alice", BOB1, report, "message/cpim"))
    assert resp.status == 202
    assert ("report", "m-42", "bob", "delivered") in ops


def test_typing_notice_is_relayed_not_stored() -> None:
    net, messenger, ops = make_net()
    body = b'<?xml version="1.0"?><isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"/>'
    [resp] = responses(message(net, "alice", "bob", ALICE, body, "application/im-iscomposing+xml"))
    assert resp.status == 480
    assert ops == [] and messenger.waiting() == 0


def test_submit_from_http_goes_to_devices() -> None:
    net, messenger, ops = make_net()
    register(net, "bob", BOB1)
    m, shared = messenger.prepare("alice", "bob", "text/plain", b"per Web", net.now)
    assert shared == []
    messenger.submit(m, net.now)
    assert m.state == "queued"
    net.core.pump(net.now)
    [(fwd, dest)] = messages(net.drain())
    assert fwd.body == b"per Web" and dest == BOB1
    ok(net, fwd, dest)
    assert m.state == "delivered"


# -- content ------------------------------------------------------------------------------------


def test_cpim_with_imdn_request() -> None:
    body = (
        b"From: <sip:carol@example.com>\r\nTo: <sip:alice@example.com>\r\n"
        b"DateTime: 2026-11-27T10:00:00Z\r\nNS: x <urn:ietf:params:imdn>\r\n"
        b"x.Message-ID: abc\r\nx.Disposition-Notification: positive-delivery, display\r\n\r\n"
        b"Content-Type: text/plain;charset=UTF-8\r\n\r\nGr\xc3\xbc\xc3\x9fe"
    )
    c = describe("message/cpim", body)
    assert c.kind == "text" and c.text == "Grüße"
    assert c.imdn_id == "abc" and c.wants_reports == ("positive-delivery", "display")
    assert c.cpim_from == "sip:carol@example.com"
    headers, content_headers, content = parse_cpim(body)
    assert content == "Grüße".encode()


def test_bad_bodies_are_errors_not_crashes() -> None:
    with pytest.raises(MessageError):
        describe("application/vnd.gsma.rcs-ft-http+xml", b"<not-xml")
    with pytest.raises(MessageError):
        describe("message/imdn+xml", b"<imdn xmlns='urn:ietf:params:xml:ns:imdn'/>")
    assert content_view("message/cpim", b"garbage without headers")["kind"] in ("text", "other")


def test_parse_survives_binary_message() -> None:
    r = parse(b"MESSAGE sip:bob@example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n", datagram=True)
    assert isinstance(r, Request)


def test_rate_limit_per_sender_with_retry_after() -> None:
    net, _, ops = make_net(rate_per_minute=3)
    for _ in range(3):
        assert responses(message(net, "alice", "bob", ALICE))[0].status == 202
    [resp] = responses(message(net, "alice", "bob", ALICE))
    assert resp.status == 503 and resp.get("retry-after") == "60"
    # others are not affected, and a minute later alice may send again
    assert responses(message(net, "carol", "alice", CAROL))[0].status == 202
    net.advance(61)
    assert responses(message(net, "alice", "bob", ALICE))[0].status == 202
    assert len([op for op in ops if op[0] == "add"]) == 5


def test_stored_messages_per_recipient_are_limited() -> None:
    net, messenger, _ = make_net(max_stored_per_user=2)
    assert [responses(message(net, "alice", "bob", ALICE))[0].status for _ in range(3)] == [
        202, 202, 480,
    ]  # fmt: skip
    assert messenger.waiting() == 2


def message_encoded(net: Net, body: bytes, coding: str, ctype: str) -> list:
    r = req("MESSAGE", f"sip:alice@{DOMAIN}", BOB1, "bob", f"sip:alice@{DOMAIN}",
            extra=[f"Content-Type: {ctype}", f"Content-Encoding: {coding}"])  # fmt: skip
    r.body = body
    [(challenge, _)] = net.send(r.serialize(), BOB1)
    return net.send(authorize(r, challenge, "bob", "Proxy-Authorization").serialize(), BOB1)


IMDN_REPORT = (
    b'<?xml version="1.0" encoding="UTF-8"?><imdn xmlns="urn:ietf:params:xml:ns:imdn">'
    b"<message-id>m-7</message-id><delivery-notification><status><delivered/></status>"
    b"</delivery-notification></imdn>"
)


@pytest.mark.parametrize("wbits", [15, -15, 31])  # zlib (Linphone), raw deflate, gzip
def test_compressed_imdn_report_is_read_relayed_as_sent_and_stored_decoded(wbits: int) -> None:
    import zlib

    net, messenger, ops = make_net()
    packer = zlib.compressobj(wbits=wbits)
    packed = packer.compress(IMDN_REPORT) + packer.flush()
    coding = "gzip" if wbits == 31 else "deflate"
    register(net, "alice", ALICE)
    [(fwd, dest)] = messages(message_encoded(net, packed, coding, "message/imdn+xml"))
    assert fwd.body == packed and fwd.get("content-encoding") == coding  # relayed as sent
    assert ("report", "m-7", "bob", "delivered") in ops
    [add] = [op for op in ops if op[0] == "add"]
    assert add[1]["body"] == IMDN_REPORT
    ok(net, fwd, dest)


def test_unknown_or_broken_coding_415_and_inflating_bomb_413() -> None:
    import zlib

    net, _, ops = make_net(max_bytes=1000)
    [r] = responses(message_encoded(net, b"abc", "br", "text/plain"))
    assert r.status == 415 and "deflate" in (r.get("accept-encoding") or "")
    [r] = responses(message_encoded(net, b"not deflate at all", "deflate", "text/plain"))
    assert r.status == 415
    bomb = zlib.compress(b"x" * 1_000_000)
    assert len(bomb) < 1000
    [r] = responses(message_encoded(net, bomb, "deflate", "text/plain"))
    assert r.status == 413
    assert ops == []


def test_display_report_reads_back_as_a_displayed_report_for_the_message() -> None:
    from datetime import UTC, datetime

    from heimbuero.office.messaging import CPIM, display_report

    body = display_report(
        "abc<&>1", "sip:bob@office.test", "sip:alice@office.test", "r-1", datetime.now(UTC)
    )
    c = describe(CPIM, body)
    assert (c.kind, c.report_for, c.report_state) == ("imdn", "abc<&>1", "displayed")
    assert (c.cpim_from, c.imdn_id) == ("sip:bob@office.test", "r-1")
    with pytest.raises(MessageError):
        display_report(
            "x", "sip:bob@office.test\r\nTo: <sip:eve@x>", "sip:a@x", "r", datetime.now(UTC)
        )


def test_a_message_to_a_gruu_is_its_users_a_forged_one_reaches_nobody() -> None:
    """RFC 5627 GRUUs name one device; the messenger keeps one conversation per user, so a
    MESSAGE to one of bob's GRUUs goes to bob (every device), as to his address. A temporary
    GRUU the server did not make is 404."""
    uuids = ("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
             "urn:uuid:0c2d4c1e-5b3a-4e3f-9d6e-2a9f4b7c8d01")  # fmt: skip
    for which in ("pub-gruu", "temp-gruu"):
        net, _, _ = make_net()
        gruus = []
        for src, uuid in zip((BOB1, BOB2), uuids, strict=True):
            r = req("REGISTER", f"sip:{DOMAIN}", src, "bob", f"sip:bob@{DOMAIN}",
                    extra=["Supported: gruu"])  # fmt: skip
            r.set("Contact", f'<sip:bob@{src[1]}:{src[2]}>;+sip.instance="<{uuid}>"')
            [(challenge, _)] = net.send(r.serialize(), src)
            [(okay, _)] = net.send(authorize(r, challenge, "bob").serialize(), src)
            assert isinstance(okay, Response) and okay.status == 200
            [mine] = [a for a in map(parse_address, okay.get_all("contact"))
                      if a.uri.port == src[2]]  # fmt: skip
            gruus.append((mine.params[which] or "").strip('"'))
        r = req("MESSAGE", gruus[0], ALICE, "alice", gruus[0],
                extra=["Content-Type: text/plain"])  # fmt: skip
        r.body = b"Diktat ist fertig"
        [(challenge, _)] = net.send(r.serialize(), ALICE)
        out = net.send(authorize(r, challenge, "alice", "Proxy-Authorization").serialize(), ALICE)
        assert sorted(d for _, d in messages(out)) == [BOB1, BOB2], which
        assert all(m.body == b"Diktat ist fertig" for m, _ in messages(out))
    token = gruus[0].split("@")[0]
    forged = gruus[0].replace(token, token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB"))
    r = req("MESSAGE", forged, ALICE, "alice", forged, extra=["Content-Type: text/plain"])
    r.body = b"x"
    [(challenge, _)] = net.send(r.serialize(), ALICE)
    out = net.send(authorize(r, challenge, "alice", "Proxy-Authorization").serialize(), ALICE)
    assert [m.status for m in responses(out)] == [404] and messages(out) == []
