"""Domain events and the in-process bus that carries them.

The SIP services publish what happened (a call was offered, answered, ended; a registration
changed; a user's presence changed; a message was stored or changed state); presence, call
records and the live HTTP streams subscribe instead of being called by the publisher.

Dispatch is synchronous, on the event loop, in the order of subscription: `publish` returns
when every subscriber has run. A subscriber's exception is logged and never reaches the
publisher nor stops the other subscribers. Subscribing to a class also receives its
subclasses (`MessageDelivered` is a `MessageStateChanged`).

The seam for a bus across machines is `EventSink`: `EventBus.forward_to(sink)` hands every
event to it after the local subscribers (a sink that queues or serialises them).

This module imports nothing of ours: every layer may use it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

log = logging.getLogger("heimbuero.events")

Peer = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class Event:
    """The base of every domain event; `at` is the event's time (seconds since the epoch)."""

    at: float


class BindingView(Protocol):
    """What subscribers may read of a registration (the location service's Binding)."""

    @property
    def aor(self) -> str: ...
    @property
    def contact(self) -> str: ...
    @property
    def received(self) -> Peer: ...
    @property
    def expires_at(self) -> float: ...


@dataclass(frozen=True, slots=True)
class BindingChanged(Event):
    """Registrations were added or refreshed, removed by their device, or expired (published
    after the change is committed)."""

    added: Sequence[BindingView]
    removed: Sequence[BindingView]

    def users(self) -> set[str]:
        return {b.aor for b in self.added} | {b.aor for b in self.removed}


# A routed call's record (what billing charges from) is written from the events below, by
# `record` (CallRouting's number for it, unique in the process): CallOffered starts it, then
# RoutedCallStep, RoutedCallAnswered, RoutedCallEnded change it; CallTransferred and
# CallMediaMeasured go by Call-ID.


@dataclass(frozen=True, slots=True)
class CallOffered(Event):
    """A call to a client number (or a call out) started at `at`: a routing plan rings, and
    its record `record` starts (`caller` as the call's From, `rule` the plan's rule)."""

    call_id: str
    number: str
    caller: str
    client: str | None
    rule: str | None
    record: int


@dataclass(frozen=True, slots=True)
class RoutedCallStep(Event):
    """A routed call's plan moved on to step `step` (1-based) and rings somebody there."""

    call_id: str
    record: int
    step: int


@dataclass(frozen=True, slots=True)
class RoutedCallAnswered(Event):
    """A routed call was answered at `at`: by `answered_by` (the plan's target as records show
    it, "user:anna", "external:+49..."; "" when unknown), after `ring_seconds`, under `rule`."""

    call_id: str
    record: int
    answered_by: str
    ring_seconds: float
    rule: str | None


@dataclass(frozen=True, slots=True)
class RoutedCallEnded(Event):
    """A routed call's record ends at `at` with `result` (a `CallResult` value) and
    `end_reason` (a `CallEndReason` value). An unanswered call gives its `ring_seconds`, an
    answered one its `talk_seconds` (the other is None: the record keeps what it has)."""

    call_id: str
    record: int
    result: str
    end_reason: str
    ring_seconds: float | None = None
    talk_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class CallTransferred(Event):
    """The call `call_id` fulfils a transfer (a REFER the server approved) of the call
    `from_call_id`: its record links the other, which ends `transferred`."""

    call_id: str
    from_call_id: str


@dataclass(frozen=True, slots=True)
class CallMediaMeasured(Event):
    """The media relay's statistics of a call's audio (after the call ended), for its record:
    `stats` per direction ("a": what the caller sent, "b": the callee), as the relay gives them."""

    call_id: str
    stats: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class CallAnswered(Event):
    """An INVITE the proxy forwarded was answered (2xx); `users` are our users in the call."""

    call_id: str
    users: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PhoneAlerting(Event):
    """A forwarded INVITE rings (`ringing`: its first 180/183) or stopped ringing (the branch
    got its final answer, was cancelled or failed) at one of `user`'s phones: the lamps of a
    colleague's busy-lamp field (dialog-info `early`). `caller` and `display` are the From of
    the forwarded request, `from_tag`/`to_tag` the early dialog's tags (for pickup)."""

    call_id: str
    user: str
    ringing: bool
    caller: str = ""
    display: str | None = None
    from_tag: str | None = None
    to_tag: str | None = None


@dataclass(frozen=True, slots=True)
class CallEnded(Event):
    """A call the server record-routed is over: a BYE through us, or the server ended it
    (`reason`, a `CallEndReason` value: its session timer lapsed, a request inside it went
    unanswered or found no such call, its audio stopped)."""

    call_id: str
    reason: str = "hangup"


@dataclass(frozen=True, slots=True)
class PresenceChanged(Event):
    """A user's composed presence changed; `state` is its JSON form (user, status, ...)."""

    user: str
    state: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class MessageStored(Event):
    """A new message was accepted (relayed or stored); `message` is its summary."""

    message: Mapping[str, Any]

    @property
    def sender(self) -> str:
        return str(self.message["sender"])

    @property
    def recipient(self) -> str:
        return str(self.message["recipient"])


@dataclass(frozen=True, slots=True)
class MessageStateChanged(MessageStored):
    """A message changed state (queued, failed, expired, delivered)."""


