"""Calls to client numbers: the office's RoutePlan executed by the proxy, feature codes from
client phones, and the events of every call's record (what billing charges from).

`office.routing.route()` decides (pure); this module turns a plan's steps into SIP branches
(users' registered devices, group members, the carrier trunk for external numbers) and keeps
the call state routing needs: who is in a call, who answered last, the active overrides.

Call records are not written from here: each change of a routed call is published as one
event (`CallOffered`, `RoutedCallStep`, `RoutedCallAnswered`, `RoutedCallEnded`,
`CallTransferred`), carrying the record's number this module counts, and the recorder
(services/callrecords.py) subscribes to them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from heimbuero.config import PICKUP_CODE
from heimbuero.domain.model import (
    AnnounceTarget,
    CallEndReason,
    CallResult,
    Directory,
    ExternalTarget,
    GroupTarget,
    Override,
    Provider,
    RingTarget,
    Step,
    Trunk,
    User,
    UserTarget,
)
from heimbuero.events import (
    CallEnded,
    CallOffered,
    CallRinging,
    CallTransferred,
    ProviderWarning,
    RoutedCallAnswered,
    RoutedCallEnded,
    RoutedCallStep,
)
from heimbuero.office.callpolicy import (
    cap_refusal,
    destination_refusal,
    dialled_number,
    may_change_forwarding,
    may_dial_out,
)
from heimbuero.office.dictation import dictation_caller
from heimbuero.office.pickup import NOT_STAFF, may_pick_up
from heimbuero.office.roles import is_staff
from heimbuero.office.routing import (
    RoutePlan,
    RoutingState,
    expand_group,
    feature_code,
    normalise_number,
    route,
)
from heimbuero.office.voicemail import NO_MAILBOX, has_mailbox, mailbox_owner, mailboxes
from heimbuero.sip.dialog import parse_replaces
from heimbuero.sip.locate import AUTO, DEFAULT_PORT, is_address
from heimbuero.sip.message import ParseError, Request, parse_address
from heimbuero.sip.peer import Peer, address_key, host_text

from .location import LocationService
from .mediaapps import dictation_user, listen_user
from .proxy import Target
from .transfers import TRANSFER_WINDOW, PendingTransfer, TransferBook, target_key

if TYPE_CHECKING:
    from .core import SipCore

log = logging.getLogger("heimbuero.calls")

CLIENT_HEADER = "X-Heimbuero-Client"
DIAL_OUT_TIMEOUT = 120  # s: how long a call dialled out may ring at the carrier
MAX_CALL_OUT_SECONDS = 8 * 3600  # a call out still counted after this lost its BYE
STAFF = frozenset({"admin", "agent"})


class RoutingStore(Protocol):
    """What call routing reads and writes in the store itself (behind the server): overrides
    set by feature codes, and the talk time of a client's calls out (read once a day)."""

    def override_changed(self, client: str, override: Override | None) -> None: ...
    def external_talk_seconds(self, client: str, since: datetime) -> float: ...


@dataclass(slots=True)
class ActiveCall:
    """An answered routed call, until its BYE."""

    record_id: int
    answered_by: str | None
    answered_at: float
    users: tuple[str, ...]
    plan: RoutePlan | None = None  # for the log line at its end
    label: str = ""
    ring_seconds: float = 0.0
    client: str | None = None
    external: bool = False  # answered through the trunk: counts against the caps
    transferred: bool = False  # handed on by a REFER we approved: its record ends `transferred`


def unanswered_reason(status: int) -> CallEndReason:
    """The end reason of an unanswered call by the final status it got (not cancelled by the
    caller, not refused by the server itself)."""
    if status == 408:
        return CallEndReason.NO_ANSWER  # every step's ring time ran out (or Timer C)
    if status in (486, 600):
        return CallEndReason.BUSY
    if status == 603:
        return CallEndReason.DECLINED
    if status in (404, 410, 480, 484, 604) or 500 <= status < 600:
        return CallEndReason.UNAVAILABLE  # nobody to ring, not registered, carrier down
    return CallEndReason.REJECTED


