"""The office's configuration as plain data: provider, clients, numbers, users, groups, trunks
and each number's rules. Loaded from the store, read by routing; no I/O and no SIP here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from heimbuero.domain.callpolicy import CallPolicy

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
GROUP_STRATEGIES = ("ring_all", "longest_idle", "round_robin")
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


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str  # admin | agent | client | employee
    client: str | None = None  # the client business a client/employee user belongs to
    display_name: str = ""
    mobile: str | None = None  # E.164


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    strategy: str = "ring_all"
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


@dataclass(frozen=True, slots=True)
class Step:
    """Ring these targets in parallel for `timeout` seconds."""

    targets: tuple[str, ...]  # "user:NAME", "group:NAME", "external:+E164", "voicemail:ID"
    timeout: int = 30


@dataclass(frozen=True, slots=True)
class Presence:
    """A rule condition on a user's devices."""

    user: str
    registered: bool | None = None  # True: at least one device registered
    in_call: bool | None = None  # False: not in a call right now


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

    @property
    def always(self) -> bool:
        return self == When()


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
