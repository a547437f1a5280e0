"""The signed Record-Route tokens and aliases of sip.dialogtoken."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heimbuero.sip.dialogtoken import DialogSigner, is_party, same_party
from heimbuero.sip.peer import Peer

KEY = b"s" * 32
A = ("udp", "192.0.2.10", 5060)
B = ("tcp", "198.51.100.7", 40123)


def test_route_token_round_trip_either_tag_and_either_flow_order() -> None:
    signer = DialogSigner(KEY)
    token = signer.route_token("call-1", "fromtag", (A, B))
    assert token == signer.route_token("call-1", "fromtag", (B, A))
    flows = signer.check_route(token, "call-1", ("fromtag", "totag"))
    assert flows is not None and set(flows) == {A, B}
    # callee to caller: the dialog's first From tag is now the To tag
    assert signer.check_route(token, "call-1", ("totag", "fromtag")) == flows


@pytest.mark.parametrize(
    ("call_id", "tags"),
    [("call-2", ("fromtag",)), ("call-1", ("othertag",)), ("call-1", ())],
)
def test_route_token_is_bound_to_call_id_and_tag(call_id: str, tags: tuple[str, ...]) -> None:
    signer = DialogSigner(KEY)
    token = signer.route_token("call-1", "fromtag", (A, B))
    assert signer.check_route(token, call_id, tags) is None


def test_route_token_from_another_secret_or_with_changed_flows_is_refused() -> None:
    token = DialogSigner(KEY).route_token("call-1", "t", (A, B))
    assert DialogSigner(b"x" * 32).check_route(token, "call-1", ("t",)) is None
    other = DialogSigner(KEY).route_token("call-1", "t", (A, ("udp", "203.0.113.5", 5060)))
    forged = other.split(".")[0] + "." + token.split(".")[1]  # someone else's flows, our MAC
    assert DialogSigner(KEY).check_route(forged, "call-1", ("t",)) is None


def test_alias_round_trip_and_binding_to_the_call_id() -> None:
    signer = DialogSigner(KEY)
    value = signer.alias(B, "call-1")
    assert value.startswith("198.51.100.7~40123~tcp~")
    assert signer.check_alias(value, "call-1") == B
    assert signer.check_alias(value, "call-2") is None  # not replayable into another dialog
    assert signer.check_alias("198.51.100.7~40123~tcp", "call-1") is None  # unsigned
    host_changed = "203.0.113.5" + value[len("198.51.100.7") :]
    assert signer.check_alias(host_changed, "call-1") is None


def test_ipv6_alias() -> None:
    signer = DialogSigner(KEY)
    value = signer.alias(("udp", "[2001:db8::1]", 5062), "c")
    assert value.startswith("[2001:db8::1]~5062~udp~")
    assert signer.check_alias(value, "c") == ("udp", "2001:db8::1", 5062)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        DialogSigner(b"short")


@given(st.text(max_size=300), st.text(max_size=40), st.text(max_size=20))
def test_garbage_never_verifies_and_never_raises(token: str, call_id: str, tag: str) -> None:
    signer = DialogSigner(KEY)
    assert signer.check_route(token, call_id, (tag,)) is None
    assert signer.check_alias(token, call_id) is None


def test_a_party_over_tcp_is_its_host_over_udp_its_address() -> None:
    # an edge proxy that sent the INVITE from a passing port and listens on 5060
    flows = (Peer("tcp", "192.0.2.7", 40123), Peer("udp", "198.51.100.2", 5062))
    assert is_party(Peer("tcp", "192.0.2.7", 40123), flows)
    assert is_party(Peer("TCP", "192.0.2.7", 5060), flows)  # its Record-Route's port
    assert not is_party(Peer("udp", "192.0.2.7", 5060), flows)  # another transport
    assert not is_party(Peer("tcp", "192.0.2.8", 5060), flows)  # another host
    assert is_party(Peer("udp", "198.51.100.2", 5062), flows)
    assert not is_party(Peer("udp", "198.51.100.2", 5060), flows)  # UDP: the very address
    assert not is_party(Peer("tcp", "198.51.100.2", 5062), flows)
    tls = (Peer("tls", "[2001:db8::1]", 50000), Peer("udp", "192.0.2.1", 5060))
    assert is_party(Peer("tls", "2001:db8::1", 5061), tls)
    assert same_party(Peer("tcp", "192.0.2.7", 5060), Peer("tcp", "192.0.2.7", 40123))
    assert not same_party(Peer("udp", "192.0.2.7", 5060), Peer("udp", "192.0.2.7", 40123))