class PlanRun:
    """One RoutePlan being executed for one call (the proxy's PlanRunner)."""

    def __init__(self, calls: CallRouting, plan: RoutePlan, call_id: str, caller: str,
                 caller_user: str | None, record_id: int, started: float) -> None:  # fmt: skip
        self.calls = calls
        self.plan = plan
        self.call_id = call_id
        self.caller = caller
        self.caller_user = caller_user
        self.record_id = record_id
        self.started = started
        self.index = -1
        self.rang = False  # whether an earlier step rang anybody (Diversion says no-answer)
        self.voicemail = False
        self.refusal: tuple[int, str] | None = None  # a call out refused by policy or a cap
        self.unresolved = False  # the refusal is a carrier without an address (DNS), no policy
        self.dial_out = False  # a user dialled this number (no forwarding headers)
        self.asserted: str | None = None  # the caller ID for the carrier, when not `caller`
        self.transfer = False  # the plan of a transfer (REFER): Diversion says `deflection`

    def next_step(self, now: float) -> tuple[list[Target], float] | None:
        self.index += 1
        steps = self.plan.steps
        if self.index >= len(steps):
            return None
        step = steps[self.index]
        targets: list[Target] = []
        for t in step.targets:
            targets.extend(self.calls.targets_for(t, self, now))
        if targets:
            self.rang = True
            self.calls.core.events.publish(
                RoutedCallStep(now, self.call_id, self.record_id, self.index + 1)
            )
        return targets, float(step.timeout)

    def answered(self, target: Target, now: float) -> None:
        label = target.label
        user = label.name if isinstance(label, UserTarget) else None
        self.calls.answered(self, user, label, now)

    def failed(
        self,
        status: int,
        now: float,
        *,
        cancelled: bool = False,
        stopped: bool = False,
        unheard: bool = False,
    ) -> None:
        self.calls.release_out(self.call_id)
        result = CallResult.CANCELLED if status == 487 else (
            CallResult.BUSY if status in (486, 600) else
            CallResult.NO_ANSWER if status in (408, 480) else CallResult.FAILED
        )  # fmt: skip
        reason = self.end_reason(status, cancelled, stopped, unheard)
        self.calls.core.events.publish(RoutedCallEnded(
            now, self.call_id, self.record_id, result, reason, ring_seconds=now - self.started,
        ))  # fmt: skip
        if log.isEnabledFor(logging.INFO):
            _log_call(self.plan, result, "", now - self.started, 0.0)

    def end_reason(
        self, status: int, cancelled: bool, stopped: bool, unheard: bool = False
    ) -> CallEndReason:
        """Why the unanswered call ended, from what the server saw: the caller's CANCEL, its
        own refusal, or the final answer it sent upstream (the best of the targets'); a 408
        where no target answered anything at all is an unreachable phone, not one that rang
        out."""
        if stopped:
            return CallEndReason.SERVER_STOPPED
        if cancelled:
            return CallEndReason.CALLER_CANCELLED
        if self.refusal is not None and status == self.refusal[0]:
            return CallEndReason.UNAVAILABLE if self.unresolved else CallEndReason.REFUSED
        if status == 408 and unheard:
            return CallEndReason.UNREACHABLE
        return unanswered_reason(status)

    def answered_late(self, target: Target, now: float) -> None:
        return None  # a 2xx after the final answer: the caller's side hangs it up

    def final_hint(self) -> tuple[int, str, list[tuple[str, str]]] | None:
        """A call out refused by policy or a cap answers its 403/503 with the reason; a
        voicemail target answers 480 with a Reason until voicemail exists."""
        if self.refusal is not None:
            status, text = self.refusal
            return status, f"{text}", [("Reason", f'SIP;cause={status};text="{text}"')]
        if not self.voicemail:
            return None
        text = "Voicemail is not available yet"
        return 480, "Temporarily Unavailable", [("Reason", f'SIP;cause=480;text="{text}"')]


