"""The messages of a mailbox over HTTP and the command line, through the real `heimbuero
serve` on the demo office whose number goes to `voicemail:mueller`: a carrier's caller leaves
a message; its owner lists it (caller, time in the client's zone, length, new), downloads it
with a Range request (206, the right bytes), marks it heard (his registered phone gets
message-summary 0/1) and deletes it (row and WAV gone before the 204; the phone gets 0/0);
the CLI lists, marks and deletes the same (a mark by the CLI reaches the phone within a
minute, the server's housekeeping).

Abuse: another business's owner and a made-up box get the same 404; a message id of
mueller's box under schulz's URL is a 404 like a missing id (for staff as well); an employee
of the client reads the box but does not change it (403); a user's box is that user's."""

from __future__ import annotations

import contextlib
import json
import re
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from .harness import SipClient, reply, wait_until
from .test_voicemail_phone import CALLER, HIGH, LOW, NUMBER, leave, register, rows

pytestmark = [pytest.mark.e2e, pytest.mark.peers("espeak-ng")]

EMPLOYEE, EMPLOYEE_PW = "eva", "Leim-Zwinge-2024"


@pytest.fixture
def office(tmp_path: Path) -> Any:
    """The phone tests' office (mueller's number to his box) with an employee `eva` of
    mueller."""
    import json as _json

    from .harness import Server, free_port

    inbound = free_port()
    server = Server(
        tmp_path / "server", domain="heimbuero.test", demo=True, http=True,
        sip_options={"trusted_peers": [f"127.0.0.1:{inbound}"]},
    )  # fmt: skip
    server.prepare()
    data = str(server.data_dir)
    rules = tmp_path / "rules.json"
    steps = [{"targets": ["voicemail:mueller"], "timeout": 10}]
    rules.write_text(_json.dumps({"client": "mueller", "numbers": {
        NUMBER: {"rules": [{"name": "Mailbox", "steps": steps}]}}}), encoding="utf-8")  # fmt: skip
    server.cli("rules", "import", "mueller", str(rules), "--data", data)
    server.cli("user", "add", EMPLOYEE, "--password", EMPLOYEE_PW, "--role", "employee",
               "--data", data)  # fmt: skip
    server.cli("user", "set", EMPLOYEE, "--client", "mueller", "--data", data)
    with server:
        yield server, inbound


def summary(phone: SipClient, want: bytes, timeout: float = 10) -> Any:
    """Wait for the phone's message-summary NOTIFY with `want` (answering every NOTIFY)."""

    def got() -> str | None:
        msg = phone.recv(0.2)
        if msg is not None and msg.method == "NOTIFY":
            reply(phone, msg, "200 OK")
            if want in msg.body:
                return msg.body.decode()
        return None

    return wait_until(got, timeout, interval=0.0, what=f"message-summary {want!r}")


def drain(phone: SipClient) -> None:
    while (msg := phone.recv(0.5)) is not None:
        if msg.method == "NOTIFY":
            reply(phone, msg, "200 OK")


def same_404(a: httpx.Response, b: httpx.Response, a_key: str, b_key: str) -> None:
    """Both 404, with the same answer but for the key each one names."""
    assert a.status_code == b.status_code == 404, (a.text, b.text)
    assert a.json() == json.loads(b.text.replace(b_key, a_key)), (a.text, b.text)


