"""The stateful forking proxy (RFC 3261 §16): forwards a request to every target in parallel,
relays provisional responses, forwards every 2xx, cancels the losing branches, and picks the
best final response when nobody answers (§16.7).

Phones behind NAT: each binding is reached at the address its REGISTER came from; Contacts in
dialog-creating requests and their responses get an `alias` parameter naming the address the
message really came from, so that in-dialog requests (ACK, BYE, re-INVITE) find the device too
(the technique of Kamailio's add_contact_alias / handle_ruri_alias). The alias is signed
together with the Call-ID (sip.dialogtoken); one the server did not sign is never used.

The trust boundary: our Record-Route entries carry a signed token naming the dialog's Call-ID,
its first From tag and the two flows the dialog runs between. A request inside such a dialog is
sent only to one of those flows; every other request goes only to our users' registered devices
or to the targets of a routing plan (the carrier trunk among them), never to an address the
request names itself.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple, Protocol

from heimbuero.domain.model import RingTarget, UserTarget
from heimbuero.events import CallAnswered, PhoneAlerting
from heimbuero.office.pickup import NOTHING_TO_PICK_UP
from heimbuero.services.liveness import DialogLiveness
from heimbuero.sip import transaction as tx
from heimbuero.sip.branch import response_address, stray_binding
from heimbuero.sip.dialogtoken import (
    TOKEN_PARAM,
    DialogSigner,
    Flow,
    is_party,
    normal_flow,
    same_party,
)
from heimbuero.sip.message import (
    Address,
    ParseError,
    Request,
    Response,
    SipURI,
    is_ip_literal,
    parse_address,
    parse_uri,
)
from heimbuero.sip.peer import Peer
from heimbuero.sip.selection import best_response

from .location import Binding
from .registrar import reachable_from

if TYPE_CHECKING:
    from .core import SipCore

log = logging.getLogger("heimbuero.proxy")

DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
TARGET_REFRESH = frozenset({"INVITE", "SUBSCRIBE", "REFER", "UPDATE", "NOTIFY"})
# Identity headers of RFC 3325 and their relatives: from an untrusted source they are removed
# at ingress; toward a carrier only the server's own (the plan's target headers) go out.
IDENTITY_HEADERS = frozenset({
    "p-asserted-identity", "p-preferred-identity", "privacy", "diversion", "history-info",
    "remote-party-id",
})  # fmt: skip
# Headers that make a phone answer a call by itself (intercom; the pickup branch sets them)
AUTO_ANSWER_HEADERS = frozenset({"call-info", "alert-info", "answer-mode", "priv-answer-mode"})


class MediaRelay(Protocol):
    """The seam where SDP is rewritten for an RTP relay (services/media_relay.py)."""

    def on_offer(self, request: Request, source: Peer, dest: Peer) -> None:
        """Every request forwarded (each branch's copy, in-dialog requests and ACKs too)."""

    def on_answer(self, response: Response, source: Peer) -> None:
        """Every provisional (not 100) and 2xx response forwarded upstream."""

    def on_end(self, call_id: str) -> None:
        """A call's initial INVITE got its final failure (or was cancelled)."""


class NoMediaRelay:
    """Media flows end to end; SDP passes unchanged."""

    def on_offer(self, request: Request, source: Peer, dest: Peer) -> None:
        return None

    def on_answer(self, response: Response, source: Peer) -> None:
        return None

    def on_end(self, call_id: str) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Target:
    """Where one branch goes, and how its copy of the request differs from the original."""

    uri: str  # the branch's Request-URI
    dest: Peer
    label: RingTarget | None = None  # what it is in the office's words (a user, a number…)
    from_display: str | None = None  # replaces From's display name (agents see the client)
    headers: tuple[tuple[str, str], ...] = ()  # added to the branch (Diversion, History-Info…)
    # more addresses of the same next hop (DNS, RFC 3263 §4.3): tried in turn when `dest`
    # fails (no answer, transport error or 503) before the branch counts as failed
    alternates: tuple[Peer, ...] = ()
    # the pre-loaded Route of the branch: the device's Path (RFC 3327 §5.4), `dest` its first hop
    route: tuple[str, ...] = ()
    # the other flows of the same device (RFC 5626 §5.3), tried in turn when this one fails
    # (transport error, no answer, 430 Flow Failed or 503)
    flows: tuple[DeviceTarget, ...] = ()


class DeviceTarget(NamedTuple):
    """One registered device of a user as a request reaches it: its Contact as Request-URI,
    the address to send to, and the Route to pre-load (its registration's Path; empty when it
    registered directly)."""

    uri: str
    dest: Peer
    route: tuple[str, ...] = ()


class PlanRunner(Protocol):
    """Serial steps of parallel targets (a RoutePlan being executed), seen from the proxy."""

    def next_step(self, now: float) -> tuple[list[Target], float] | None:
        """The next step's targets and ring time; None when no step is left."""
        ...

    def answered(self, target: Target, now: float) -> None: ...

    def failed(
        self,
        status: int,
        now: float,
        *,
        cancelled: bool = False,
        stopped: bool = False,
        unheard: bool = False,
    ) -> None:
        """Nobody answered: `status` went upstream; `cancelled` when the caller's CANCEL ended
        it, `stopped` when the server stopping did, `unheard` when targets were tried and not
        one of them answered anything (offline phones, a NAT mapping gone)."""
        ...

    def final_hint(self) -> tuple[int, str, list[tuple[str, str]]] | None:
        """The answer when nobody could be rung or answered (e.g. voicemail not there yet)."""
        ...

    def answered_late(self, target: Target, now: float) -> None:
        """A target accepted after the final answer went upstream (a MESSAGE device that
        answered after its step timed out)."""
        ...


class Branch:
    """One forwarded copy of a request and what became of it; the owner of its client
    transaction (it hands what happens to the proxy)."""

    __slots__ = (
        "proxy",
        "call",
        "txn",
        "request",
        "dest",
        "target",
        "provisional",
        "done",
        "cancel_pending",
        "timed_out",
        "wire",
        "fallback",
        "alerting",
        "alert_at",
        "hung_up",
        "won",
        "pickup",
        "alert_tag",
    )

    def __init__(
        self, proxy: Proxy, call: ProxyCall, request: Request, dest: Peer, target: Target | None
    ) -> None:
        self.proxy = proxy
        self.call = call
        self.txn: tx.ClientTransaction | None = None
        # The forwarded copy, kept to CANCEL it; let go once the branch has its final answer
        # (a call's parsed messages are most of the memory a busy proxy holds).
        self.request: Request | None = request
        self.dest = dest
        self.target = target
        self.provisional = False
        self.done = False
        self.cancel_pending = False
        self.timed_out = False
        # Where the request really went when a large one took TCP instead of UDP (§18.1.1),
        # and its UDP copy to retry with when TCP cannot be set up; `dest` stays the device's
        # flow (dialogs and aliases are signed for it).
        self.wire: Peer | None = None
        self.fallback: Request | None = None
        self.alerting: str | None = None  # the user whose phone this branch rings (18x seen)
        self.alert_at = 0.0  # when it started to ring there
        self.hung_up = False  # the server ended its late answer itself (a picked-up call)
        self.won = False  # its 2xx answered the caller
        self.pickup = False  # the branch to the phone that dialled `*8`
        self.alert_tag: str | None = None  # the ringing phone's To tag (its early dialog)

    def on_response(self, txn: tx.ClientTransaction, resp: Response, now: float) -> None:
        self.proxy.on_response(txn, resp, now)

    def on_timeout(self, txn: tx.ClientTransaction, now: float) -> None:
        self.proxy.on_branch_failure(txn, 408, now)

    def on_transport_error(self, txn: tx.ClientTransaction, now: float) -> None:
        self.proxy.on_branch_failure(txn, 503, now)


class ProxyCall:
    """The proxying of one request: its server transaction and its branches."""

    __slots__ = (
        "server_txn", "branches", "finals", "final_sent", "canceled", "timer_c",
        "plan", "step_timer", "record_route", "max_forwards", "picked", "heard",
    )  # fmt: skip

    def __init__(
        self, server_txn: tx.ServerTransaction, record_route: bool, plan: PlanRunner | None
    ) -> None:
        self.server_txn = server_txn
        self.branches: list[Branch] = []
        self.finals: list[Response] = []
        self.final_sent = False
        self.canceled = False
        self.timer_c: list[object] | None = None
        self.plan = plan
        self.step_timer: list[object] | None = None
        self.record_route = record_route
        self.max_forwards = "69"
        self.picked: str | None = None  # the user who picked the call up (`*8`), once
        self.heard = False  # whether any target answered anything (even 100 Trying)


class Proxy:
    """Forking, response selection, CANCEL and ACK handling for the core."""

    def __init__(self, core: SipCore, media: MediaRelay | None = None) -> None:
        self.core = core
        self.media: MediaRelay = media or NoMediaRelay()
        self.liveness = DialogLiveness(core)  # session timers; calls that vanished
        self._open: set[ProxyCall] = set()  # calls whose server transaction is alive

    def __len__(self) -> int:
        return len(self._open)

    # ------------------------------------------------------------------ requests

    def route_request(
        self, txn: tx.ServerTransaction, dialog: tuple[Flow, Flow] | None, now: float
    ) -> None:
        """Find the targets of an (already checked and authenticated) request and fork to them.

        `dialog`: the flows of the signed dialog the request belongs to (core.dialog_of), or
        None for a request outside any dialog of ours."""
        core = self.core
        req = txn.request
        routes = req.get_all("route")
        uri = req.ruri
        if uri.scheme == "sips" and txn.source[0] != "tls":  # type: ignore[index]
            # RFC 5630 §3.1.3: every hop of a sips: request is TLS, the first one included.
            core.respond(txn, 416, now, reason="sips: URI needs a request over TLS")
            return
        if dialog is not None:
            try:
                hop = parse_address(routes[0]).uri if routes else uri
            except ParseError:
                core.respond(txn, 400, now, reason="Bad Route header")
                return
            dest = dialog_destination(hop, req.call_id, core.dialogs)
            if dest is None:
                core.respond(txn, 404, now, reason="Dialog target unknown")
                return
            if not is_party(dest, dialog):
                log.info("in-dialog %s for %s refused: %s is not a party of the dialog",
                         req.method, req.call_id, dest)  # fmt: skip
                core.respond(txn, 403, now, reason="Not a party of this dialog")
                return
            if is_party(txn.source, dialog):  # type: ignore[arg-type]
                self.liveness.proxied(req)  # (its CSeq: a BYE from us must go higher)
            hop_uri = req.uri if routes else _strip_alias(req.uri, uri)
            if routes and core.gruus.is_gruu(uri) and core.is_local_uri(uri):
                hop_uri = self._gruu_contact(uri, dest, now) or hop_uri
            self._fork(txn, [DeviceTarget(hop_uri, dest)], False, now)
            return
        if routes:
            core.respond(txn, 403, now, reason="Relaying denied")
            return
        # (An alias outside a signed dialog is ignored: the Request-URI names a user of ours
        # or nothing.)
        if not core.is_local_uri(uri):  # (our domain, or a host and port we listen on)
            core.respond(txn, 403, now, reason="Relaying denied")
            return
        if not uri.user:
            core.respond(txn, 404, now)
            return
        aor = uri.user.lower()
        only: Callable[[Binding], bool] | None = None
        if core.gruus.is_gruu(uri):  # RFC 5627: one device of the user, never the others
            gruu = core.gruus.resolve(uri)
            if isinstance(gruu, tuple):
                core.respond(txn, gruu[0], now, reason=gruu[1])
                return
            aor, only = gruu.aor, gruu.matches
        if core.users.get(aor, now) is None:
            core.respond(txn, 404, now)
            return
        if not any(only is None or only(b) for b in core.location.lookup(aor, now)):
            reason = "no device registered" if only is None else "GRUU not registered"
            core.respond(txn, 480, now, reason=f"Temporarily Unavailable: {reason}")
            return
        devices = self.device_flows(aor, now, only)
        if uri.scheme == "sips":
            # RFC 5630: TLS to the end
            devices = [f for d in devices if (f := [t for t in d if t.dest[0] == "tls"])]
            if not devices:
                core.respond(txn, 480, now, reason="Temporarily Unavailable: no device on TLS")
                return
        if not devices:
            core.respond(txn, 480, now, reason="Temporarily Unavailable: no device reachable")
            return
        self._fork_devices(txn, devices, req.method in DIALOG_METHODS, now)

    def _gruu_contact(self, uri: SipURI, dest: Peer, now: float) -> str | None:
        """The Contact of the device one of our GRUUs names, for an in-dialog request whose
        remote target is that GRUU (RFC 5627 §4.2: the phone put it in its Contact) and whose
        route set goes on past us to the edge proxy the device registered through (Path): we
        answer for the GRUU, the edge cannot resolve it, so it is translated here. Only to a
        device registered over the very flow the request goes on to (over TCP/TLS: the same
        host, `same_party`, as the edge listens on another port than it connects from): a GRUU
        in a Contact cannot steer the dialog's requests anywhere else."""
        core = self.core
        gruu = core.gruus.resolve(uri)
        if isinstance(gruu, tuple):
            return None
        found = [
            b for b in core.location.lookup(gruu.aor, now)
            if gruu.matches(b) and same_party(b.received, dest)
        ]  # fmt: skip
        return max(found, key=lambda b: b.expires_at).contact if found else None

    def device_targets(
        self, aor: str, now: float, only: Callable[[Binding], bool] | None = None
    ) -> list[DeviceTarget]:
        """Each registered device of `aor` (those `only` accepts: a GRUU's) that can be
        reached, once (`device_flows`: a device registered with several outbound flows is
        reached over its preferred one)."""
        return [flows[0] for flows in self.device_flows(aor, now, only)]

    def device_flows(
        self, aor: str, now: float, only: Callable[[Binding], bool] | None = None
    ) -> list[list[DeviceTarget]]:
        """The ways to reach each registered device of `aor` (those `only` accepts: a
        GRUU's), best first.

        A device that registered with RFC 5626 outbound (`+sip.instance` and `reg-id`) may hold
        several flows, one per reg-id: a request goes to one device once, over its most
        recently registered flow, and to the next one when that fails (§5.3). An outbound
        flow is reached over its connection (or edge) only: when that is gone, so is the flow.

        Every other binding is a device of its own: where the registrar decided to reach it
        (`registrar.reach_address`: NAT detection; `registrar.path_hop`: the first hop of its
        Path), or, when that connection is gone, the address its Contact (its first Path
        entry) names, if that is reachable."""
        core = self.core
        devices: list[list[DeviceTarget]] = []
        instances: dict[str, list[tuple[float, DeviceTarget]]] = {}
        for b in core.location.lookup(aor, now):
            if only is not None and not only(b):
                continue
            dest = b.received
            if b.instance and b.reg_id is not None:
                if (dest.reliable and not core.is_connected(dest)) or core.is_trunk_address(dest):
                    continue
                flows = instances.get(b.instance)
                if flows is None:
                    flows = instances[b.instance] = []
                    devices.append([])  # (its place among the devices, filled below)
                flows.append((b.expires_at, DeviceTarget(b.contact, dest, b.path)))
                continue
            if dest.reliable and not core.is_connected(dest):
                # The connection is gone: try the address its Contact (or edge proxy) names.
                try:
                    cu = parse_address(b.path[0] if b.path else b.contact).uri
                except ParseError:
                    continue
                alt = uri_destination(cu)
                if alt is None or not reachable_from(alt[1], dest[1]):
                    continue  # never to a network the device is not in (its LAN, our loopback)
                dest = Peer(dest[0], alt[1], alt[2])
            if core.is_trunk_address(dest):
                continue  # a carrier is reached through a routing plan only
            devices.append([DeviceTarget(b.contact, dest, b.path)])
        # the latest registered flow first (the one with the latest expiry: a registration
        # refreshed later, for the same time, expires later)
        ordered = iter(instances.values())
        for i, found in enumerate(devices):
            if not found:
                flows = next(ordered)
                flows.sort(key=lambda f: -f[0])
                devices[i] = [t for _, t in flows]
        return devices

    def _fork(
        self,
        txn: tx.ServerTransaction,
        targets: list[DeviceTarget],
        record_route: bool,
        now: float,
    ) -> None:
        call = self._start(txn, record_route, None, now)
        self._ring(call, [Target(t.uri, t.dest, route=t.route) for t in targets], now)

    def _fork_devices(
        self,
        txn: tx.ServerTransaction,
        devices: list[list[DeviceTarget]],
        record_route: bool,
        now: float,
    ) -> None:
        """Fork to devices: each over its first flow, the others kept to fail over to."""
        call = self._start(txn, record_route, None, now)
        targets = [Target(d[0].uri, d[0].dest, route=d[0].route, flows=tuple(d[1:]))
                   for d in devices]  # fmt: skip
        self._ring(call, targets, now)

    def ring(self, txn: tx.ServerTransaction, targets: list[Target], now: float) -> None:
        """Forward a request to these targets (record-routed; no plan behind them)."""
        call = self._start(txn, True, None, now)
        self._ring(call, targets, now)

    def execute_plan(
        self, txn: tx.ServerTransaction, plan: PlanRunner, now: float, record_route: bool = True
    ) -> None:
        """Ring the plan's steps one after the other until someone answers."""
        call = self._start(txn, record_route, plan, now)
        if not self._next_step(call, now):
            self._maybe_finish(call, now)  # nobody to ring at all: answer at once

    def pick_up(
        self,
        txn: tx.ServerTransaction,
        picker: str,
        may: Callable[[str], bool],
        now: float,
        early: tuple[str, str, str] | None = None,
    ) -> bool:
        """Call pickup (`*8`): `picker`'s INVITE to the code takes over the call that has rung
        longest at a phone of a user he `may` pick up for (office/pickup.py).

        A proxy has no media of its own to answer the code's INVITE with, so the pickup is a
        new branch of the ringing call: the caller's INVITE (its offer) goes to the very device
        that dialled the code, marked to be answered at once (Call-Info answer-after=0,
        Alert-Info info=alert-autoanswer, Answer-Mode: Auto: what desk phones and softphones
        honour for intercom calls). The code's INVITE is answered first (480, "Picked up"),
        so that the phone is free for the call. When the picker's phone answers, the proxy
        does what it does for any answered branch: the 200 goes to the caller and the phones
        still ringing are cancelled with "Call completed elsewhere". A phone that does not
        answer by itself rings, and the picker answers it.

        `early`: (Call-ID, to-tag, from-tag) of the early dialog a phone's busy-lamp pickup
        names in `Replaces` (RFC 3891; dialog-info gave it the tags): only that call is picked
        up, and False is returned, with nothing answered, when no such call rings (the INVITE
        then goes on as any INVITE with Replaces: an attended transfer replaces a confirmed
        dialog; core._replaces_refusal checks whether it may)."""
        core = self.core
        source = normal_flow(txn.source)  # type: ignore[arg-type]
        found: tuple[ProxyCall, Branch] | None = None
        for call in self._open:
            req = call.server_txn.request
            if call.final_sent or call.canceled or call.picked is not None:
                continue
            if req.method != "INVITE" or req.to.tag:
                continue
            if (req.from_.uri.user or "").lower() == picker:
                continue  # (his own call out)
            if any(not b.done and normal_flow(b.dest) == source for b in call.branches):
                continue  # it rings at the very phone that dialled: answered there
            if early is not None and (req.call_id, req.from_.tag) != (early[0], early[2]):
                continue
            for b in call.branches:
                if b.done or b.alerting is None:
                    continue
                if early is not None and b.alert_tag != early[1]:
                    continue
                if not may(b.alerting):
                    if early is not None:  # (named exactly: refused, not routed on)
                        text = "Not allowed to pick up this call"
                        reason = f'SIP;cause=403;text="{text}"'
                        core.respond(txn, 403, now, reason=text, headers=[("Reason", reason)])
                        return True
                    continue
                if found is None or b.alert_at < found[1].alert_at:
                    found = (call, b)
        if found is None and early is not None:
            return False
        if found is None:
            reason = f'SIP;cause=404;text="{NOTHING_TO_PICK_UP}"'
            core.respond(txn, 404, now, reason=NOTHING_TO_PICK_UP, headers=[("Reason", reason)])
            return True
        call, ringing = found
        # (any flow of the phone: it dialled over the one it came on)
        flows = [t for d in self.device_flows(picker, now) for t in d]
        devices = [t for t in flows if normal_flow(t.dest) == source]
        if not devices:
            text = "The phone that dialled is not registered"
            core.respond(txn, 480, now, reason=text,
                         headers=[("Reason", f'SIP;cause=480;text="{text}"')])  # fmt: skip
            return True
        call.picked = picker
        log.info("call %s: %s picks up the call ringing at %s",
                 call.server_txn.request.call_id, picker, ringing.alerting)  # fmt: skip
        text = f"Picked up: the call of {ringing.alerting} comes to this phone"
        core.respond(txn, 480, now, reason="Picked up",
                     headers=[("Reason", f'SIP;cause=480;text="{text}"')])  # fmt: skip
        base = ringing.target or Target("", ringing.dest)
        domain = core.settings.domain
        auto = (
            ("Call-Info", f"<sip:{domain}>;answer-after=0"),
            ("Alert-Info", f"<sip:{domain}>;info=alert-autoanswer"),
            ("Answer-Mode", "Auto"),
        )
        device = devices[0]
        target = replace(base, uri=device.uri, dest=device.dest, route=device.route,
                         label=UserTarget(picker), headers=base.headers + auto,
                         alternates=())  # fmt: skip
        self._ring(call, [target], now)
        call.branches[-1].pickup = True
        return True

    def _start(
        self, txn: tx.ServerTransaction, record_route: bool, plan: PlanRunner | None, now: float
    ) -> ProxyCall:
        core = self.core
        req = txn.request
        source: Peer = txn.source  # type: ignore[assignment]
        call = ProxyCall(txn, record_route, plan)
        txn.context = call
        self._open.add(call)
        if req.method == "INVITE":
            core.respond(txn, 100, now)
            call.timer_c = core.timers.call_at(
                now + core.timer_c, functools.partial(self._timer_c, call)
            )
        if req.method in TARGET_REFRESH:
            _alias_contact(req, source, core.dialogs)
        _strip_own_credentials(req, core.settings.domain)
        mf = req.get("max-forwards")
        call.max_forwards = str((int(mf) if mf is not None else 70) - 1)
        return call

    def _ring(self, call: ProxyCall, targets: list[Target], now: float) -> None:
        core = self.core
        req = call.server_txn.request
        source: Peer = call.server_txn.source  # type: ignore[assignment]
        in_host, in_port = core.local_address(source[0], source[1])
        for target in targets:
            dest = target.dest
            fwd = req.copy()
            fwd.set_uri(target.uri)
            fwd.set("Max-Forwards", call.max_forwards)
            if target.from_display is not None:
                _set_display_name(fwd, target.from_display)
            if core.is_trunk_address(dest):
                strip_identity(fwd)  # toward a carrier only the server's word goes out
            for name in {n.lower() for n, _ in target.headers} & AUTO_ANSWER_HEADERS:
                fwd.remove(name)  # (only the server says a phone is to answer by itself)
            for name, value in target.headers:
                fwd.add(name, value)
            for value in target.route:  # (a request outside a dialog: no Route of its own)
                fwd.add("Route", value)
            if call.record_route:
                token = core.dialogs.route_token(req.call_id, req.from_.tag or "", (source, dest))
                fwd.prepend("Record-Route", _rr(in_host, in_port, source[0], token))
                out_host, out_port = core.local_address(dest[0], dest[1])
                if (out_host, out_port) != (in_host, in_port) or dest[0] != source[0]:
                    # (another transport or address family: one entry for each side)
                    fwd.prepend("Record-Route", _rr(out_host, out_port, dest[0], token))
            self.media.on_offer(fwd, source, dest)
            self.liveness.offer(fwd)
            branch = Branch(self, call, fwd, dest, target)
            call.branches.append(branch)
            branch_id = core.new_branch(req)
            wire = dest
            if not dest.reliable and self._by_stream(fwd, target, dest):
                # RFC 3261 §18.1.1: too large for UDP, so TCP (the top Via names it); a UDP
                # copy is kept to retry with when TCP cannot be set up.
                wire = Peer("tcp", dest.host, dest.port)
                fallback = fwd.copy()
                udp_host, udp_port = core.local_address("udp", dest[1])
                fallback.prepend(
                    "Via", f"SIP/2.0/UDP {udp_host}:{udp_port};branch={branch_id};rport"
                )
                branch.fallback, branch.wire = fallback, wire
            branch.txn = core.send_request(fwd, wire, branch, now, branch_id)

    def _own_route(self, value: str) -> bool:
        """Whether a Record-Route value is one of ours (our address and a dialog token)."""
        try:
            uri = parse_address(value).uri
        except ParseError:
            return False
        return TOKEN_PARAM in uri.params and self.core.is_local_uri(uri)

    def _by_stream(self, fwd: Request, target: Target, dest: Peer) -> bool:
        """A UDP request that must go over TCP instead (§18.1.1): when it is too large and the
        device is reached at the very address its Contact names (a device behind NAT cannot be
        reached by a new TCP connection: it keeps UDP, as the only way that works)."""
        if "tcp" not in self.core.settings.local:
            return False
        # (+ 128: our Via, which goes on top when it is sent)
        if not tx.needs_stream(len(fwd.serialize()) + 128):
            return False
        try:
            named = uri_destination(parse_uri(target.uri))
        except ParseError:
            return False
        return named == dest

    def _next_step(self, call: ProxyCall, now: float) -> bool:
        """Start the plan's next step that has someone to ring; False when none is left."""
        assert call.plan is not None
        while True:
            step = call.plan.next_step(now)
            if step is None:
                return False
            targets, timeout = step
            if not targets:
                continue  # nobody to ring in this step (all offline or busy): move on
            self._ring(call, targets, now)
            call.step_timer = self.core.timers.call_at(
                now + timeout, functools.partial(self._step_timeout, call)
            )
            return True

    def _step_timeout(self, call: ProxyCall, now: float) -> None:
        """A step rang its time: cancel what still rings and move on at once (the caller
        does not wait for the 487s)."""
        call.step_timer = None
        for b in call.branches:
            if b.done:
                continue
            b.timed_out = True
            b.done = True
            if b.provisional:
                self._send_cancel(b, now, None)
            else:
                b.cancel_pending = True  # CANCEL it when it starts ringing after all
            call.finals.append(self.core.make_response(call.server_txn.request, 408))
        self._maybe_finish(call, now)

    # ------------------------------------------------------------------ responses

    def on_response(self, ctxn: tx.ClientTransaction, resp: Response, now: float) -> None:
        branch = ctxn.context
        if not isinstance(branch, Branch):
            return  # the answer to one of our CANCELs
        call = branch.call
        core = self.core
        call.heard = True
        branch.fallback = None  # it came through: no retry over UDP
        resp.pop_first_value("via")
        if "via" not in resp:
            return
        status = resp.status
        if status < 200:
            branch.provisional = True
            if branch.cancel_pending:
                branch.cancel_pending = False
                self._send_cancel(branch, now, None)
            if status == 100 or call.final_sent or branch.done:
                return  # (a branch whose step timed out rings no more upstream)
            if status in (180, 183) and branch.alerting is None:
                self._alerting(branch, resp, now)
            _alias_contact(resp, branch.dest, core.dialogs)
            self.media.on_answer(resp, branch.dest)
            core.layer.send_response(call.server_txn, resp, now)
            if call.timer_c is not None:
                core.timers.cancel(call.timer_c)
                call.timer_c = core.timers.call_at(
                    now + core.timer_c, functools.partial(self._timer_c, call)
                )
            return
        if status < 300:
            if call.picked is not None and call.final_sent and not branch.won:
                self._end_late_answer(branch, resp, now)
                return
            branch.done = True
            branch.request = None
            _alias_contact(resp, branch.dest, core.dialogs)
            self.media.on_answer(resp, branch.dest)
            self.liveness.answered(call.server_txn.request, resp, now)
            st = call.server_txn
            if st.state in (tx.State.TRYING, tx.State.PROCEEDING, tx.State.ACCEPTED):
                core.layer.send_response(st, resp, now)
            elif st.request.method != "INVITE":
                # Only one final answer to a non-INVITE request (RFC 3261 §16.7 step 5).
                if call.final_sent and call.plan is not None and branch.target is not None:
                    call.plan.answered_late(branch.target, now)
                return
            else:
                # A 2xx that lost the race against a CANCEL or another final still reaches
                # the caller, which must ACK and hang it up (RFC 3261 §16.7 step 5).
                core.layer.send_stateless(resp, st.response_dest)
            if not call.final_sent:
                call.final_sent = True
                branch.won = True
                self._end_timer_c(call)
                if call.record_route and st.request.method == "INVITE" and not st.request.to.tag:
                    # kept to hang up both ends when the call vanishes (services/liveness.py)
                    caller: Peer = st.source  # type: ignore[assignment]
                    callee = branch.wire or branch.dest
                    self.liveness.confirmed(st.request, resp, caller, callee, self._own_route)
                self._cancel_pending(call, now, 'SIP;cause=200;text="Call completed elsewhere"')
                if call.plan is not None and branch.target is not None:
                    call.plan.answered(branch.target, now)
                if st.request.method == "INVITE" and core.events.has_subscribers(CallAnswered):
                    users = tuple(_call_users(st.request, branch, core))
                    core.events.publish(CallAnswered(now, st.request.call_id, users))
            self._alerting_ends(branch, now)
            return
        branch.request = None  # a final answer: nothing left to CANCEL
        self._alerting_ends(branch, now)
        if branch.pickup:
            branch.call.picked = None  # the picker's phone refused: the call can be picked again
        if branch.done or call.final_sent:
            branch.done = True
            return
        branch.done = True
        if status in (430, 503) and self._next_address(branch, now):
            return  # (430 Flow Failed: an edge lost the device's flow, RFC 5626 §5.3)
        if branch.timed_out and status == 487:
            resp = core.make_response(call.server_txn.request, 408)
        call.finals.append(resp)
        if status >= 600:
            self._cancel_pending(call, now, None)
        self._maybe_finish(call, now)

    def _end_late_answer(self, branch: Branch, resp: Response, now: float) -> None:
        """A 2xx of a picked-up call after the caller got its answer (the ringing phone and
        the picker's answered in the same moment): the branch was the server's doing, so the
        server ends the late one itself (ACK, then BYE "Call completed elsewhere") rather than
        handing the caller a second answered leg (RFC 3261 §16.7 step 5 would forward it)."""
        branch.done = True
        branch.request = None
        self._alerting_ends(branch, now)
        core = self.core
        inv = branch.call.server_txn.request
        raw, to = resp.get("contact"), resp.get("to")
        try:
            target = str(parse_address(raw).uri) if raw is not None else None
        except ParseError:
            target = None
        if target is None or to is None:
            return
        dest = branch.wire or branch.dest

        def in_dialog(method: str, cseq: int) -> Request:
            req = Request(method, target, [[h[0], h[1], h[2]] for h in inv.headers
                                           if h[0] in ("from", "call-id")])  # fmt: skip
            req.add("To", to)
            req.add("CSeq", f"{cseq} {method}")
            req.add("Max-Forwards", "70")
            return req

        ack = in_dialog("ACK", inv.cseq[0])
        host, port = core.local_address(dest[0], dest[1])
        ack.prepend("Via", f"SIP/2.0/{dest[0].upper()} {host}:{port}"
                           f";branch={core.new_local_branch()};rport")  # fmt: skip
        core.layer.send_stateless(ack, dest)  # (again for each retransmitted 2xx)
        if branch.hung_up:
            return
        branch.hung_up = True
        log.info("call %s: a late answer from %s:%s:%d is hung up (the call was picked up)",
                 inv.call_id, *branch.dest)  # fmt: skip
        bye = in_dialog("BYE", inv.cseq[0] + 1)
        bye.add("Reason", 'SIP;cause=200;text="Call completed elsewhere"')
        core.send_request(bye, dest, None, now)

    def on_branch_failure(self, ctxn: tx.ClientTransaction, status: int, now: float) -> None:
        """Timer B/F or a transport error ended a branch without a response."""
        branch = ctxn.context
        if not isinstance(branch, Branch) or branch.done:
            return
        if branch.fallback is not None and status == 503 and ctxn.dest == branch.wire:
            # TCP could not be set up for a large request: retry over UDP (§18.1.1).
            retry, branch.fallback, branch.wire = branch.fallback, None, None
            branch.request = retry
            ctxn.context = None
            again = self.core.layer.send_request(retry, branch.dest, False, now)
            branch.txn = again
            again.context = branch
            return
        branch.done = True
        branch.request = None
        self._alerting_ends(branch, now)
        if branch.pickup:
            branch.call.picked = None
        if self._next_address(branch, now):
            return
        call = branch.call
        call.finals.append(self.core.make_response(call.server_txn.request, status))
        self._maybe_finish(call, now)

    def _next_address(self, branch: Branch, now: float) -> bool:
        """RFC 3263 §4.3: the next hop's next address, as a new branch (a new transaction),
        when this one failed; False when none is left (or the call is over)."""
        target, call = branch.target, branch.call
        if target is None or call.final_sent or call.canceled:
            return False
        failed = branch.dest
        if target.alternates:
            nxt_dest = target.alternates[0]
            log.info("call %s: %s:%s:%d failed; trying %s:%s:%d (the next address of %s)",
                     call.server_txn.request.call_id, *failed, *nxt_dest, target.uri)  # fmt: skip
            nxt = replace(target, dest=nxt_dest, alternates=target.alternates[1:])
        elif target.flows:
            # RFC 5626 §5.3: the device's next flow
            flow = target.flows[0]
            log.info("call %s: flow %s:%s:%d failed; trying the device's flow %s:%s:%d",
                     call.server_txn.request.call_id, *failed, *flow.dest)  # fmt: skip
            nxt = replace(target, uri=flow.uri, dest=flow.dest, route=flow.route,
                          flows=target.flows[1:])  # fmt: skip
        else:
            return False
        self._ring(call, [nxt], now)
        return True

    def _alerting(self, branch: Branch, resp: Response, now: float) -> None:
        """A branch to one of our users rings: the busy-lamp fields of the user's colleagues
        show it (`PhoneAlerting`, dialog-info `early`), and `*8` can pick it up."""
        events = self.core.events
        fwd = branch.request
        if fwd is None or fwd.method != "INVITE":
            return
        user = _callee_user(branch.call.server_txn.request, branch, self.core)
        if user is None:
            return
        branch.alerting = user  # (also what call pickup looks for)
        branch.alert_at = now
        branch.alert_tag = resp.to.tag
        if not events.has_subscribers(PhoneAlerting):
            return
        caller = fwd.from_
        events.publish(PhoneAlerting(now, fwd.call_id, user, True, str(caller.uri),
                                     caller.display or None, caller.tag, resp.to.tag))  # fmt: skip

    def _alerting_ends(self, branch: Branch, now: float) -> None:
        user = branch.alerting
        if user is not None:
            branch.alerting = None
            call_id = branch.call.server_txn.request.call_id
            self.core.events.publish(PhoneAlerting(now, call_id, user, False))

    def on_stray_response(self, resp: Response, now: float) -> None:
        """A 2xx that outlived its transaction is forwarded statelessly (RFC 3261 §16.7 step 10),
        but only when its top Via is ours: our sent-by and a branch we signed (§18.1.2)."""
        if not 200 <= resp.status < 300:
            return
        core = self.core
        try:
            top = resp.top_via
        except ParseError:
            return
        if not core.is_own_sent_by(top):
            log.debug("stray %d for %s dropped: the top Via is not ours", resp.status, resp.call_id)
            return
        resp.pop_first_value("via")
        if "via" not in resp:
            return
        try:
            via = resp.top_via
        except ParseError:
            return
        if not core.branches.check(top.branch, stray_binding(resp.call_id, via)):
            log.debug("stray %d for %s dropped: not our branch to there", resp.status, resp.call_id)
            return
        self.core.emit(resp.serialize(), response_address(via))

    def _maybe_finish(self, call: ProxyCall, now: float) -> None:
        if call.final_sent:
            return
        pending = [
            b for b in call.branches if not b.done and not (call.canceled and not b.provisional)
        ]
        if pending:
            return
        if call.plan is not None and not call.canceled:
            if call.step_timer is not None:
                self.core.timers.cancel(call.step_timer)
                call.step_timer = None
            if self._next_step(call, now):
                return
        call.final_sent = True
        self._end_timer_c(call)
        core = self.core
        hint = call.plan.final_hint() if call.plan is not None else None
        if call.canceled:
            best = core.make_response(call.server_txn.request, 487)
        elif hint is not None and all(r.status in (408, 480) for r in call.finals):
            best = core.make_response(call.server_txn.request, hint[0], hint[1], hint[2])
        elif call.plan is not None and not call.finals:
            best = core.make_response(
                call.server_txn.request, 480, "Temporarily Unavailable: nobody to ring"
            )
        else:
            best = self._best(call)
        if best.status == 408 and call.server_txn.request.method != "INVITE":
            # RFC 4320 §4.2: no 408 to a non-INVITE request; the client's own Timer F tells
            # it. The server transaction stays to absorb retransmissions for Timer J's time,
            # then ends without an answer.
            st = call.server_txn
            core.timers.call_at(now + core.layer.timers.j, lambda at: core.layer.terminate(st, at))
        elif hint is not None and best.status == hint[0]:
            # The hint promises something stored (a message's 202): sent once it is committed.
            core.send_after_commit(call.server_txn, best, now, "Could not be stored")
        else:
            core.layer.send_response(call.server_txn, best, now)
        call.finals = []  # the answer went out: the candidates are not needed any more
        req = call.server_txn.request
        if req.method == "INVITE" and not req.to.tag:
            self.media.on_end(req.call_id)
        else:
            self.liveness.failed(req, best.status, now)
        if call.plan is not None:
            unheard = bool(call.branches) and not call.heard
            call.plan.failed(best.status, now, cancelled=call.canceled, unheard=unheard)

    def _best(self, call: ProxyCall) -> Response:
        """RFC 3261 §16.7 step 6: a 6xx if any, else the lowest class; 503 becomes 500."""
        finals = call.finals
        if not finals:
            return self.core.make_response(call.server_txn.request, 408)
        return best_response(finals)  # (step 7: with every branch's challenges)

    # ------------------------------------------------------------------ CANCEL and timers

    def on_cancel(self, cancel_txn: tx.ServerTransaction, now: float) -> None:
        core = self.core
        invite_txn = core.layer.find_invite_server_transaction(cancel_txn.request)
        if invite_txn is None:
            # A CANCEL of a non-INVITE request it matches gets 200 and has no effect (§9.2).
            other = core.layer.find_cancelled_non_invite(cancel_txn.request)
            core.respond(cancel_txn, 481 if other is None else 200, now)
            return
        call = invite_txn.context
        if not isinstance(call, ProxyCall):
            # The server answered the INVITE itself: the CANCEL matched a transaction, so it
            # gets 200 and has no effect (RFC 3261 §9.2).
            core.respond(cancel_txn, 200, now)
            return
        reason = cancel_txn.request.get("reason")
        core.respond(cancel_txn, 200, now)  # (the transaction lets go of the request now)
        if call.final_sent:
            return
        call.canceled = True
        self._cancel_pending(call, now, reason)
        self._maybe_finish(call, now)

    def _cancel_pending(self, call: ProxyCall, now: float, reason: str | None) -> None:
        for b in call.branches:
            if b.done or b.request is None or b.request.method != "INVITE":
                continue
            if b.provisional:
                self._send_cancel(b, now, reason)
            else:
                b.cancel_pending = True  # RFC 3261 §9.1: wait for a provisional response

    def _send_cancel(self, branch: Branch, now: float, reason: str | None) -> None:
        """A CANCEL for one branch (RFC 3261 §9.1): same branch, Request-URI, Call-ID, tags."""
        inv = branch.request
        if inv is None or inv.method != "INVITE":
            return  # the branch has its final answer, or CANCEL would not apply (§9.1)
        hdrs: list[list[str]] = []
        for h in inv.headers:
            if h[0] == "via":
                hdrs.append([h[0], h[1], h[2]])  # the field we prepended: our Via alone
                break
        for key in ("route", "from", "to", "call-id"):
            hdrs.extend([h[0], h[1], h[2]] for h in inv.headers if h[0] == key)
        cancel = Request("CANCEL", inv.uri, hdrs)
        cancel.add("CSeq", f"{inv.cseq[0]} CANCEL")
        cancel.add("Max-Forwards", "70")
        if reason:
            cancel.add("Reason", reason)
        layer = self.core.layer
        dest = branch.wire or branch.dest
        layer.send_request(cancel, dest, dest.reliable, now)
        # RFC 3261 §9.1: a UAS that never answers the CANCEL with a final response to the
        # INVITE leaves the branch in Proceeding forever; give up on it after 64*T1.
        self.core.timers.call_at(now + layer.timers.b, functools.partial(self._abandon, branch))

    def _abandon(self, branch: Branch, now: float) -> None:
        if branch.txn is None or branch.txn.state != tx.State.PROCEEDING:
            return
        self.core.layer.terminate(branch.txn, now)
        self._alerting_ends(branch, now)
        if not branch.done:
            branch.done = True
            call = branch.call
            call.finals.append(self.core.make_response(call.server_txn.request, 408))
            self._maybe_finish(call, now)

    def _timer_c(self, call: ProxyCall, now: float) -> None:
        """RFC 3261 §16.8: an INVITE branch that rang too long is cancelled (408 upstream)."""
        call.timer_c = None
        for b in call.branches:
            if b.done:
                continue
            b.timed_out = True
            if b.provisional:
                self._send_cancel(b, now, None)
            else:
                b.done = True
                call.finals.append(self.core.make_response(call.server_txn.request, 408))
        self._maybe_finish(call, now)

    def _end_timer_c(self, call: ProxyCall) -> None:
        timers = self.core.timers
        if call.timer_c is not None:
            timers.cancel(call.timer_c)
            call.timer_c = None
        if call.step_timer is not None:
            timers.cancel(call.step_timer)
            call.step_timer = None

    def on_terminated(self, txn: tx.ClientTransaction | tx.ServerTransaction) -> None:
        call = txn.context
        if isinstance(call, ProxyCall) and call.server_txn is txn:
            self._open.discard(call)
            self._end_timer_c(call)
            # Break the call <-> branch cycle: the call is then freed by reference counting
            # when its last transaction ends, not by a (long) cyclic garbage collection.
            call.branches = []
        txn.context = None

    def shutdown(self, now: float) -> None:
        """Cancel every ringing branch and answer every open request before the server stops."""
        core = self.core
        for call in list(self._open):
            if call.final_sent:
                continue
            self._cancel_pending(call, now, 'SIP;cause=503;text="Server shutting down"')
            call.final_sent = True
            self._end_timer_c(call)
            core.layer.send_response(
                call.server_txn,
                core.make_response(call.server_txn.request, 503, "Server shutting down"),
                now,
            )
            if call.plan is not None:
                call.plan.failed(503, now, stopped=True)

    # ------------------------------------------------------------------ ACK for 2xx

    def forward_ack(self, ack: Request, source: Peer, now: float) -> None:
        """Forward an ACK for a 2xx statelessly along its Route (or to its Request-URI), only
        inside a dialog we signed and only to one of its parties; any other ACK is dropped."""
        core = self.core
        tokens: list[str] = []
        while True:
            routes = ack.get_all("route")
            if not routes:
                break
            try:
                first = parse_address(routes[0]).uri
            except ParseError:
                return
            if not core.is_local_uri(first):
                break
            ack.pop_first_value("route")
            token = first.params.get(TOKEN_PARAM)
            if token:
                tokens.append(token)
        try:
            dialog = core.dialog_of(ack, tokens) if tokens and ack.to.tag else None
        except ParseError:
            return
        if dialog is None:
            log.debug("ACK for %s dropped: not in a dialog of ours", ack.call_id)
            return
        routes = ack.get_all("route")
        try:
            hop = parse_address(routes[0]).uri if routes else ack.ruri
        except ParseError:
            return
        dest = dialog_destination(hop, ack.call_id, core.dialogs)
        if dest is None or not is_party(dest, dialog):
            log.debug("ACK for %s dropped: %s is not a party of the dialog", ack.call_id, dest)
            return
        if not routes:
            ack.set_uri(_strip_alias(ack.uri, hop))
        elif core.gruus.is_gruu(ack.ruri) and core.is_local_uri(ack.ruri):
            contact = self._gruu_contact(ack.ruri, dest, now)
            if contact is not None:
                ack.set_uri(contact)
        strip_identity(ack)  # (an ACK asserts nobody's identity)
        self.media.on_offer(ack, source, dest)  # (the answer of a late offer)
        mf = ack.get("max-forwards")
        if mf is not None:
            if int(mf) <= 0:
                return
            ack.set("Max-Forwards", str(int(mf) - 1))
        host, port = core.local_address(dest[0], dest[1])
        seed = (ack.top_via.branch or ack.call_id).encode("utf-8", "surrogateescape")
        branch = "z9hG4bKhb" + hashlib.md5(seed, usedforsecurity=False).hexdigest()[:16]
        ack.prepend("Via", f"SIP/2.0/{dest[0].upper()} {host}:{port};branch={branch};rport")
        core.emit(ack.serialize(), dest)


# ---------------------------------------------------------------------- helpers


def _call_users(req: Request, branch: Branch, core: SipCore) -> list[str]:
    """Our users in an answered call: the caller (From in our domain) and who answered."""
    users = []
    caller = req.from_.uri
    if caller.user and (caller.host == core.settings.domain or core.is_local_uri(caller)):
        users.append(caller.user.lower())
    callee = _callee_user(req, branch, core)
    if callee is not None:
        users.append(callee)
    return users


def _callee_user(req: Request, branch: Branch, core: SipCore) -> str | None:
    """Our user a branch of `req` rings: its plan's user target, or the user it was sent to."""
    label = branch.target.label if branch.target is not None else None
    if isinstance(label, UserTarget):
        return label.name
    if (
        label is None
        and req.ruri.user
        and req.ruri.user[0] not in "*#%"  # (a service code, e.g. dictation, is nobody)
        and (req.ruri.host == core.settings.domain or core.is_local_uri(req.ruri))
    ):
        return req.ruri.user.lower()
    return None


def _rr(host: str, port: int, transport: str, token: str) -> str:
    t = "" if transport == "udp" else f";transport={transport}"
    return f"<sip:{host}:{port}{t};lr;{TOKEN_PARAM}={token}>"


def dialog_destination(uri: SipURI, call_id: str, signer: DialogSigner) -> Peer | None:
    """Where a URI inside the dialog of `call_id` points to: the alias we signed for this
    dialog, else its maddr/host and port (an alias we did not sign counts as absent)."""
    alias = uri.params.get("alias")
    if alias:
        flow = signer.check_alias(alias, call_id)
        if flow is not None:
            return flow
    return uri_destination(uri)


def uri_destination(uri: SipURI) -> Peer | None:
    """Where a URI points to by its maddr/host and port (an `alias` is never looked at)."""
    host = (uri.params.get("maddr") or uri.host).strip("[]")
    if not is_ip_literal(host):
        return None
    transport = uri.transport
    if transport not in ("udp", "tcp", "tls"):
        return None
    return Peer(transport, host, uri.port or (5061 if transport == "tls" else 5060))


def _strip_alias(text: str, uri: SipURI) -> str:
    if "alias" not in uri.params:
        return text
    clean = SipURI(uri.scheme, uri.user, uri.password, uri.host, uri.port,
                   {k: v for k, v in uri.params.items() if k != "alias"}, uri.headers)  # fmt: skip
    return str(clean)


def _set_display_name(req: Request, display: str) -> None:
    """Show `display` as the caller's name; URI and tag stay as they are (dialogs match by tag)."""
    raw = req.get("from")
    if raw is None:
        return
    try:
        addr = parse_address(raw)
    except ParseError:
        return
    quoted = display.replace("\\", "").replace('"', "'")
    addr.display = f'"{quoted}"'
    req.set("From", str(addr))


def _strip_own_credentials(req: Request, realm: str) -> None:
    """Credentials for our realm were consumed here; they are not forwarded (RFC 3261 §22.3)."""
    values = req.get_all("proxy-authorization")
    if not values:
        return
    keep = [v for v in values if f'realm="{realm}"' not in v.replace(" ", "")]
    req.remove("proxy-authorization")
    for v in keep:
        req.add("Proxy-Authorization", v)


def strip_identity(msg: Request) -> None:
    """Remove the identity headers a caller may not set for itself (RFC 3325 §5)."""
    if any(h[0] in IDENTITY_HEADERS for h in msg.headers):
        for name in IDENTITY_HEADERS:
            msg.remove(name)


def _alias_contact(msg: Request | Response, peer: Peer, signer: DialogSigner) -> None:
    """Mark a Contact whose address differs from where the message came from (NAT) with an
    alias signed for this dialog; an alias the sender wrote itself is removed."""
    raw = msg.get("contact")
    if raw is None or raw == "*":
        return
    try:
        addr: Address = parse_address(raw)
    except ParseError:
        return
    uri = addr.uri
    if not uri.is_sip:
        return
    had_alias = uri.params.pop("alias", None) is not None
    transport, host, port = peer
    if uri.host.strip("[]") == host and (uri.port or 5060) == port and uri.transport == transport:
        if had_alias:
            msg.set("Contact", str(addr))
        return
    uri.params["alias"] = signer.alias(peer, msg.call_id)
    msg.set("Contact", str(addr))
