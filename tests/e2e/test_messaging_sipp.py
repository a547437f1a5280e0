"""End-to-end messenger with SIPp (issue 5): SIP MESSAGE (RFC 3428) through the real
`heimbuero serve`, store-and-forward for offline users, refusals, and the history the HTTP API
shows for it.

SIPp plays both sides:
- scenarios/message_send.xml: one MESSAGE from an authenticated sender (407, then digest); logs the
  challenge and the final status;
- scenarios/message_device.xml + message_answer.xml (-oocsf): a device that REGISTERs, answers
  MESSAGEs with 200 and stays for a set window in which the test sees whether more come. The
  test reads every MESSAGE the device received, headers and body, from SIPp's -trace_msg file.

The server gets `[messages] delivery_timeout = 2` and `max_bytes = 1000`.
"""

from __future__ import annotations

import email.utils
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import DOMAIN, USERS
from .harness import (
    HarnessError,
    Server,
    SipClient,
    SipMessage,
    SippProcess,
    SippResult,
    digest_response,
    free_port,
    messaging_server,
    pick_challenge,
    run_sipp,
    sipp_trace,
    start_sipp,
    wait_until,
)
from .test_presence_sipp import logged, sipp_log, wait_logged

pytestmark = [pytest.mark.e2e, pytest.mark.peers("sipp")]

DELIVERY_TIMEOUT = 2  # [messages] delivery_timeout for these tests
MAX_BYTES = 1000  # [messages] max_bytes
QUIET_WINDOW_MS = 3000  # how long a device waits to see that no further MESSAGE comes


@pytest.fixture
def msg_server(tmp_path: Path) -> Iterator[Server]:
    """heimbuero serve (SIP + HTTP) with alice and bob (agents) and the settings above."""
    with messaging_server(
        tmp_path / "server",
        domain=DOMAIN,
        users=USERS,
        messages={"delivery_timeout": DELIVERY_TIMEOUT, "max_bytes": MAX_BYTES},
    ) as srv:
        yield srv


# --------------------------------------------------------------------------------------------
# helpers


def send_message(
    workdir: Path,
    server: Server,
    *,
    sender: str,
    to: str,
    body: str,
    ctype: str = "text/plain",
    password: str | None = None,
    name: str | None = None,
) -> SippResult:
    """One MESSAGE sender -> to with message_send.xml; the SIPp run must end well."""
    return run_sipp(
        workdir,
        name or f"send-{sender}-{to}",
        scenario="message_send.xml",
        remote=server.address,
        port=free_port(),
        calls=1,
        timeout=20,
        service=to,
        auth=(sender, password if password is not None else server.users[sender]),
        auth_uri=f"{to}@{server.domain}",
        keys={"domain": server.domain, "user": sender, "ctype": ctype, "body": body},
    ).check()


def done_count(result: SippResult) -> int:
    """The device's "DONE n" line (SIPp logs its counter as a double, 1.000000, and an unset
    one as nothing)."""
    return round(float(logged(result, "DONE") or 0))


def final_status(result: SippResult) -> int:
    return int(logged(result, "FINAL").split()[1])


def start_device(
    workdir: Path,
    server: Server,
    user: str,
    *,
    expected: int,
    window_ms: int = QUIET_WINDOW_MS,
    reregister: bool = False,
    answer_delay_ms: int = 0,
    name: str,
    timeout: float = 30,
) -> SippProcess:
    """A SIPp device of `user` (message_device.xml), registered when this returns."""
    proc = start_sipp(
        workdir,
        name,
        scenario="message_device.xml",
        ooc_scenario="message_answer.xml",
        remote=server.address,
        port=free_port(),
        calls=1,
        timeout=timeout,
        service=user,
        auth=(user, server.users[user]),
        auth_uri=server.domain,
        keys={"domain": server.domain, "expires": "300"},
        sets={
            "expected_messages": str(expected),
            "reregister": "1" if reregister else "0",
            "answer_delay": str(answer_delay_ms),
        },
        extra=["-d", str(window_ms)],
    )
    wait_logged(proc, "REGISTERED")
    return proc


