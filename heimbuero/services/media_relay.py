"""Anchoring a call's audio at the built-in relay: the proxy's ``MediaRelay`` seam.

The proxy is driven by time, not by IO, so these hooks decide and rewrite at once: the relay
ports of each media stream are chosen here from a :class:`PortPool` that mirrors the relay
process's range, the SDP is pointed at them before the message leaves, and the commands for
the relay process (open these ports, where a side receives, end the call) go in order to
``send`` -- the server queues them for one task that writes them to the relay's control
socket, microseconds later and long before the first RTP packet.

Which calls are anchored (``[media] relay``): ``always``; ``never``; or ``when_needed``: the
offerer's SDP names an address other than the one its request came from (a device behind
NAT), the callee's registered Contact names another address than the one we reach it at, the
callee is the server itself on loopback (voicemail) while the caller is not, or caller and
callee signal over different address families (an IPv4 phone and an IPv6 one: the relay
bridges the families).

Address families: the relay has an IPv4 address and (when the server relays IPv6 media) an
IPv6 one; the SDP that goes to a phone names the relay address of the family that phone
signals over (the family of the peer the message is sent to). A call with a side of a family
the relay has no address for is not anchored.

Sides: the caller (From tag of the first INVITE) is leg ``a``, the callee leg ``b``. SDP that
a side sends goes on naming the *other* leg's port: the relay takes what arrives on leg b's
port from b and sends it out of leg a's port to a, and the other way round. The address a side
named in its SDP is given to the relay (to send to before that side's first packet) only when
it is the address its signalling came from: a NATed device's private address is never sent
to; the relay learns the real one from the first packets (latching).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from heimbuero.media.relay_config import RelaySettings
from heimbuero.media.relay_core import DEFAULT_RATE, PortPool, RelayFull, canonical_host, is_ipv6
from heimbuero.media.relay_sdp import anchor, clock_rates, endpoints, stream_key
from heimbuero.sip.message import Request, Response
from heimbuero.sip.peer import Peer
from heimbuero.sip.sdp import SdpError, SessionDescription

log = logging.getLogger("heimbuero.media")

# Methods whose body (or whose answer's body) is an offer or answer of the call's session.
SDP_METHODS = frozenset({"INVITE", "UPDATE", "PRACK", "ACK"})


@dataclass(slots=True)
class Anchored:
    """One call whose media goes through the relay."""

    caller_tag: str
    streams: dict[int, tuple[int, int]] = field(default_factory=dict)  # m-line -> (a, b) ports
    v6: dict[str, bool] = field(default_factory=dict)  # side -> it signals over IPv6


class RelayAnchor:
    """Rewrites the SDP of anchored calls; tells the relay process what to open and close."""

    def __init__(
        self,
        settings: RelaySettings,
        address: str | None,
        send: Callable[[dict[str, Any]], None],
        address6: str | None = None,
    ) -> None:
        """``address``/``address6``: the relay's IPv4/IPv6 address for the SDP (``[media]
        advertise``/``advertise6`` win; None: media of that family is not relayed)."""
        self.mode = settings.relay
        self.address = settings.advertise or address
        self.address6 = settings.advertise6 or address6
        self.pool = PortPool(settings.port_min, settings.port_max)
        self.send = send
        self.calls: dict[str, Anchored] = {}

    # -- the proxy's hooks ----------------------------------------------------------------

    def on_offer(self, request: Request, source: Peer, dest: Peer) -> None:
        """A request the proxy forwards (once per branch)."""
        call_id = request.call_id
        if request.method == "BYE":
            self.end(call_id)
            return
        if request.method not in SDP_METHODS:
            return
        sd = _sdp(request)
        if sd is None:
            return
        call = self.calls.get(call_id)
        if call is None:
            if request.method != "INVITE" or request.to.tag:
                return  # only a new call starts anchoring; others stay as they began
            if not self._needed(sd, request, source, dest):
                return
            call = self.calls[call_id] = Anchored(request.from_.tag or "")
        side = self._side(request, call)
        other = "b" if side == "a" else "a"
        call.v6[side], call.v6[other] = is_ipv6(source.host), is_ipv6(dest.host)
        if self._relay_address(call.v6[other]) is None:
            return  # (a re-INVITE toward a side of a family the relay cannot reach)
        self._rewrite(request, sd, call, side, source)

    def on_answer(self, response: Response, source: Peer) -> None:
        """A provisional or 2xx response the proxy forwards upstream."""
        call = self.calls.get(response.call_id)
        if call is None or response.cseq[1] not in SDP_METHODS:
            return
        sd = _sdp(response)
        if sd is None:
            return
        # the answerer is the other party of whoever sent the request (whose tag is From's)
        side = "b" if (response.from_.tag or "") == call.caller_tag else "a"
        call.v6[side] = is_ipv6(source.host)
        self._rewrite(response, sd, call, side, source)

    def on_end(self, call_id: str) -> None:
        """The call's INVITE failed, was cancelled, or a BYE passed."""
        self.end(call_id)

    # -- helpers -------------------------------------------------------------------------

    def end(self, call_id: str) -> None:
        call = self.calls.pop(call_id, None)
        if call is None:
            return
        for index in call.streams:
            key = stream_key(call_id, index)
            self.pool.release(key)
            self.send({"cmd": "delete", "call_id": key})

    def _side(self, msg: Request, call: Anchored) -> str:
        return "a" if (msg.from_.tag or "") == call.caller_tag else "b"

    def _relay_address(self, v6: bool) -> str | None:
        return self.address6 if v6 else self.address

    def _needed(self, sd: SessionDescription, request: Request, source: Peer, dest: Peer) -> bool:
        caller_v6, callee_v6 = is_ipv6(source.host), is_ipv6(dest.host)
        if self._relay_address(caller_v6) is None or self._relay_address(callee_v6) is None:
            return False  # a side of a family the relay has no address for keeps its own SDP
        if self.mode == "always":
            return True
        if self.mode == "never":
            return False
        if caller_v6 != callee_v6:
            return True  # an IPv4 phone and an IPv6 one: the relay bridges the families
        if any(ep is not None and not _same(ep[0], source.host) for ep in endpoints(sd)):
            return True  # the caller's SDP names another address than it sends from
        contact = request.ruri.host
        if contact and not _same(contact, dest.host):
            return True  # the callee registered from behind NAT (or is reached elsewhere)
        return _loopback(dest.host) and not _loopback(source.host)

    def _rewrite(
        self,
        msg: Request | Response,
        sd: SessionDescription,
        call: Anchored,
        side: str,
        source: Peer,
    ) -> None:
        ports: list[int | None] = []
        for index, ep in enumerate(endpoints(sd)):
            if ep is None:
                ports.append(None)
                continue
            key = stream_key(msg.call_id, index)
            try:
                pair = self.pool.allocate(key)
            except RelayFull:
                log.warning("media of %s not relayed: no free relay ports", msg.call_id)
                ports.append(None)
                continue
            fresh = index not in call.streams
            call.streams[index] = pair
            command: dict[str, Any] = {
                "cmd": "offer" if side == "a" else "answer",
                "call_id": key,
            }
            if fresh:
                command["ports"] = list(pair)
            # clock rates for the relay's jitter; 8000 (PCMA, PCMU, G.722) goes without saying
            rates = {pt: r for pt, r in clock_rates(sd, index).items() if r != DEFAULT_RATE}
            if rates:
                command["rates"] = rates
            if _same(ep[0], source.host):
                command["address"] = [canonical_host(ep[0]), ep[1]]
            self.send(command)
            ports.append(pair[1] if side == "a" else pair[0])
        # the message goes to the other side: its SDP names the relay address of that family
        address = self._relay_address(call.v6.get("b" if side == "a" else "a", False))
        if address is not None and any(p is not None for p in ports):
            anchor(sd, address, ports)
            msg.body = sd.encode()


def _sdp(msg: Request | Response) -> SessionDescription | None:
    if not msg.body:
        return None
    ctype = (msg.get("content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/sdp":
        return None  # (multipart bodies are left alone)
    try:
        return SessionDescription.parse(msg.body)
    except SdpError as exc:
        log.info("SDP of %s not relayed: %s", msg.call_id, exc)
        return None


def _same(a: str, b: str) -> bool:
    """Whether two addresses are the same (IPv6 in any spelling, with or without brackets)."""
    return canonical_host(a) == canonical_host(b)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
