"""The SIP server core: one sans-IO object that turns received bytes into sent bytes.

The network layer feeds it `receive(data, source, now)`, asks `outgoing()` for what to send and
`next_deadline()` for when to call `on_timer(now)`. Inside, the transaction layer does RFC 3261
§17, and this module decides what each request is: for the server itself (OPTIONS keep-alives),
for the registrar, or to be proxied. It checks every request before acting on it: grammar,
Max-Forwards, loops, required extensions, and digest authentication of our users.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import hashlib
import heapq
import itertools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

from heimbuero.config import PICKUP_CODE
from heimbuero.domain.model import Trunk, TrunkInbound, caller_number
from heimbuero.domain.phone import PhoneError, parse_number
from heimbuero.events import BindingChanged, CallEnded, EventBus
from heimbuero.office.visibility import Person
from heimbuero.sip import transaction as tx
from heimbuero.sip.auth import DigestAuthenticator, parse_credentials
from heimbuero.sip.branch import BranchSigner, stray_binding
from heimbuero.sip.dialog import parse_replaces
from heimbuero.sip.dialogtoken import TOKEN_PARAM, DialogSigner, Flow
from heimbuero.sip.message import (
    MAGIC_COOKIE,
    ParseError,
    Request,
    Response,
    SipURI,
    Via,
    is_ip_literal,
    normalize_expires,
    parse,
    parse_address,
)
from heimbuero.sip.peer import Peer, address_key, host_text, same_address, split_host_port

from .calls import CallRouting
from .credentials import UserDirectory
from .gruu import Gruus
from .guard import Guard, GuardSettings, security_log_line
from .location import Binding, LocationService
from .messaging import Messenger
from .presence import ALLOW_EVENTS, PresenceServer
from .proxy import Proxy, strip_identity
from .registrar import Registrar, RegistrarSettings
from .trunks import TrunkRegistrations

log = logging.getLogger("heimbuero.sip")

SERVER_NAME = "heimbuero"
# What the server handles: REGISTER and OPTIONS itself, the rest by proxying to our users'
# devices (PUBLISH only with the presence server: no phone takes it).
ALLOW = (
    "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, INFO, UPDATE, REFER, NOTIFY, "
    "SUBSCRIBE, PRACK"
)
KNOWN_METHODS = frozenset(m.strip() for m in ALLOW.split(",")) | {"PUBLISH"}
# RFC 3261 §16.8: Timer C MUST be greater than 3 minutes; a smaller setting is raised to this.
TIMER_C_MIN = 181.0
ACCEPT = "application/sdp"
# option tags the server itself implements: RFC 3327 Path and RFC 5626 outbound at the registrar
SUPPORTED = "path, outbound, gruu"
_SUPPORTED_TAGS = frozenset(t.strip() for t in SUPPORTED.split(",") if t.strip())
BRANCH_PREFIX = MAGIC_COOKIE + "hb"

_REASONS = {
    100: "Trying", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 407: "Proxy Authentication Required",
    408: "Request Timeout", 413: "Request Entity Too Large", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 487: "Request Terminated", 500: "Server Internal Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    505: "Version Not Supported",
}  # fmt: skip


def reason_phrase(status: int) -> str:
    return _REASONS.get(status, "Unknown")


@dataclass(frozen=True, slots=True)
class CoreSettings:
    domain: str
    local: dict[str, tuple[str, int]]  # transport -> (host, port) we listen on and put into Via
    # transport -> (host, port) of the other address family (IPv6 beside IPv4 or the reverse),
    # when the server listens on both: what goes to a peer of that family names this one
    local_other: dict[str, tuple[str, int]] = field(default_factory=dict)
    registrar: RegistrarSettings = field(default_factory=RegistrarSettings)
    timers: tx.TimerSettings = field(default_factory=tx.TimerSettings)
    trusted_peers: tuple[str, ...] = ()
    invite_timeout: float = TIMER_C_MIN  # Timer C (never less than TIMER_C_MIN)
    session_expires: int = 0  # RFC 4028 interval asked for in INVITEs without one (0: none)
    guard: GuardSettings = field(default_factory=GuardSettings)  # floods, bans, guessing
    # Source IPs the flood limit never bans (a local front proxy, the bench on loopback).
    flood_exempt: tuple[str, ...] = ("127.0.0.1", "::1")
    nat_keepalive_interval: float = 25.0
    # User-Agent prefixes of clients that refuse a challenge list holding an algorithm they do
    # not know (baresip 1.x fails on any SHA-256 challenge): they are offered MD5 alone.
    md5_only_user_agents: tuple[str, ...] = ("baresip v0.", "baresip v1.")


class _Timers:
    """A heap of (deadline, callback) with lazy cancellation."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, list[object]]] = []
        self._seq = itertools.count()

    def call_at(self, deadline: float, fn: Callable[[float], None]) -> list[object]:
        entry: list[object] = [fn]
        heapq.heappush(self._heap, (deadline, next(self._seq), entry))
        return entry

    @staticmethod
    def cancel(handle: list[object] | None) -> None:
        if handle is not None:
            handle[0] = None

    def shift(self, delta: float) -> None:
        """Move every deadline by `delta` (the clock stepped; see SipCore.clock_stepped)."""
        self._heap[:] = [(at + delta, seq, entry) for at, seq, entry in self._heap]

    def next(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2][0] is None:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def run(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, entry = heapq.heappop(heap)
            fn = entry[0]
            if fn is not None:
                entry[0] = None
                fn(now)  # type: ignore[operator]


class SipCore:
    """Registrar + stateful proxy + OPTIONS responder, sans-IO."""

    def __init__(
        self,
        settings: CoreSettings,
        users: UserDirectory,
        location: LocationService,
        auth: DigestAuthenticator,
        is_connected: Callable[[Peer], bool] = lambda peer: True,
        dialogs: DialogSigner | None = None,
        events: EventBus | None = None,
        *,
        calls: Callable[[SipCore], CallRouting] | None = None,
        trunks: Callable[[SipCore], TrunkRegistrations] | None = None,
        presence: Callable[[SipCore], PresenceServer] | None = None,
        messages: Callable[[SipCore], Messenger] | None = None,
    ) -> None:
        """The optional services are given as factories: each is built once the core exists
        (it needs the core's timers, transactions and bus) and registers the methods it
        handles (`handle`, `handle_authenticated`)."""
        self.settings = settings
        # Domain events: the services publish here; presence, call records and the live HTTP
        # streams subscribe (heimbuero/events.py).
        self.events = events or EventBus()
        # Signs our Record-Route entries and aliases; the server passes one keyed with its
        # secret so that dialogs outlive a restart.
        self.dialogs = dialogs or DialogSigner(secrets.token_bytes(32))
        self.users = users
        self.location = location
        self.auth = auth
        self.is_connected = is_connected
        self.layer = tx.TransactionLayer(settings.timers)
        # GRUUs (RFC 5627): temporary ones are signed under the same secret as the dialogs
        self.gruus = Gruus(settings.domain, self.dialogs.derive(b"gruu"))
        self.registrar = Registrar(
            settings.registrar, location, self._refuse_path_hop, gruus=self.gruus
        )
        self.timers = _Timers()
        self.proxy = Proxy(self)
        self.timer_c = max(settings.invite_timeout, TIMER_C_MIN)
        self._out: list[tuple[bytes, Peer]] = []
        self._branch_seq = itertools.count(1)
        # Forwarded requests' branches are signed, so that a stray response is forwarded only
        # when it answers a request we sent (RFC 3261 §18.1.2; see proxy.on_stray_response).
        self.branches = BranchSigner(secrets.token_bytes(16), BRANCH_PREFIX)
        self._local_hosts = {settings.domain.lower()}
        self._local_hostports: set[tuple[str, int]] = set()
        for host, port in (*settings.local.values(), *settings.local_other.values()):
            self._local_hosts.add(host.lower().strip("[]"))
            self._local_hostports.add((host.lower().strip("[]"), port))
        self._trusted = self._parse_trusted(settings.trusted_peers)
        self.guard = Guard(settings.guard)
        self._flood_exempt = frozenset(settings.flood_exempt)
        self.stats = {"received": 0, "sent": 0, "dropped": 0, "rejected": 0}
        # Requests for the server itself (no user part), by method.
        self._own: dict[str, Callable[[tx.ServerTransaction, float], None]] = {
            "REGISTER": self._on_register, "OPTIONS": self._on_options,
        }  # fmt: skip
        # Services that take a request before authentication (they authenticate it
        # themselves), and services that take one from an authenticated user outside a
        # dialog; each by method, registered by the service.
        self._handlers: dict[str, RequestHandler] = {}
        self._user_handlers: dict[str, UserRequestHandler] = {}
        # Durability: `commit(fn)` asks the store writer to commit every change the services
        # made so far and then call fn(ok, now) (the server runs its writer; None: no store,
        # as in unit tests, where fn runs at once).
        self.commit: Callable[[Callable[[bool, float], None]], None] | None = None
        self.calls: CallRouting | None = None  # calls to client numbers, when the office is set up
        self.calls = calls(self) if calls is not None else None
        self.trunks: TrunkRegistrations | None = None  # registrations to carriers
        self.trunks = trunks(self) if trunks is not None else None
        self.presence: PresenceServer | None = None  # SUBSCRIBE/NOTIFY/PUBLISH, when enabled
        self.presence = presence(self) if presence is not None else None
        self.messages: Messenger | None = None  # MESSAGE history and store-and-forward
        self.messages = messages(self) if messages is not None else None

    def handle(self, method: str, handler: RequestHandler) -> None:
        """Give `handler` the requests of `method` it `wants`, before authentication."""
        self._handlers[method] = handler

    def handle_authenticated(self, method: str, handler: UserRequestHandler) -> None:
        """Give `handler` the requests of `method` it `wants` from an authenticated user of
        ours, outside a dialog."""
        self._user_handlers[method] = handler

    # ------------------------------------------------------------------ network-facing API

    def receive(self, data: bytes, source: Peer, now: float) -> None:
        """Handle one datagram or one framed stream message from `source`."""
        self.stats["received"] += 1
        if type(source) is not Peer:
            source = Peer(*source)  # (a plain tuple from a test or another endpoint)
        ip = source[1]
        if not self.guard.admit(ip, now, lambda: self._exempt_from_flood_limit(source)):
            self.stats["dropped"] += 1  # banned, or over the rate: no answer at all
            return
        reliable = source.reliable
        try:
            msg = parse(data, datagram=not reliable)
        except ParseError as exc:
            if exc.headers is not None:
                self._reply_unparsable(exc, source)
            else:
                self.stats["dropped"] += 1
                log.debug("dropped unparsable message from %s: %s", source, exc)
            self._pump(now)
            return
        if isinstance(msg, Response):
            why = msg.check()
            if why is not None:
                self.stats["dropped"] += 1
                log.debug("dropped bad response from %s: %s", source, why)
            else:
                self.layer.receive_response(msg, source, reliable, now)
            self._pump(now)
            return
        ua = msg.get("user-agent")
        if ua is not None and self.guard.is_scanner(ua):
            self.stats["dropped"] += 1
            self.guard.scanner_dropped(ip, ua)
            return
        problem = msg.check()
        if problem is None:
            try:
                self._stamp_via(msg, source)
            except ParseError as exc:
                problem = (400, str(exc))
        if problem is not None:
            self.stats["rejected"] += 1
            self._stamp_via_best_effort(msg, source)
            if msg.method != "ACK":
                self.send_stateless(msg, problem[0], problem[1], source)
            self._pump(now)
            return
        self.layer.receive_request(msg, source, reliable, now)
        self._pump(now)

    def outgoing(self) -> list[tuple[bytes, Peer]]:
        """Everything to send since the last call, as (bytes, destination)."""
        out = self._out
        self._out = []
        self.stats["sent"] += len(out)
        return out

    def next_deadline(self) -> float | None:
        a = self.layer.get_timer()
        b = self.timers.next()
        c = self.location.next_expiry()
        candidates = [t for t in (a, b, c) if t is not None]
        return min(candidates) if candidates else None

    def on_timer(self, now: float) -> None:
        self.layer.handle_timer(now)
        self.timers.run(now)
        gone = self.location.expire(now)
        if gone:
            self.bindings_changed([], gone, now)
        self._pump(now)

    def clock_stepped(self, delta: float) -> None:
        """The wall clock `now` comes from jumped by `delta` seconds (the network layer tells
        it against a monotonic clock). Protocol timers (transactions, Timer C, ring steps) keep
        their durations; registrations and nonces keep their wall-clock expiry."""
        self.layer.clock_stepped(delta)
        self.timers.shift(delta)

    def unreachable(self, dest: Peer, now: float) -> None:
        """The network layer could not reach `dest` (connection refused or timed out): the
        requests waiting for it fail now (RFC 3261 §18.4; a proxy branch counts as 503, §16.9)."""
        if self.layer.destination_failed(dest, now):
            log.info("%s unreachable: its transactions fail at once", dest)
        self._pump(now)

    def flow_closed(self, flow: Peer, now: float) -> None:
        """A TCP/TLS connection closed: the outbound bindings registered over it are gone
        (RFC 5626 §5.3: the flow failed, and such a binding is reached over its flow only)."""
        gone = self.location.remove_flow(flow)
        if gone:
            log.info("flow %s closed: %d outbound registration(s) removed", flow, len(gone))
            self.bindings_changed([], gone, now)
            self._pump(now)

    def bindings_changed(self, added: list[Binding], removed: list[Binding], now: float) -> None:
        self.events.publish(BindingChanged(now, added, removed))

    def shutdown(self, now: float) -> None:
        """Answer or cancel every open transaction before the server stops."""
        self.proxy.shutdown(now)
        self._pump(now)

    # ------------------------------------------------------------------ event dispatch

    def pump(self, now: float) -> None:
        """Move what services started outside a received message or timer (a NOTIFY after a
        restart) to the outgoing queue."""
        self._pump(now)

    def _pump(self, now: float) -> None:
        layer = self.layer
        while True:
            events = layer.events()
            if not events:
                break
            for ev in events:
                self._dispatch(ev, now)
        self._out.extend(cast(list[tuple[bytes, Peer]], layer.datagrams_to_send()))

    def _dispatch(self, ev: object, now: float) -> None:
        kind = type(ev)
        if kind is tx.ResponseReceived:
            ev = cast(tx.ResponseReceived, ev)
            owner = ev.txn.context
            if owner is not None:
                cast(TransactionOwner, owner).on_response(ev.txn, ev.response, now)
        elif kind is tx.RequestReceived:
            self._on_request(cast(tx.RequestReceived, ev).txn, now)
        elif kind is tx.AckReceived:
            ack = cast(tx.AckReceived, ev)
            if self._acks_stateless_answer(ack.request):
                return  # the ACK of a challenge or refusal sent statelessly: it ends here
            self.proxy.forward_ack(ack.request, cast(Peer, ack.source), now)
        elif kind is tx.TransactionTimeout or kind is tx.TransportFailed:
            txn = cast(tx.TransactionTimeout | tx.TransportFailed, ev).txn
            owner = txn.context
            if isinstance(txn, tx.ClientTransaction) and owner is not None:
                if kind is tx.TransactionTimeout:
                    cast(TransactionOwner, owner).on_timeout(txn, now)
                else:
                    cast(TransactionOwner, owner).on_transport_error(txn, now)
        elif kind is tx.TransactionTerminated:
            self.proxy.on_terminated(cast(tx.TransactionTerminated, ev).txn)
        elif kind is tx.StrayResponse:
            self.proxy.on_stray_response(cast(tx.StrayResponse, ev).response, now)

    def send_request(
        self,
        req: Request,
        dest: Peer,
        owner: TransactionOwner | None,
        now: float,
        branch: str | None = None,
    ) -> tx.ClientTransaction:
        """Send a request the server originates or forwards in a client transaction: our Via
        on top (`branch`, else a fresh local one), and `owner` hears what becomes of it.
        ValueError when the transaction layer refuses it (a branch already in use)."""
        host, port = self.local_address(dest[0], dest[1])
        req.prepend(
            "Via",
            f"SIP/2.0/{dest[0].upper()} {host}:{port};branch={branch or self.new_local_branch()}"
            ";rport",
        )
        ctxn = self.layer.send_request(req, dest, dest.reliable, now)
        ctxn.context = owner
        return ctxn

    # ------------------------------------------------------------------ requests

    def _on_request(self, txn: tx.ServerTransaction, now: float) -> None:
        req = txn.request
        source: Peer = txn.source  # type: ignore[assignment]
        txn.response_dest = self.response_destination(req, source)
        method = req.method

        if method == "CANCEL":
            self.proxy.on_cancel(txn, now)
            return
        uri = req.ruri
        if not uri.is_sip:
            self.respond(txn, 416, now)
            return

        # Loose routing (RFC 3261 §16.4): remove the Route entries that name us, keeping the
        # dialog tokens our own Record-Route put into them.
        routed_to_us = False
        tokens: list[str] = []
        while True:
            top = req.get("route")
            if top is None:
                break
            try:
                first = parse_address(req.get_all("route")[0])
            except ParseError:
                self.respond(txn, 400, now, reason="Bad Route header")
                return
            if not self.is_local_uri(first.uri):
                break
            req.pop_first_value("route")
            routed_to_us = True
            token = first.uri.params.get(TOKEN_PARAM)
            if token:
                tokens.append(token)

        for_server = self.is_local_uri(uri) and (not uri.user or method == "REGISTER")
        mf_text = req.get("max-forwards")
        max_forwards = int(mf_text) if mf_text is not None else 70
        if max_forwards <= 0 and not (for_server and method == "OPTIONS"):
            self.respond(txn, 483, now)
            return
        if not for_server and self._is_loop(req):
            self.respond(txn, 482, now)
            return
        unsupported = [o for o in req.get_all("proxy-require") if o]
        if for_server:
            unsupported += [
                o for o in req.get_all("require") if o and o.lower() not in _SUPPORTED_TAGS
            ]
        if unsupported:
            self.respond(txn, 420, now, headers=[("Unsupported", ", ".join(unsupported))])
            return
        handler = self._handlers.get(method)
        if handler is not None and handler.wants(req):
            if method == "SUBSCRIBE" or method == "PUBLISH":
                normalize_expires(req)
            handler.on_request(txn, now)
            return

        if for_server:
            own = self._own.get(method)
            if own is not None:
                if method == "REGISTER":
                    normalize_expires(req)
                own(txn, now)
            elif method in KNOWN_METHODS:
                self.respond(txn, 405, now, headers=[("Allow", "OPTIONS, REGISTER")])
            else:  # RFC 3261 §21.5.2: a method the server does not know at all
                self.respond(txn, 501, now, headers=[("Allow", self.allow())])
            return

        # Only a dialog this server record-routed itself skips authentication: its Route
        # must carry our signed token for this Call-ID and one of the request's tags.
        dialog = self.dialog_of(req, tokens) if routed_to_us and req.to.tag else None
        in_dialog = dialog is not None
        trunk = self.inbound_trunk(txn, now, digest=not in_dialog)
        if trunk is None:
            strip_identity(req)  # RFC 3325: identity is the server's word, not the caller's
        user: str | None = None
        if not in_dialog and not (
            trunk is not None
            and method == "INVITE"
            and self.is_local_uri(uri)
            and not req.get("route")
        ):
            # (A trunk's trust covers its calls to our own users and numbers, nothing else.)
            user = self.authenticate(txn, now, proxy=True)
            if user is None:
                return
            if req.from_.uri.user is None or req.from_.uri.user.lower() != user:
                self.respond(txn, 403, now, reason="From does not match the authenticated user")
                return
        if user is not None and not in_dialog:
            user_handler = self._user_handlers.get(method)
            if user_handler is not None and user_handler.wants(req):
                user_handler.on_request(txn, user, now)
                return
        if in_dialog and method == "BYE":
            # Only a BYE naming both tags of the call ends its state (presence, call record);
            # another goes on to the phone, which judges it by its own dialog (§12.2.2): a
            # forged one gets 481 there, the BYE for a second 2xx of a forked call ends it.
            if self.proxy.liveness.tags_match(req):
                self.events.publish(CallEnded(now, req.call_id))  # presence, call records
            else:
                log.info("BYE in call %s names other tags: forwarded, the call goes on",
                         req.call_id)  # fmt: skip
        calls = self.calls
        if in_dialog and method == "REFER" and calls is not None:
            calls.refer(req, source, now)  # a transfer the transferee's INVITE may fulfil
        if (
            calls is not None
            and not in_dialog
            and method == "INVITE"
            and self.is_local_uri(uri)
            and not req.get("route")
        ):
            if user is not None:
                # dictation by phone, listening to voicemail: the media applications
                service = calls.service(user, uri.user or "", req.call_id)
                if isinstance(service, tuple):
                    code, text = service[0], _short(service[1])
                    self._refuse(txn, code, text, now)
                    return
                if service is not None:
                    self.proxy.ring(txn, [service], now)
                    return
                early = req.get("replaces")
                if early is not None and req.get("referred-by") is None:
                    # a busy-lamp pickup: an INVITE replacing a colleague's ringing dialog
                    named = parse_replaces(early)
                    rule = calls.pickup(user, PICKUP_CODE)
                    may = rule if callable(rule) else _nobody  # (not staff: refused if it rings)
                    if named is not None and self.proxy.pick_up(txn, user, may, now, named):
                        return
                pickup = calls.pickup(user, uri.user or "")
                if isinstance(pickup, tuple):
                    code, text = pickup
                    self._refuse(txn, code, text, now)
                    return
                if pickup is not None:
                    self.proxy.pick_up(txn, user, pickup, now)
                    return
                answer = calls.feature(user, uri.user or "", now)
                if answer is not None:
                    code, text = answer[0], _short(answer[1])
                    self._refuse(txn, code, text, now)
                    return
            replaces = req.get("replaces")
            refusal = None if replaces is None else self._replaces_refusal(
                replaces, source, user, now
            )  # fmt: skip
            if refusal is not None:
                code, text = refusal
                self._refuse(txn, code, text, now)
                return
            transfer = calls.transfer(req, user, now)  # (None: no Referred-By, or a user's own)
            if isinstance(transfer, tuple):
                code, text = transfer
                self._refuse(txn, code, text, now)
                return
            if transfer is not None:
                self.proxy.execute_plan(txn, transfer, now)
                return
            number = calls.number_of(uri.user)
            if number is not None:
                # a client's dictation number: dictation by phone, for whom the caller is
                said = (
                    None
                    if user is not None
                    else _caller_e164(req, calls.directory.provider.country_code)
                )
                dictating = calls.dictation_number(number, user, said, req.call_id)
                if isinstance(dictating, tuple):
                    code, text = dictating[0], _short(dictating[1])
                    self._refuse(txn, code, text, now)
                    return
                if dictating is not None:
                    self.proxy.ring(txn, [dictating], now)
                    return
                caller = str(req.from_.uri)
                asserted = None  # the number the carrier vouches for, if it sent one
                if user is None and req.get("p-asserted-identity"):
                    asserted = said or ""  # (it asserted no number: the From is no better)
                run = calls.start(number, req.call_id, caller, user, now, identity=asserted)
                self.proxy.execute_plan(txn, run, now)
                return
            if user is not None:  # a phone of ours dials out: a plan through the trunk
                out = calls.dial_out(user, uri.user or "", req.call_id, str(req.from_.uri), now)
                if isinstance(out, tuple):
                    self.respond(txn, out[0], now, reason=out[1])
                    return
                if out is not None:
                    self.proxy.execute_plan(txn, out, now)
                    return
        self.proxy.route_request(txn, dialog, now)

    def _on_options(self, txn: tx.ServerTransaction, now: float) -> None:
        headers = [("Allow", self.allow()), ("Accept", ACCEPT), ("Supported", SUPPORTED)]
        if "SUBSCRIBE" in self._handlers:
            headers.append(("Allow-Events", ALLOW_EVENTS))
        self.respond(txn, 200, now, headers=headers)

    def _replaces_refusal(
        self, value: str, source: Peer, user: str | None, now: float
    ) -> tuple[int, str] | None:
        """Why an INVITE with `Replaces` (RFC 3891) may not replace the call it names, or None:
        the call must be an answered one the server record-routed, and the INVITE must come
        from one of its ends or be what an approved REFER asked `user` (None: the carrier's
        caller) for, with that very `Replaces` (services/transfers.py). Else 481 (§3)."""
        named = parse_replaces(value)
        if named is None:
            return 400, "Bad Replaces header"
        party = self.proxy.liveness.party_of(named, source)
        if party is None:
            log.info("INVITE from %s:%s:%d refused: its Replaces names no call of ours (%s)",
                     *source, named[0])  # fmt: skip
            return 481, "Replaces names no call known here"
        calls = self.calls
        if party or (calls is not None and calls.transfers.expects(named, user, now)):
            return None
        log.warning("INVITE from %s:%s:%d refused: it may not replace call %s (no party of it, "
                    "no transfer asked for it)", *source, named[0])  # fmt: skip
        return 481, "Not allowed to replace this call"

    def dialog_of(self, req: Request, tokens: list[str]) -> tuple[Flow, Flow] | None:
        """The two flows of the dialog `req` belongs to, if one of `tokens` (from the Route
        entries naming us) is our signature for its Call-ID and one of its tags."""
        tags = tuple(t for t in (req.from_.tag, req.to.tag) if t)
        for token in tokens:
            flows = self.dialogs.check_route(token, req.call_id, tags)
            if flows is not None:
                return flows
        return None

    def _digest_trunk(self, username: str) -> Trunk | None:
        calls = self.calls
        if calls is None:
            return None
        for trunk in calls.directory.trunks.values():
            i = trunk.inbound
            if i.auth == "digest" and i.username == username and (i.ha1_md5 or i.ha1_sha256):
                return trunk
        return None

    def is_trunk_address(self, dest: Peer) -> bool:
        """Whether `dest` is a carrier trunk's address: reached only through a routing plan or
        inside a dialog the server signed."""
        calls = self.calls
        if calls is None:
            return False
        return calls.trunk_at(dest[1], dest[2]) is not None

    def _refuse_path_hop(self, uri: SipURI, dest: Peer | None) -> str | None:
        """Why a REGISTER's Path entry `uri` may not be used (`dest`: where the first entry is
        reached; None for the others): it names this server (requests would come back to us)
        or its first hop is a carrier trunk (calls to the user would leave through the trunk,
        at the office's cost)."""
        if self.is_local_uri(uri):
            return "Path names this server"
        if dest is not None and self.is_trunk_address(dest):
            return "Path names a carrier trunk"
        return None

    def _on_register(self, txn: tx.ServerTransaction, now: float) -> None:
        req = txn.request
        to_uri = req.to.uri
        if not to_uri.is_sip or to_uri.user is None:
            self.respond(txn, 400, now, reason="To must be a sip: URI with a user part")
            return
        if to_uri.host != self.settings.domain and not self.is_local_uri(to_uri):
            self.respond(txn, 403, now, reason="Not the registrar for this domain")
            return
        user = self.authenticate(txn, now, proxy=False)
        if user is None:
            return
        aor = to_uri.user.lower()
        if user != aor:
            self.respond(txn, 403, now, reason="Authenticated user does not own this address")
            return
        result = self.registrar.handle(req, aor, txn.source, now)  # type: ignore[arg-type]
        headers = result.headers
        if result.status == 200:  # RFC 3261 §10.3 step 8: phones without a clock use it
            # (RFC 3327 §5.3: a registrar that supports Path says so in its answers)
            headers = [*headers, ("Supported", SUPPORTED),
                       ("Date", email.utils.formatdate(now, usegmt=True))]  # fmt: skip
        if not (result.added or result.removed):
            self.respond(txn, result.status, now, reason=result.reason, headers=headers)
            return
        # Routing uses the new bindings at once; the 200 promises they survive a crash, so it
        # waits for the commit (refreshes too: a lost refresh would leave the older, earlier
        # expiry stored, and after a crash the device would be unreachable until it registers
        # again). Retransmissions meanwhile are absorbed by the server transaction.
        response = self.make_response(req, result.status, result.reason, headers)
        # Presence and stored messages learn of it after the 200 has gone out.
        self.send_after_commit(
            txn, response, now, "Registration could not be stored",
            then=lambda at: self.bindings_changed(result.added, result.removed, at),
        )  # fmt: skip

    def after_commit(self, fn: Callable[[bool, float], None], now: float) -> None:
        """Call fn(ok, now) once every change made so far is committed to the store (ok False:
        the commit failed)."""
        if self.commit is None:
            fn(True, now)
        else:
            self.commit(fn)

    def send_after_commit(
        self,
        txn: tx.ServerTransaction,
        response: Response,
        now: float,
        failure: str,
        then: Callable[[float], None] | None = None,
    ) -> None:
        """Send a final response that confirms a write once the write is committed; `500` with
        `failure` as the reason when the commit failed. `then(now)` runs after it either way."""

        def answer(ok: bool, at: float) -> None:
            if txn.state in (tx.State.TRYING, tx.State.PROCEEDING):  # (else: the server stopped)
                if ok:
                    self.layer.send_response(txn, response, at)
                else:
                    log.error("%s: answering %s with 500", failure, txn.request.method)
                    self.respond(txn, 500, at, reason=failure)
            if then is not None:
                then(at)

        self.after_commit(answer, now)

    # ------------------------------------------------------------------ authentication

    def authenticate(self, txn: tx.ServerTransaction, now: float, proxy: bool) -> str | None:
        """The authenticated user name (lower case), or None after answering 401/407 (a fresh
        challenge), 400 (the digest names another uri) or 403 (refused: back-off, or a digest
        without qop). Every such answer is stateless: one per request, no retransmission, no
        transaction kept (see `reject`)."""
        req = txn.request
        source_ip: str = txn.source[1]  # type: ignore[index]
        guard = self.guard
        users = self.users
        header = "proxy-authorization" if proxy else "authorization"
        stale = False
        for value in req.get_all(header):
            result = self.auth.verify(
                req.method,
                value,
                now,
                lambda u, a: users.ha1(u, a, now),
                request_uri=req.uri,
                allow_rfc2069=lambda u: users.allows_rfc2069(u, now),
            )
            name = result.username.lower() if result.username is not None else None
            if result.status:
                log.info(security_log_line("auth-refused", source_ip, result.reason))
                self.reject(txn, result.status, now, reason=result.public)
                return None
            if name is not None and (result.ok or result.guess):
                refusal = None
                if not self._registered_device(name, req, txn.source, now):  # type: ignore[arg-type]
                    refusal = guard.refusal(source_ip, name, now)
                if refusal is not None:  # the same answer whether the password was right
                    self.reject(txn, 403, now, reason=refusal)
                    return None
            if result.ok and name is not None:
                guard.succeeded(source_ip, name, now)
                return name
            if result.stale:
                stale = True
            elif result.guess and name is not None:
                guard.failed(source_ip, name, now, result.reason)
        challenge_name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        ua = req.get("user-agent") or ""
        md5_only = ua.startswith(self.settings.md5_only_user_agents) if ua else False
        headers = [(challenge_name, c) for c in self.auth.challenges(now, stale, md5_only)]
        self.reject(txn, 407 if proxy else 401, now, headers=headers)
        return None

    def _registered_device(self, name: str, req: Request, source: Peer, now: float) -> bool:
        """The request comes from a device registered for `name`: from the very address and
        port its binding was registered from, or a REGISTER refresh (same Call-ID) from its
        address. Such a phone is never held back by others' wrong passwords (a guesser behind
        the same router uses other ports; a forged source gets no answers to learn from)."""
        for b in self.location.lookup(name, now):
            if b.path:
                continue  # reached through an edge proxy: its address is everybody's
            if b.received == source:
                return True
            if b.call_id == req.call_id and b.received[1] == source[1] and req.method == "REGISTER":
                return True
        return False

    def reject(
        self,
        txn: tx.ServerTransaction,
        status: int,
        now: float,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """Answer a request statelessly and forget its transaction (Kamailio's sl_send_reply):
        for challenges and refusals of requests not (yet) authenticated. The To tag is derived
        from the request, so its ACK is known again (`_acks_stateless_answer`)."""
        resp = self.make_response(txn.request, status, reason, headers, self._sl_tag(txn.request))
        self.layer.reject_stateless(txn, resp)
        self.stats["rejected"] += 1

    @staticmethod
    def _sl_tag(req: Request) -> str:
        seed = f"{req.call_id}\0{req.from_.tag or ''}".encode("utf-8", "surrogateescape")
        return "sl" + hashlib.sha1(seed, usedforsecurity=False).hexdigest()[:10]

    def _acks_stateless_answer(self, ack: Request) -> bool:
        tag = ack.to.tag
        return tag is not None and tag.startswith("sl") and tag == self._sl_tag(ack)

    def update_guard(self, guard: GuardSettings, flood_exempt: tuple[str, ...]) -> None:
        """Apply new flood, ban and guessing limits (a config reload) to what comes next."""
        self.guard.update(guard)
        self._flood_exempt = frozenset(flood_exempt)

    def admit(self, source: Peer, now: float) -> bool:
        """Whether a datagram from `source` that is no SIP message (a STUN keep-alive) may be
        answered: it counts against the same flood limit and ban list as a request."""
        if self.guard.admit(source[1], now, lambda: self._exempt_from_flood_limit(source)):
            return True
        self.stats["dropped"] += 1
        return False

    def _exempt_from_flood_limit(self, source: Peer) -> bool:
        return source[1] in self._flood_exempt or self.is_trusted(source)

    def _parse_trusted(self, peers: tuple[str, ...]) -> set[tuple[str, int | None]]:
        """`HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT` (a bare IPv6 address is a host)."""
        out: set[tuple[str, int | None]] = set()
        for p in peers:
            try:
                host, port = split_host_port(p)
            except ValueError:
                host, port = p, None
            out.add((address_key(host), port))
        return out

    def _trusted_peer(self, source: Peer) -> bool:
        host = address_key(source[1])
        return (host, source[2]) in self._trusted or (host, None) in self._trusted

    def is_trusted(self, source: Peer) -> bool:
        """Whether `source` is a carrier recognised by its address (see inbound_trunk)."""
        if self._trusted_peer(source):
            return True
        return self.calls is not None and self.calls.trusted_trunk(source) is not None

    def inbound_trunk(
        self, txn: tx.ServerTransaction, now: float, digest: bool = True
    ) -> Trunk | None:
        """Whether a request comes from a carrier: its trunk (TRUSTED_PEER for a peer in
        `[sip] trusted_peers`) when its source is trusted by address (trunks with inbound
        authentication `address`, or `address-tcp` over TCP/TLS), or (with `digest`) when it
        carries valid credentials of a trunk whose inbound authentication is `digest`; else
        None. A carrier's trust covers its calls to our own users and numbers only."""
        source: Peer = txn.source  # type: ignore[assignment]
        if self._trusted_peer(source):
            return TRUSTED_PEER
        calls = self.calls
        if calls is None:
            return None
        trunk = calls.trusted_trunk(source)
        if trunk is not None or not digest:
            return trunk
        req = txn.request
        if not any(t.inbound.auth == "digest" for t in calls.directory.trunks.values()):
            return None
        for value in req.get_all("proxy-authorization"):
            params = parse_credentials(value)
            name = params.get("username") if params else None
            candidate = self._digest_trunk(name) if name else None
            if candidate is None:
                continue
            lookup = functools.partial(_trunk_ha1, candidate.inbound)
            if self.auth.verify(req.method, value, now, lookup).ok:
                return candidate
        return None

    # ------------------------------------------------------------------ helpers

    def person(self, name: str, now: float) -> Person | None:
        """Role and business of one of our users (None: no such user), for visibility."""
        calls = self.calls
        if calls is not None:
            u = calls.directory.users.get(name)
            if u is not None:
                return Person(u.role, u.client)
        account = self.users.get(name, now)
        return Person(account.role) if account is not None else None

    def is_local_uri(self, uri: SipURI) -> bool:
        host = uri.host.lower().strip("[]")
        if host not in self._local_hosts:
            return False
        if uri.port is None:
            return (
                host == self.settings.domain
                or any(
                    h == host and p == (5061 if uri.scheme == "sips" else 5060)
                    for h, p in self._local_hostports
                )
                or not self._local_hostports
            )
        # An explicit port must be one we listen on: another port of our host (or our domain's)
        # is another service, not us (Kamailio's `myself` check compares the port too).
        if (host, uri.port) in self._local_hostports:
            return True
        return host == self.settings.domain and any(p == uri.port for _, p in self._local_hostports)

    def is_own_sent_by(self, via: Via) -> bool:
        """Whether a Via's sent-by is one of the addresses we put into our Vias."""
        port = via.port or (5061 if via.transport.lower() == "tls" else 5060)
        return (via.host.lower().strip("[]"), port) in self._local_hostports

    def allow(self) -> str:
        """The methods the server handles, for Allow headers."""
        return ALLOW + ", PUBLISH" if self.presence is not None else ALLOW

    def local_address(self, transport: str, toward: str | None = None) -> tuple[str, int]:
        """Our (host, port) for `transport` as written in a Via or a URI (an IPv6 host in
        brackets): the address of the family of the peer `toward` (an IP address) when we
        listen on both families, else the one we listen on."""
        local = self.settings.local
        host, port = local.get(transport) or next(iter(local.values()))
        if toward is not None and (":" in toward) != (":" in host):
            host, port = self.settings.local_other.get(transport) or (host, port)
        return host_text(host), port

    def new_branch(self, req: Request) -> str:
        """A branch for a request the proxy forwards: it carries the loop hash (RFC 3261 §16.6
        step 8) so the request is known again if it comes back unchanged, and is signed for the
        request's Call-ID and the address its answers go back to (see `stray_binding`)."""
        body = f"{self._loop_hash(req)}.{next(self._branch_seq):x}"
        return self.branches.sign(body, stray_binding(req.call_id, req.top_via))

    def new_local_branch(self) -> str:
        """A branch for a request the server itself sends (NOTIFY, stored MESSAGE, a trunk's
        REGISTER): unique, without the loop hash, which only forwarded requests need, and not
        guessable (as the trunk's own random branch was), so a forged answer cannot match."""
        return f"{BRANCH_PREFIX}L.{next(self._branch_seq):x}.{secrets.token_hex(4)}"

    def _loop_hash(self, req: Request) -> str:
        h = hashlib.md5(usedforsecurity=False)
        to_tag = req.to.tag or ""
        from_tag = req.from_.tag or ""
        h.update(
            "\0".join(
                (req.uri, to_tag, from_tag, req.call_id, str(req.cseq[0]), *req.get_all("route"))
            ).encode("utf-8", "surrogateescape")
        )
        return h.hexdigest()[:10]

    def _is_loop(self, req: Request) -> bool:
        """RFC 3261 §16.3 step 4: this request passed us before, unchanged."""
        if not any(h[0] == "via" and BRANCH_PREFIX in h[2] for h in req.headers):
            return False  # no Via of ours at all: the common case, decided without parsing
        mine = [
            v for v in req.vias
            if v.branch and v.branch.startswith(BRANCH_PREFIX)
            and (v.host.strip("[]"), v.port or 5060) in self._local_hostports
        ]  # fmt: skip
        if not mine:
            return False
        loop_hash = self._loop_hash(req)
        return any(v.branch[len(BRANCH_PREFIX) :].split(".")[0] == loop_hash for v in mine)  # type: ignore[index]

    def _stamp_via(self, req: Request, source: Peer) -> None:
        """RFC 3261 §18.2.1 and RFC 3581: note where the request really came from."""
        via = req.top_via
        changed = False
        if "rport" in via.params:
            # RFC 3581 §4: with rport, received is added even when it equals the sent-by host.
            via.params["received"] = source[1]
            via.params["rport"] = str(source[2])
            changed = True
        elif not same_address(via.host, source[1]):
            via.params["received"] = source[1]
            changed = True
        elif "received" in via.params:
            # a received the sender wrote itself says nothing true: responses go to the source
            del via.params["received"]
            changed = True
        if changed:
            req.pop_first_value("via")
            req.prepend("via", str(via))

    def _stamp_via_best_effort(self, req: Request, source: Peer) -> None:
        with contextlib.suppress(ParseError):
            self._stamp_via(req, source)

    def response_destination(self, req: Request, source: Peer) -> Peer:
        """RFC 3261 §18.2.2 with RFC 3581: where responses to this request go."""
        if source.reliable:
            return source
        try:
            via = req.top_via
        except ParseError:
            return source
        if "rport" in via.params:
            return source
        host = via.params.get("received") or via.host
        if not is_ip_literal(host):
            return Peer("udp", source[1], via.port or 5060)
        return Peer("udp", host.strip("[]"), via.port or 5060)

    def make_response(
        self,
        req: Request,
        status: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        to_tag: str | None = None,
    ) -> Response:
        """A response to `req` per RFC 3261 §8.2.6 (Via, From, To, Call-ID, CSeq copied)."""
        hdrs: list[list[str]] = []
        for h in req.headers:
            key = h[0]
            if key in ("via", "from", "call-id", "cseq"):
                hdrs.append([key, h[1], h[2]])
            elif key == "to":
                value = h[2]
                if status > 100 and ";tag=" not in value.replace(" ", "").lower():
                    value = f"{value};tag={to_tag or self._to_tag(req)}"
                hdrs.append([key, h[1], value])
        resp = Response(status, reason or reason_phrase(status), hdrs)
        resp.add("Server", SERVER_NAME)
        for name, value in headers or ():
            resp.add(name, value)
        return resp

    def _to_tag(self, req: Request) -> str:
        seed = f"{req.call_id}\0{req.get('from')}\0{req.get('cseq')}".encode(
            "utf-8", "surrogateescape"
        )
        return hashlib.sha1(seed, usedforsecurity=False).hexdigest()[:12]

    def respond(
        self,
        txn: tx.ServerTransaction,
        status: int,
        now: float,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.layer.send_response(txn, self.make_response(txn.request, status, reason, headers), now)

    def send_stateless(self, req: Request, status: int, reason: str, source: Peer) -> None:
        resp = self.make_response(req, status, reason)
        self._out.append((resp.serialize(), self.response_destination(req, source)))

    def _refuse(self, txn: tx.ServerTransaction, code: int, text: str, now: float) -> None:
        """A final refusal of a call that says why, also as a `Reason` header (RFC 3326), so
        phones that show it tell the user."""
        self.respond(txn, code, now, reason=text,
                     headers=[("Reason", f'SIP;cause={code};text="{text}"')])  # fmt: skip

    def refuse(self, req: Request, source: Peer, status: int, reason: str) -> None:
        """Answer a request statelessly before it reaches a service (the media gate's 503 when
        the relay a new call needs does not answer)."""
        self.stats["rejected"] += 1
        self._stamp_via_best_effort(req, source)
        if req.method != "ACK":
            self.send_stateless(req, status, reason, source)

    def _reply_unparsable(self, exc: ParseError, source: Peer) -> None:
        self.stats["rejected"] += 1
        fake = Request("INVALID", "sip:invalid", exc.headers or [])
        if fake.get("via") is None or fake.get("cseq") is None:
            self.stats["dropped"] += 1
            return
        self._stamp_via_best_effort(fake, source)
        self.send_stateless(fake, 400, _short(str(exc)), source)

    def emit(self, data: bytes, dest: Peer) -> None:
        """Queue raw bytes (keep-alives, stateless forwards) for the network layer."""
        self._out.append((data, dest))


class RequestHandler(Protocol):
    """A service that takes requests of a method before authentication (presence)."""

    def wants(self, req: Request) -> bool: ...
    def on_request(self, txn: tx.ServerTransaction, now: float) -> None: ...


class UserRequestHandler(Protocol):
    """A service that takes requests of a method from an authenticated user (messaging)."""

    def wants(self, req: Request) -> bool: ...
    def on_request(self, txn: tx.ServerTransaction, user: str, now: float) -> None: ...


class TransactionOwner(Protocol):
    """Who started a client transaction and hears what becomes of it (pjsip's tsx_user): the
    object `send_request` stores as the transaction's context. Each call ends the owner's
    interest except `on_response` with a provisional (1xx) status."""

    def on_response(self, txn: tx.ClientTransaction, resp: Response, now: float) -> None: ...
    def on_timeout(self, txn: tx.ClientTransaction, now: float) -> None:
        """Timer B or F fired: no final response."""
        ...

    def on_transport_error(self, txn: tx.ClientTransaction, now: float) -> None:
        """The request could not be sent (a connection refused or gone)."""
        ...


TRUSTED_PEER = Trunk(name="[sip] trusted_peers", host="")  # a peer trusted by configuration


def _trunk_ha1(inbound: TrunkInbound, _user: str, algorithm: str) -> str | None:
    return inbound.ha1_md5 if algorithm == "MD5" else inbound.ha1_sha256


def _caller_e164(req: Request, country: int) -> str | None:
    """The number a carrier's call comes from, E.164: its P-Asserted-Identity (only a
    carrier's survives, RFC 3325), else its From; None when it is no phone number."""
    raw = req.get("p-asserted-identity")
    try:
        uri = str(parse_address(raw.split(",", 1)[0]).uri) if raw else str(req.from_.uri)
        return parse_number(caller_number(uri), country)
    except (ParseError, PhoneError):
        return None


def _short(reason: str) -> str:
    reason = "".join(c if c.isprintable() else "?" for c in reason)
    return reason[:100] or "Bad Request"


def _nobody(user: str) -> bool:
    """Whose ringing call a user who may pick up nothing may pick up."""
    return False