def received_messages(device: SippProcess | SippResult) -> list[SipMessage]:
    """The MESSAGE requests the device received, retransmissions (same Call-ID+CSeq) once."""
    seen: set[tuple[str | None, str | None]] = set()
    out = []
    for direction, msg in sipp_trace(device):
        if direction != "received" or msg.method != "MESSAGE":
            continue
        key = (msg.header("Call-ID"), msg.header("CSeq"))
        if key not in seen:
            seen.add(key)
            out.append(msg)
    return out


def uri_of(value: str | None) -> str:
    """`"Name" <sip:a@b>;tag=x` -> `sip:a@b` (lower-cased)."""
    if not value:
        return ""
    m = re.search(r"<([^>]*)>", value)
    uri = m.group(1) if m else value.split(";")[0]
    return uri.strip().lower()


def describe(msgs: list[SipMessage]) -> str:
    return "\n\n".join(m.raw.decode("utf-8", "replace") for m in msgs) or "<none>"


def api(server: Server, user: str, method: str, path: str, **kw: Any) -> httpx.Response:
    with httpx.Client(base_url=server.http_url, timeout=10) as http:
        return http.request(method, path, auth=(user, server.users[user]), **kw)


def history(server: Server, user: str, peer: str) -> list[dict[str, Any]]:
    """The conversation's messages; [] when the server has no conversation with `peer` (404)."""
    r = api(server, user, "GET", f"/api/conversations/{peer}/messages")
    if r.status_code == 404 and "no conversation" in r.text:
        return []
    assert r.status_code == 200, f"{r.status_code} {r.text}\n{server.log_text()}"
    data = r.json()
    rows = data["messages"] if isinstance(data, dict) else data
    assert isinstance(rows, list), data
    return rows


def wait_history_state(
    server: Server, user: str, peer: str, states: list[str], timeout: float = 10
) -> list[dict[str, Any]]:
    """Poll the history until the messages' states are `states` (in order)."""
    last: list[dict[str, Any]] = []

    def ok() -> bool:
        nonlocal last
        last = history(server, user, peer)
        return [m.get("state") for m in last] == states

    try:
        wait_until(ok, timeout, interval=0.2, what=f"history states {states}")
    except HarnessError as exc:
        raise HarnessError(f"{exc}; last: {json.dumps(last, indent=1)}") from None
    return last


# --------------------------------------------------------------------------------------------
# 1. online: forked to every registered device


def test_message_to_online_user_reaches_both_devices(msg_server: Server, tmp_path: Path) -> None:
    server = msg_server
    body = "Diktat 17 ist fertig, bitte ansehen"
    with (
        start_device(tmp_path, server, "bob", expected=1, name="bob-desk") as desk,
        start_device(tmp_path, server, "bob", expected=1, name="bob-mobile") as mobile,
    ):
        sent = send_message(tmp_path, server, sender="alice", to="bob", body=body)
        challenge = logged(sent, "CHALLENGE")
        assert challenge.startswith("SIP/2.0 407"), challenge
        assert final_status(sent) == 200, sipp_log(sent)
        results = [desk.wait().check(), mobile.wait().check()]
    for res in results:
        got = received_messages(res)
        assert len(got) == 1, f"{res.name} got {len(got)} MESSAGEs:\n{describe(got)}"
        msg = got[0]
        assert msg.body.decode() == body, describe(got)
        assert (msg.header("Content-Type") or "").split(";")[0].strip() == "text/plain"
        assert uri_of(msg.header("P-Asserted-Identity")) == f"sip:alice@{DOMAIN}", describe(got)
        assert uri_of(msg.header("From")) == f"sip:alice@{DOMAIN}", describe(got)
        assert uri_of(msg.header("To")) == f"sip:bob@{DOMAIN}", describe(got)
        assert done_count(res) == 1
    rows = history(server, "alice", "bob")
    assert [(m["sender"], m["recipient"], m["text"]) for m in rows] == [("alice", "bob", body)]
    assert rows[0]["state"] == "delivered", rows


