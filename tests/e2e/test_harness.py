"""Checks of the end-to-end harness itself, without the server: when these fail, the e2e
failures are the harness's (or the machine's), not heimbuero's."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from .harness import (
    LOCALHOST,
    digest_response,
    free_ports,
    parse_challenge,
    parse_message,
    run_sipp,
    set_toml_option,
    split_frame,
    start_sipp_uas,
)


def test_free_ports_are_free_for_udp_and_tcp_and_never_repeat() -> None:
    ports = free_ports(5) + free_ports(4, consecutive=True)
    assert len(set(ports)) == len(ports)
    block = ports[5:]
    assert block == list(range(block[0], block[0] + 4))
    for port in ports:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind((LOCALHOST, port))


def test_digest_response_matches_rfc_2617_example() -> None:
    # RFC 2617 3.5 (the HTTP example; the computation is the same for SIP)
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    value = digest_response(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        cnonce="0a4f113b",
    )
    assert 'response="6629fae49393a05397450978507c4ef1"' in value
    assert 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in value


def test_parse_and_frame_messages() -> None:
    raw = (
        b"SIP/2.0 407 Proxy Authentication Required\r\n"
        b"v: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n"
        b"To: <sip:bob@example.test>;tag=abc\r\n"
        b"i: x@y\r\nCSeq: 2 INVITE\r\n"
        b'Proxy-Authenticate: Digest realm="example.test",\r\n nonce="n", algorithm=MD5\r\n'
        b"l: 0\r\n\r\n"
    )
    msg = parse_message(raw)
    assert msg.status == 407 and msg.cseq == (2, "INVITE") and msg.to_tag() == "abc"
    assert (
        msg.header("Call-ID") == "x@y"
        and msg.header(
            "via",
        )
        is not None
    )
    assert parse_challenge(msg.header("Proxy-Authenticate") or "")["nonce"] == "n"
    framed = split_frame(b"\r\n\r\n" + raw + raw[:20])
    assert framed is not None and framed[0] == raw and framed[1] == raw[:20]


def test_set_toml_option_replaces_or_adds(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[server]\ndomain = "x"\n\n[sip]\nt1_ms = 500   # comment\ntrusted_peers = []\n\n[http]\n'
    )
    set_toml_option(path, "sip", "trusted_peers", ["127.0.0.1:5070"])
    set_toml_option(path, "sip", "t1_ms", 100)
    set_toml_option(path, "sip", "nonce_ttl", 30)
    text = path.read_text()
    assert 'trusted_peers = ["127.0.0.1:5070"]' in text
    assert text.index("nonce_ttl") < text.index("[http]")


@pytest.mark.e2e
@pytest.mark.peers("sipp")
def test_sipp_uac_against_sipp_uas(tmp_path: Path) -> None:
    """run_sipp / start_sipp_uas and the statistics file, SIPp against SIPp, no server."""
    calls = 20
    with start_sipp_uas(tmp_path, calls=calls, timeout=30) as uas:
        uac = run_sipp(
            tmp_path,
            "uac",
            builtin="uac",
            remote=f"{LOCALHOST}:{uas.port}",
            port=free_ports(1)[0],
            calls=calls,
            rate=20,
            timeout=30,
        ).check()
        assert uac.successful_calls == calls and uac.failed_calls == 0, uac.report()
        assert "INVITE sip:" in uac.messages()
        uas_result = uas.wait(20).check()
        assert uas_result.successful_calls == calls
