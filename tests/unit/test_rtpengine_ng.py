"""rtpengine's ng protocol: bencoding, and the client's cookies, retransmissions, timeouts and
the replies it must not believe (another source, an unknown cookie, an oversize datagram)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from heimbuero.media import bencode
from heimbuero.media.ng import NgClient, NgError, NgUnavailable, parse_ng_address

# -- bencode ---------------------------------------------------------------------------------


def test_bencode_encodes_sorted_and_decodes_back() -> None:
    value = {"sdp": b"v=0\r\n", "command": "offer", "flags": ["trust-address"], "n": -3}
    raw = bencode.encode(value)
    assert raw == b"d7:command5:offer5:flagsl13:trust-addresse1:ni-3e3:sdp5:v=0\r\ne"
    assert bencode.decode(raw) == {
        "command": b"offer", "flags": [b"trust-address"], "n": -3, "sdp": b"v=0\r\n",
    }  # fmt: skip
    assert bencode.decode(b"0:") == b""


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "truncated"),
        (b"d3:abc", "truncated"),
        (b"l", "truncated list"),
        (b"i12", "truncated integer"),
        (b"i1x2e", "bad integer"),
        (b"ie", "bad integer"),
        (b"5:abc", "past the end"),
        (b"-1:a", "unexpected byte"),
        (b"99999999999:a", "bad string length"),
        (b"i1ei2e", "trailing data"),
        (b"di1ei2ee", "key is no string"),
        (b"x", "unexpected byte"),
        (b"l" * 100 + b"e" * 100, "nested too deeply"),
    ],
)
def test_bencode_refuses_malformed_input(raw: bytes, message: str) -> None:
    with pytest.raises(bencode.BencodeError, match=message):
        bencode.decode(raw)


def test_bencode_has_no_booleans_or_floats() -> None:
    for value in (True, 1.5, None, {1: 2}):
        with pytest.raises(bencode.BencodeError):
            bencode.encode(value)


# -- the ng address --------------------------------------------------------------------------


def test_ng_addresses() -> None:
    assert parse_ng_address("udp:127.0.0.1:2223") == ("127.0.0.1", 2223)
    assert parse_ng_address("10.0.0.2:2223") == ("10.0.0.2", 2223)
    assert parse_ng_address("udp:[::1]:9900") == ("::1", 9900)
    for bad in ("tcp:1.2.3.4:5", "udp:1.2.3.4", "udp:host.example:5", "udp:1.2.3.4:70000"):
        with pytest.raises(ValueError):
            parse_ng_address(bad)


# -- the client against a UDP peer that answers as a test says -----------------------------

Reply = Callable[[bytes, dict[str, Any], int], list[tuple[bytes, str]]]
# (cookie, command, how many datagrams came) -> [(datagram, "ng" | "other")] to send back


class _Peer(asyncio.DatagramProtocol):
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.seen: list[bytes] = []
        self.transport: Any = None
        self.other: Any = None  # a second socket: replies "from another address"

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.seen.append(data)
        cookie, _, body = data.partition(b" ")
        for out, via in self.reply(cookie, bencode.decode(body), len(self.seen)):
            (self.transport if via == "ng" else self.other).sendto(out, addr)


async def _run(reply: Reply, command: str = "ping", **client: Any) -> tuple[Any, _Peer, int]:
    loop = asyncio.get_running_loop()
    peer = _Peer(reply)
    transport, _ = await loop.create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
    other, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    peer.other = other
    ng = NgClient(transport.get_extra_info("sockname")[:2], **client)
    try:
        try:
            answer: Any = await ng.command(command, **{"call-id": "c1"})
        except (NgError, NgUnavailable) as exc:
            answer = exc
    finally:
        ng.close()
        transport.close()
        other.close()
    return answer, peer, ng.dropped


def _ok(cookie: bytes, **fields: Any) -> bytes:
    return cookie + b" " + bencode.encode({"result": "ok", **fields})


def test_a_command_gets_its_answer_by_cookie() -> None:
    def reply(cookie: bytes, cmd: dict[str, Any], n: int) -> list[tuple[bytes, str]]:
        assert cmd == {"command": b"query", "call-id": b"c1"}
        return [(_ok(cookie, sdp="x"), "ng")]

    answer, peer, dropped = asyncio.run(_run(reply, "query"))
    assert answer == {"result": b"ok", "sdp": b"x"}
    assert len(peer.seen) == 1 and dropped == 0


def test_a_reply_with_another_cookie_is_ignored() -> None:
    def reply(cookie: bytes, cmd: dict[str, Any], n: int) -> list[tuple[bytes, str]]:
        return [(_ok(b"forged" + cookie, who="forger"), "ng"), (_ok(cookie, who="ng"), "ng")]

    answer, _, dropped = asyncio.run(_run(reply))
    assert answer["who"] == b"ng" and dropped == 1


def test_a_reply_from_another_address_is_ignored_even_with_the_right_cookie() -> None:
    def reply(cookie: bytes, cmd: dict[str, Any], n: int) -> list[tuple[bytes, str]]:
        forged = (_ok(cookie, who="forger"), "other")
        return [forged] if n == 1 else [forged, (_ok(cookie, who="ng"), "ng")]

    answer, peer, dropped = asyncio.run(_run(reply, timeout=3.0, interval=0.1))
    assert answer["who"] == b"ng"  # (only on the retransmission did the real one answer)
    assert len(peer.seen) == 2 and dropped == 2


def test_lost_datagrams_are_sent_again_with_the_same_cookie() -> None:
    def reply(cookie: bytes, cmd: dict[str, Any], n: int) -> list[tuple[bytes, str]]:
        return [(_ok(cookie), "ng")] if n == 3 else []

    answer, peer, _ = asyncio.run(_run(reply, timeout=3.0, interval=0.1))
    assert answer == {"result": b"ok"}
    assert len(peer.seen) == 3 and len(set(peer.seen)) == 1  # the same datagram each time


def test_no_answer_fails_in_bounded_time_without_blocking_the_loop() -> None:
    ticks: list[float] = []

    async def both() -> Any:
        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.05)

        task = asyncio.get_running_loop().create_task(ticker())
        try:
            return await _run(lambda cookie, cmd, n: [], timeout=0.6, interval=0.2)
        finally:
            task.cancel()

    start = time.monotonic()
    answer, peer, _ = asyncio.run(both())
    assert isinstance(answer, NgUnavailable) and "did not answer ping" in str(answer)
    assert time.monotonic() - start < 5.0  # (bounded by the timeout, with a generous margin)
    assert len(peer.seen) == 3  # sent at 0, 0.2 and 0.4 s
    assert len(ticks) >= 5  # the loop went on while the command waited


def test_an_oversize_reply_is_dropped() -> None:
    def reply(cookie: bytes, cmd: dict[str, Any], n: int) -> list[tuple[bytes, str]]:
        return [(_ok(cookie, sdp="x" * 40000), "ng")]

    answer, peer, dropped = asyncio.run(_run(reply, timeout=0.5, interval=0.2))
    assert isinstance(answer, NgUnavailable)
    assert dropped == len(peer.seen) >= 2


def test_a_malformed_reply_is_dropped_and_an_error_is_raised_with_its_reason() -> None:
    def reply(cookie: bytes, cmd: dict[str, Any], n: int) -> list[tuple[bytes, str]]:
        error = cookie + b" " + bencode.encode({"result": "error", "error-reason": "Unknown"})
        return [(cookie + b" d3:abc", "ng"), (cookie + b" l", "ng"), (error, "ng")]

    answer, _, dropped = asyncio.run(_run(reply))
    assert isinstance(answer, NgError) and str(answer) == "Unknown"
    assert dropped == 2