# --------------------------------------------------------------------------------------------
# 2. offline: stored (202), delivered once on registration


def test_message_to_offline_user_is_delivered_once_on_registration(
    msg_server: Server, tmp_path: Path
) -> None:
    server = msg_server
    body = "Rueckruf bitte vor 16 Uhr"
    before = time.time()
    sent = send_message(tmp_path, server, sender="alice", to="bob", body=body)
    assert final_status(sent) == 202, sipp_log(sent)
    sent_at = time.time()
    assert [m["state"] for m in history(server, "alice", "bob")] == ["queued"]

    # bob's first device registers: the stored message arrives, once; the device then refreshes
    # its registration and stays 6 s; meanwhile a second device registers and stays 3 s
    with start_device(
        tmp_path, server, "bob", expected=1, reregister=True, window_ms=6000, name="bob-desk"
    ) as desk:
        wait_logged(desk, "REREGISTERED", timeout=15)
        with start_device(tmp_path, server, "bob", expected=0, name="bob-mobile") as mobile:
            assert desk.poll() is None, "the first device left before the second registered"
            second = mobile.wait().check()
        first = desk.wait().check()

    got = received_messages(first)
    assert len(got) == 1, f"first device got {len(got)} MESSAGEs:\n{describe(got)}"
    assert received_messages(second) == [], describe(received_messages(second))
    msg = got[0]
    assert msg.body.decode() == body
    assert uri_of(msg.header("From")) == f"sip:alice@{DOMAIN}", describe(got)
    assert uri_of(msg.header("To")) == f"sip:bob@{DOMAIN}", describe(got)
    assert (msg.header("Content-Type") or "").split(";")[0].strip() == "text/plain"
    date = msg.header("Date")
    assert date, f"stored message without Date:\n{describe(got)}"
    stamp = email.utils.parsedate_to_datetime(date).timestamp()
    # Date has 1 s resolution: the original time, not the time of delivery
    assert before - 1 <= stamp <= sent_at + 1, (date, before, sent_at)
    assert (done_count(first), done_count(second)) == (1, 0)
    wait_history_state(server, "alice", "bob", ["delivered"])


# --------------------------------------------------------------------------------------------
# 3. refusals: 407 without (or with wrong) credentials, 413, 415, 403; nothing stored


def test_unauthenticated_message_is_challenged_and_wrong_password_never_delivered(
    msg_server: Server, tmp_path: Path
) -> None:
    server = msg_server
    # the first, unauthenticated MESSAGE: 407 with an MD5 challenge first (SIPp's only choice)
    with SipClient(server.port) as c:
        req = c.request(
            "MESSAGE",
            f"sip:bob@{DOMAIN}",
            from_uri=f"sip:alice@{DOMAIN}",
            to_uri=f"sip:bob@{DOMAIN}",
            body=b"no credentials",
            content_type="text/plain",
        )
        resp = c.final_response(req)
    assert resp.status == 407, resp.summary()
    first = resp.header_values("Proxy-Authenticate")[0]
    assert pick_challenge(resp, "MD5") is not None
    assert "algorithm=sha-256" not in first.lower().replace(" ", ""), first

    wrong = send_message(
        tmp_path, server, sender="alice", to="bob", body="falsches Passwort", password="Nope-12345x"
    )
    assert logged(wrong, "CHALLENGE").startswith("SIP/2.0 407")
    assert final_status(wrong) in (403, 407), sipp_log(wrong)

    # nothing was stored: bob's device registers and gets nothing within the window
    with start_device(tmp_path, server, "bob", expected=0, name="bob") as bob:
        res = bob.wait().check()
    assert received_messages(res) == [], describe(received_messages(res))
    assert history(server, "alice", "bob") == []


