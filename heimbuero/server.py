"""`heimbuero serve`: wires the store, the SIP core and the transports into one event loop, and
stops cleanly on SIGINT/SIGTERM (open transactions answered or cancelled, bindings flushed)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hashlib
import ipaddress
import logging
import resource
import secrets
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from heimbuero import __version__
from heimbuero.app.billing import Billing, Invoices, InvoiceSchedule, due_month
from heimbuero.app.errors import Invalid, NotFound
from heimbuero.app.policy import Actor
from heimbuero.config import Config, ConfigError, HttpSettings, ListenAddress, own_sip_address
from heimbuero.domain.model import CallEndReason, Directory, Override
from heimbuero.events import (
    AgentStatusChanged,
    BindingChanged,
    CallEnded,
    CallMediaMeasured,
    CallRinging,
    Event,
    EventBus,
    MailboxChanged,
    MessageStateChanged,
    MessageStored,
    PresenceChanged,
    ProviderWarning,
    UsageChanged,
    VoicemailLeft,
)
from heimbuero.media.ng import NgClient, parse_ng_address
from heimbuero.media.relay_client import RelayProcess, RelayUnavailable
from heimbuero.net.dns import Located, SipResolver
from heimbuero.net.mail import Attachment, Mailer, MailError
from heimbuero.net.tls import SipTls
from heimbuero.net.transport import TransportLimits, Transports
from heimbuero.office.card import client_card
from heimbuero.office.files import FileService, new_file_id
from heimbuero.office.voicemail import changed_boxes, mailbox_owner, mailboxes
from heimbuero.ops import logsetup
from heimbuero.ops.runtime import Operations
from heimbuero.ops.upgrade import upgrade_with_backup
from heimbuero.services.callrecords import CallRecorder
from heimbuero.services.calls import CallRouting
from heimbuero.services.core import CoreSettings, SipCore
from heimbuero.services.credentials import Account, UserDirectory
from heimbuero.services.liveness import NO_AUDIO_REASON
from heimbuero.services.location import Binding, LocationService
from heimbuero.services.media_relay import RelayAnchor
from heimbuero.services.mediaapps import (
    Dictated,
    MediaApps,
    Recording,
    notify_waiting,
    sweep_intros,
)
from heimbuero.services.messaging import (
    MessageRejected,
    MessagingSettings,
    Messenger,
    message_from_record,
)
from heimbuero.services.presence import (
    PresenceServer,
    PresenceSettings,
    publication_from_record,
    publication_record,
    subscription_from_record,
    subscription_record,
)
from heimbuero.services.registrar import RegistrarSettings
from heimbuero.services.rtpengine_relay import MediaGate, RtpengineRelay
from heimbuero.services.trunks import TrunkRegistrations
from heimbuero.sip.auth import DigestAuthenticator
from heimbuero.sip.dialogtoken import DialogSigner
from heimbuero.sip.peer import Peer
from heimbuero.sip.transaction import TimerSettings
from heimbuero.store.db import BindingRecord, Store, WriteBatch
from heimbuero.store.files import FileRecord
from heimbuero.store.records import POOR_JITTER_MS, POOR_LOSS_PCT, audio_quality
from heimbuero.store.sealing import Sealer
from heimbuero.store.totp import SecondFactors
from heimbuero.store.voicemail import Voicemail, add_voicemail, all_counts
from heimbuero.store.voicemail import counts as voicemail_counts
from heimbuero.store.writer import GroupCommitWriter

log = logging.getLogger("heimbuero")

FD_HEADROOM = 128  # open files kept free of connections: database, its journal, files, UDP


def connection_caps(http: HttpSettings) -> tuple[int, int]:
    """Caps on SIP TCP and HTTP connections that together stay below the open-files limit
    (raised to its hard limit first) minus FD_HEADROOM; HTTP gets a quarter unless
    `[http] max_connections` says otherwise."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, want, exc)
    limit = 1 << 20 if soft == resource.RLIM_INFINITY else soft
    budget = max(limit - FD_HEADROOM, 16)
    http_cap = 0
    if http.listen:
        http_cap = http.max_connections or max(budget // 4, 4)
        http_cap = min(http_cap, budget - 8)
    sip_cap = budget - http_cap
    log.info(
        "open-files limit %d: at most %d SIP TCP and %d HTTP connections", limit, sip_cap, http_cap
    )
    return sip_cap, http_cap


PERSIST_INTERVAL = 1.0  # seconds between batched writes of call records, presence and expiries
# At most one group commit of registrations and messages per this many seconds (under load:
# a quiet server commits at once); their answers wait for it.
GROUP_COMMIT_WINDOW = 0.010
OFFICE_RELOAD_INTERVAL = 2.0  # seconds until configuration changes reach call routing
HOUSEKEEPING_INTERVAL = 60.0  # seconds between expiry sweeps of stored messages and files
INVOICE_SEND_RETRY = (
    900.0  # seconds until invoices the scheduled run could not e-mail are tried again
)


class _RoutingStore:
    """What call routing reads and writes in the store itself: overrides are rare and written
    at once; the talk time of calls out is read once per client and day (call records are
    written by services/callrecords.py, from the bus)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def external_talk_seconds(self, client: str, since: datetime) -> float:
        """Read once per client and day (by the caps of calls out), so a direct read."""
        return self.store.external_talk_seconds(client, since)

    def override_changed(self, client: str, override: Override | None) -> None:
        if override is None:
            self.store.clear_override(client)
        else:
            self.store.set_override(override)


class _PhoneMailbox:
    """Listening to voicemail by phone (services/mediaapps.Mailbox): the application layer's
    handler (app/voicemail.py) as the authenticated listener; writes go through the store
    writer and are committed when a call returns; then the box's phones learn the new counts
    (message waiting)."""

    def __init__(self, server: Server) -> None:
        from heimbuero.app.voicemail import Voicemails

        self.server = server
        self.handler = Voicemails(
            server.store, server.config.data_dir, lambda: mailboxes(server.calls.directory)
        )

    def _actor(self, user: str) -> Actor | None:
        account = self.server.calls.directory.users.get(user)
        return Actor.of(account) if account is not None else None

    async def messages(self, user: str) -> list[Voicemail] | None:
        actor = self._actor(user)
        if actor is None:
            return None
        try:
            return await asyncio.to_thread(self.handler.messages, actor)
        except NotFound:
            return None

    async def _write(self, user: str, fn: Callable[[Actor], None]) -> bool:
        actor = self._actor(user)
        if actor is None:
            return False
        try:
            await asyncio.wrap_future(self.server.writer.call(lambda: fn(actor)))
        except NotFound:
            return False
        await self.server._mailbox_changed(self.handler.owner(actor))
        return True

    async def heard(self, user: str, voicemail_id: int) -> bool:
        return await self._write(user, lambda a: self.handler.mark_heard(a, voicemail_id))

    async def zone(self, user: str) -> tzinfo:
        actor = self._actor(user)
        owner = self.handler.owner(actor) if actor is not None else user
        return await asyncio.to_thread(self.handler.zone, owner)

    async def delete(self, user: str, voicemail_id: int) -> bool:
        ok = await self._write(user, lambda a: self.handler.delete(a, voicemail_id))
        log.info("voicemail %d deleted by %s by phone: %s", voicemail_id, user, ok)
        return ok


class _LoopSink:
    """Publishes on the server's event loop: dictation jobs commit in worker threads, and
    every subscriber of the bus runs on the loop."""

    def __init__(self, on_loop: Callable[[Callable[[], None]], None], bus: EventBus) -> None:
        self.on_loop, self.bus = on_loop, bus

    def publish(self, event: Event) -> None:
        self.on_loop(lambda: self.bus.publish(event))


def _peer_text(p: tuple[str, str, int]) -> str:
    return f"{p[0]}:{p[1]}:{p[2]}" if ":" not in p[1] else f"{p[0]}:[{p[1]}]:{p[2]}"


def _peer_parse(text: str) -> Peer:
    transport, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    return Peer(transport, host.strip("[]"), int(port))


reg_log = logging.getLogger("heimbuero.registrar")


def _log_registrations(event: BindingChanged) -> None:
    """One INFO line per registration change: a contact registered (or refreshed), removed
    by its phone, or expired."""
    if not reg_log.isEnabledFor(logging.INFO):
        return
    now = event.at
    line = "registration %s user=%s contact=%s source=%s expires=%d"
    for b in event.added:
        reg_log.info(line, "registered", b.aor, b.contact, _peer_text(b.received),
                     round(b.expires_at - now))  # fmt: skip
    for b in event.removed:
        kind = "expired" if b.expires_at <= now else "unregistered"
        reg_log.info(line, kind, b.aor, b.contact, _peer_text(b.received), 0)


def _to_record(b: Binding) -> BindingRecord:
    return BindingRecord(
        aor=b.aor, contact=b.contact, received=_peer_text(b.received), expires_at=b.expires_at,
        call_id=b.call_id, cseq=b.cseq, instance=b.instance, reg_id=b.reg_id, q=b.q,
        user_agent=b.user_agent, path="\n".join(b.path) if b.path else None,
    )  # fmt: skip


def _from_record(r: BindingRecord) -> Binding:
    return Binding(
        aor=r.aor, contact=r.contact, received=_peer_parse(r.received), expires_at=r.expires_at,
        call_id=r.call_id, cseq=r.cseq, q=r.q, user_agent=r.user_agent, instance=r.instance,
        reg_id=r.reg_id, path=tuple(r.path.split("\n")) if r.path else (),
    )  # fmt: skip


def advertised_host(listen_host: str, advertise: str | None) -> str:
    """The address phones reach us at, for Via and Record-Route: the configured one (an IP
    address applies to the listening addresses of its family only, a name to all), the
    listening address, or (listening on all interfaces) this machine's first address of the
    family that is no loopback (nor, for IPv6, link-local)."""
    v6 = ":" in listen_host
    if advertise:
        adv = advertise.strip("[]")
        try:
            family_v6 = ipaddress.ip_address(adv).version == 6
        except ValueError:
            return adv  # a name
        if family_v6 == v6 or listen_host in ("0.0.0.0", "::") and not v6:
            return adv
    if listen_host not in ("0.0.0.0", "::"):
        return listen_host
    addresses: list[str]
    try:
        if v6:
            infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET6)
            addresses = [str(i[4][0]) for i in infos]
        else:
            _, _, addresses = socket.gethostbyname_ex(socket.gethostname())
    except OSError:
        addresses = []
    for addr in addresses:
        ip = ipaddress.ip_address(addr.partition("%")[0])
        if not ip.is_loopback and not ip.is_link_local:
            return str(ip)
    raise ConfigError(
        f"listening on all interfaces ({listen_host}), but no address to advertise was "
        'found: set [sip] advertise = "HOST" in config.toml'
    )


def relay_binds(
    listen: tuple[ListenAddress, ...], advertise6: str | None
) -> tuple[str, str | None]:
    """Where the built-in relay opens its ports: the IPv4 address SIP listens on (UDP's
    first; all interfaces when SIP listens on all, or only on IPv6), and the IPv6 one (None:
    no IPv6 media) -- SIP's IPv6 address, or all IPv6 interfaces with ``[media] advertise6``
    when SIP listens on IPv4 only."""

    def first(v6: bool) -> str | None:
        hosts = [a.host.strip("[]") for a in listen if (":" in a.host) == v6]
        udp = [a.host.strip("[]") for a in listen if (":" in a.host) == v6 and a.transport == "udp"]
        found = udp or hosts
        return found[0] if found else None

    bind = first(False) or "0.0.0.0"
    bind6 = first(True) or ("::" if advertise6 else None)
    return bind, bind6


def _relay_addresses(core: SipCore, ipv6: bool) -> tuple[str | None, str | None]:
    """The addresses the built-in media relay writes into SDP (``[media] advertise`` and
    ``advertise6`` go before these): the IPv4 and the IPv6 one we advertise for UDP (None:
    SIP has none of that family)."""
    v4 = core.local_address("udp", "0.0.0.0")[0].strip("[]")
    v6 = core.local_address("udp", "::")[0].strip("[]")
    return (None if ":" in v4 else v4), (v6 if ipv6 and ":" in v6 else None)


def public_base_url(http: HttpSettings) -> str:
    """Where clients reach the HTTP service: the configured public URL, else the listening
    address (https when TLS is configured)."""
    if http.public_url:
        return http.public_url.rstrip("/")
    scheme = "https" if http.tls_cert else "http"
    return f"{scheme}://{http.listen or '127.0.0.1:8080'}"


class _EmbeddedUvicorn:
    """uvicorn inside our event loop: our SIGINT/SIGTERM handling stays in charge."""

    def __init__(self, config: Any, stopping: asyncio.Event) -> None:
        import uvicorn

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        self._server = _Server(config)
        self._stopping = stopping

    def stop(self) -> None:
        """Stop serving: event streams end at once (web/sse.py), then uvicorn lets the
        other running requests finish (at most `timeout_graceful_shutdown` seconds)."""
        self._stopping.set()
        self._server.should_exit = True

    async def serve(self, sockets: list[socket.socket]) -> None:
        await self._server.serve(sockets=sockets)


class Server:
    """One running heimbuero: store, SIP core, transports, and HTTP when configured."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = Store(config.db_url)
        upgrade_with_backup(config, self.store)  # a backup first when a migration is pending
        try:
            secret = bytes.fromhex(config.secret_path.read_text().strip())
        except (OSError, ValueError):
            raise ConfigError(
                f"{config.secret_path} is missing or unreadable: run 'heimbuero init'"
            ) from None
        self._secret = secret
        sealed = SecondFactors(self.store, Sealer(secret, b"totp")).seal_clear()
        if sealed:
            log.info("second factor: %d TOTP secrets stored in clear are sealed now", sealed)
        sip = config.sip
        # per transport the first address we listen on, and an IPv6 one beside an IPv4 one
        local: dict[str, tuple[str, int]] = {}
        local_other: dict[str, tuple[str, int]] = {}
        for a in sip.listen:
            here = (advertised_host(a.host, sip.advertise), a.port)
            if a.transport not in local:
                local[a.transport] = here
            elif (":" in here[0]) != (":" in local[a.transport][0]):
                local_other.setdefault(a.transport, here)
        self.location = LocationService()
        now = time.time()
        self.started = now
        self.location.load(_from_record(r) for r in self.store.load_bindings(now))
        self._read_credentials = self.store.credentials_reader()
        # (A name not in the office directory is no user: no database read for it.)
        self.users = UserDirectory(self._fetch_account, known=lambda: self.calls.directory.users)
        self.events = EventBus()
        self.mailer = Mailer(config.mail)  # [mail]: notes, voicemail, documents, invoices
        # [media]: the RTP relay (built-in or rtpengine), started by serve
        self.relay: RelayProcess | RtpengineRelay | None = None
        self.anchor: RelayAnchor | RtpengineRelay | None = None
        self.relay_totals: Counter[str] = Counter()  # packets and lost of relayed calls ended
        self.mailbox_counts: dict[str, tuple[int, int]] = {}  # voicemail owner -> (new, old)
        self._relay_dir: tempfile.TemporaryDirectory[str] | None = None
        # What the services need besides the core: the call records, the file links, the
        # messenger's operations for the store; the services themselves are built by the core.
        self.call_records = CallRecorder(self.store)  # from the events of routed calls
        self.call_records.subscribe(self.events)
        self.files = FileService(
            self.store, config.files_dir, config.files, public_base_url(config.http)
        )
        self.message_ops: list[tuple[Any, ...]] = []
        presence_settings = PresenceSettings(
            min_expires=sip.min_expires,
            max_expires=max(sip.subscribe_max_expires, sip.min_expires),
            default_expires=min(3600, max(sip.subscribe_max_expires, sip.min_expires)),
            min_interval=float(sip.presence_min_interval),
            max_subscriptions_per_user=sip.max_subscriptions_per_user,
            max_watchers_per_presentity=sip.max_watchers_per_presentity,
        )
        msg = config.messages
        messaging_settings = MessagingSettings(
            max_bytes=msg.max_bytes,
            delivery_timeout=float(msg.delivery_timeout),
            store_expiry=float(msg.store_expiry),
            rate_per_minute=msg.rate_per_minute,
            max_stored_per_user=msg.max_stored_per_user,
        )
        self.core = SipCore(
            CoreSettings(
                domain=config.domain,
                local=local,
                local_other=local_other,
                registrar=RegistrarSettings(
                    min_expires=sip.min_expires,
                    max_expires=sip.max_expires,
                    default_expires=sip.default_expires,
                    max_contacts_per_aor=sip.max_contacts_per_aor,
                    flow_timer=sip.flow_timer,
                ),
                timers=TimerSettings(t1=sip.t1_ms / 1000, t2=sip.t2_ms / 1000, t4=sip.t4_ms / 1000),
                trusted_peers=sip.trusted_peers,
                invite_timeout=float(sip.invite_timeout),
                session_expires=sip.session_expires,
                md5_only_user_agents=sip.md5_only_user_agents,
                guard=sip.guard(),
                flood_exempt=sip.flood_exempt,
            ),  # fmt: skip
            self.users,
            self.location,
            DigestAuthenticator(
                config.domain,
                secret,
                sip.digest_algorithms,
                float(sip.nonce_ttl),
                max_tracked_nonces=max(1, sip.max_tracked_nonces),
            ),  # fmt: skip
            dialogs=DialogSigner(secret),
            events=self.events,
            calls=lambda core: CallRouting(core, _RoutingStore(self.store)),
            trunks=TrunkRegistrations,
            presence=lambda core: PresenceServer(core, presence_settings),
            messages=lambda core: Messenger(
                core, messaging_settings, self._message_op, self.files, self._defer
            ),
        )
        core = self.core
        assert core.calls is not None and core.trunks is not None
        assert core.presence is not None and core.messages is not None
        self.calls, self.trunks = core.calls, core.trunks
        self.presence, self.messages = core.presence, core.messages
        # trunks named by host name: addresses of the families we listen on, the preferred first
        families = sorted({"ipv6" if ":" in a.host else "ipv4" for a in sip.listen},
                          key=lambda f: (f == "ipv4") == sip.prefer_ipv6)  # fmt: skip
        self.resolver = SipResolver(sip.dns_servers, families=families)
        self._first_due = 3600.0
        self.transports = Transports(
            self.core,
            TransportLimits(
                max_message_size=sip.max_message_size,
                tcp_idle_timeout=float(sip.tcp_idle_timeout),
                max_tcp_connections_per_ip=sip.max_tcp_connections_per_ip,
                tls_handshake_timeout=float(sip.tls_handshake_timeout),
                max_tls_handshakes=sip.max_tls_handshakes,
            ),
            tls=_sip_tls(config),
        )
        self.core.is_connected = self.transports.is_connected
        self.transports.on_connection_closed = self._flow_closed
        self.events.subscribe(BindingChanged, _log_registrations)
        self.sip_tcp_cap, self.http_cap = connection_caps(config.http)
        self.transports.max_connections = self.sip_tcp_cap
        self.ops = Operations(self)  # readiness, metrics, SIGHUP
        # Dictation jobs: the HTTP API's handler, and audio sent to the dictation address.
        from heimbuero.app.dictation import Dictation

        self.dictation = Dictation(
            self.store, self.files, config.dictation, _LoopSink(self._on_loop, self.events),
            self.send_message, self.mailer, bus=self.events,
        )  # fmt: skip
        self._dictation_tasks: set[asyncio.Task[None]] = set()
        # a box changed by the HTTP API: its message waiting as after a change by phone
        self._mailbox_tasks: set[asyncio.Task[None]] = set()
        self.events.subscribe(MailboxChanged, self._mailbox_event)
        if config.dictation.address:
            self.events.subscribe(MessageStored, self._dictation_message)
        # billing (issue 15): the usage meter rates ended calls in the writer thread after
        # their records are written, and the billable events as they come
        # (UsageMetered after each rating's commit, from the writer thread: onto the loop)
        self.billing = Billing(self.store, _LoopSink(self._on_loop, self.events))
        self.invoices = Invoices(self.store, self.billing, self.mailer.deliver)  # (scheduled run)
        self._meter_due = True
        self.events.subscribe(CallEnded, lambda _e: setattr(self, "_meter_due", True))
        for kind, rate in self.billing.meters():
            self.events.subscribe(kind, functools.partial(self._meter_event, rate))
        closed = self.store.close_open_call_records(datetime.now(UTC))
        if closed:
            log.info("closed %d call records left open by the last stop", closed)
        # One writer thread: batches reach the store in the order they were taken. Registrations
        # and messages are group-committed (their answers wait for the commit); call records
        # and presence are written in batches every PERSIST_INTERVAL (they confirm nothing).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[Callable[[bool, float], None]] = []
        self._take_scheduled = False
        self._in_flight = False  # a batch is with the writer: the next one gathers meanwhile
        self.writer: GroupCommitWriter[WriteBatch] = GroupCommitWriter(
            self.ops.metrics.timed(self.store.write_batch),
            self._on_loop,
            window=GROUP_COMMIT_WINDOW,
            name="store-writer",
        )
        self.office_revision = self.store.office_revision()
        self.calls.update(self.store.load_directory(), self.store.list_overrides(datetime.now(UTC)))
        failed = self.store.fail_unfinished_messages(datetime.now(UTC))
        if failed:
            log.info("%d messages were being delivered at the last stop: marked failed", failed)
        self.messages.load(message_from_record(r, now) for r in self.store.load_queued_messages())
        subs, pubs = self.store.load_presence(now)
        self.presence.load(
            [subscription_from_record(d) for d in subs],
            [publication_from_record(d) for d in pubs],
            now,
        )

    def _fetch_account(self, name: str) -> Account | None:
        found = self._read_credentials(name)
        if found is None:
            return None
        return Account(name, *found)

    def _message_op(self, op: tuple[Any, ...]) -> None:
        """Messenger operations are written with the next group commit (not after the batch
        interval): the ones the sender was told about (202) are waited for."""
        self.message_ops.append(op)
        self._schedule_take()

    # ---- group commit ------------------------------------------------------------------------

    def _on_loop(self, fn: Callable[[], None]) -> None:
        """The writer's way back: run fn on the event loop (at once when there is none)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            fn()
        else:
            loop.call_soon_threadsafe(fn)

    def _commit_request(self, fn: Callable[[bool, float], None]) -> None:
        """The core's `commit`: fn(ok, now) once every change made so far is committed."""
        self._waiters.append(fn)
        self._schedule_take()

    def _schedule_take(self) -> None:
        """Hand the changes to the writer once the loop has handled what is ready now, so that
        everything that arrived together becomes one write; while a batch is with the writer,
        the next one gathers here and is handed over when that one committed."""
        if self._take_scheduled or self._in_flight or self._loop is None:
            return
        self._take_scheduled = True
        self._loop.call_soon(self._take_durable)

    def _take_durable(self) -> None:
        """Registrations and messenger operations changed since the last take, and whoever
        waits for them, to the writer (on the loop)."""
        self._take_scheduled = False
        if self._in_flight:
            return  # taken when the batch in flight has committed
        waiters, self._waiters = self._waiters, []
        batch = WriteBatch()
        if self.location.has_changes():
            ups, dels = self.location.take_changes()
            batch.binding_upserts = [_to_record(b) for b in ups]
            batch.binding_deletes = dels
        if self.message_ops:
            batch.message_ops, self.message_ops = self.message_ops, []
        if not waiters and not (
            batch.binding_upserts or batch.binding_deletes or batch.message_ops
        ):
            return
        self._in_flight = True
        self.writer.submit(batch, functools.partial(self._committed, waiters))

    def _durable_pending(self) -> bool:
        return bool(self._waiters or self.message_ops or self.location.has_changes())

    def _committed(self, waiters: list[Callable[[bool, float], None]], ok: bool) -> None:
        """On the loop after a group commit: send the answers that waited for it, and hand
        over what gathered meanwhile."""
        self._in_flight = False
        if self._waiters or self.message_ops:
            self._schedule_take()
        now = time.time()
        for fn in waiters:
            try:
                fn(ok, now)
            except Exception:
                log.exception("an answer after a commit failed")
        self.core.pump(now)
        self.transports.flush()

    async def _persist(self) -> None:
        """Write call records, presence and expired registrations in batches, off the loop."""
        while True:
            await asyncio.sleep(PERSIST_INTERVAL)
            await self.flush()
            if self._meter_due:  # billing: after the call records are written
                self._meter_due = False
                self.writer.call(self._meter_calls)

    async def _invoice_schedule(self) -> None:
        """billing: the scheduled invoice run ([billing] invoice_day; idempotent per month)."""
        b = self.config.billing
        refused = ""  # the last refusal (incomplete seller data): logged once, not every minute
        try:  # invoices a stopped run or cancel left without their PDF and XML
            await asyncio.get_running_loop().run_in_executor(None, self.invoices.complete_documents)
        except Exception:
            log.exception("billing: making the missing invoice documents failed")
        schedule = InvoiceSchedule(b.send_invoices, INVOICE_SEND_RETRY)
        while b.invoice_day:
            month = due_month(datetime.now(UTC), b.invoice_day, b.invoice_hour, b.timezone)
            if month is not None and schedule.run_due(month):
                try:
                    made = await asyncio.get_running_loop().run_in_executor(
                        None, self.invoices.run, Actor.local_admin(), month
                    )
                    schedule.ran(month, time.monotonic())
                    log.info("billing: %d invoices for %s", len(made), month)
                except Invalid as exc:
                    if str(exc) != refused:
                        log.error("billing: the invoice run for %s refused: %s", month, exc)
                    refused = str(exc)
                except Exception:
                    log.exception("billing: the invoice run for %s failed", month)
            unsent = schedule.send_due(time.monotonic())
            if unsent is not None:
                failed = await self._send_invoices(unsent)
                schedule.sent(failed, time.monotonic())
            await asyncio.sleep(60)

    async def _send_invoices(self, month: str) -> bool:
        """[billing] send_invoices: e-mail the month's invoices never sent (nor being sent);
        True when some could not be sent (tried again later)."""
        try:
            sent = await asyncio.get_running_loop().run_in_executor(
                None, functools.partial(
                    self.invoices.send_unsent, Actor.local_admin(), month=month
                ),
            )  # fmt: skip
        except Exception:
            log.exception("billing: sending the invoices of %s failed", month)
            return True
        failed = [s for s in sent if "error" in s]
        for s in failed:
            log.warning("billing: invoice %s not sent: %s", s["number"], s["error"])
        if sent:
            log.info("billing: %d invoices of %s sent by e-mail, %d not",
                     len(sent) - len(failed), month, len(failed))  # fmt: skip
        return bool(failed)

    def _meter_calls(self) -> None:
        try:
            if self.billing.meter_calls() >= 1000:  # more waiting: the next round goes on
                self._meter_due = True
        except Exception:
            log.exception("billing: rating call records failed")

    def _meter_event(self, rate: Callable[[Any], None], event: Any) -> None:
        def run() -> None:
            try:
                rate(event)
            except Exception:
                log.exception("billing: rating %s failed", type(event).__name__)

        self.writer.call(run)

    async def _housekeeping(self) -> None:
        """Expire stored messages and file links; delete conversations past retention."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            try:
                self.messages.expire(time.time())
                await loop.run_in_executor(None, self.sweep, datetime.now(UTC))
                await self._mailboxes_reread()
            except Exception:
                log.exception("housekeeping failed")

    def sweep(self, now: datetime) -> None:
        """Retention and expiry in the store and the file folder (a worker thread)."""
        days = self.config.messages.retention_days
        if days > 0:
            count, file_ids = self.store.delete_idle_conversations(now - timedelta(days=days))
            if count:
                gone = self.files.delete(file_ids)
                log.info("retention: deleted %d conversations and %d files", count, gone)
        expired = self.files.sweep(now)
        if expired:
            log.info("deleted %d files whose links expired", expired)
        self.dictation.sweep_uploads(now)
        sweep_intros(self.config.data_dir, now.timestamp())  # *86's "Nachricht 1, von …"

    def _dictation_message(self, event: MessageStored) -> None:
        """A file sent to the dictation address becomes a job (in a worker thread)."""
        file_id = str(event.message.get("file_id") or "")
        if isinstance(event, MessageStateChanged):  # (its job came from its MessageStored)
            return
        if event.recipient != self.config.dictation.address or not file_id:
            return
        with contextlib.suppress(RuntimeError):  # no loop: not serving
            task = asyncio.get_running_loop().create_task(
                self._dictation_job(event.sender, file_id)
            )
            self._dictation_tasks.add(task)  # kept until done (the loop holds tasks weakly)
            task.add_done_callback(self._dictation_tasks.discard)

    async def _dictation_job(self, sender: str, file_id: str) -> None:
        from heimbuero.app.dictation import Outcome
        from heimbuero.app.errors import AppError
        from heimbuero.office.dictation import State

        try:
            job = await asyncio.to_thread(self.dictation.job_from_message, sender, file_id)
        except AppError as exc:
            log.info("a file from %s to the dictation address is no job: %s", sender, exc)
            return
        except Exception:
            log.exception("a file from %s to the dictation address: the job failed", sender)
            return
        await self.dictation.announce(Outcome(job, State.NEW))

    async def _dictation_by_phone(self, rec: Dictated) -> None:
        """A dictation spoken by phone becomes a job of its author (the typists' queue, the
        author's news), as an uploaded one does."""
        from heimbuero.app.dictation import Outcome
        from heimbuero.office.dictation import State

        when = datetime.fromtimestamp(
            time.time(), self.calls.clock_zone(self._client_zone(rec.client))
        )
        title = f"Diktat per Telefon, {when:%d.%m.%Y %H:%M}"
        try:
            job = await asyncio.to_thread(
                self.dictation.create_from_audio, rec.path, rec.path.name, rec.author,
                rec.client, title,
            )  # fmt: skip
        except Exception:
            log.exception("dictation by phone of %s: no job made; the recording stays in %s",
                          rec.author, rec.path)  # fmt: skip
            return
        await self.dictation.announce(Outcome(job, State.NEW))

    def _client_zone(self, client: str) -> str:
        found = self.calls.directory.clients.get(client)
        return found.timezone if found is not None else "Europe/Berlin"

    async def flush(self) -> None:
        """Hand everything changed to the writer and wait until it is written: registrations
        and messenger operations (group commit), then call records and presence (batches)."""
        await self._flush_durable()
        self._write_call_records()
        self._write_presence()
        # The writer runs in order: when this returns, everything above is written.
        await asyncio.wrap_future(self.writer.call(lambda: None))

    async def _flush_durable(self) -> None:
        """Registrations and messenger operations committed, and the answers that waited."""
        for _ in range(100):  # (one batch may be in flight; the next follows its commit)
            self._take_durable()
            await asyncio.wrap_future(self.writer.call(lambda: None))
            await asyncio.sleep(0)  # the answers after the commit, on the loop
            if not self._in_flight and not self._durable_pending():
                break

    def _write_call_records(self) -> None:
        if self.call_records.has_changes():
            self.writer.call(functools.partial(self.call_records.write, self.call_records.take()))

    def _write_presence(self) -> None:
        if self.presence.has_changes():
            subs, gone_subs, pubs, gone_pubs = self.presence.take_changes()
            self.writer.call(functools.partial(
                self.store.save_presence, [subscription_record(s) for s in subs],
                gone_subs, [publication_record(p) for p in pubs], gone_pubs,
            ))  # fmt: skip

    async def _reload_office(self) -> None:
        """Pick up clients, numbers, rules and overrides changed through the CLI or HTTP API.

        Polls the store's office revision (one small query) and reloads only when it moved:
        a reload reads every user and rules document, which is not free on a big office."""
        loop = asyncio.get_running_loop()
        seen = self.office_revision
        while True:
            await asyncio.sleep(OFFICE_RELOAD_INTERVAL)
            try:
                # One indexed read of one row: cheaper on the loop than a hop to a thread.
                revision = self.store.office_revision()
            except Exception:
                log.exception("reading the office revision failed")
                continue
            if revision == seen:
                continue
            seen = revision
            version = self.calls.overrides_version
            try:
                directory, overrides = await loop.run_in_executor(None, self._load_office)
            except Exception:  # a bad row must not stop call routing with the old config
                log.exception("reloading the office configuration failed; keeping the last one")
                continue
            self.calls.update(directory, overrides, version)
            self.trunks.update(directory.trunks.values(), time.time())
            self.transports.flush()
            self.office_revision = revision  # (in /api/status: what call routing uses now)

    async def _locate_trunks(self) -> float:
        """Look up where every UDP/TCP trunk named by host name is (RFC 3263: SRV for port 0,
        else A/AAAA), all at once; a name that fails keeps its last answer. Returns the
        seconds until the first answer is due again (its TTL; 30 s after a failure)."""
        wanted = sorted(self.calls.lookups())
        results = await asyncio.gather(
            *(self.resolver.locate(host, port, transport) for host, port, transport in wanted),
            return_exceptions=True,
        )
        found: dict[tuple[str, int, str], tuple[Peer, ...]] = {}
        due = 3600.0
        for key, result in zip(wanted, results, strict=True):
            if isinstance(result, Located) and result.targets:
                transport = result.transport or key[2]  # ("auto": the one NAPTR chose)
                found[key] = tuple(Peer(transport, host, port) for host, port in result.targets)
                due = min(due, result.ttl)
                continue
            old = self.calls.located.get(key)
            if old:
                found[key] = old
            log.warning("trunk host %s could not be looked up: %s%s", key[0], result,
                        "; keeping its last addresses" if old else "")  # fmt: skip
            due = min(due, 30.0)
        changed = found != self.calls.located
        self.calls.set_located(found)
        if changed:
            self.trunks.retry_failed(time.time())
            self.core.pump(time.time())
            self.transports.flush()
        return due

    async def _dns_refresh(self) -> None:
        """Trunk addresses follow DNS: again when an answer's TTL runs out, and at once when
        a trunk is added or its host changes."""
        loop = asyncio.get_running_loop()
        seen = self.calls.lookups()
        due_at = loop.time() + self._first_due
        while True:
            await asyncio.sleep(OFFICE_RELOAD_INTERVAL)
            wanted = self.calls.lookups()
            if wanted != seen or loop.time() >= due_at:
                seen = wanted
                try:
                    due_at = loop.time() + await self._locate_trunks()
                except Exception:
                    log.exception("looking up the trunks' addresses failed")
                    due_at = loop.time() + 30.0

    def _load_office(self) -> tuple[Directory, list[Override]]:
        return self.store.load_directory(), self.store.list_overrides(datetime.now(UTC))

    def _flow_closed(self, flow: Peer) -> None:
        """A SIP connection closed: its outbound registrations go (RFC 5626 §5.3)."""
        self.core.flow_closed(flow, self.transports.now())
        self.transports.flush()

    async def _nat_keepalive(self) -> None:
        """Send a CRLFCRLF ping to each UDP device behind NAT so its router keeps the mapping."""
        interval = self.core.settings.nat_keepalive_interval
        while True:
            await asyncio.sleep(interval)
            now = time.time()
            for b in list(self.location.all_bindings()):
                udp = not b.received.reliable
                # (a device behind an edge proxy: the edge keeps its NAT binding open)
                if udp and not b.path and b.expires_at > now and b.received[1] not in b.contact:
                    self.transports.send(b"\r\n\r\n", b.received)

    def status(self) -> dict[str, Any]:
        now = time.time()
        return {
            "domain": self.config.domain,
            "uptime_s": round(now - self.started, 1),
            "office_revision": self.office_revision,
            "registrations": len(self.location),
            "registered_users": sum(
                1 for a in self.location.aors() if self.location.is_registered(a, now)
            ),
            "calls_active": self.call_records.open_calls,
            "trunks": {t["trunk"]: t["state"] for t in self.trunks.status()},
            "version": __version__,
            "transactions": len(self.core.layer),
            "proxied_requests_open": len(self.core.proxy),
            "messages": dict(self.core.stats),
            "instant_messages": dict(self.messages.stats, waiting=self.messages.waiting()),
        }  # fmt: skip

    def _own_sip_address(self, host: str, port: int) -> str | None:
        """This server's SIP listening address that HOST:PORT reaches (for trunk checks)."""
        own = own_sip_address(self.config, host, port)
        return None if own is None else str(own)

    def registrations(self) -> list[dict[str, Any]]:
        now = time.time()
        return [
            {
                "user": b.aor,
                "contact": b.contact,
                "source": _peer_text(b.received),
                "expires_in": int(b.expires_at - now),
                "user_agent": b.user_agent,
            }  # fmt: skip
            for b in self.location.all_bindings()
            if b.expires_at > now
        ]

    def presence_of(self, user: str) -> list[dict[str, Any]]:
        """The presence `user` may see, for the HTTP API."""
        return [s.as_dict() for s in self.presence.visible_states(user, time.time())]

    def watch_warnings(self, fn: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call `fn` with each warning for the provider (a cap of calls out reached)."""
        return self.events.subscribe(ProviderWarning, lambda e: fn(dict(e.warning)))

    def watch_usage(self, fn: Callable[[UsageChanged], None]) -> Callable[[], None]:
        """Call `fn` with each change of a client's usage: a reading rated (UsageMetered) or
        open usage rated again after a tariff assignment or recompute (UsageRecomputed);
        heimbuero.app.billing.watch filters them per reader."""
        return self.events.subscribe(UsageChanged, fn)

    def watch_ringing(self, user: str, fn: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call `fn` with the client card of each client's call that rings `user`'s phones."""
        calls = self.calls

        def listener(event: CallRinging) -> None:
            if event.user != user:
                return
            client = calls.directory.clients.get(event.client)
            if client is None:
                return
            agent = calls.directory.users.get(user)
            fn(client_card(client, agent, user, call_id=event.call_id, number=event.number,
                           caller=event.caller, rule=event.rule))  # fmt: skip

        return self.events.subscribe(CallRinging, listener)

    def watch_presence(self, user: str, fn: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call `fn` with each change `user` may see until the returned function is called."""
        presence = self.presence

        def listener(event: PresenceChanged) -> None:
            if presence.visible(user, event.user, time.time()):
                fn(dict(event.state))

        return self.events.subscribe(PresenceChanged, listener)

    async def send_message(
        self, sender: str, recipient: str, content_type: str, body: bytes
    ) -> dict[str, Any]:
        """A message from the HTTP API: checked, its files shared (in a worker thread), stored
        and sent to the recipient's devices. Raises MessageRejected."""
        messages = self.messages
        message, shared = messages.prepare(sender, recipient, content_type, body, time.time())
        if shared:
            loop = asyncio.get_running_loop()
            if not await loop.run_in_executor(None, messages.grant, message, shared):
                raise MessageRejected(403, "The file is not yours to share")
        now = time.time()
        messages.submit(message, now)
        self.core.pump(now)
        self.transports.flush()
        # 201 promises the message is stored: wait for its commit.
        committed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def done(ok: bool, at: float) -> None:
            if not committed.done():
                committed.set_result(ok)

        self.core.after_commit(done, now)
        if not await committed:
            messages.withdraw(message)
            raise MessageRejected(500, "The message could not be stored")
        return message.summary()

    def _defer(self, fn: Callable[[], Any], then: Callable[[Any, float], None]) -> None:
        """Run a blocking function in a worker thread; call back on the loop, then send."""
        future = asyncio.get_running_loop().run_in_executor(None, fn)

        def done(f: asyncio.Future[Any]) -> None:
            try:
                result = f.result()
            except Exception:
                log.exception("a deferred store operation failed")
                result = None
            now = time.time()
            then(result, now)
            self.core.pump(now)
            self.transports.flush()

        future.add_done_callback(done)

    def watch_messages(
        self, user: str, fn: Callable[[str, dict[str, Any]], None]
    ) -> Callable[[], None]:
        """Call `fn(event, message)` for each new message and state change `user` is party to:
        event "message" (MessageStored) or "state" (MessageStateChanged, MessageDelivered)."""

        def listener(event: MessageStored) -> None:
            if user in (event.sender, event.recipient):
                kind = "state" if isinstance(event, MessageStateChanged) else "message"
                fn(kind, dict(event.message))

        return self.events.subscribe(MessageStored, listener)

    async def _start_http(self) -> tuple[Any, asyncio.Task[None]] | None:
        if not self.config.http.listen:
            return None
        import uvicorn

        from heimbuero.config import parse_host_port
        from heimbuero.web import sse
        from heimbuero.web.app import WebContext, create_app
        from heimbuero.web.guard import guarded_h11

        host, port = parse_host_port(self.config.http.listen, "HTTP listen address")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            # Listen now: clients that come while uvicorn starts (TLS setup takes a while)
            # wait in the backlog instead of being refused.
            sock.listen(2048)
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"cannot listen on http:{host}:{port}: {exc.strerror or exc}"
            ) from None
        app = create_app(
            WebContext(
                self.store,
                self.status,
                self.registrations,
                presence=self.presence_of,
                presence_watch=self.watch_presence,
                warning_watch=self.watch_warnings,
                ring_watch=self.watch_ringing,
                usage_watch=self.watch_usage,
                files=self.files,
                send_message=self.send_message,
                message_watch=self.watch_messages,
                own_sip_address=self._own_sip_address,
                digest=DigestAuthenticator(
                    self.config.domain,
                    self._secret,
                    self.config.sip.digest_algorithms,
                    float(self.config.sip.nonce_ttl),
                ),
                max_body=self.config.http.max_body_kb * 1024,
                max_upload=self.config.files.max_size_mb * 1024 * 1024 + 64 * 1024,
                dictation=self.dictation,
                # (handlers run on the loop or in worker threads: subscribers run on the loop)
                publish=_LoopSink(self._on_loop, self.events).publish,
                mail=self.mailer.send if self.mailer.enabled else None,
                invoice_mail=self.mailer.deliver,  # reads [mail] as reloaded (SIGHUP)
                data_dir=self.config.data_dir,
                secret=self._secret,
            )  # fmt: skip
        )
        from heimbuero.web.ops import mount_ops

        served = mount_ops(app, self.ops)  # /readyz, /metrics, HTTP answers by status
        http_cfg = self.config.http
        tls: dict[str, Any] = {}
        if http_cfg.tls_cert:
            tls = {"ssl_certfile": http_cfg.tls_cert, "ssl_keyfile": http_cfg.tls_key}
        # X-Forwarded-For only from configured proxies (uvicorn believes 127.0.0.1 by default).
        proxies: dict[str, Any] = {"proxy_headers": False}
        if http_cfg.trusted_proxies:
            proxies = {"proxy_headers": True, "forwarded_allow_ips": list(http_cfg.trusted_proxies)}
        server = _EmbeddedUvicorn(
            uvicorn.Config(
                served,
                log_level=None,  # its loggers' levels: the "web" area (ops/logsetup.py)
                log_config=None,  # uvicorn's lines through our handler: one log format
                lifespan="off",
                access_log=False,
                http=guarded_h11(self.http_cap, float(http_cfg.header_timeout)),
                # connections are capped in guarded_h11; this bounds requests still running
                # for connections already gone
                limit_concurrency=2 * self.http_cap + 1,
                timeout_keep_alive=http_cfg.keep_alive_timeout,
                # a request still running (a slow download) after this at a stop is cut off
                timeout_graceful_shutdown=10,
                **proxies,
                **tls,
            ),
            sse.install(app),
        )
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        return server, task

    def _owner_name(self, owner: str) -> str:
        """How a voicemail greeting names its owner: the client's name, else the user's."""
        directory = self.calls.directory
        client = directory.clients.get(owner)
        if client is not None:
            return client.name
        user = directory.users.get(owner)
        return getattr(user, "display_name", None) or owner

    async def _voicemail_message(self, user: str, rec: Recording) -> None:
        """The WAV stored as a file of `user` (their quota is not charged: the server made it)
        and a text message with its link to `user`, from `[voicemail] sender` (else, or when
        the messenger refuses that sender, from `user`: a note to self)."""
        now = datetime.now(UTC)
        data = await asyncio.to_thread(rec.path.read_bytes)
        record = FileRecord(
            id=new_file_id(), owner=user, name=f"Sprachnachricht-{rec.path.name}",
            content_type="audio/wav", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
            duration_s=rec.seconds, created_at=now,
            expires_at=now + timedelta(days=self.config.files.link_days),
        )  # fmt: skip
        final = self.config.files_dir / record.id
        await asyncio.to_thread(shutil.copyfile, rec.path, final)
        await asyncio.to_thread(self.store.add_file_within_quota, record, None)
        text = (
            f"Neue Sprachnachricht von {rec.caller} ({rec.seconds:.0f} s): "
            f"{self.files.link(record.id)}"
        )
        sender = self.config.mediaapp.voicemail_sender or user
        try:
            await self.send_message(sender, user, "text/plain", text.encode())
        except MessageRejected as exc:
            if sender == user:
                raise
            log.warning("voicemail: [voicemail] sender %s may not message %s (%d %s): the "
                        "message goes as a note to self", sender, user, exc.status,
                        exc.reason)  # fmt: skip
            await self.send_message(user, user, "text/plain", text.encode())

    def _mailbox_users(self, owner: str) -> list[Any]:
        """Whose phones show the mailbox `owner`: the user `owner`, else the owners (role
        client) of the client `owner`."""
        directory = self.calls.directory
        user = directory.users.get(owner)
        if user is not None:
            return [user]
        return [u for u in directory.users.values() if u.role == "client" and u.client == owner]

    async def _mailboxes_reread(self) -> None:
        """Boxes changed where no event reaches us (`heimbuero voicemail heard|delete`, another
        process): their counts read again, their phones told as after any change."""
        stored = await asyncio.to_thread(all_counts, self.store)
        for owner in changed_boxes(self.mailbox_counts, stored):
            await self._mailbox_changed(owner)

    def _mailbox_event(self, event: MailboxChanged) -> None:
        with contextlib.suppress(RuntimeError):  # no loop: not serving
            task = asyncio.get_running_loop().create_task(self._mailbox_changed(event.owner))
            self._mailbox_tasks.add(task)  # kept until done (the loop holds tasks weakly)
            task.add_done_callback(self._mailbox_tasks.discard)

    async def _mailbox_changed(self, owner: str, users: list[Any] | None = None) -> None:
        """Message waiting indication (RFC 3842): the box's counts read again and sent to its
        users' phones (within their subscriptions, or unsolicited to their devices)."""
        new, old = await asyncio.to_thread(voicemail_counts, self.store, owner)
        if new or old:
            self.mailbox_counts[owner] = (new, old)
        else:
            self.mailbox_counts.pop(owner, None)
        now = time.time()
        for u in self._mailbox_users(owner) if users is None else users:
            if not self.presence.mailbox_changed(u.name, now):
                notify_waiting(self.core, u.name, new, old, now)
        self.core.pump(now)
        self.transports.flush()

    async def _voicemail_left(self, rec: Recording) -> None:
        """A recording is done: stored, VoicemailLeft after the commit, e-mailed with the WAV
        to the client's address (a client e-mail field when the store has one), else to the
        mailbox owner's e-mail when the user record has one; no address, no mail."""
        directory = self.calls.directory
        user = directory.users.get(rec.owner)
        client_id = rec.owner if rec.owner in directory.clients else getattr(user, "client", None)
        path = str(rec.path.relative_to(self.config.data_dir))
        at = datetime.now(UTC)
        store = functools.partial(add_voicemail, self.store, client_id, rec.owner)
        vm_id = await asyncio.wrap_future(
            self.writer.call(lambda: store(rec.caller, rec.call_id, path, rec.seconds, at))
        )
        self.events.publish(
            VoicemailLeft(time.time(), client_id or "", vm_id, rec.call_id, rec.seconds)
        )
        client = directory.clients.get(client_id or "")
        owners = [user] if user is not None else [
            u for u in directory.users.values() if u.role == "client" and u.client == client_id
        ]  # fmt: skip
        for u in owners:  # the recording in the messenger, as the owner's own file
            try:
                await self._voicemail_message(u.name, rec)
            except (MessageRejected, OSError) as exc:
                log.warning("voicemail %d: no message to %s: %s", vm_id, u.name, exc)
        await self._mailbox_changed(rec.owner, owners)
        address = getattr(client, "email", "") or next(
            (getattr(u, "email", "") for u in owners if getattr(u, "email", "")), ""
        )
        if not address or not self.mailer.enabled:
            return
        name = client.name if client is not None else rec.owner
        text = (
            f"Neue Sprachnachricht für {name}\n\nAnrufer: {rec.caller}\n"
            f"Länge: {rec.seconds:.0f} s\nZeit: {at:%Y-%m-%d %H:%M} UTC\n"
        )
        wav = await asyncio.to_thread(rec.path.read_bytes)
        try:
            await self.mailer.send(
                address, f"Sprachnachricht von {rec.caller}", text,
                (Attachment(rec.path.name, wav, "audio/wav"),),
            )  # fmt: skip
        except MailError as exc:
            log.warning("voicemail %d: e-mail to %s failed: %s", vm_id, address, exc)

    async def _start_relay(self) -> None:
        """The built-in RTP relay as a child process, and the proxy's hooks that use it; or
        rtpengine (``[media] backend``), asked over its ng protocol."""
        settings = self.config.media
        if settings.backend == "rtpengine":
            rtpengine = RtpengineRelay(
                settings, NgClient(parse_ng_address(settings.rtpengine)), self._media_stats,
                self._media_silent,
            )  # fmt: skip
            await rtpengine.start()
            self.relay, self.anchor = rtpengine, rtpengine
            self.core.proxy.media = rtpengine
            gate = MediaGate(self.core, rtpengine)
            gate.transports = self.transports
            self.transports.endpoint = gate
            self.core.events.subscribe(CallEnded, lambda event: rtpengine.end(event.call_id))
            return
        # the relay's ports on the IPv4 address SIP listens on (UDP first), and on its IPv6 one
        # when SIP listens on IPv6 too ("::" with only [media] advertise6 set); see
        # _relay_addresses for what the SDP names
        bind, bind6 = relay_binds(self.config.sip.listen, settings.advertise6)
        self._relay_dir = tempfile.TemporaryDirectory(prefix="heimbuero-relay-")
        self.relay = RelayProcess(
            settings, Path(self._relay_dir.name) / "control", self._media_stats,
            self._media_silent, bind=bind, bind6=bind6,
        )  # fmt: skip
        try:
            await self.relay.start()
        except RelayUnavailable as exc:
            await self.relay.stop()
            raise ConfigError(f"[media] relay: {exc}") from None
        address, address6 = _relay_addresses(self.core, ipv6=bind6 is not None)
        self.anchor = RelayAnchor(settings, address, self.relay.send, address6)
        self.core.proxy.media = self.anchor
        anchor = self.anchor  # a call ended without a BYE through us (services/liveness.py)
        self.core.events.subscribe(CallEnded, lambda event: anchor.end(event.call_id))

    def _media_stats(self, key: str, stats: dict[str, Any]) -> None:
        def side(s: dict[str, Any]) -> str:
            def known(key: str, d: dict[str, Any]) -> object:
                value = d.get(key, 0)
                return "unknown" if value is None else value  # (rtpengine: not counted)

            text = (
                f"{s.get('packets', 0)} packets, {known('lost', s)} lost "
                f"({known('loss_pct', s)} %), {s.get('dropped', 0)} dropped, "
                f"jitter {known('jitter_ms', s)} ms"
            )
            reported = s.get("reported")
            if isinstance(reported, dict):
                text += (
                    f" (the other phone reported {reported.get('lost', 0)} lost, "
                    f"{reported.get('loss_pct', 0)} %, jitter {reported.get('jitter_ms', 0)} ms)"
                )
            return text

        known = audio_quality(stats)
        quality = known or (0.0, 0.0)
        worse = (
            f"loss {quality[0]:.1f} %, jitter {quality[1]:.1f} ms" if known
            else "loss and jitter unknown"
        )  # fmt: skip
        log.info("media of %s: %s (the worse direction); caller sent %s; callee sent %s", key,
                 worse, side(stats.get("a") or {}), side(stats.get("b") or {}))  # fmt: skip
        for direction in stats.values():
            self.relay_totals["packets"] += int(direction.get("packets") or 0)
            self.relay_totals["lost"] += int(direction.get("lost") or 0)  # (None: unknown)
            self.relay_totals["expected"] += int(direction.get("expected") or 0)
        if quality[0] >= POOR_LOSS_PCT or quality[1] >= POOR_JITTER_MS:
            self.relay_totals["poor"] += 1
        if key.endswith("/0"):  # (the first media stream: the call's audio)
            self.events.publish(CallMediaMeasured(time.time(), key[:-2], stats))

    def _agent_status(self, event: AgentStatusChanged) -> None:
        """An agent's new status counts at once: for team calls and presence (the office
        reload brings the same from the store a moment later)."""
        self.calls.set_status(event.user, event.status)
        self.presence.changed(event.user, event.at)
        self.core.pump(event.at)
        self.transports.flush()

    def _mailbox(self, user: str) -> tuple[int, int]:
        """(new, old) voicemails a user's phone shows: a client owner's are the client's
        mailbox (voicemail:CLIENT), anyone else's their own (voicemail:USER)."""
        account = self.calls.directory.users.get(user)
        owner = mailbox_owner(account) if account is not None else user
        return self.mailbox_counts.get(owner, (0, 0))

    def _media_silent(self, key: str) -> None:
        call_id = key.rsplit("/", 1)[0]
        if self.anchor is None or call_id not in self.anchor.calls:
            return
        now = time.time()
        # both phones (or the phone and the carrier, which would go on charging) hear it end
        hung_up = self.core.proxy.liveness.hang_up(call_id, NO_AUDIO_REASON, now)
        bye = "; BYE sent to both ends" if hung_up else ""
        if self.config.media.backend == "rtpengine":
            log.info("call %s: rtpengine let its media go (its timeout: no audio); the call "
                     "ends%s", call_id, bye)  # fmt: skip
        else:
            log.info("call %s: no audio for %.0f s; the relay lets it go%s",
                     call_id, self.config.media.silence_timeout, bye)  # fmt: skip
        self.anchor.end(call_id)
        # presence, call records
        self.core.events.publish(CallEnded(now, call_id, CallEndReason.NO_AUDIO))
        self.core.pump(now)  # (the BYEs and presence NOTIFYs out now, not with the next packet)
        self.transports.flush()

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.core.commit = self._commit_request
        # A stop asked for while starting is a clean stop once started (a SIP socket answers
        # as soon as it is bound, so a phone or a test may see the server before it is done).
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if self.config.media.relay != "never":
            await self._start_relay()  # (before SIP answers: the first call may need it)
        self.mailbox_counts = await asyncio.to_thread(all_counts, self.store)
        self.presence.mailbox = self._mailbox
        self.events.subscribe(AgentStatusChanged, self._agent_status)
        # Streams first: a UDP socket answers as soon as it is bound, while binding a TCP
        # listener yields to the loop; a phone that got an answer over UDP must find TCP open.
        for a in sorted(self.config.sip.listen, key=lambda a: a.transport == "udp"):
            try:
                await self.transports.listen(a.transport, a.host, a.port)
            except OSError as exc:
                await self.transports.close()
                if self.relay is not None:
                    await self.relay.stop()
                raise ConfigError(f"cannot listen on {a}: {exc.strerror or exc}") from None
        self.mediaapps = MediaApps(
            self.config.mediaapp, self.config.data_dir, self._owner_name, self._voicemail_left
        )
        host, port = await self.mediaapps.start()
        self.calls.media_app = Peer("udp", host, port)
        log.info("media applications on %s:%d (voicemail, announcements, dictation)", host, port)
        key = secrets.token_bytes(32)  # signs the URIs of dictation and voicemail by phone
        self.mediaapps.dictation_key = self.calls.dictation_key = key
        if self.config.mediaapp.listen_code:  # listening to voicemail by phone
            self.mediaapps.mailbox = _PhoneMailbox(self)
            self.mediaapps.listen_max_seconds = self.config.mediaapp.listen_max_minutes * 60.0
            self.calls.listen_code = self.config.mediaapp.listen_code
            self.calls.stored_mailboxes = lambda: self.mailbox_counts.keys()
        if self.config.dictation.phone_code:  # dictation by phone (its URIs signed per call)
            self.mediaapps.on_dictation = self._dictation_by_phone
            self.mediaapps.dictation_max_seconds = self.config.dictation.phone_max_minutes * 60.0
            self.calls.dictation_code = self.config.dictation.phone_code
        try:
            http = await self._start_http()
        except ConfigError:
            await self.transports.close()
            if self.relay is not None:
                await self.relay.stop()
            raise
        loop.add_signal_handler(signal.SIGHUP, self.ops.reload)
        self.ops.start()
        tasks = [
            loop.create_task(self._persist()),
            loop.create_task(self._nat_keepalive()),
            loop.create_task(self._reload_office()),
            loop.create_task(self._housekeeping()),
            loop.create_task(self._invoice_schedule()),
        ]
        if self.presence.subs:
            # Watchers kept from the last run learn the state as it is now.
            self.presence.notify_all(time.time())
            self.core.pump(time.time())
            self.transports.flush()
        self._first_due = await self._locate_trunks()  # (before the trunks register)
        tasks.append(loop.create_task(self._dns_refresh()))
        self.trunks.update(self.calls.directory.trunks.values(), time.time())
        for user in list(self.messages.queues):
            self.messages.kick(user, time.time())  # recipients still registered since the stop
        self.core.pump(time.time())
        self.transports.flush()
        listen = ", ".join(str(a) for a in self.config.sip.listen)
        if http is not None:
            listen += f", http:{self.config.http.listen}"
        print(f"heimbuero: serving {self.config.domain} on {listen}", file=sys.stderr, flush=True)
        self.ops.serving = True
        await stop.wait()
        log.info("stopping")
        await self.ops.stop()
        self.core.shutdown(time.time())
        self.calls.close_all(time.time())
        self.mediaapps.close()
        if self.relay is not None:
            await self.relay.stop()
        if self._relay_dir is not None:
            self._relay_dir.cleanup()
        self.transports.flush()
        await asyncio.sleep(0.05)  # let the final answers and CANCELs leave the sockets
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if http is not None:
            http[0].stop()
            await http[1]
        await self.flush()
        await asyncio.sleep(0)  # the answers that waited for the last commit
        self.transports.flush()
        await self.transports.close()
        self.writer.stop()
        self.store.close()
        print("heimbuero: stopped", file=sys.stderr, flush=True)
        return 0


def _sip_tls(config: Config) -> SipTls:
    """The TLS contexts; the certificate is loaded only when a TLS listener needs it."""
    if not config.uses_tls:
        return SipTls(None, None, dict(config.sip.trunk_tls))
    cert, key = config.tls_cert_path, config.tls_key_path
    try:
        return SipTls(cert, key, dict(config.sip.trunk_tls))
    except FileNotFoundError:
        raise ConfigError(
            f"SIP over TLS needs {cert} and {key}: run 'heimbuero init --data "
            f"{config.data_dir}' to make a self-signed pair, or set [sip] tls_cert and tls_key"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use the SIP TLS certificate {cert} / {key}: {exc}") from None


def run(config: Config) -> int:
    """Serve until SIGINT/SIGTERM; 0 after a clean stop. Raises ConfigError for unusable setup."""
    logsetup.configure(config.log_level, config.log_format, config.log_numbers)
    server = Server(config)
    # Transactions and bindings are long-lived objects; keep the cyclic collector off them.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)
    # Store writes run in a worker thread; a short switch interval keeps that thread from
    # holding the GIL for 5 ms while a SIP message waits on the event loop.
    sys.setswitchinterval(0.0005)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency on Linux
        return asyncio.run(server.serve())
    return uvloop.run(server.serve())
