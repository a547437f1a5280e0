"""The application layer: one handler per aggregate, shared by the HTTP API (web/) and the
command line (cli.py), which are thin adapters over it.

Each handler method takes an `Actor` (who asks: name, role, business), checks it through
`policy` (the one authorization module), validates its input, and makes its store calls as
one unit of work. Errors are typed (`errors`: NotFound, Forbidden, Invalid, Conflict, …;
the store's StoreError types pass through) and mapped once by each adapter.

    rest (web/app.py, cli.py) → handlers (heimbuero/app) → office/ rules, store/
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from heimbuero.app.agentstatus import AgentStatus
from heimbuero.app.billing import Billing, Invoices, SendMail, UsageWatch
from heimbuero.app.calls import Calls, RingWatch, Warnings, WarningWatch
from heimbuero.app.clients import Clients, Numbers, Providers
from heimbuero.app.dictation import Dictation
from heimbuero.app.errors import (
    AppError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Problem,
    Rejected,
    TooMany,
    Unavailable,
    http_status,
)
from heimbuero.app.files import Files
from heimbuero.app.forwarding import Closures, Forwarding
from heimbuero.app.greetings import Greetings
from heimbuero.app.groups import Groups
from heimbuero.app.messages import Messages, MessageWatch, Send
from heimbuero.app.notes import Mail, Notes
from heimbuero.app.policy import Actor, Role
from heimbuero.app.presence import Presence, Snapshot, Watch
from heimbuero.app.rules import Overrides, Rules, Simulator
from heimbuero.app.secondfactor import SecondFactor
from heimbuero.app.server import Registrations, ServerState, Status
from heimbuero.app.trunks import Trunks
from heimbuero.app.users import Tokens, Users
from heimbuero.app.voicemail import Voicemails
from heimbuero.events import Event
from heimbuero.office.files import FileService
from heimbuero.office.routing import RoutingState
from heimbuero.store import Store

__all__ = [
    "Actor", "App", "AppError", "Conflict", "Forbidden", "Invalid", "NotFound", "Problem",
    "Rejected", "Role", "TooMany", "Unavailable", "http_status",
]  # fmt: skip


@dataclass
class App:
    """Every handler, wired to one store (and, in the server, to its live parts)."""

    users: Users
    tokens: Tokens
    clients: Clients
    numbers: Numbers
    provider: Providers
    rules: Rules
    overrides: Overrides
    simulator: Simulator
    groups: Groups
    trunks: Trunks
    calls: Calls
    warnings: Warnings
    messages: Messages
    presence: Presence
    files: Files | None
    forwarding: Forwarding  # the portal's simulator with a draft, holidays
    closures: Closures  # the portal's closure ranges (Betriebsurlaub)
    notes: Notes
    billing: Billing  # issue 15
    invoices: Invoices
    agents: AgentStatus  # agents' own status (available, break, ...)
    second_factor: SecondFactor  # the console's optional TOTP second factor
    server: ServerState  # status, live registrations, store size
    dictation: Dictation | None = None
    greetings: Greetings | None = None  # voicemail greetings, announcements (DATA needed)
    voicemails: Voicemails | None = None  # the messages of mailboxes (DATA needed)

    @classmethod
    def build(
        cls,
        store: Store,
        realm: Callable[[], str],
        *,
        own_sip_address: Callable[[str, int], str | None] | None = None,
        own_hint: str = "",
        routing_state: Callable[[], RoutingState] | None = None,
        presence: Snapshot | None = None,
        presence_watch: Watch | None = None,
        send_message: Send | None = None,
        message_watch: MessageWatch | None = None,
        warning_watch: WarningWatch | None = None,
        ring_watch: RingWatch | None = None,
        usage_watch: UsageWatch | None = None,
        files: FileService | None = None,
        dictation: Dictation | None = None,
        publish: Callable[[Event], None] | None = None,
        mail: Mail | None = None,
        invoice_mail: SendMail | None = None,
        data_dir: Path | None = None,
        secret: bytes | None = None,
        status: Status | None = None,
        registrations: Registrations | None = None,
    ) -> App:
        return cls(
            users=Users(store, realm),
            tokens=Tokens(store),
            clients=Clients(store),
            numbers=Numbers(store),
            provider=Providers(store),
            rules=Rules(store),
            overrides=Overrides(store),
            simulator=Simulator(store, routing_state),
            groups=Groups(store),
            trunks=Trunks(store, realm, own_sip_address, own_hint),
            calls=Calls(store),
            warnings=Warnings(warning_watch, ring_watch),
            messages=Messages(store, send_message, message_watch, files, presence, publish, realm),
            presence=Presence(presence, presence_watch),
            files=None if files is None else Files(files),
            forwarding=Forwarding(store, routing_state),
            closures=Closures(store),
            dictation=dictation,
            notes=Notes(store, send_message, publish, mail),
            billing=(billing := Billing(store, watch=usage_watch, publish=publish)),
            invoices=Invoices(store, billing, invoice_mail),
            greetings=None if data_dir is None else Greetings(store, data_dir),
            voicemails=None if data_dir is None else Voicemails(store, data_dir, publish=publish),
            agents=AgentStatus(store, publish),
            second_factor=SecondFactor(store, realm, secret=secret),
            server=ServerState(store, status, registrations),
        )