def test_oversized_wrong_type_and_forbidden_messages_are_refused(
    msg_server: Server, tmp_path: Path
) -> None:
    server = msg_server
    server.add_user("carol", "Tannen-Zapfen-55", role="client")
    server.add_user("dave", "Moos-Polster-66", role="client")
    big = "x" * (MAX_BYTES + 1)
    fits = "y" * MAX_BYTES
    statuses = {
        "oversized": final_status(
            send_message(tmp_path, server, sender="alice", to="bob", body=big)
        ),
        "wrong type": final_status(
            send_message(
                tmp_path, server, sender="alice", to="bob", body="<a/>", ctype="application/xml"
            )
        ),
        # two client users without a common business may not message each other
        "forbidden": final_status(
            send_message(tmp_path, server, sender="dave", to="carol", body="hallo")
        ),
        "at the limit": final_status(
            send_message(tmp_path, server, sender="alice", to="bob", body=fits)
        ),
    }
    assert statuses == {"oversized": 413, "wrong type": 415, "forbidden": 403, "at the limit": 202}
    # only the message at the limit was stored, and bob gets exactly that one
    with start_device(tmp_path, server, "bob", expected=1, name="bob") as bob:
        res = bob.wait().check()
    got = received_messages(res)
    assert [m.body.decode() for m in got] == [fits], describe(got)
    assert [m["text"] for m in history(server, "alice", "bob")] == [fits]


# --------------------------------------------------------------------------------------------
# 4. order: three stored messages arrive in order, one at a time; history survives a restart


