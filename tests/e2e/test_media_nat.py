"""Audio between two homes behind NAT routers, through the server's media relay.

The test builds a small internet in network namespaces (tests/e2e/netns.py): the server on
203.0.113.1, and two homes (192.168.178.0/24 and 192.168.1.0/24) each behind a masquerading
router. A baresip phone in each home registers and plays its own tone (700 Hz and 1100 Hz from
a WAV file); baresip's sndfile module records what each phone hears. Alice calls Bob.

- With `[media] relay = "when_needed"` (the default) each phone hears the other's tone.
- With `relay = "never"` the same call connects, but each phone's SDP names its private
  address, which the other home cannot reach: nobody hears anything. That is the failure the
  relay exists to fix, and it shows that the first result is the relay's doing.
- A carrier on the internet (a trusted peer) calls a client's number; the plan rings the
  agent's phone at home behind NAT; carrier and agent hear each other.

The relayed calls run with each backend of `[media] backend`: the built-in relay, and
rtpengine (Debian's rtpengine-daemon, userspace: `--table=-1`), which the test starts in the
server's namespace on the internet side and the server drives over its ng protocol.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import struct
import subprocess
import sys
import time
import wave
from pathlib import Path

import httpx
import pytest

from heimbuero.media import bencode
from heimbuero.media import ua_codec as c

from .conftest import USERS
from .harness import (
    HAND_OFFER,
    Baresip,
    Server,
    SipClient,
    free_port,
    hand_call,
    next_request,
    reply,
    set_toml_option,
    wait_until,
)
from .netns import NatLab

pytestmark = [pytest.mark.e2e, pytest.mark.peers("baresip", "nft", "ip")]

DOMAIN = "heimbuero.test"
TONES = {"alice": 700.0, "bob": 1100.0}


def write_tone(path: Path, hz: float, seconds: float = 20.0) -> None:
    """48 kHz stereo S16LE, what baresip's audio source is configured for."""
    rate, n = 48000, int(seconds * 48000)
    frames = bytearray()
    for i in range(n):
        v = int(8000 * math.sin(2 * math.pi * hz * i / rate))
        frames += struct.pack("<hh", v, v)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))


def power(samples: list[int], hz: float, rate: int) -> float:
    k = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - k * s1 * s2) / max(1, len(samples)) ** 2


def heard(folder: Path) -> tuple[list[int], int]:
    """The samples a phone decoded from the network (first channel), and their rate."""
    files = sorted(folder.glob("*dec*.wav"))
    if not files:
        return [], 8000
    with wave.open(str(files[-1]), "rb") as w:
        rate, channels, raw = w.getframerate(), w.getnchannels(), w.readframes(w.getnframes())
    samples = list(struct.unpack(f"<{len(raw) // 2}h", raw))[::channels]
    return samples, rate


BACKENDS = [
    pytest.param("builtin", id="builtin"),
    pytest.param("rtpengine", id="rtpengine", marks=pytest.mark.peers("rtpengine")),
]
NG_PORT = 2223


def use_backend(server: Server, backend: str) -> None:
    set_toml_option(server.config_path, "media", "backend", backend)
    if backend == "rtpengine":
        set_toml_option(server.config_path, "media", "rtpengine", f"udp:127.0.0.1:{NG_PORT}")


