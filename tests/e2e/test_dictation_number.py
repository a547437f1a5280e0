"""A client's dictation number, through the real `heimbuero serve` on the demo office: a
number of Tischlerei Müller marked with `heimbuero number add … --dictation` takes the
owner's call from his mobile through the carrier (his number as the carrier states it) to
dictation by phone: prompt, beep, he speaks (a 440 Hz tone) and hangs up, and the job is in
the typists' queue for his client, in his name. The owner's own desk phone reaches it, too.
Refused with a reason, and no job: a caller the client does not know (a stranger who learnt
the number), a forged P-Asserted-Identity from a phone that is not the carrier (it is
stripped, the caller must log in, and another client's user is no user of this client), and
staff."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from heimbuero.media import ua_codec as c

from .audio import media_port, offer, speak, tone
from .harness import (
    LOCALHOST,
    Server,
    SipClient,
    digest_response,
    free_port,
    in_dialog,
    pick_challenge,
    wait_until,
)
from .test_dictation_phone import quiet

pytestmark = [pytest.mark.e2e, pytest.mark.peers("espeak-ng")]

DOMAIN = "heimbuero.test"
DICTATION = "+49891239999"  # Tischlerei Müller's dictation number
MUELLER_MOBILE = "+491701111111"  # the demo owner's mobile


@pytest.fixture
def office(tmp_path: Path) -> Any:
    inbound = free_port()
    srv = Server(tmp_path / "server", domain=DOMAIN, demo=True, http=True,
                 sip_options={"trusted_peers": [f"127.0.0.1:{inbound}"]})  # fmt: skip
    srv.prepare()
    added = srv.cli("number", "add", "089 1239999", "--client", "mueller", "--dictation",
                    "--data", str(srv.data_dir))  # fmt: skip
    assert f"added dictation number {DICTATION} to client mueller" in added.stdout
    listed = srv.cli("number", "list", "--data", str(srv.data_dir)).stdout
    assert any(line.split() == [DICTATION, "mueller", "dictation"] for line in listed.splitlines())
    srv.inbound_port = inbound  # type: ignore[attr-defined]
    with srv:
        yield srv


def call(sip: SipClient, user: str, password: str, sdp: bytes,
         extra: list[tuple[str, str]] | None = None) -> tuple[Any, Any]:  # fmt: skip
    """An authenticated INVITE from `user`'s phone to the dictation number (with `extra`
    headers); (the INVITE sent, its final answer)."""
    ruri = f"sip:{DICTATION}@{DOMAIN}"
    headers = [("Contact", f"<sip:{user}@127.0.0.1:{sip.local_port}>"), *(extra or [])]
    first = sip.request("INVITE", ruri, from_uri=f"sip:{user}@{DOMAIN}", to_uri=ruri,
                        body=sdp, content_type="application/sdp", headers=headers)  # fmt: skip
    challenge = sip.final_response(first, 5)
    assert challenge.status == 407, challenge.summary()
    sip.ack_non_2xx(first, challenge)
    auth = digest_response(pick_challenge(challenge, "MD5"), method="INVITE", uri=ruri,
                           username=user, password=password)  # fmt: skip
    inv = sip.request(
        "INVITE", ruri, from_uri=f"sip:{user}@{DOMAIN}", to_uri=ruri, call_id=first.call_id,
        from_tag=first.from_tag, cseq=2, body=sdp, content_type="application/sdp",
        headers=[*headers, ("Proxy-Authorization", auth)],
    )  # fmt: skip
    return inv, sip.final_response(inv, 20)


def carrier_call(carrier: SipClient, caller: str, sdp: bytes, pai: str | None = None) -> Any:
    ruri = f"sip:{DICTATION}@{DOMAIN}"
    headers = [("Contact", f"<sip:{caller}@127.0.0.1:{carrier.local_port}>")]
    if pai:
        headers.append(("P-Asserted-Identity", f"<sip:{pai}@carrier.example>"))
    return carrier.request("INVITE", ruri, from_uri=f"sip:{caller}@127.0.0.1", to_uri=ruri,
                           body=sdp, content_type="application/sdp", headers=headers)  # fmt: skip


def queue(srv: Server) -> list[dict[str, Any]]:
    anna = ("anna", srv.demo_passwords["anna"])
    jobs: list[dict[str, Any]] = httpx.get(f"{srv.http_url}/api/dictation/queue", auth=anna,
                                           timeout=10).json()  # fmt: skip
    return jobs


def dictate(sip: SipClient, rtp: socket.socket, inv: Any, ok: Any, seconds: float) -> None:
    """After the 200: ACK, the prompt and beep, a tone of `seconds`, then hang up."""
    assert ok.status == 200, ok.summary()
    media = media_port(ok)
    in_dialog(sip, "ACK", inv, ok, inv.cseq)
    rtp.settimeout(3)
    rtp.recvfrom(2048)  # the prompt plays
    wait_until(lambda: quiet(rtp) or None, 20, interval=0.0, what="the prompt and beep")
    speak(rtp, c.RtpSender(99, 8, timestamp=1000), media, tone(440, seconds))
    bye = in_dialog(sip, "BYE", inv, ok, inv.cseq + 1)
    assert sip.final_response(bye, 5).status == 200


def test_the_owner_calls_the_dictation_number_from_his_mobile(office: Server) -> None:
    srv = office
    with contextlib.ExitStack() as stack:
        rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rtp.bind((LOCALHOST, 0))
        carrier = stack.enter_context(
            SipClient(srv.port, local_port=srv.inbound_port)  # type: ignore[attr-defined]
        )
        # his mobile as the carrier asserts it; the From is what the carrier chose to show
        inv = carrier_call(carrier, "anonymous", offer(rtp.getsockname()[1]), pai=MUELLER_MOBILE)
        ok = carrier.final_response(inv, 20)
        dictate(carrier, rtp, inv, ok, 2.0)

    def job() -> dict[str, Any] | None:
        return next((j for j in queue(srv) if j["source"] == "phone"), None)

    found = wait_until(job, 10, interval=0.3, what="the dictation in the queue")
    assert (found["client"], found["author"], found["state"]) == ("mueller", "mueller", "new")
    assert 1.8 <= found["audio_seconds"] <= 2.3, found
    # the author sees it; another client's owner does not
    mine = httpx.get(f"{srv.http_url}/api/dictation/jobs", timeout=10,
                     auth=("mueller", srv.demo_passwords["mueller"])).json()  # fmt: skip
    assert [j["id"] for j in mine] == [found["id"]]
    theirs = httpx.get(f"{srv.http_url}/api/dictation/jobs", timeout=10,
                       auth=("schulz", srv.demo_passwords["schulz"])).json()  # fmt: skip
    assert theirs == []
    assert "dictation number +49891239999, dictation of mueller for mueller" in srv.log_text()


def test_the_owners_desk_phone_reaches_it_too(office: Server) -> None:
    srv = office
    with contextlib.ExitStack() as stack:
        rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rtp.bind((LOCALHOST, 0))
        sip = stack.enter_context(SipClient(srv.port))
        inv, ok = call(sip, "mueller", srv.demo_passwords["mueller"], offer(rtp.getsockname()[1]))
        dictate(sip, rtp, inv, ok, 1.5)
    found = wait_until(lambda: queue(srv) or None, 10, interval=0.3, what="the job")
    assert [(j["client"], j["author"], j["source"]) for j in found] == [
        ("mueller", "mueller", "phone")
    ]


def test_strangers_other_clients_and_staff_are_refused(office: Server) -> None:
    srv = office
    with SipClient(srv.port, local_port=srv.inbound_port) as carrier:  # type: ignore[attr-defined]
        for caller, pai in (("+4930555123", None), ("anonymous", "+4930555123"),
                            ("anonymous", None)):  # fmt: skip
            inv = carrier_call(carrier, caller, offer(4000), pai)
            answer = carrier.final_response(inv, 5)
            assert answer.status == 403, answer.summary()
            assert "Caller not known as a user of this client" in (answer.header("Reason") or ""), (
                answer.summary()
            )
            carrier.ack_non_2xx(inv, answer)
    # schulz's phone, claiming to be müller's mobile: not the carrier, so the claim is
    # dropped, and schulz is no user of Tischlerei Müller; staff neither
    claim = [("P-Asserted-Identity", f"<sip:{MUELLER_MOBILE}@{DOMAIN}>")]
    for user in ("schulz", "anna"):
        with SipClient(srv.port) as sip:
            inv, answer = call(sip, user, srv.demo_passwords[user], offer(4000), claim)
            assert answer.status == 403, answer.summary()
            assert "client's own phones only" in (answer.header("Reason") or ""), answer.summary()
            sip.ack_non_2xx(inv, answer)
    assert queue(srv) == []