def test_stored_messages_arrive_in_order_one_at_a_time(msg_server: Server, tmp_path: Path) -> None:
    server = msg_server
    bodies = ["eins: Akte angelegt", "zwei: Diktat hochgeladen", "drei: Brief ist raus"]
    for i, body in enumerate(bodies):
        sent = send_message(tmp_path, server, sender="alice", to="bob", body=body, name=f"send{i}")
        assert final_status(sent) == 202, sipp_log(sent)
    # the device answers each MESSAGE 300 ms late: one at a time means each MESSAGE after the
    # first arrives only after the device sent its 200 to the previous one (SIPp's trace is in
    # the order of the packets)
    with start_device(tmp_path, server, "bob", expected=3, answer_delay_ms=300, name="bob") as bob:
        res = bob.wait().check()
    got = received_messages(res)
    assert [m.body.decode() for m in got] == bodies, describe(got)
    assert len({m.header("Call-ID") for m in got}) == 3
    flow = [
        f"{direction} {msg.start_line.split()[0] if msg.method else msg.status} "
        f"{msg.header('Call-ID')}"
        for direction, msg in sipp_trace(res)
        if (msg.method or (msg.cseq or (0, ""))[1]) == "MESSAGE"
    ]
    order = []
    for line in flow:
        if line not in order:  # retransmissions once
            order.append(line)
    cids = [m.header("Call-ID") for m in got]
    assert order == [f"{d} {cid}" for cid in cids for d in ("received MESSAGE", "sent 200")], (
        "\n".join(flow)
    )
    dates = [email.utils.parsedate_to_datetime(m.header("Date") or "") for m in got]
    assert dates == sorted(dates), [m.header("Date") for m in got]

    def summary(rows: list[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
        return [
            (m["sender"], m["recipient"], m["text"], m["content_type"].split(";")[0], m["state"])
            for m in rows
        ]

    want = [("alice", "bob", b, "text/plain", "delivered") for b in bodies]
    rows = wait_history_state(server, "alice", "bob", ["delivered"] * 3)
    assert summary(rows) == want
    assert summary(history(server, "bob", "alice")) == want  # the same conversation for bob
    created = [m["created_at"] for m in rows]
    assert created == sorted(created), created
    convs = api(server, "bob", "GET", "/api/conversations")
    assert convs.status_code == 200, convs.text
    conv_list = convs.json()
    conv_list = conv_list["conversations"] if isinstance(conv_list, dict) else conv_list
    assert [c["peer"] for c in conv_list] == ["alice"], conv_list
    assert conv_list[0]["last"]["text"] == bodies[-1], conv_list

    server.restart()
    assert summary(history(server, "alice", "bob")) == want, "history lost by a restart"
    # and nothing is delivered twice after the restart
    with start_device(tmp_path, server, "bob", expected=0, name="bob-after-restart") as again:
        res2 = again.wait().check()
    assert received_messages(res2) == [], describe(received_messages(res2))


# --------------------------------------------------------------------------------------------
# 5. a registered device that does not answer: stored after delivery_timeout, delivered later


def test_unanswered_device_gets_the_message_at_its_next_registration(
    msg_server: Server, tmp_path: Path
) -> None:
    server = msg_server
    with SipClient(server.port) as silent:
        contact = f"<sip:bob@127.0.0.1:{silent.local_port};transport=udp>"
        _, ok = silent.authenticated_request(
            "REGISTER",
            f"sip:{DOMAIN}",
            username="bob",
            password=USERS["bob"],
            from_uri=f"sip:bob@{DOMAIN}",
            to_uri=f"sip:bob@{DOMAIN}",
            headers=[("Contact", contact), ("Expires", "300")],
        )
        assert ok.status == 200, ok.summary()
        started = time.monotonic()
        sent = send_message(tmp_path, server, sender="alice", to="bob", body="hallo, wach?")
        took = time.monotonic() - started
        assert final_status(sent) == 202, sipp_log(sent)
        assert DELIVERY_TIMEOUT - 0.5 <= took <= DELIVERY_TIMEOUT + 5, took
        # the silent device did get the MESSAGE (it waits in its socket; never answered)
        while silent.recv(0.5) is not None:
            pass
        assert any(m.method == "MESSAGE" for m in silent.received), [
            m.start_line for m in silent.received
        ]
    with start_device(tmp_path, server, "bob", expected=1, name="bob") as bob:
        res = bob.wait().check()
    got = received_messages(res)
    assert [m.body.decode() for m in got] == ["hallo, wach?"], describe(got)
    assert got[0].header("Date"), describe(got)


# --------------------------------------------------------------------------------------------
# 6. HTTP: POST /api/messages reaches bob's SIP device; the SSE stream shows it to both sides


def test_http_send_reaches_sip_device_and_live_stream(msg_server: Server, tmp_path: Path) -> None:
    server = msg_server
    events: list[tuple[str, dict[str, Any]]] = []
    ready = threading.Event()
    errors: list[BaseException] = []

    def listen() -> None:
        try:
            with httpx.stream(
                "GET",
                f"{server.http_url}/api/messages/stream",
                auth=("bob", USERS["bob"]),
                timeout=httpx.Timeout(10, read=15),
            ) as stream:
                if stream.status_code != 200:
                    raise HarnessError(f"stream: {stream.status_code}")
                ready.set()
                kind = ""
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind == "message":
                        events.append((kind, json.loads(line[6:])))
                        if len(events) >= 1:
                            return
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
            ready.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(10), "the message stream did not open"
    assert not errors, errors
    with start_device(tmp_path, server, "bob", expected=1, name="bob") as bob:
        r = api(server, "alice", "POST", "/api/messages", json={"to": "bob", "text": "per Web"})
        assert r.status_code in (200, 201, 202), f"{r.status_code} {r.text}"
        res = bob.wait().check()
    got = received_messages(res)
    assert [m.body.decode() for m in got] == ["per Web"], describe(got)
    assert uri_of(got[0].header("From")) == f"sip:alice@{DOMAIN}"
    assert uri_of(got[0].header("P-Asserted-Identity")) == f"sip:alice@{DOMAIN}"
    listener.join(15)
    assert not errors, errors
    assert [(e[1].get("sender"), e[1].get("text")) for e in events] == [("alice", "per Web")]


# --------------------------------------------------------------------------------------------
# 7. IMDN (RFC 5438): CPIM bodies pass unchanged; the delivery notification goes back


def cpim(sender: str, recipient: str, headers: list[str], ctype: str, content: str) -> bytes:
    """A message/cpim body (RFC 3862) with IMDN headers (RFC 5438)."""
    lines = [
        f"From: <sip:{sender}@{DOMAIN}>",
        f"To: <sip:{recipient}@{DOMAIN}>",
        "DateTime: 2026-11-27T09:30:00Z",
        "NS: imdn <urn:ietf:params:imdn>",
        *headers,
        "",
        f"Content-Type: {ctype}",
        f"Content-Length: {len(content.encode())}",
        "",
        content,
    ]
    return "\r\n".join(lines).encode()


def answer(client: SipClient, request: SipMessage, status: int = 200, reason: str = "OK") -> None:
    """Answer a request the server sent to `client` (To gets a tag)."""
    to = request.header("To") or ""
    if ";tag=" not in to:
        to += ";tag=e2e-answer"
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for v in request.header_values("Via")]
    lines += [
        f"From: {request.header('From')}",
        f"To: {to}",
        f"Call-ID: {request.header('Call-ID')}",
        f"CSeq: {request.header('CSeq')}",
        "Content-Length: 0",
    ]
    client.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode())