@dataclass
class CallRouting:
    """Routed calls and overrides for the SIP core; the events of their call records."""

    core: SipCore
    store: RoutingStore
    directory: Directory = field(default_factory=lambda: Directory(Provider(name="")))
    overrides: dict[str, Override] = field(default_factory=dict)
    active: dict[str, ActiveCall] = field(default_factory=dict)  # Call-ID -> answered call
    last_answered: dict[str, float] = field(default_factory=dict)
    rr_last: dict[str, str] = field(default_factory=dict)
    overrides_version: int = 0  # bumped by every feature code
    clock_zone: Callable[[str], ZoneInfo] = ZoneInfo
    out_calls: dict[str, tuple[str | None, str, float]] = field(default_factory=dict)  # Call-ID
    # -> (client, trunk, start) of each call with a branch through a trunk, until it ends
    media_app: Peer | None = None  # where the media applications (voicemail) listen
    dictation_code: str = ""  # dialled for dictation by phone ("" : off)
    dictation_key: bytes = b""  # signs the media applications' dictation and listen URIs
    listen_code: str = ""  # dialled to listen to one's voicemail ("" : off)
    # the owners with voicemails stored (the server's message-waiting counts)
    stored_mailboxes: Callable[[], AbstractSet[str]] = frozenset
    paused: frozenset[str] = frozenset()  # agents whose own status is not available
    talk_today: dict[str, tuple[str, float]] = field(default_factory=dict)  # client ->
    # (local date, seconds of ended calls out that day: the store's sum plus ours since)
    # Where trunks named by host name are, as DNS said (RFC 3263; the server looks them up
    # and refreshes them by their TTL): (host, port, transport) -> addresses, in order to try
    located: dict[tuple[str, int, str], tuple[Peer, ...]] = field(default_factory=dict)
    _trunk_peers: dict[str, tuple[Peer, ...]] = field(default_factory=dict)
    _trunk_at: dict[tuple[str, int], Trunk] = field(default_factory=dict)
    transfers: TransferBook = field(default_factory=TransferBook)  # approved REFERs
    records: int = 0  # call records started (the last one's number)

    def __post_init__(self) -> None:
        self.paused = _paused(self.directory)
        self._index_trunks()
        # A call's end comes from the bus (a BYE the proxy saw, or the server ended it).
        self.core.events.subscribe(CallEnded, self._on_call_ended)

    def _on_call_ended(self, event: CallEnded) -> None:
        self.on_bye(event.call_id, event.at, event.reason)

    def update(
        self, directory: Directory, overrides: list[Override], version: int | None = None
    ) -> None:
        """New configuration from the store (reloaded every few seconds by the server).

        `version` is `overrides_version` as it was when the store was read: when a feature
        code changed an override since, the in-memory overrides are newer and stay."""
        self.directory = directory
        self.paused = _paused(directory)
        self._index_trunks()
        if version is None or version == self.overrides_version:
            self.overrides = {o.client: o for o in overrides}

    # ------------------------------------------------------------------ trunk addresses

    def _index_trunks(self) -> None:
        peers: dict[str, tuple[Peer, ...]] = {}
        at: dict[tuple[str, int], Trunk] = {}
        for t in self.directory.trunks.values():
            direct = direct_peer(t)
            found = (direct,) if direct is not None else self.located.get(trunk_lookup(t), ())
            peers[t.name] = found
            for p in found:
                at.setdefault((address_key(p.host), p.port), t)
        self._trunk_peers, self._trunk_at = peers, at

    def lookups(self) -> set[tuple[str, int, str]]:
        """The (host, port, transport) of every UDP, TCP or "auto" (NAPTR) trunk named by host
        name: what DNS must find."""
        trunks = self.directory.trunks.values()
        return {trunk_lookup(t) for t in trunks if not is_address(t.host) and t.transport != "tls"}

    def set_located(self, found: dict[tuple[str, int, str], tuple[Peer, ...]]) -> None:
        """What the lookups found (a name that could not be looked up keeps its last answer)."""
        self.located = found
        self._index_trunks()

    def trunk_peers(self, trunk: Trunk) -> tuple[Peer, ...]:
        """The trunk's addresses in the order to try them (none: its name is not resolved)."""
        found = self._trunk_peers.get(trunk.name)
        if found is None:  # (not in the directory, e.g. a test's registration)
            direct = direct_peer(trunk)
            found = (direct,) if direct is not None else self.located.get(trunk_lookup(trunk), ())
        return found

    def trunk_at(self, host: str, port: int) -> Trunk | None:
        """The trunk one of whose addresses is HOST:PORT."""
        return self._trunk_at.get((address_key(host), port))

    def set_status(self, user: str, status: str) -> None:
        """An agent's new status, at once (the next office reload brings the same)."""
        account = self.directory.users.get(user)
        if account is not None and account.status != status:
            self.directory.users[user] = replace(account, status=status)
            self.paused = _paused(self.directory)

    # ------------------------------------------------------------------ routing

    def number_of(self, user_part: str | None) -> str | None:
        """The client number a Request-URI user part dials, if it is one of ours."""
        if not user_part or not (user_part[0] == "+" or user_part[0].isdigit()):
            return None
        try:
            number = normalise_number(user_part if user_part[0] == "+" else "+" + user_part)
        except ValueError:
            return None
        return number if number in self.directory.numbers else None

    def trusted_trunk(self, source: Peer) -> Trunk | None:
        """The trunk whose inbound authentication is by source address and that `source` is
        (`address-tcp`: only over a TCP or TLS connection; `digest`: never by address)."""
        trunk = self._trunk_at.get((address_key(source[1]), source[2]))
        if trunk is not None:
            auth = trunk.inbound.auth
            if auth == "address" or (auth == "address-tcp" and source[0] in ("tcp", "tls")):
                return trunk
        return None

    def state(self, now: float) -> RoutingState:
        in_call: set[str] = set()
        for call in self.active.values():
            in_call.update(call.users)
        return RoutingState(
            overrides=dict(self.overrides),
            registered=_Registered(self.core.location, now),
            in_call=frozenset(in_call),
            paused=self.paused,
            last_answered=dict(self.last_answered),
            rr_last=dict(self.rr_last),
        )

    def plan(self, number: str, now: float, caller: str | None = None) -> RoutePlan:
        return route(number, _utc(now), self.state(now), self.directory, caller)

    def start(self, number: str, call_id: str, caller: str, caller_user: str | None,
              now: float, identity: str | None = None) -> PlanRun:  # fmt: skip
        """Route and record a call to a client number. The rules' caller conditions see the
        caller's number: `identity`, the number the carrier asserted (P-Asserted-Identity;
        "" when it asserted no number), else the From of a call the carrier brought in through
        a trunk; a call from a phone of ours (`caller_user`) has no outside caller number."""
        seen = caller if identity is None else identity
        plan = self.plan(number, now, seen if caller_user is None else None)
        record_id = self._offered(now, call_id, number, caller, plan.client, plan.rule)
        log.debug("call %s from %s to %s: %s", call_id, caller, number, plan.reason)
        return PlanRun(self, plan, call_id, caller, caller_user, record_id, now)

    def dial_out(
        self, user: str, dialled: str, call_id: str, caller: str, now: float
    ) -> PlanRun | tuple[int, str] | None:
        """A user's phone dialled an external number: a one-step plan through the trunk
        (with the destination policy, the caps and a call record of the user's business), a
        (status, reason) refusal, or None when `dialled` is no external number.

        The caller ID given to the carrier (P-Asserted-Identity) is the lowest number of the
        user's client; provider staff (no client) keep their SIP address and the carrier shows
        its default number."""
        if dialled.lower() in self.directory.users:
            return None
        number = dialled_number(dialled)
        if number is None or number in self.directory.numbers:
            return None
        account = self.directory.users.get(user)
        if account is None or not may_dial_out(account.role):
            return 403, "Calls out are not allowed for this user"
        client = account.client if account.client in self.directory.clients else None
        if not any(number.startswith(t.prefixes) for t in self.directory.trunks.values()):
            log.warning("call %s from %s to %s refused: no trunk carries it", call_id, user, number)
            return 403, "Destination not allowed: no trunk carries it"
        plan = RoutePlan(
            client=client, number=number, rule="dial-out",
            steps=(Step((ExternalTarget(number),), DIAL_OUT_TIMEOUT),),
            reason=f"{user} dials out",
        )  # fmt: skip
        record_id = self._offered(now, call_id, number, caller, client, "dial-out")
        log.info("call %s from %s out to %s (client %s)", call_id, user, number, client or "-")
        run = PlanRun(self, plan, call_id, caller, user, record_id, now)
        run.dial_out = True
        own = sorted(n.e164 for n in self.directory.numbers.values() if n.client == client)
        if client is not None and own:
            run.asserted = f"sip:{own[0]}@{self.core.settings.domain}"
        return run

    def targets_for(self, target: RingTarget, run: PlanRun, now: float) -> list[Target]:
        if isinstance(target, UserTarget):
            return self._user_targets(target.name, run, now)
        if isinstance(target, GroupTarget):
            out: list[Target] = []
            for member in expand_group(target.name, self.state(now), self.directory):
                out.extend(self._user_targets(member, run, now))
            return out
        if isinstance(target, ExternalTarget):
            t = self._external_target(target.number, run)
            return [t] if t is not None else []
        app = self.media_app
        if isinstance(target, AnnounceTarget):  # played by the media applications
            if app is None:
                return []
            mode = "end" if target.end else "go"
            user = f"announce.{target.name}.{mode}.{run.plan.client or '-'}"
            return [Target(f"sip:{user}@{app.host}:{app.port}", app, target)]
        if app is not None:  # VoicemailTarget: the media applications answer
            uri = f"sip:voicemail.{target.owner}@{app.host}:{app.port}"
            return [Target(uri, app, target)]
        run.voicemail = True  # no media applications: 480 with a Reason
        return []

    def _user_targets(self, user: str, run: PlanRun, now: float) -> list[Target]:
        directory = self.directory
        account = directory.users.get(user)
        client = directory.clients.get(run.plan.client or "")
        display = None
        headers: tuple[tuple[str, str], ...] = ()
        if client is not None:
            headers = ((CLIENT_HEADER, client.id),)
            if account is None or account.role in STAFF:
                # The agent must know before answering whom the call is for.
                display = f"{client.name}: {_pretty_number(run.caller)}"
        # The same destinations as any call to the user (the proxy decides where devices are;
        # a device with several outbound flows rings once, the others kept for failing over).
        targets = [
            Target(d[0].uri, d[0].dest, UserTarget(user), display, headers, route=d[0].route,
                   flows=tuple(d[1:]))
            for d in self.core.proxy.device_flows(user, now)
        ]  # fmt: skip
        events = self.core.events
        ringing = display is not None and account is not None and targets
        if ringing and events.has_subscribers(CallRinging):
            assert client is not None  # (display is set for a client's call only)
            events.publish(CallRinging(now, run.call_id, user, client.id, run.plan.number,
                                       run.caller, run.plan.rule or ""))  # fmt: skip
        return targets

    def _external_target(self, number: str, run: PlanRun) -> Target | None:
        trunks = self.directory.trunks.values()
        trunk = next((t for t in trunks if number.startswith(t.prefixes)), None)
        if trunk is None:
            log.warning("call %s: no trunk allows %s; step target skipped", run.call_id, number)
            run.refusal = (403, "Destination not allowed: no trunk carries it")
            return None
        refusal = self.out_refusal(number, run.plan.client, trunk, run.call_id, run.started)
        if refusal is not None:
            run.refusal = refusal
            return None
        peers = self.trunk_peers(trunk)
        if not peers:
            log.warning("call %s: trunk %s: %s has no address (DNS)", run.call_id, trunk.name,
                        trunk.host)  # fmt: skip
            run.refusal = (503, "Service Unavailable: the carrier's address is not resolved")
            run.unresolved = True
            return None
        self.out_calls[run.call_id] = (run.plan.client, trunk.name, run.started)
        domain = self.core.settings.domain
        dest, alternates = peers[0], peers[1:]  # RFC 3263 §4.3: the next when one fails
        where = host_text(trunk.host) + (f":{trunk.port}" if trunk.port else "")
        uri = f"sip:{number}@{where}"
        asserted = ("P-Asserted-Identity", f"<{_caller_uri(run.asserted or run.caller, domain)}>")
        if run.dial_out:
            return Target(uri, dest, ExternalTarget(number), None, (asserted,), alternates)
        dialled = f"sip:{run.plan.number}@{domain}"
        # Evaluated before this step's own targets count: did anybody ring before?
        reason, cause = ("no-answer", 408) if run.rang else ("unconditional", 302)
        if run.transfer:
            reason = "deflection"  # (RFC 5806 §4: the call was sent on after it was answered)
        headers = (
            ("Diversion", f"<{dialled}>;reason={reason};counter=1"),
            ("History-Info", f"<{dialled}>;index=1"),
            ("History-Info", f"<{uri};cause={cause}>;index=1.1"),
            asserted,
        )
        return Target(uri, dest, ExternalTarget(number), None, headers, alternates)

    # ------------------------------------------------------------------ calls out

    def out_refusal(
        self, number: str, client_id: str | None, trunk: Trunk, call_id: str, now: float
    ) -> tuple[int, str] | None:
        """Whether a call out to `number` through `trunk` for `client_id` (None: provider
        staff) may start: None, or the (status, reason) to answer. One log line per refusal;
        a cap reached is also a warning on the provider's event stream."""
        client = self.directory.clients.get(client_id or "")
        policy = client.call_policy if client is not None else None
        reason = destination_refusal(number, policy, trunk.call_policy)
        if reason is not None:
            log.warning(
                "call %s to %s refused for client %s via trunk %s: %s",
                call_id, number, client_id or "-", trunk.name, reason,
            )  # fmt: skip
            return 403, reason
        if call_id in self.out_calls:
            return None  # this call already counts (a second external target of its plan)
        for stale in [k for k, v in self.out_calls.items() if v[2] < now - MAX_CALL_OUT_SECONDS]:
            # its BYE never passed us (a peer ignoring Record-Route): do not block forever
            log.warning("call %s out counted no more after %d s", stale, MAX_CALL_OUT_SECONDS)
            del self.out_calls[stale]
        client_running = sum(1 for c, _, _ in self.out_calls.values() if c == client_id)
        trunk_running = sum(1 for _, t, _ in self.out_calls.values() if t == trunk.name)
        seconds = self.talk_seconds_today(client_id, now) if client is not None else 0.0
        cap = cap_refusal(
            client_id, policy, trunk.name, trunk.call_policy,
            client_running, trunk_running, seconds,
        )  # fmt: skip
        if cap is None:
            return None
        log.warning(
            "call %s to %s refused (%d): %s; %s", call_id, number, cap.status, cap.reason,
            cap.warning,
        )  # fmt: skip
        self.core.events.publish(ProviderWarning(now, {
            "kind": "call_out_cap", "client": client_id, "trunk": trunk.name, "number": number,
            "status": cap.status, "reason": cap.reason, "warning": cap.warning,
            "at": _utc(now).isoformat(),
        }))  # fmt: skip
        return cap.status, cap.reason

    def release_out(self, call_id: str) -> None:
        self.out_calls.pop(call_id, None)

    def _local_day(self, client_id: str, now: float) -> tuple[str, datetime]:
        client = self.directory.clients.get(client_id)
        zone = self.clock_zone(client.timezone if client is not None else "Europe/Berlin")
        local = datetime.fromtimestamp(now, zone)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return local.date().isoformat(), midnight

    def talk_seconds_today(self, client_id: str | None, now: float) -> float:
        """Talk time of the client's calls out today (its local day): ended ones (read from
        the call records once a day, then counted here) plus the ones still running."""
        if client_id is None:
            return 0.0
        day, midnight = self._local_day(client_id, now)
        known = self.talk_today.get(client_id)
        if known is None or known[0] != day:
            known = (day, self.store.external_talk_seconds(client_id, midnight))
            self.talk_today[client_id] = known
        running = sum(  # calls out still counted (a stale one stops counting, see out_refusal)
            now - c.answered_at
            for call_id, c in self.active.items()
            if c.external and c.client == client_id and call_id in self.out_calls
        )
        return known[1] + running

    # ------------------------------------------------------------------ call state

    def _offered(self, now: float, call_id: str, number: str, caller: str,
                 client: str | None, rule: str | None) -> int:  # fmt: skip
        """A routing plan starts: the number of its new call record, published with it."""
        self.records += 1
        self.core.events.publish(
            CallOffered(now, call_id, number, caller, client, rule, self.records)
        )
        return self.records

    def answered(
        self, run: PlanRun, user: str | None, label: RingTarget | None, now: float
    ) -> None:
        users = tuple(u for u in (user, run.caller_user) if u)
        ring = now - run.started
        external = isinstance(label, ExternalTarget)
        text = str(label) if label is not None else ""  # "user:anna", as records show it
        if not external:
            self.release_out(run.call_id)  # a phone of ours answered: no call out
        self.active[run.call_id] = ActiveCall(
            run.record_id, user, now, users, run.plan, text, ring, run.plan.client, external
        )
        if user is not None:
            self.last_answered[user] = now
            for group in self.directory.groups.values():
                if user in group.members:
                    self.rr_last[group.name] = user
        self.core.events.publish(
            RoutedCallAnswered(now, run.call_id, run.record_id, text, ring, run.plan.rule)
        )

    def on_bye(self, call_id: str, now: float, reason: str = CallEndReason.HANGUP) -> None:
        call = self.active.pop(call_id, None)
        self.release_out(call_id)
        if call is None:
            return
        if call.external and call.client is not None:
            day, _ = self._local_day(call.client, now)
            known = self.talk_today.get(call.client)
            if known is not None and known[0] == day:
                self.talk_today[call.client] = (day, known[1] + now - call.answered_at)
        voicemail = call.label.startswith("voicemail:")
        result = CallResult.VOICEMAIL if voicemail else CallResult.ANSWERED
        if call.transferred:
            result = CallResult.TRANSFERRED
        self.core.events.publish(RoutedCallEnded(
            now, call_id, call.record_id, result, reason, talk_seconds=now - call.answered_at
        ))  # fmt: skip
        if call.plan is not None and log.isEnabledFor(logging.INFO):
            _log_call(call.plan, result, call.label, call.ring_seconds, now - call.answered_at)

    # ------------------------------------------------------------------ transfers

    def _target_key(self, user_part: str | None) -> str | None:
        if not user_part:
            return None
        part = unquote(user_part)
        number = self.number_of(part) or dialled_number(part)
        return target_key(part, frozenset(self.directory.users), number)

    def refer(self, req: Request, source: Peer, now: float) -> None:
        """A REFER inside a dialog the proxy record-routed (forwarded in any case): approve
        it for the transferee's INVITE when it comes from a registered device of our user in
        an answered routed call and names a target in our domain (services/transfers.py)."""
        call = self.active.get(req.call_id)
        if call is None:
            log.info("REFER in call %s not approved: no routed call answered", req.call_id)
            return
        referrer = next((u for u in call.users if self._device_of(u, source, now)), None)
        if referrer is None:
            log.warning("REFER in call %s from %s:%s:%d not approved: not a registered device of "
                        "%s", req.call_id, *source, "/".join(call.users))  # fmt: skip
            return
        try:
            uri = parse_address(req.get("refer-to") or "").uri
        except ParseError:
            return
        key = self._target_key(uri.user) if self.core.is_local_uri(uri) else None
        if key is None:
            log.info("REFER in call %s by %s not approved: %s is not in our domain",
                     req.call_id, referrer, uri)  # fmt: skip
            return
        transferee = next((u for u in call.users if u != referrer), None)
        number = call.plan.number if call.plan is not None else ""
        self.transfers.add(PendingTransfer(
            req.call_id, call.client, number, referrer, transferee, key,
            now + TRANSFER_WINDOW, _uri_replaces(uri.headers),
        ), now)  # fmt: skip
        log.info("call %s: %s transfers %s to %s", req.call_id, referrer,
                 transferee or "the caller", key)  # fmt: skip

    def _device_of(self, user: str, source: Peer, now: float) -> bool:
        return any(b.received == source for b in self.core.location.lookup(user, now))

    def transfer(
        self, req: Request, user: str | None, now: float
    ) -> PlanRun | tuple[int, str] | None:
        """A new INVITE with Referred-By (from the carrier: `user` None): the plan of the
        approved transfer it fulfils, a refusal, or None to route it as any call (a user's
        own INVITE that fulfils no approved REFER is that user's call; so is the carrier's
        to one of our users or numbers). The carrier's to anything else is refused 403."""
        raw = req.get("referred-by")
        if raw is None:
            return None
        try:
            by = parse_address(raw).uri
        except ParseError:
            by = None
        key = self._target_key(req.ruri.user)
        referred_by = by.user if by is not None and self.core.is_local_uri(by) else None
        named = parse_replaces(req.get("replaces") or "")
        pending = self.transfers.take(key, referred_by, user, now, named) if key else None
        if pending is None:
            # A call for our users and numbers is let in as any call of the carrier (a caller
            # an outside PBX transferred to a client of ours carries Referred-By too).
            ours = key is not None and (key.startswith("user:") or key in self.directory.numbers)
            if user is None and not ours:
                log.warning("call %s: INVITE from the carrier with Referred-By %s to %s refused: "
                            "no REFER of ours asked for it", req.call_id, raw,
                            req.ruri.user)  # fmt: skip
                return 403, "Transfer not authorised"
            return None
        assert key is not None  # (a pending transfer was found by it)
        referrer = self.directory.users.get(pending.referrer)
        target: RingTarget
        if key.startswith("user:"):
            target = UserTarget(key.removeprefix("user:"))
        elif key in self.directory.numbers:
            run = self.start(key, req.call_id, str(req.from_.uri), user, now)
            self._transferred(pending, run, now)
            return run
        elif referrer is None or not may_dial_out(referrer.role):
            return 403, "Calls out are not allowed for this user"
        else:
            target = ExternalTarget(key)
        plan = RoutePlan(
            client=pending.client, number=pending.number or key, rule="transfer",
            steps=(Step((target,), DIAL_OUT_TIMEOUT),),
            reason=f"{pending.referrer} transfers call {pending.call_id}",
        )  # fmt: skip
        caller = str(req.from_.uri)
        record_id = self._offered(now, req.call_id, plan.number, caller, plan.client, plan.rule)
        run = PlanRun(self, plan, req.call_id, caller, user, record_id, now)
        run.transfer = True
        self._transferred(pending, run, now)
        return run

    def _transferred(self, pending: PendingTransfer, run: PlanRun, now: float) -> None:
        """Link the new call's record to the original's; the original ends `transferred`."""
        self.core.events.publish(CallTransferred(now, run.call_id, pending.call_id))
        original = self.active.get(pending.call_id)
        if original is not None:  # (else the referrer hung up first: the store marks it)
            original.transferred = True
        log.info("call %s: transferred from call %s by %s", run.call_id, pending.call_id,
                 pending.referrer)  # fmt: skip

    def close_all(self, now: float) -> None:
        """The server stops: every answered call still up gets its talk time so far."""
        for call_id in list(self.active):
            self.on_bye(call_id, now, CallEndReason.SERVER_STOPPED)

    # ------------------------------------------------------------------ feature codes

    def _client_user(self, user: str) -> User | None:
        """`user`'s account when it belongs to a client of ours (owner or employee)."""
        account = self.directory.users.get(user)
        if account is None or account.client not in self.directory.clients:
            return None
        return account

    def dictation(self, user: str, dialled: str, call_id: str) -> Target | tuple[int, str] | None:
        """Dictation by phone: where `user`'s call to the dictation code goes (the media
        applications, by a URI signed for this call), (status, text) when it may not, or None
        when `dialled` is not the code."""
        code = self.dictation_code
        if not code or unquote(dialled).strip() not in (code, code + "#"):
            return None
        account = self._client_user(user)
        if account is None or account.client is None:
            return 403, "Dictation by phone works from a client's phone"
        app = self.media_app
        if app is None or not self.dictation_key:
            return 503, "Dictation by phone is not available"
        name = dictation_user(self.dictation_key, call_id, account.client, user)
        log.info("call %s: dictation by phone of %s for %s", call_id, user, account.client)
        return Target(f"sip:{name}@{app.host}:{app.port}", app)

    def dictation_number(
        self, number: str, user: str | None, caller: str | None, call_id: str
    ) -> Target | tuple[int, str] | None:
        """A call to a client's dictation number (None: `number` is an ordinary one): the
        media applications' dictation for the client, in the name of the client's user who
        calls — `user` when a phone of ours calls, else the user whose mobile is the carrier's
        `caller` (office/dictation.dictation_caller) — or (status, text) when no one is."""
        entry = self.directory.numbers.get(number)
        if entry is None or not entry.dictation:
            return None
        roles = {u.name: (str(u.role), u.client, u.mobile) for u in self.directory.users.values()}
        author, why = dictation_caller(entry.client, roles, user, caller)
        if author is None:
            log.warning("call %s to the dictation number %s of %s from %s refused: %s",
                        call_id, number, entry.client, user or caller or "-", why)  # fmt: skip
            return 403, why
        app = self.media_app
        if app is None or not self.dictation_key:
            return 503, "Dictation by phone is not available"
        name = dictation_user(self.dictation_key, call_id, entry.client, author)
        log.info("call %s: dictation number %s, dictation of %s for %s", call_id, number,
                 author, entry.client)  # fmt: skip
        return Target(f"sip:{name}@{app.host}:{app.port}", app)

    def listen(self, user: str, dialled: str, call_id: str) -> Target | tuple[int, str] | None:
        """Listening to voicemail by phone: where `user`'s call to the listen code goes (the
        media applications, by a URI signed for this call and this user: the box is the
        authenticated user's, office/voicemail.py), (status, text) when he has no box, or
        None when `dialled` is not the code."""
        code = self.listen_code
        if not code or unquote(dialled).strip() not in (code, code + "#"):
            return None
        account = self.directory.users.get(user)
        if account is None:
            return 403, "Voicemail by phone works from a user's phone"
        owner = mailbox_owner(account)
        if not has_mailbox(owner, mailboxes(self.directory), self.stored_mailboxes()):
            log.info("call %s: %s dialled %s but has no mailbox", call_id, user, code)
            return 404, NO_MAILBOX
        app = self.media_app
        if app is None or not self.dictation_key:
            return 503, "Voicemail by phone is not available"
        log.info("call %s: %s listens to the mailbox %s", call_id, user, owner)
        name = listen_user(self.dictation_key, call_id, user)
        return Target(f"sip:{name}@{app.host}:{app.port}", app)

    def service(self, user: str, dialled: str, call_id: str) -> Target | tuple[int, str] | None:
        """A service code of the server's own (dictation, listening to voicemail) dialled by
        the authenticated `user`: see `dictation` and `listen`."""
        found = self.dictation(user, dialled, call_id)
        return found if found is not None else self.listen(user, dialled, call_id)

    def pickup(self, user: str, dialled: str) -> Callable[[str], bool] | tuple[int, str] | None:
        """Call pickup (`*8`, office/pickup.py) dialled by the authenticated `user`: whose
        ringing phone he may take a call from (a test on the ringing user's name), (status,
        text) when he may pick up nothing, or None when `dialled` is not the code."""
        if unquote(dialled).strip() not in (PICKUP_CODE, PICKUP_CODE + "#"):
            return None
        users = self.directory.users
        picker = users.get(user)
        if picker is None or not is_staff(picker.role):
            return 403, NOT_STAFF

        def may(ringing: str) -> bool:
            account = users.get(ringing)
            return account is not None and may_pick_up(picker, account)

        return may

    def feature(self, user: str, dialled: str, now: float) -> tuple[int, str] | None:
        """Apply a feature code dialled by `user`; (status, text) to answer, or None if the
        dialled string is no feature code."""
        if not dialled or dialled[0] not in "*#%":
            return None
        account = self._client_user(user)
        if account is None or account.client is None:
            return 403, "Feature codes work from a client's own phone"
        client = self.directory.clients[account.client]
        local = datetime.fromtimestamp(now, self.clock_zone(client.timezone))
        try:
            action = feature_code(dialled, client.id, local)
        except ValueError as exc:
            return 484, str(exc)
        if action is None:
            return None
        if not may_change_forwarding(account.role, account.client, client.id):
            log.warning("feature code %s by %s refused: may not change forwarding", dialled, user)
            return 403, "Only the client's owner may change its forwarding"
        self.overrides = action.apply(self.overrides)
        self.overrides_version += 1
        self.store.override_changed(client.id, self.overrides.get(client.id))
        log.info("feature code %s by %s: %s", action.code, user, action.text)
        return 603, action.text