def test_list_download_heard_delete_by_api_and_cli(office: Any) -> None:
    server, inbound = office
    pw = server.demo_passwords
    owner, admin = ("mueller", pw["mueller"]), ("admin", pw["admin"])
    box = "/api/voicemail/mueller/messages"
    data = ("--data", str(server.data_dir))
    with contextlib.ExitStack() as stack:
        phone = stack.enter_context(SipClient(server.port))  # his desk phone: message waiting
        register(server, phone)
        api = stack.enter_context(httpx.Client(base_url=server.http_url, timeout=30))
        assert api.get(box, auth=owner).json() == []
        before = datetime.now(UTC)
        leave(server, inbound, LOW)
        wait_until(lambda: len(rows(server)) == 1 or None, 10, what="the voicemail stored")
        summary(phone, b"Voice-Message: 1/0")
        drain(phone)
        [(vm_id, _, path)] = rows(server)
        wav = server.data_dir / path

        # the list: caller, time in the client's zone (Europe/Berlin), length, new
        r = api.get(box, auth=owner)
        assert r.status_code == 200, r.text
        [item] = r.json()
        assert item["id"] == vm_id and item["caller"] == CALLER and item["state"] == "new"
        assert 1.0 < item["seconds"] < 3.0, item
        at = datetime.fromisoformat(item["received_at"])
        assert at.utcoffset() == timedelta(hours=1), item  # CET in December
        assert before - timedelta(seconds=1) <= at <= datetime.now(UTC), item

        # the audio: whole, and a range of it (206 with exactly those bytes)
        audio = f"{box}/{vm_id}/audio"
        whole = api.get(audio, auth=owner)
        assert whole.status_code == 200 and whole.content == wav.read_bytes()
        assert whole.headers["content-type"] == "audio/wav"
        with wave.open(str(wav), "rb") as w:
            assert w.getframerate() == 8000 and w.getnchannels() == 1
        part = api.get(audio, auth=owner, headers={"Range": "bytes=1000-2999"})
        assert part.status_code == 206, part.status_code
        assert part.content == wav.read_bytes()[1000:3000]
        size = wav.stat().st_size
        assert part.headers["content-range"] == f"bytes 1000-2999/{size}"
        tail = api.get(audio, auth=owner, headers={"Range": "bytes=-100"})
        assert tail.status_code == 206 and tail.content == wav.read_bytes()[-100:]

        # an employee of the client reads, but does not change the box
        eva = (EMPLOYEE, EMPLOYEE_PW)
        assert api.get(box, auth=eva).json() == r.json()
        assert api.get(audio, auth=eva).content == wav.read_bytes()
        assert api.post(f"{box}/{vm_id}/heard", auth=eva).status_code == 403
        assert api.delete(f"{box}/{vm_id}", auth=eva).status_code == 403

        # another business: its owner sees no box, like a made-up one; mueller's message id
        # under schulz's box is a missing id, for its owner and for the admin
        schulz = ("schulz", pw["schulz"])
        same_404(api.get(box, auth=schulz), api.get("/api/voicemail/nobody/messages",
                 auth=schulz), "mueller", "nobody")  # fmt: skip
        same_404(api.get(audio, auth=schulz),
                 api.get("/api/voicemail/nobody/messages/1/audio", auth=schulz),
                 "mueller", "nobody")  # fmt: skip
        theirs = f"/api/voicemail/schulz/messages/{vm_id}"
        missing = "/api/voicemail/schulz/messages/987654"
        for who in (schulz, admin):
            same_404(api.get(f"{theirs}/audio", auth=who), api.get(f"{missing}/audio", auth=who),
                     str(vm_id), "987654")  # fmt: skip
            same_404(api.post(f"{theirs}/heard", auth=who), api.post(f"{missing}/heard", auth=who),
                     str(vm_id), "987654")  # fmt: skip
            same_404(api.delete(theirs, auth=who), api.delete(missing, auth=who),
                     str(vm_id), "987654")  # fmt: skip
        # a user's box is that user's (and the admins')
        assert api.get("/api/voicemail/anna/messages", auth=("anna", pw["anna"])).json() == []
        assert api.get("/api/voicemail/anna/messages", auth=owner).status_code == 404
        assert api.get("/api/voicemail/anna/messages", auth=admin).status_code == 200
        assert rows(server) == [(vm_id, 0, path)] and wav.is_file()  # nothing changed

        # heard: the row, the list and his phone's message waiting (0 new, 1 old)
        assert api.post(f"{box}/{vm_id}/heard", auth=owner).status_code == 204
        assert rows(server) == [(vm_id, 1, path)]
        assert "Messages-Waiting: no" in summary(phone, b"Voice-Message: 0/1")
        [item] = api.get(box, auth=owner).json()
        assert item["state"] == "heard"

        # the command line lists the same
        out = server.cli("voicemail", "list", "mueller", "--json", *data).stdout
        assert json.loads(out) == [item]
        out = server.cli("voicemail", "list", "mueller", *data).stdout
        assert re.search(rf"^\s*{vm_id}\s+\S+\s+\{CALLER}\s+\d+\.\d\s+heard$", out, re.M), out

        # delete: row and WAV gone before the 204; the list is empty; the phone shows 0/0
        assert api.delete(f"{box}/{vm_id}", auth=owner).status_code == 204
        assert rows(server) == [] and not wav.exists()
        assert api.get(box, auth=owner).json() == []
        assert api.get(audio, auth=owner).status_code == 404
        summary(phone, b"Voice-Message: 0/0")
        assert server.cli("voicemail", "list", "mueller", *data).stdout.strip() == "no messages"

        # the CLI marks and deletes too; its errors are one line
        leave(server, inbound, HIGH)
        wait_until(lambda: len(rows(server)) == 1 or None, 10, what="the second voicemail")
        [(second, _, second_path)] = rows(server)
        summary(phone, b"Voice-Message: 1/0")
        drain(phone)
        server.cli("voicemail", "heard", "mueller", str(second), *data)
        assert rows(server) == [(second, 1, second_path)]
        # another process: the server reads the boxes again within a minute, then the phone
        summary(phone, b"Voice-Message: 0/1", timeout=75)
        server.cli("voicemail", "delete", "mueller", str(second), *data)
        assert rows(server) == [] and not (server.data_dir / second_path).exists()
        for args in (("delete", "mueller", str(second)), ("heard", "schulz", str(vm_id)),
                     ("list", "nobody")):  # fmt: skip
            res = server.cli("voicemail", *args, *data, check=False)
            assert res.returncode != 0, res
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("heimbuero: error: "), res.stderr