def test_imdn_cpim_passes_unchanged_and_delivery_report_goes_back(
    msg_server: Server, tmp_path: Path
) -> None:
    server = msg_server
    message = cpim(
        "alice",
        "bob",
        ["imdn.Message-ID: 34jk324j", "imdn.Disposition-Notification: positive-delivery"],
        "text/plain; charset=utf-8",
        "Bitte um Rückruf wegen der Akte Meier",
    )
    report = cpim(
        "bob",
        "alice",
        ["imdn.Message-ID: d834jied93rf", "Content-Disposition: notification"],
        "message/imdn+xml",
        '<?xml version="1.0" encoding="UTF-8"?>\r\n'
        '<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>34jk324j</message-id>'
        "<datetime>2026-11-27T09:30:01Z</datetime><delivery-notification><status><delivered/>"
        "</status></delivery-notification></imdn>",
    )
    with SipClient(server.port) as alice:
        # alice's phone is registered: the delivery report comes back to it
        contact = f"<sip:alice@127.0.0.1:{alice.local_port};transport=udp>"
        _, ok = alice.authenticated_request(
            "REGISTER",
            f"sip:{DOMAIN}",
            username="alice",
            password=USERS["alice"],
            from_uri=f"sip:alice@{DOMAIN}",
            to_uri=f"sip:alice@{DOMAIN}",
            headers=[("Contact", contact), ("Expires", "300")],
        )
        assert ok.status == 200, ok.summary()
        with start_device(tmp_path, server, "bob", expected=1, name="bob") as bob:
            _, sent = alice.authenticated_request(
                "MESSAGE",
                f"sip:bob@{DOMAIN}",
                username="alice",
                password=USERS["alice"],
                from_uri=f"sip:alice@{DOMAIN}",
                to_uri=f"sip:bob@{DOMAIN}",
                body=message,
                content_type="message/cpim",
            )
            assert sent.status == 200, sent.summary()
            res = bob.wait().check()
        got = received_messages(res)
        assert len(got) == 1, describe(got)
        assert (got[0].header("Content-Type") or "").split(";")[0].strip() == "message/cpim"
        assert got[0].body == message, describe(got)

        # bob's delivery notification, from another of bob's sockets, back to alice
        with SipClient(server.port) as bob_phone:
            first = bob_phone.request(
                "MESSAGE",
                f"sip:alice@{DOMAIN}",
                from_uri=f"sip:bob@{DOMAIN}",
                to_uri=f"sip:alice@{DOMAIN}",
                body=report,
                content_type="message/cpim",
            )
            challenge = bob_phone.final_response(first)
            assert challenge.status == 407, challenge.summary()
            auth = digest_response(
                pick_challenge(challenge),
                method="MESSAGE",
                uri=f"sip:alice@{DOMAIN}",
                username="bob",
                password=USERS["bob"],
            )
            second = bob_phone.request(
                "MESSAGE",
                f"sip:alice@{DOMAIN}",
                from_uri=f"sip:bob@{DOMAIN}",
                to_uri=f"sip:alice@{DOMAIN}",
                call_id=first.call_id,
                from_tag=first.from_tag,
                cseq=2,
                headers=[("Proxy-Authorization", auth)],
                body=report,
                content_type="message/cpim",
            )

            # alice's phone gets it and answers 200; bob's phone then gets that 200
            def incoming() -> SipMessage | None:
                msg = alice.recv(0.2)
                return msg if msg is not None and msg.method == "MESSAGE" else None

            relayed = wait_until(incoming, 10, what="the delivery report at alice's phone")
            answer(alice, relayed)
            final = bob_phone.final_response(second, timeout=10)
        assert final.status == 200, final.summary()
        assert relayed.body == report, relayed.raw.decode("utf-8", "replace")
        assert (relayed.header("Content-Type") or "").split(";")[0].strip() == "message/cpim"
        assert uri_of(relayed.header("P-Asserted-Identity")) == f"sip:bob@{DOMAIN}"


