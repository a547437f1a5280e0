"""The office's configuration as plain data: provider, clients, numbers, users, groups, trunks
and each number's rules. Loaded from the store, read by routing; no I/O and no SIP here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import StrEnum
from typing import Literal

from heimbuero.domain.callpolicy import CallPolicy

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class GroupStrategy(StrEnum):
    """How a group's members are rung (office/routing.group_members)."""

    RING_ALL = "ring_all"  # in member order, all at once
    LONGEST_IDLE = "longest_idle"  # who answered longest ago first
    ROUND_ROBIN = "round_robin"  # the member after the last one who answered first


class CallResult(StrEnum):
    """How a call ended, as its record says (billing and the console read it)."""

    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    CANCELLED = "cancelled"
    VOICEMAIL = "voicemail"
    TRANSFERRED = "transferred"  # the callee handed the caller on (REFER)


class CallEndReason(StrEnum):
    """Why a call ended, as its record says: an answered call by what ended it, an unanswered
    one by what the server saw happen (the caller's CANCEL, the final answers it got)."""

    # answered calls
    HANGUP = "hangup"  # a BYE from one of the phones
    SESSION_EXPIRED = "session_expired"  # no session refresh in time (RFC 4028): both ends gone
    NO_RESPONSE = "no_response"  # a request inside the call was not answered (408)
    DIALOG_GONE = "dialog_gone"  # a phone answered 481: it knows the call no more
    NO_AUDIO = "no_audio"  # the media relay heard nothing for too long
    # unanswered calls
    CALLER_CANCELLED = "caller_cancelled"  # the caller hung up while it rang (CANCEL)
    NO_ANSWER = "no_answer"  # the ring time ran out (408)
    UNREACHABLE = "unreachable"  # 408, and no target answered anything (phone offline, NAT gone)
    BUSY = "busy"  # 486 or 600 from the targets
    DECLINED = "declined"  # 603 from the targets
    UNAVAILABLE = "unavailable"  # nobody to ring, or 404/410/480/484/5xx/604 from the targets
    REFUSED = "refused"  # the server refused it before ringing (destination policy, a cap)
    REJECTED = "rejected"  # any other final answer of the targets (e.g. 488, 403 of a carrier)
    # either
    SERVER_STOPPED = "server_stopped"  # the server stopped while it rang or was answered