class _Registered(AbstractSet[str]):
    """The users with a live binding, as a view on the location service: routing asks only
    `user in registered`, so no set of every registered user is built per call."""

    def __init__(self, location: LocationService, now: float) -> None:
        self._location = location
        self._now = now

    def __contains__(self, user: object) -> bool:
        return isinstance(user, str) and self._location.is_registered(user, self._now)

    def __iter__(self) -> Iterator[str]:
        return (a for a in self._location.aors() if self._location.is_registered(a, self._now))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _log_call(plan: RoutePlan, outcome: str, answered_by: str, ring: float, talk: float) -> None:
    """The one INFO line of a routed call, at its end."""
    log.info(
        "call number=%s client=%s rule=%s outcome=%s answered_by=%s ring=%.1fs talk=%.1fs",
        plan.number, plan.client or "-", json.dumps(plan.rule or "(default)", ensure_ascii=False),
        outcome, answered_by or "-",
        ring, talk,
    )  # fmt: skip


def _uri_replaces(headers: str | None) -> tuple[str, str, str] | None:
    """The call a `Replaces` in a URI's headers (a Refer-To's `?Replaces=...`) names."""
    for item in (headers or "").split("&"):
        name, _, value = item.partition("=")
        if name.strip().lower() == "replaces":
            return parse_replaces(unquote(value))
    return None


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _caller_uri(caller: str, domain: str) -> str:
    return caller if caller.startswith(("sip:", "sips:", "tel:")) else f"sip:{caller}@{domain}"


def _pretty_number(caller: str) -> str:
    """The caller as a phone shows it: the number, or the user part."""
    try:
        uri = parse_address(caller).uri
        return uri.user or str(uri)
    except ParseError:
        return caller


def _paused(directory: Directory) -> frozenset[str]:
    """The agents a team call skips (their own status is not `available`); worked out when
    the directory changes, not per call."""
    return frozenset(n for n, u in directory.users.items() if u.status != "available")


def trunk_lookup(trunk: Trunk) -> tuple[str, int, str]:
    """What DNS is asked for a trunk: its host name, port (0: by SRV) and transport."""
    return (trunk.host.lower(), trunk.port, trunk.transport)


def direct_peer(trunk: Trunk) -> Peer | None:
    """Where a trunk is without a DNS lookup of ours: its address, or, over TLS, its name (the
    connection resolves it off the event loop, and the carrier's certificate is checked
    against that name)."""
    if is_address(trunk.host) or trunk.transport == "tls":
        host = trunk.host.strip("[]").lower()
        transport = "udp" if trunk.transport == AUTO else trunk.transport  # (RFC 3263 §4.1)
        return Peer(transport, host, trunk.port or DEFAULT_PORT[transport])
    return None