def test_reading_in_the_console_sends_the_asked_display_report_to_the_phone(
    msg_server: Server,
) -> None:
    """alice's phone asks for display reports; bob (no phone online) reads the conversation
    over HTTP: alice's phone gets one IMDN `displayed` report for the message that asked,
    from bob, and none for the message that did not ask."""
    server = msg_server
    asking = cpim(
        "alice", "bob",
        ["imdn.Message-ID: rd-1a2b3c", "imdn.Disposition-Notification: positive-delivery, display"],
        "text/plain; charset=utf-8", "Der Kunde Meier bittet um Rückruf",
    )  # fmt: skip
    not_asking = cpim(
        "alice", "bob", ["imdn.Message-ID: rd-4d5e6f"], "text/plain; charset=utf-8", "Danke!"
    )
    with SipClient(server.port) as alice:
        contact = f"<sip:alice@127.0.0.1:{alice.local_port};transport=udp>"
        _, ok = alice.authenticated_request(
            "REGISTER", f"sip:{DOMAIN}", username="alice", password=USERS["alice"],
            from_uri=f"sip:alice@{DOMAIN}", to_uri=f"sip:alice@{DOMAIN}",
            headers=[("Contact", contact), ("Expires", "300")],
        )  # fmt: skip
        assert ok.status == 200, ok.summary()
        for body in (asking, not_asking):
            _, sent = alice.authenticated_request(
                "MESSAGE", f"sip:bob@{DOMAIN}", username="alice", password=USERS["alice"],
                from_uri=f"sip:alice@{DOMAIN}", to_uri=f"sip:bob@{DOMAIN}",
                body=body, content_type="message/cpim",
            )  # fmt: skip
            assert sent.status in (200, 202), sent.summary()
        unread = api(server, "bob", "GET", "/api/conversations").json()
        assert [c["unread"] for c in unread if c["peer"] == "alice"] == [2], unread

        read = api(server, "bob", "POST", "/api/conversations/alice/read")
        assert read.status_code == 200 and read.json() == {"read": 2}, read.text

        def incoming() -> SipMessage | None:
            msg = alice.recv(0.2)
            return msg if msg is not None and msg.method == "MESSAGE" else None

        report = wait_until(incoming, 10, what="the display report at alice's phone")
        answer(alice, report)
        text = report.body.decode()
        assert "<message-id>rd-1a2b3c</message-id>" in text, text
        assert "<displayed" in text and "Content-Type: message/imdn+xml" in text, text
        assert f"From: <sip:bob@{DOMAIN}>" in text, text
        assert uri_of(report.header("P-Asserted-Identity")) == f"sip:bob@{DOMAIN}"
        # one report only: the message that did not ask gets none, reading again sends none
        again = api(server, "bob", "POST", "/api/conversations/alice/read")
        assert again.json() == {"read": 0}, again.text
        time.sleep(1.0)
        extra = incoming()
        assert extra is None, extra.raw.decode("utf-8", "replace")
    rows = history(server, "alice", "bob")
    assert [m.get("imdn_state") for m in rows] == ["displayed", "displayed"], rows
