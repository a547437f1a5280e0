"""The built-in relay as a real process on loopback: control socket, forwarding, latching,
hijack refusal, a flood at unallocated ports, port exhaustion, statistics on delete."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from heimbuero.media.relay_client import RelayClient, RelayUnavailable
from tests.e2e.harness import LOCALHOST, Server, free_ports, set_toml_option, wait_until


def rtp(seq: int, ssrc: bytes) -> bytes:
    return (
        bytes([0x80, 8])
        + seq.to_bytes(2, "big")
        + (seq * 160).to_bytes(4, "big")
        + ssrc
        + b"\xd5" * 160
    )


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOCALHOST, 0))
    s.settimeout(2.0)
    return s


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[tuple[str, list[int]]]:
    ports = free_ports(5, consecutive=True)  # room for exactly one call (two RTP/RTCP pairs)
    base = ports[0] + ports[0] % 2
    control = str(tmp_path / "relay.sock")
    log = (tmp_path / "relay.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "heimbuero.media.relay", "--control", control, "--bind", LOCALHOST,
         "--port-min", str(base), "--port-max", str(base + 3), "--silence-timeout", "1"],
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    try:
        wait_until(lambda: Path(control).exists(), 10, what="relay control socket")
        yield control, [base, base + 2]
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_relay_forwards_latches_refuses_hijack_and_reports_stats(
    relay: tuple[str, list[int]],
) -> None:
    control, _ = relay
    phone_a, phone_b, attacker = udp(), udp(), udp()

    async def flow() -> dict[str, object]:
        client = RelayClient(control, timeout=2.0)
        offer = await client.command("offer", call_id="c1", address=list(phone_a.getsockname()))
        answer = await client.command("answer", call_id="c1", address=list(phone_b.getsockname()))
        assert offer["ok"] and answer["ok"], (offer, answer)
        to_a_leg = (LOCALHOST, answer["port"])  # the answer's SDP, rewritten, goes to phone_a
        to_b_leg = (LOCALHOST, offer["port"])
        # a -> b before b sent anything: goes to b's SDP address
        phone_a.sendto(rtp(1, b"AAAA"), to_a_leg)
        assert phone_b.recvfrom(2048)[0] == rtp(1, b"AAAA")
        phone_b.sendto(rtp(1, b"BBBB"), to_b_leg)
        data, src = phone_a.recvfrom(2048)
        assert data == rtp(1, b"BBBB") and src == to_a_leg  # symmetric: from the port a sends to
        # hijack: a third party sends to both legs after latching -> nothing forwarded
        for seq in range(2, 50):
            attacker.sendto(rtp(seq, b"EVIL"), to_a_leg)
            attacker.sendto(rtp(seq, b"EVIL"), to_b_leg)
        phone_a.sendto(rtp(2, b"AAAA"), to_a_leg)
        assert phone_b.recvfrom(2048)[0] == rtp(2, b"AAAA")  # the next one b gets is a's
        second = await client.command("offer", call_id="c2", address=["127.0.0.1", 9])
        assert second == {"ok": False, "error": "no free relay ports"}
        query = await client.command("query", call_id="c1")
        deleted = await client.command("delete", call_id="c1")
        await client.close()
        return {"query": query, "deleted": deleted}

    result = asyncio.run(flow())
    stats = result["deleted"]["stats"]  # type: ignore[index]
    assert stats["a"]["packets"] == 2 and stats["a"]["dropped"] == 48
    assert stats["b"]["packets"] == 1 and stats["b"]["dropped"] == 48


def test_flood_at_unallocated_ports_and_garbage_commands_leave_the_relay_working(
    relay: tuple[str, list[int]],
) -> None:
    control, ports = relay
    flooder = udp()
    deadline = time.monotonic() + 1.0
    sent = 0
    while time.monotonic() < deadline:
        for port in ports:
            with _refused_is_fine():
                flooder.sendto(b"\x80" * 200, (LOCALHOST, port))
                sent += 1

    async def check() -> None:
        client = RelayClient(control, timeout=2.0)
        _, writer = await asyncio.open_unix_connection(control)
        writer.write(b"{not json\n[1,2]\n")
        writer.close()
        assert (await client.command("ping")) == {"ok": True}
        assert (await client.command("bogus"))["ok"] is False
        ok = await client.command("offer", call_id="x", address=["127.0.0.1", 9])
        assert ok["ok"], ok
        await client.close()
        with pytest.raises(RelayUnavailable):
            await RelayClient(control + ".missing", timeout=0.5).command("ping")

    asyncio.run(check())
    assert sent > 100


class _refused_is_fine:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return isinstance(exc[1], ConnectionRefusedError)


def test_the_relay_of_a_killed_server_lets_its_ports_go(tmp_path: Path) -> None:
    """kill -9 of `heimbuero serve` leaves no relay process holding the ports its successor
    needs: the relay watches its parent. The restarted server relays the next call again."""
    server = Server(tmp_path / "server")
    server.prepare()
    ports = free_ports(8, consecutive=True)
    set_toml_option(server.config_path, "media", "relay", "always")
    set_toml_option(server.config_path, "media", "port_min", ports[0])
    set_toml_option(server.config_path, "media", "port_max", ports[-1])
    server.start()
    try:
        assert server.proc is not None
        pid = server.proc.pid

        def relays() -> list[int]:
            out = []
            for entry in Path("/proc").iterdir():
                try:
                    cmd = (entry / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if b"heimbuero.media.relay" in cmd and f"{pid}".encode() in cmd:
                    out.append(int(entry.name))
            return out

        assert relays(), "serve started no relay process"
        os.kill(pid, signal.SIGKILL)
        server.proc.wait(5)
        wait_until(lambda: not relays(), 5, interval=0.1, what="the orphaned relay to exit")
        server.start()  # (its relay binds the same ports)
        assert server.alive()
    finally:
        server.kill()


def test_rtcp_is_forwarded_unchanged_junk_and_all_and_reports_land_in_the_stats(
    relay: tuple[str, list[int]],
) -> None:
    """rtcp-mux on the RTP port: a receiver report and junk with an RTCP packet type both
    cross byte for byte; only the well-formed report counts. Junk clock rates are ignored."""
    control, _ = relay
    phone_a, phone_b = udp(), udp()
    block = b"AAAA" + bytes([128]) + (7).to_bytes(3, "big") + b"\x00" * 4
    block += (160).to_bytes(4, "big") + b"\x00" * 8  # 50 % lost, 7 in all, jitter 160 = 20 ms
    report = bytes([0x81, 201, 0, 7]) + b"BBBB" + block
    junk = [bytes([0x80, 201, 0xFF, 0xFF]) + b"\xee" * 40, bytes([0x80, 200]), report[:-3]]

    async def flow() -> dict[str, object]:
        client = RelayClient(control, timeout=2.0)
        rates = {"8": "x", "96": -1, "junk": 8000, "x" * 5000: 1}
        offer = await client.command("offer", call_id="c1", address=list(phone_a.getsockname()),
                                     rates=rates)  # fmt: skip
        answer = await client.command("answer", call_id="c1", address=list(phone_b.getsockname()),
                                      rates=["not", "a", "map"])  # fmt: skip
        assert offer["ok"] and answer["ok"], (offer, answer)
        to_a_leg, to_b_leg = (LOCALHOST, answer["port"]), (LOCALHOST, offer["port"])
        for seq in range(1, 6):
            phone_a.sendto(rtp(seq, b"AAAA"), to_a_leg)
            assert phone_b.recvfrom(2048)[0] == rtp(seq, b"AAAA")
        phone_b.sendto(rtp(1, b"BBBB"), to_b_leg)
        phone_a.recvfrom(2048)
        for packet in [*junk, report]:
            phone_b.sendto(packet, to_b_leg)
            assert phone_a.recvfrom(2048)[0] == packet  # (the relay never alters a packet)
        deleted = await client.command("delete", call_id="c1")
        await client.close()
        return deleted

    stats = asyncio.run(flow())["stats"]
    assert stats["a"]["packets"] == 5 and stats["a"]["loss_pct"] == 0.0, stats  # type: ignore[index]
    assert stats["a"]["reported"] == {"reports": 1, "loss_pct": 50.0, "lost": 7,  # type: ignore[index]
                                      "jitter_ms": 20.0}  # fmt: skip
    assert "reported" not in stats["b"], stats  # type: ignore[index]