@dataclass(frozen=True, slots=True)
class MessageDelivered(MessageStateChanged):
    """A device accepted a message."""


@dataclass(frozen=True, slots=True)
class ProviderWarning(Event):
    """Something the provider's staff should see (a cap of calls out reached)."""

    warning: Mapping[str, Any]


# The billable office services. Each is published after what it reports is committed; the
# usage meter (billing) subscribes to them and to CallEnded. Ids are the store's own.


@dataclass(frozen=True, slots=True)
class CallNoteTaken(Event):
    """An agent took a call note (Telefonnotiz) for a client; `call_id` when it came from a
    call, None for a walk-in or e-mail note."""

    client: str
    note_id: int
    agent: str
    call_id: str | None


@dataclass(frozen=True, slots=True)
class VoicemailLeft(Event):
    """A caller left a voicemail for a client (or one of its users): `seconds` recorded."""

    client: str
    voicemail_id: int
    call_id: str
    seconds: float


@dataclass(frozen=True, slots=True)
class MailboxChanged(Event):
    """A message of the mailbox `owner` (`voicemail:OWNER`) was marked heard or deleted, and
    committed: its phones' message waiting is to be sent again."""

    owner: str


@dataclass(frozen=True, slots=True)
class DictationDelivered(Event):
    """A typed dictation was delivered to its author: the Normzeilen of the delivered text
    and the minutes of audio behind it (a corrected delivery publishes again, same job)."""

    client: str
    job_id: int
    normzeilen: int
    audio_seconds: float


@dataclass(frozen=True, slots=True)
class DictationChanged(Event):
    """A dictation job was created or changed state (published after the commit): what the
    portal and the typists' queue show live."""

    client: str
    job_id: int
    state: str
    author: str
    typist: str | None


@dataclass(frozen=True, slots=True)
class UsageChanged(Event):
    """A client's usage or what it costs changed from `month` (YYYY-MM, the client's local
    month) on (published after the commit). Subscribing to it receives both kinds below:
    what the client's open billing page and the provider's billing page follow."""

    client: str
    month: str


@dataclass(frozen=True, slots=True)
class UsageMetered(UsageChanged):
    """Billing rated a billable event of a client into usage lines (published after the
    commit): `month` is the client's local month of the event, `lines` how many lines it has
    now (0: none under the tariff, or no tariff)."""

    source_kind: str
    source_id: str
    lines: int


@dataclass(frozen=True, slots=True)
class UsageRecomputed(UsageChanged):
    """Billing rated a client's open usage again (published after the commit): `reason`
    "tariff" (a tariff assigned from a day of `month`: that month and every later one may
    have changed, `until` None) or "recompute" (the open readings of `month` rated again,
    `until` == `month`); `readings` how many were rated again (0: only the tariff, e.g. its
    base fee, changed)."""

    until: str | None
    reason: str
    readings: int


E = TypeVar("E", bound=Event)


class EventSink(Protocol):
    """Where events go besides the local subscribers: the seam for an external bus."""

    def publish(self, event: Event) -> None: ...


class EventBus:
    """Typed publish/subscribe in one process, dispatched synchronously."""

    def __init__(self) -> None:
        self._subs: dict[type[Event], list[Callable[[Any], None]]] = {}
        self._plan: dict[type[Event], tuple[Callable[[Any], None], ...]] = {}
        self._sinks: list[EventSink] = []

    def subscribe(self, kind: type[E], fn: Callable[[E], None]) -> Callable[[], None]:
        """Call fn(event) for every event of `kind` (and its subclasses) published from now
        on; returns the function that ends the subscription."""
        self._subs.setdefault(kind, []).append(fn)
        self._plan.clear()

        def unsubscribe() -> None:
            fns = self._subs.get(kind)
            if fns is not None and fn in fns:
                fns.remove(fn)
                self._plan.clear()

        return unsubscribe

    def forward_to(self, sink: EventSink) -> None:
        """Hand every event to `sink` too (after the local subscribers)."""
        self._sinks.append(sink)

    def has_subscribers(self, kind: type[Event]) -> bool:
        return bool(self._handlers(kind)) or bool(self._sinks)

    def _handlers(self, kind: type[Event]) -> tuple[Callable[[Any], None], ...]:
        plan = self._plan.get(kind)
        if plan is None:
            found: list[Callable[[Any], None]] = []
            for base in kind.__mro__:
                found.extend(self._subs.get(base, ()))
            plan = self._plan[kind] = tuple(found)
        return plan

    def publish(self, event: Event) -> None:
        """Run every subscriber of the event's type now; their exceptions are logged."""
        for fn in self._handlers(type(event)):
            try:
                fn(event)
            except Exception:
                log.exception("a subscriber of %s failed", type(event).__name__)
        for sink in self._sinks:
            try:
                sink.publish(event)
            except Exception:
                log.exception("the event sink failed on %s", type(event).__name__)


@dataclass(frozen=True, slots=True)
class AgentStatusChanged(Event):
    """An agent set their own status (published after the commit): team calls skip an agent
    who is not available, presence shows it."""

    user: str
    status: str


@dataclass(frozen=True, slots=True)
class CallRinging(Event):
    """A call for a client rings an agent's phones: the console shows the client's card."""

    call_id: str
    user: str
    client: str
    number: str
    caller: str
    rule: str = ""  # the forwarding rule that sent the call ("" = the provider's default plan)