def start_rtpengine(lab: NatLab, stack: contextlib.ExitStack, folder: Path) -> None:
    """rtpengine in userspace in the server's namespace, media on the internet side; returns
    once it answers an ng ping."""
    folder.mkdir(parents=True, exist_ok=True)
    log = stack.enter_context((folder / "rtpengine.log").open("wb"))
    with lab.inside(lab.server_ns):
        proc = subprocess.Popen(
            ["rtpengine", "--config-file=none", "--table=-1", "--foreground",
             "--log-stderr", "--log-level=6", f"--interface={NatLab.SERVER}",
             f"--listen-ng=127.0.0.1:{NG_PORT}", "--port-min=20000", "--port-max=20999",
             "--num-threads=2"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        ping = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    stack.callback(proc.wait, 10)
    stack.callback(proc.terminate)

    def pong() -> bool | None:
        if proc.poll() is not None:
            raise AssertionError(f"rtpengine exited: {(folder / 'rtpengine.log').read_text()}")
        ping.sendto(b"1 " + bencode.encode({"command": "ping"}), ("127.0.0.1", NG_PORT))
        ping.settimeout(0.2)
        with contextlib.suppress(OSError):
            return b"pong" in ping.recv(1000) or None
        return None

    wait_until(pong, 10, what="rtpengine answering ng pings")


def media_stats_logged(server: Server) -> tuple[int, int]:
    """The packets the relay counted from caller and callee (the call record's statistics)."""
    pattern = r"caller sent (\d+) packets.*callee sent (\d+) packets"
    found = wait_until(lambda: re.search(pattern, server.log_text()), 10, what="media stats")
    return int(found.group(1)), int(found.group(2))


def call_through_nat(
    tmp_path: Path, relay: str, backend: str = "builtin"
) -> dict[str, tuple[list[int], int]]:
    reason = NatLab.available()
    if reason is not None:
        pytest.fail(f"the NAT test cannot build its networks: {reason}")
    server = Server(
        tmp_path / "server", domain=DOMAIN, users={u: USERS[u] for u in TONES},
        listen_host="0.0.0.0", transports=("udp",),
        sip_options={"advertise": NatLab.SERVER},
    )  # fmt: skip
    server.prepare()
    set_toml_option(server.config_path, "media", "relay", relay)
    use_backend(server, backend)
    out: dict[str, tuple[list[int], int]] = {}
    with NatLab() as lab, contextlib.ExitStack() as stack:
        if backend == "rtpengine":
            start_rtpengine(lab, stack, tmp_path / "rtpengine")
        stack.callback(server.kill)  # (also when the start fails)
        with lab.inside(lab.server_ns):
            server.start()
        stack.callback(server.stop)
        phones: dict[str, Baresip] = {}
        for (user, hz), home in zip(TONES.items(), lab.homes, strict=True):
            folder = tmp_path / user
            (folder / "heard").mkdir(parents=True)
            write_tone(folder / "tone.wav", hz)
            phone = Baresip(
                folder, user=user, password=USERS[user], server=server,
                answermode="auto" if user == "bob" else "manual",
                host=home.address, server_address=f"{NatLab.SERVER}:{server.port}",
                audio_source=f"aufile,{folder / 'tone.wav'}",
                extra_config=["module\t\t\tsndfile.so", f"snd_path\t\t{folder / 'heard'}"],
            )  # fmt: skip
            stack.callback(phone.stop)  # (also when the start fails)
            with lab.inside(home.ns):
                phone.start()
            phones[user] = phone
        for phone in phones.values():
            phone.wait_registered()
        alice, bob = phones["alice"], phones["bob"]
        alice.command("dial", f"sip:bob@{DOMAIN}")
        alice.wait_for_event("CALL_ESTABLISHED", 15)
        bob.wait_for_event("CALL_ESTABLISHED", 15)
        time.sleep(3.0)  # three seconds of conversation (the recordings are measured after)
        alice.command("hangup")
        bob.wait_for_event("CALL_CLOSED", 10)
        for user in TONES:
            folder = tmp_path / user / "heard"
            wait_until(lambda f=folder: any(f.glob("*dec*.wav")) or None, 5, what="recordings")
            out[user] = heard(folder)
        if relay != "never":  # the call's statistics from the relay: both sides sent audio
            assert min(media_stats_logged(server)) > 50, server.log_text()
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_phones_behind_two_nat_routers_hear_each_other_through_the_relay(
    tmp_path: Path, backend: str
) -> None:
    got = call_through_nat(tmp_path, "when_needed", backend)
    for user, other in (("alice", "bob"), ("bob", "alice")):
        samples, rate = got[user]
        assert len(samples) >= rate, f"{user} recorded {len(samples) / rate:.1f} s"
        # the loudest second: the other phone's tone, not silence and not its own
        second = max(
            (samples[i : i + rate] for i in range(0, len(samples) - rate + 1, rate // 2)),
            key=lambda s: sum(abs(x) for x in s),
        )
        theirs, own = power(second, TONES[other], rate), power(second, TONES[user], rate)
        assert theirs > 1000 and theirs > 50 * own, (user, theirs, own)


def test_without_the_relay_the_same_call_has_no_audio(tmp_path: Path) -> None:
    got = call_through_nat(tmp_path, "never")
    for user, other in (("alice", "bob"), ("bob", "alice")):
        samples, rate = got[user]
        assert power(samples, TONES[other], rate) < 1, f"{user} heard {other} without the relay"


CARRIER = "203.0.113.100"
NUMBER = "+49891234567"  # the demo client mueller's number


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_carrier_call_to_a_client_number_reaches_the_agent_at_home_with_audio(
    tmp_path: Path, backend: str
) -> None:
    """Also across hold and resume by the carrier (re-INVITEs through the proxy)."""
    reason = NatLab.available()
    if reason is not None:
        pytest.fail(f"the NAT test cannot build its networks: {reason}")
    inbound = free_port()
    server = Server(
        tmp_path / "server", domain=DOMAIN, demo=True, listen_host="0.0.0.0",
        transports=("udp",),
        sip_options={"advertise": NatLab.SERVER, "trusted_peers": [f"{CARRIER}:{inbound}"]},
    )  # fmt: skip
    server.prepare()
    rules = tmp_path / "rules.json"
    plan = {"name": "Agent", "steps": [{"targets": ["user:anna"], "timeout": 20}]}
    rules.write_text(
        json.dumps({"client": "mueller", "numbers": {NUMBER: {"rules": [plan]}}}),
        encoding="utf-8",
    )
    server.cli("rules", "import", "mueller", str(rules), "--data", str(server.data_dir))
    use_backend(server, backend)
    with NatLab() as lab, contextlib.ExitStack() as stack:
        lab.ip(lab.server_ns, "addr", "add", f"{CARRIER}/24", "dev", "br0")
        if backend == "rtpengine":
            start_rtpengine(lab, stack, tmp_path / "rtpengine")
        stack.callback(server.kill)  # (also when the start fails)
        with lab.inside(lab.server_ns):
            server.start()
            sip = stack.enter_context(
                SipClient(server.port, server_host=NatLab.SERVER, local_host=CARRIER,
                          local_port=inbound)
            )  # fmt: skip
            rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            rtp.bind((CARRIER, 0))
        stack.callback(server.stop)
        home = lab.homes[0]
        folder = tmp_path / "anna"
        (folder / "heard").mkdir(parents=True)
        write_tone(folder / "tone.wav", 1100)
        anna = Baresip(
            folder, user="anna", password=server.demo_passwords["anna"], server=server,
            answermode="auto", host=home.address,
            server_address=f"{NatLab.SERVER}:{server.port}",
            audio_source=f"aufile,{folder / 'tone.wav'}",
            extra_config=["module\t\t\tsndfile.so", f"snd_path\t\t{folder / 'heard'}"],
        )  # fmt: skip
        stack.callback(anna.stop)
        with lab.inside(home.ns):
            anna.start()
        anna.wait_registered()

        ruri = f"sip:{NUMBER}@{DOMAIN}"
        offer = (
            f"v=0\r\no=carrier 1 1 IN IP4 {CARRIER}\r\ns=-\r\nc=IN IP4 {CARRIER}\r\n"
            f"t=0 0\r\nm=audio {rtp.getsockname()[1]} RTP/AVP 8 101\r\n"
            "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        ).encode()
        caller = "+4915112345678"
        invite = sip.request(
            "INVITE", ruri, from_uri=f"sip:{caller}@{CARRIER}", to_uri=ruri,
            headers=[("Contact", f"<sip:{caller}@{CARRIER}:{inbound}>")],
            body=offer, content_type="application/sdp",
        )  # fmt: skip
        ok = sip.final_response(invite, 20)
        assert ok.status == 200, ok.summary
        answer = ok.body.decode()
        assert f"c=IN IP4 {NatLab.SERVER}" in answer, answer  # anchored: anna is behind NAT
        port = int(answer.split("m=audio ")[1].split()[0])
        contact = ok.header("Contact").split("<")[1].split(">")[0]  # type: ignore[union-attr]
        routes = ok.header_values("Record-Route")
        sip.send(sip.build_request(
            "ACK", contact, from_uri=invite.from_uri, to_uri=invite.to_uri,
            call_id=invite.call_id, from_tag=invite.from_tag, to_tag=ok.to_tag(),
            headers=[("Route", r) for r in routes],
        ))  # fmt: skip
        sender = c.RtpSender(4711, 8)
        tone = c.frames(tone_pcm(700, 8.0))

        def talk(seconds: float) -> list[int]:
            """Send the carrier's tone for `seconds`; what arrives meanwhile (anna's side)."""
            pcm = bytearray()
            start = time.monotonic()
            for i in range(int(seconds / 0.02)):
                rtp.sendto(sender.audio(tone.pop(0)), (NatLab.SERVER, port))
                while True:
                    rtp.settimeout(max(0.0, start + (i + 1) * 0.02 - time.monotonic()))
                    try:
                        data, _ = rtp.recvfrom(2048)
                    except (TimeoutError, BlockingIOError):
                        break
                    packet = c.RtpPacket.parse(data)
                    if packet.payload_type in (0, 8):
                        pcm += c.decode(packet.payload_type, packet.payload)
            return list(struct.unpack(f"<{len(pcm) // 2}h", bytes(pcm)))

        def reinvite(cseq: int, direction: str) -> str:
            """Hold (sendonly) or resume (sendrecv) by re-INVITE; the answer's SDP."""
            body = offer.replace(b"o=carrier 1 1", f"o=carrier 1 {cseq}".encode())
            req = sip.build_request(
                "INVITE", contact, from_uri=invite.from_uri, to_uri=invite.to_uri,
                call_id=invite.call_id, from_tag=invite.from_tag, to_tag=ok.to_tag(),
                cseq=cseq, headers=[("Route", r) for r in routes],
                body=body + f"a={direction}\r\n".encode(), content_type="application/sdp",
            )  # fmt: skip
            resp = sip.final_response(sip.send(req), 10)
            assert resp.status == 200, resp.summary
            sip.send(sip.build_request(
                "ACK", contact, from_uri=invite.from_uri, to_uri=invite.to_uri,
                call_id=invite.call_id, from_tag=invite.from_tag, to_tag=ok.to_tag(),
                cseq=cseq, headers=[("Route", r) for r in routes],
            ))  # fmt: skip
            return resp.body.decode()

        before = talk(3.0)
        # hold and resume: each answer names the same relay port, and the audio comes back
        for cseq, direction in ((2, "sendonly"), (3, "sendrecv")):
            sdp = reinvite(cseq, direction)
            assert f"c=IN IP4 {NatLab.SERVER}" in sdp and f"m=audio {port} " in sdp, sdp
            if direction == "sendonly":
                talk(1.0)
        after = talk(2.0)
        bye = sip.build_request(
            "BYE", contact, from_uri=invite.from_uri, to_uri=invite.to_uri,
            call_id=invite.call_id, from_tag=invite.from_tag, to_tag=ok.to_tag(), cseq=4,
            headers=[("Route", r) for r in routes],
        )  # fmt: skip
        assert sip.final_response(sip.send(bye), 10).status == 200
        anna.wait_for_event("CALL_CLOSED", 10)
        for samples in (before, after[-8000:]):
            assert len(samples) >= 8000, f"the carrier heard {len(samples) / 8000:.1f} s"
            assert power(samples, 1100, 8000) > 1000 * max(1.0, power(samples, 700, 8000))
        wait_until(lambda: any((folder / "heard").glob("*dec*.wav")) or None, 5, what="recording")
        heard_pcm, rate = heard(folder / "heard")
        loudest = max(
            (heard_pcm[i : i + rate] for i in range(0, len(heard_pcm) - rate + 1, rate // 2)),
            key=lambda s: sum(abs(x) for x in s),
        )
        assert power(loudest, 700, rate) > 50 * power(loudest, 1100, rate)


def tone_pcm(hz: float, seconds: float) -> bytes:
    n = int(seconds * 8000)
    return struct.pack(
        f"<{n}h", *(int(8000 * math.sin(2 * math.pi * hz * i / 8000)) for i in range(n))
    )


def processes() -> list[tuple[int, int, bytes]]:
    """(pid, parent's pid, command line) of every process."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            out.append((int(stat.parent.name), ppid, (stat.parent / "cmdline").read_bytes()))
        except (OSError, ValueError, IndexError):
            continue  # (gone meanwhile)
    return out


def may_run_realtime(priority: int) -> bool:
    """Whether this system lets a process like the relay take SCHED_FIFO at `priority` (root
    with CAP_SYS_NICE, an RLIMIT_RTPRIO that high, and no cgroup that forbids it)."""
    probe = f"import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param({priority}))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def test_a_relayed_call_without_audio_is_let_go_after_the_silence_timeout(
    tmp_path: Path,
) -> None:
    """Two hand-driven phones on loopback (`relay = "always"`, `silence_timeout = 1`): the call
    is anchored (the metric counts it); nobody sends RTP; within the relay's poll interval the
    call is let go: ports freed, the metric back to 0, and a BYE with `Reason: ... "No audio"`
    to each phone (tests/e2e/test_session_timer.py: the record of a routed call says why).
    `realtime_priority = 5`: the relay process runs with SCHED_FIFO at 5 where the system
    allows it (root has CAP_SYS_NICE), else the log says it was refused."""
    server = Server(tmp_path / "server", users=USERS, http=True)
    server.prepare()
    set_toml_option(server.config_path, "media", "relay", "always")
    set_toml_option(server.config_path, "media", "silence_timeout", 1)
    set_toml_option(server.config_path, "media", "realtime_priority", 5)

    def relayed() -> float:
        text = httpx.get(f"{server.http_url}/metrics", timeout=5).text
        line = next(ln for ln in text.splitlines() if ln.startswith("heimbuero_relay_calls "))
        return float(line.split()[1])

    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        alice = stack.enter_context(SipClient(server.port))
        bob = stack.enter_context(SipClient(server.port))
        _, inv = hand_call(server, alice, bob, USERS)
        assert b"m=audio 4000 " not in inv.body  # anchored: bob is told a relay port
        answer = HAND_OFFER.replace(b"o=a", b"o=b").replace(b"4000", b"4002")
        reply(bob, inv, "200 OK", f"Contact: <sip:bob@127.0.0.1:{bob.local_port}>\r\n"
              "Content-Type: application/sdp\r\n", answer)  # fmt: skip
        assert relayed() == 1
        [relay] = [pid for pid, ppid, cmdline in processes()
                   if ppid == server.pid and b"heimbuero.media.relay" in cmdline]  # fmt: skip
        if may_run_realtime(5):
            assert os.sched_getscheduler(relay) == os.SCHED_FIFO
            assert os.sched_getparam(relay).sched_priority == 5
        else:  # (a machine that refuses it: said in the log, and the relay works on)
            assert os.sched_getscheduler(relay) == os.SCHED_OTHER
            assert "real-time priority 5 refused" in server.log_text()
        wait_until(lambda: relayed() == 0 or None, 15, interval=0.5, what="the silent call let go")
        log = server.log_text()
        assert "no audio for 1 s; the relay lets it go; BYE sent to both ends" in log, log
        for phone, ends in ((alice, "to the caller"), (bob, "to the callee")):
            bye = next_request(phone, "BYE")
            assert bye.header("Call-ID") == inv.header("Call-ID"), (ends, bye.summary())
            assert bye.header("Reason") == 'SIP;cause=408;text="No audio"', (ends, bye.summary())