GROUP_STRATEGIES = tuple(s.value for s in GroupStrategy)
CALL_RESULTS = tuple(r.value for r in CallResult)
CALL_END_REASONS = tuple(r.value for r in CallEndReason)
OVERRIDE_TARGETS = ("office", "mobile")
# German states as the `holidays` package names them (ISO 3166-2:DE without the prefix).
BUNDESLAENDER = (
    "BB", "BE", "BW", "BY", "HB", "HE", "HH", "MV", "NI", "NW", "RP", "SH", "SL", "SN", "ST", "TH",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Provider:
    """The office service itself (one per installation)."""

    name: str
    address: str = ""
    vat_id: str = ""
    iban: str = ""
    bic: str = ""
    default_steps: tuple[Step, ...] = ()  # the plan when no rule of a number matches
    country_code: int = 49  # numbers typed without '+' are read in it (089 ... -> +4989...)


def caller_number(caller: str) -> str:
    """A caller as a number: the user part of a SIP/tel URI ("sip:+4930555123@carrier;user=
    phone" -> "+4930555123"), or the text itself."""
    return caller.split(":", 1)[-1].split("@", 1)[0].split(";", 1)[0]


@dataclass(frozen=True, slots=True)
class VipCaller:
    """A caller the client wants treated specially: the agent's card names them before the
    call is answered ("Herr Meier, Architekt – immer sofort zum Chef durchstellen")."""

    number: str  # E.164
    name: str
    remark: str = ""


@dataclass(frozen=True, slots=True)
class Client:
    """A client business served by the provider."""

    id: str  # slug, e.g. "mueller"
    name: str  # "Tischlerei Müller"
    trade: str = ""
    contact_person: str = ""
    greeting: str = ""  # what the agent says when answering for this client
    notes: str = ""
    timezone: str = "Europe/Berlin"
    bundesland: str = "BY"
    closure_days: tuple[date, ...] = ()
    call_policy: CallPolicy = field(default_factory=CallPolicy)  # calls out, approved numbers
    email: str = ""  # where call notes go by e-mail too ("" = messenger only)
    vip_callers: tuple[VipCaller, ...] = ()

    def vip(self, caller: str) -> VipCaller | None:
        """The VIP entry whose number `caller` (E.164, or a SIP URI's user part) is."""
        number = caller_number(caller)
        return next((v for v in self.vip_callers if v.number == number), None)


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str  # admin | agent | client | employee
    client: str | None = None  # the client business a client/employee user belongs to
    display_name: str = ""
    mobile: str | None = None  # E.164
    status: str = "available"  # an agent's own status (AGENT_STATUSES); others: available


# An agent's own status: only `available` agents are rung by team (group) calls; presence
# shows the others as away (break, away), busy (dnd) or offline (off: end of shift).
AGENT_STATUSES = ("available", "break", "away", "dnd", "off")


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    strategy: str = GroupStrategy.RING_ALL
    members: tuple[str, ...] = ()  # user names, in order


INBOUND_AUTH = ("address", "address-tcp", "digest")


@dataclass(frozen=True, slots=True)
class TrunkInbound:
    """How the carrier's calls to our numbers are recognised as the carrier's.

    `address`: by source address and port (UDP sources can be forged); `address-tcp`: by source
    address over TCP or TLS only; `digest`: the carrier answers our challenge with these
    credentials (only their hashes are kept)."""

    auth: str = "address"
    username: str | None = None
    ha1_md5: str | None = None
    ha1_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Trunk:
    """A carrier connection: where PSTN calls come from and go out."""

    name: str
    host: str
    port: int = 5060
    transport: str = "udp"
    prefixes: tuple[str, ...] = ("+49",)  # E.164 prefixes allowed outbound
    username: str | None = None  # registration to the carrier, when it wants one
    password: str | None = None
    register: bool = False
    inbound: TrunkInbound = TrunkInbound()
    call_policy: CallPolicy = field(default_factory=CallPolicy)  # classes, prefixes, caps


# -- what a plan step rings: parsed once, where the rules are loaded ------------------------


@dataclass(frozen=True, slots=True)
class UserTarget:
    """Every registered device of a user."""

    name: str

    def __str__(self) -> str:
        return f"user:{self.name}"


@dataclass(frozen=True, slots=True)
class GroupTarget:
    """The members of a group, as the group's strategy picks them."""

    name: str

    def __str__(self) -> str:
        return f"group:{self.name}"


@dataclass(frozen=True, slots=True)
class ExternalTarget:
    """A number outside, through a carrier trunk (E.164)."""

    number: str

    def __str__(self) -> str:
        return f"external:{self.number}"


@dataclass(frozen=True, slots=True)
class VoicemailTarget:
    """The voicemail of a user or of a client."""

    owner: str

    def __str__(self) -> str:
        return f"voicemail:{self.owner}"


ANNOUNCE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class AnnounceTarget:
    """Play the announcement `name`, then go on with the next step; with `end`, play it and
    end the call. Document form: `announce:NAME` or `announce:NAME;end`."""

    name: str
    end: bool = False

    def __str__(self) -> str:
        return f"announce:{self.name}" + (";end" if self.end else "")


RingTarget = UserTarget | GroupTarget | ExternalTarget | VoicemailTarget | AnnounceTarget
TargetKind = Literal["user", "group", "external", "voicemail", "announce"]
_TARGETS: dict[str, type[RingTarget]] = {
    "user": UserTarget,
    "group": GroupTarget,
    "external": ExternalTarget,
    "voicemail": VoicemailTarget,
}


def parse_target(text: str) -> RingTarget:
    """'user:anna' -> UserTarget('anna'), the document form of each kind (str() gives it back).
    ValueError for anything else; whether the name exists is the rules document's check."""
    kind, sep, ident = text.strip().partition(":")
    ident = ident.strip()
    if kind == "announce" and sep:
        name, _, flag = ident.partition(";")
        if not ANNOUNCE_NAME_RE.match(name.strip()) or flag.strip() not in ("", "end"):
            raise ValueError(
                f"{text!r} is not an announcement: announce:NAME or announce:NAME;end "
                "(NAME: letters, digits, - and _)"
            )
        return AnnounceTarget(name.strip(), flag.strip() == "end")
    cls = _TARGETS.get(kind)
    if not sep or cls is None or not ident:
        raise ValueError(
            f"{text!r} is not a target: user:NAME, group:NAME, external:+E164 or voicemail:ID"
        )
    return cls(ident)


@dataclass(frozen=True, slots=True)
class Step:
    """Ring these targets in parallel for `timeout` seconds. Targets given in their document
    form ("user:anna") are parsed on construction."""

    targets: tuple[RingTarget, ...]
    timeout: int = 30

    def __post_init__(self) -> None:
        if any(isinstance(t, str) for t in self.targets):
            parsed = tuple(parse_target(t) if isinstance(t, str) else t for t in self.targets)
            object.__setattr__(self, "targets", parsed)

    def target_texts(self) -> list[str]:
        return [str(t) for t in self.targets]


@dataclass(frozen=True, slots=True)
class Presence:
    """A rule condition on a user's devices."""

    user: str
    registered: bool | None = None  # True: at least one device registered
    in_call: bool | None = None  # False: not in a call right now


@dataclass(frozen=True, slots=True)
class Caller:
    """A rule condition on who calls: `vip` True: the caller is one of the client's VIP
    callers, False: is not; `numbers` (E.164) and `prefixes` ("+4989"): the caller's number is
    one of `numbers` or starts with one of `prefixes` (either list may be empty, not both
    when `vip` is None). Set parts must all hold; a call without a caller number matches no
    number or prefix and is no VIP."""

    vip: bool | None = None
    numbers: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()

    def holds(self, number: str | None, vip: bool) -> bool:
        if self.vip is not None and vip != self.vip:
            return False
        if self.numbers or self.prefixes:
            if number is None:
                return False
            return number in self.numbers or number.startswith(self.prefixes)
        return True


@dataclass(frozen=True, slots=True)
class When:
    """A rule's condition; every field that is set must hold. Empty means always."""

    days: tuple[str, ...] | None = None  # subset of WEEKDAYS
    start: str | None = None  # "HH:MM" local time, inclusive
    end: str | None = None  # "HH:MM" local time, exclusive
    holidays: str = "ignore"  # exclude | only | ignore
    closures: str = "ignore"  # exclude | only | ignore
    presence: Presence | None = None
    override: str | None = None  # "office" | "mobile": while that override is active
    caller: Caller | None = None  # who calls (VIP, numbers, prefixes)
    # (start, end) parsed once from start/end: end None = midnight at the end of the day;
    # None = no time window
    window: tuple[time, time | None] | None = field(
        init=False, default=None, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.start is None and self.end is None:
            return
        start = parse_hhmm(self.start) if self.start is not None else time(0, 0)
        assert start is not None
        end = parse_hhmm(self.end, allow_24=True) if self.end is not None else None
        object.__setattr__(self, "window", (start, end))

    @property
    def always(self) -> bool:
        return self == When()


_HHMM_RE = re.compile(r"^([0-9]{2}):([0-9]{2})$")


def parse_hhmm(text: str, *, allow_24: bool = False) -> time | None:
    """'07:30' -> time(7, 30). '24:00' (only with allow_24) -> None, meaning end of day.

    Raises ValueError for anything else."""
    m = _HHMM_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a time HH:MM")
    hh, mm = int(m.group(1)), int(m.group(2))
    if allow_24 and hh == 24 and mm == 0:
        return None
    if hh > 23 or mm > 59:
        raise ValueError(f"{text!r} is not a time of day (00:00..23:59)")
    return time(hh, mm)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    steps: tuple[Step, ...]
    when: When = field(default_factory=When)


@dataclass(frozen=True, slots=True)
class Number:
    """A phone number (E.164) owned by a client, with its ordered rules."""

    e164: str
    client: str
    rules: tuple[Rule, ...] = ()
    # the client's dictation number: a call to it starts dictation by phone, never a rule
    dictation: bool = False


@dataclass(frozen=True, slots=True)
class Override:
    """A temporary forwarding set by feature code, until `until` (None: until cancelled)."""

    client: str
    target: str  # "office" | "mobile"
    until: datetime | None = None


@dataclass(frozen=True)
class Directory:
    """The whole configuration routing reads, indexed by id."""

    provider: Provider
    clients: dict[str, Client] = field(default_factory=dict)
    numbers: dict[str, Number] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    trunks: dict[str, Trunk] = field(default_factory=dict)
