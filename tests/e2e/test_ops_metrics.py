"""`GET /metrics` of `heimbuero serve --http`: open to the allow-list and to the bearer token
only (403 otherwise, X-Forwarded-For not believed); after registrations, a wrong password, a
routed call answered busy after a retransmitted INVITE, a queued message and an upload the
numbers moved; the Grafana dashboard in docs/ uses only metrics that exist."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .harness import (
    REPO_ROOT,
    Server,
    SipClient,
    SipMessage,
    digest_response,
    pick_challenge,
    set_toml_option,
    wait_until,
)

pytestmark = pytest.mark.e2e

DOMAIN = "office.heimbuero.test"
ADMIN, ADMIN_PW = "alice", "Lavendel-Feld-71"
BOB, BOB_PW = "bob", "Kupfer-Kanne-38"
TOKEN = "metrics-token-0123456789abcdef"
NUMBER = "+4930123456"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _register(phone: SipClient, user: str, password: str) -> SipMessage:
    aor = f"sip:{user}@{DOMAIN}"
    _, final = phone.authenticated_request(
        "REGISTER", f"sip:{DOMAIN}", username=user, password=password, from_uri=aor, to_uri=aor,
        headers=[("Contact", f"<sip:{user}@127.0.0.1:{phone.local_port}>")],
    )  # fmt: skip
    return final


def _answer(phone: SipClient, request: SipMessage, status: int, reason: str) -> None:
    to = request.header("To") or ""
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for v in request.header_values("Via")]
    lines += [f"From: {request.header('From')}", f"To: {to};tag=busy-bob",
              f"Call-ID: {request.header('Call-ID')}", f"CSeq: {request.header('CSeq')}",
              "Content-Length: 0"]  # fmt: skip
    phone.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode())


def test_metrics_are_guarded_and_move(tmp_path: Path) -> None:
    srv = Server(tmp_path, domain=DOMAIN, users={}, http=True)
    srv.prepare()
    srv.add_user(ADMIN, ADMIN_PW, role="admin")
    srv.add_user(BOB, BOB_PW)
    set_toml_option(srv.config_path, "metrics", "allow", ["127.0.0.2"])
    set_toml_option(srv.config_path, "metrics", "token", TOKEN)
    allowed = httpx.Client(
        base_url=srv.http_url, timeout=10, transport=httpx.HTTPTransport(local_address="127.0.0.2")
    )
    with srv, allowed, httpx.Client(base_url=srv.http_url, timeout=10) as other:
        # -- who may read it --
        first = allowed.get("/metrics")
        assert first.status_code == 200, first.text
        assert first.headers["content-type"].startswith("text/plain")
        before = _samples(first.text)
        refused = other.get("/metrics")
        assert refused.status_code == 403
        assert "allow-list" in refused.json()["detail"]
        assert other.get("/metrics", headers={"X-Forwarded-For": "127.0.0.2"}).status_code == 403
        assert other.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert other.get("/metrics", headers=bearer).status_code == 200

        # -- traffic --
        api = httpx.Client(base_url=srv.http_url, timeout=10, auth=(ADMIN, ADMIN_PW))
        with api:
            for path, body in (
                ("/api/users", {"name": "carol", "password": "Blume-Stein-11", "role": "agent"}),
                ("/api/clients", {"id": "acme", "name": "Acme GmbH"}),
                ("/api/numbers", {"number": NUMBER, "client": "acme"}),
            ):
                assert api.post(path, json=body).status_code == 201, path
            rules = {
                "client": "acme",
                "numbers": {
                    NUMBER: {
                        "rules": [
                            {
                                "name": "Immer",
                                "steps": [{"targets": [f"user:{BOB}"], "timeout": 10}],
                            }
                        ]
                    }
                },
            }
            assert api.put("/api/clients/acme/rules", json=rules).status_code == 200
            sent = api.post("/api/messages", json={"to": "carol", "text": "Rückruf bitte"})
            assert sent.status_code == 201, sent.text  # carol has no phone: queued
            up = api.post("/api/files", files={"file": ("a.txt", b"z" * 70_000, "text/plain")})
            assert up.status_code == 201, up.text
        with SipClient(srv.port) as alice, SipClient(srv.port) as bob:
            assert _register(bob, BOB, BOB_PW).status == 200
            assert _register(alice, ADMIN, "Falsches-Passwort-1").status in (401, 403)
            assert _register(alice, ADMIN, ADMIN_PW).status == 200

            def routed_call() -> SipMessage | None:
                """alice dials the number (404 until the server reloaded the office)."""
                aor = f"sip:{ADMIN}@{DOMAIN}"
                req = alice.request(
                    "INVITE", f"sip:{NUMBER}@{DOMAIN}", from_uri=aor,
                    to_uri=f"sip:{NUMBER}@{DOMAIN}",
                    headers=[("Contact", f"<sip:{ADMIN}@127.0.0.1:{alice.local_port}>")],
                )  # fmt: skip
                first = alice.final_response(req, 5)
                if first.status == 404:
                    return None
                assert first.status == 407, first.summary()
                alice.ack_non_2xx(req, first)
                ch = pick_challenge(first)
                value = digest_response(ch, method="INVITE", uri=f"sip:{NUMBER}@{DOMAIN}",
                                        username=ADMIN, password=ADMIN_PW)  # fmt: skip
                req2 = alice.request(
                    "INVITE", f"sip:{NUMBER}@{DOMAIN}", from_uri=aor,
                    to_uri=f"sip:{NUMBER}@{DOMAIN}", call_id=req.call_id,
                    from_tag=req.from_tag, cseq=req.cseq + 1,
                    headers=[("Contact", f"<sip:{ADMIN}@127.0.0.1:{alice.local_port}>"),
                             ("Proxy-Authorization", value)],
                )  # fmt: skip
                # bob's phone lets the INVITE go unanswered until the server sends it again
                invites: list[SipMessage] = []
                deadline = time.monotonic() + 10
                while len(invites) < 2:
                    assert time.monotonic() < deadline, "no INVITE (or no retransmission) at bob"
                    got = bob.recv(0.2)
                    if got is not None and got.method == "INVITE":
                        invites.append(got)
                    elif not invites:
                        early = alice.recv(0.01)  # refused: the office is not reloaded yet
                        if early is not None and (early.status or 0) >= 300:
                            alice.ack_non_2xx(req2, early)
                            return None
                _answer(bob, invites[-1], 486, "Busy Here")
                final = alice.final_response(req2, 10)
                assert final.status == 486, final.summary()
                alice.ack_non_2xx(req2, final)
                return final

            wait_until(routed_call, 15, interval=0.3, what="a routed call")

        def moved() -> dict | None:  # type: ignore[type-arg]
            now = _samples(allowed.get("/metrics").text)
            return now if _value(now, "heimbuero_calls_total", result="busy") >= 1 else None

        after = wait_until(moved, 10, what="the call's record in the metrics")
        v = _value
        assert v(after, "heimbuero_registrations") == 2
        assert v(after, "heimbuero_registered_users") == 2
        assert v(after, "heimbuero_calls_active") == 0
        assert v(after, "heimbuero_sip_retransmissions_total") >= 1
        assert v(after, "heimbuero_auth_failures_total") >= 1
        assert v(after, "heimbuero_security_events_total", event="auth-failure") >= 1
        assert v(after, "heimbuero_messages_queued") == 1
        assert v(after, "heimbuero_file_store_bytes") >= 70_000
        assert v(after, "heimbuero_sip_messages_total", kind="received") > v(
            before, "heimbuero_sip_messages_total", kind="received"
        )
        assert v(after, "heimbuero_http_responses_total", status="403") >= 3
        assert v(after, "heimbuero_http_responses_total", status="201") >= 5
        assert v(after, "heimbuero_store_write_seconds_count") > v(
            before, "heimbuero_store_write_seconds_count"
        )
        assert v(after, "heimbuero_event_loop_lag_seconds_count") > 0
        assert ("heimbuero_presence_subscriptions", ()) in after
        assert ("heimbuero_sip_transactions", ()) in after
        assert ("heimbuero_bans_total", ()) in after
        # the Grafana dashboard in docs/ shows only metrics that exist
        dashboard = json.loads((REPO_ROOT / "docs" / "grafana" / "heimbuero.json").read_text())
        exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
        names = {name for name, _ in after}
        for used in set(re.findall(r"\b(?:heimbuero|process)_\w+", exprs)):
            assert used in names, used
