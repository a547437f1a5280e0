"""The STUN keep-alive answer of RFC 5626 §8 (heimbuero.sip.stun), with the test vectors of
RFC 5769 (transaction ID and XOR-MAPPED-ADDRESS values of its §2.2 and §2.3)."""

from __future__ import annotations

import asyncio
import socket
import struct

from heimbuero.net.transport import TransportLimits, Transports
from heimbuero.services.guard import Guard, GuardSettings
from heimbuero.sip.peer import Peer
from heimbuero.sip.stun import binding_response, looks_like_stun

TXID = bytes.fromhex("b7e7a701bc34d686fa87dfae")  # RFC 5769 §2.1-2.3
COOKIE = bytes.fromhex("2112a442")


def request(attrs: bytes = b"", kind: int = 0x0001, length: int | None = None) -> bytes:
    size = len(attrs) if length is None else length
    return struct.pack("!HH", kind, size) + COOKIE + TXID + attrs


def test_ipv4_answer_matches_rfc5769_sample_response() -> None:
    answer = binding_response(request(), "192.0.2.1", 32853)
    assert answer == bytes.fromhex(
        "0101000c" "2112a442" "b7e7a701bc34d686fa87dfae"
        "00200008" "0001a147" "e112a643"  # RFC 5769 §2.2: XOR-MAPPED-ADDRESS 192.0.2.1:32853
    )  # fmt: skip


def test_ipv6_answer_matches_rfc5769_sample_response() -> None:
    answer = binding_response(request(), "2001:db8:1234:5678:11:2233:4455:6677", 32853)
    assert answer == bytes.fromhex(
        "01010018" "2112a442" "b7e7a701bc34d686fa87dfae"
        "00200014" "0002a147" "0113a9faa5d3f179bc25f4b5bed2b9d9"  # RFC 5769 §2.3
    )  # fmt: skip


def test_optional_attributes_are_skipped_and_the_answer_stays_small() -> None:
    software = bytes.fromhex("80220010") + b"STUN test client"
    fingerprint = bytes.fromhex("80280004e57a3bcf")
    req = request(software + fingerprint)
    answer = binding_response(req, "203.0.113.9", 5060)
    assert answer is not None and len(answer) == 32 and answer[8:20] == TXID
    # never more than about twice the smallest request (no amplification)
    assert len(binding_response(request(), "2001:db8::1", 1) or b"") <= 2 * 20 + 4


def test_rfc5769_sample_request_with_credentials_is_not_answered() -> None:
    # the attributes of RFC 5769 §2.1: PRIORITY and USERNAME must be understood, and
    # MESSAGE-INTEGRITY needs a password this server does not have: no answer
    attrs = (
        bytes.fromhex("80220010") + b"STUN test client"
        + bytes.fromhex("002400046e0001ff")
        + bytes.fromhex("80290008932ff9b151263b36")
        + bytes.fromhex("00060009") + b"evtj:h6vY   "
        + bytes.fromhex("00080014") + bytes(20)
        + bytes.fromhex("80280004e57a3bcf")
    )  # fmt: skip
    req = request(attrs)
    assert struct.unpack_from("!H", req, 2)[0] == 0x58  # (the sample's length)
    assert looks_like_stun(req)
    assert binding_response(req, "192.0.2.1", 32853) is None


def test_malformed_and_other_messages_get_no_answer() -> None:
    assert not looks_like_stun(b"OPTIONS sip:x SIP/2.0\r\n\r\n" + bytes(20))
    assert not looks_like_stun(b"\r\n\r\n")
    assert not looks_like_stun(request()[:19])
    bad_cookie = request()[:4] + b"\x00\x00\x00\x00" + TXID
    assert binding_response(bad_cookie, "192.0.2.1", 1) is None
    assert binding_response(request(kind=0x0101), "192.0.2.1", 1) is None  # a response
    assert binding_response(request(kind=0x0011), "192.0.2.1", 1) is None  # an indication
    assert binding_response(request(length=8), "192.0.2.1", 1) is None  # length != datagram
    assert binding_response(request(b"\x80\x22\x00"), "192.0.2.1", 1) is None  # not /4
    truncated = bytes.fromhex("80220010") + b"short"  # attribute longer than the message
    assert binding_response(request(truncated + b"\0\0\0"), "192.0.2.1", 1) is None
    huge = bytes.fromhex("802201f8") + bytes(0x1F8) + bytes.fromhex("80220040") + bytes(64)
    assert binding_response(request(huge), "192.0.2.1", 1) is None  # over 548 bytes
    assert binding_response(request(), "not-an-address", 1) is None


def test_a_flooding_source_gets_no_stun_answers_on_the_sip_port() -> None:
    """STUN on the SIP socket counts against the same flood limit and ban list as SIP (the
    real transports and the real guard): a banned source is no reflector."""

    class Endpoint:
        def __init__(self) -> None:
            self.guard = Guard(GuardSettings(rate=1, burst=3, ban_time=60))

        def admit(self, source: Peer, now: float) -> bool:
            return self.guard.admit(source.host, now)

        def receive(self, data: bytes, source: Peer, now: float) -> None:
            pass

    async def scenario() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        t = Transports(Endpoint(), TransportLimits())  # type: ignore[arg-type]
        await t.listen("udp", "127.0.0.1", port)
        loop = asyncio.get_running_loop()
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setblocking(False)
        answers = 0
        try:
            for _ in range(10):
                client.sendto(request(), ("127.0.0.1", port))
                try:
                    await asyncio.wait_for(loop.sock_recv(client, 100), 0.3)
                    answers += 1
                except TimeoutError:
                    pass
        finally:
            client.close()
            await t.close()
        return answers

    assert asyncio.run(scenario()) == 3  # the burst, then banned: no more answers
