"""The data directory and its config.toml: every setting, its default, and its validation."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heimbuero.media.relay_config import RELAY_KEYS, RelaySettings, parse_relay_settings
from heimbuero.net.mail import SECURITY_MODES, MailSettings
from heimbuero.services.guard import DEFAULT_SCANNERS, GuardSettings
from heimbuero.sip.locate import split_server

CONFIG_FILE = "config.toml"
DB_FILE = "heimbuero.db"
SECRET_FILE = "secret"
FILES_DIR = "files"
DATA_ENV = "HEIMBUERO_DATA"

DIGEST_ALGORITHMS = ("MD5", "SHA-256")
LOG_LEVELS = ("debug", "info", "warning", "error")  # [server] log_level, serve --log-level


# Logging: levels, line formats, number display, and the areas an operator names in
# `--log-level sip=debug,web=warning` with their loggers (ops/logsetup.py applies them).
LEVELS = LOG_LEVELS
FORMATS = ("text", "json", "logfmt")
NUMBER_MODES = ("full", "short")

# Areas an operator names in `--log-level sip=debug,web=warning`, and their loggers.
AREAS: dict[str, tuple[str, ...]] = {
    "sip": ("heimbuero.sip", "heimbuero.proxy", "heimbuero.net"),
    "registrar": ("heimbuero.registrar",),
    "calls": ("heimbuero.calls",),
    "trunks": ("heimbuero.trunks",),
    "presence": ("heimbuero.presence",),
    "messages": ("heimbuero.messages",),
    "security": ("heimbuero.security",),
    "web": ("heimbuero.web", "uvicorn", "uvicorn.error"),
    "files": ("heimbuero.office.files", "heimbuero.web.files"),
    "store": ("heimbuero.store", "alembic"),
    "ops": ("heimbuero.ops",),
}


class LogSpecError(ValueError):
    """A log level specification is malformed; the message says why."""


def parse_levels(spec: str) -> tuple[str, dict[str, str]]:
    """`info` or `warning,sip=debug,web=error` -> (base level, {area: level}).
    The base level may be left out (`sip=debug`: info for the rest)."""
    base = "info"
    areas: dict[str, str] = {}
    parts = [p.strip().lower() for p in spec.split(",") if p.strip()]
    if not parts:
        raise LogSpecError("empty log level")
    for part in parts:
        area, sep, level = part.partition("=")
        if not sep:
            area, level = "", area
        if level not in LEVELS:
            raise LogSpecError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
        if not area:
            base = level
        elif area in AREAS:
            areas[area] = level
        else:
            raise LogSpecError(f"unknown log area {area!r} (areas: {', '.join(AREAS)})")
    return base, areas


class ConfigError(Exception):
    """A setting, address or data directory is unusable; the message says which and why."""


@dataclass(frozen=True)
class ListenAddress:
    """One SIP listening socket: transport, host and port."""

    transport: str  # "udp", "tcp" or "tls"
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True)
class SipSettings:
    listen: tuple[ListenAddress, ...] = (
        ListenAddress("udp", "127.0.0.1", 5060),
        ListenAddress("tcp", "127.0.0.1", 5060),
    )
    # Order of the challenges sent: RFC 8760 clients take the first they support. MD5 first keeps
    # MD5-only phones (many desk phones, SIPp) working; put SHA-256 first once every phone has it.
    digest_algorithms: tuple[str, ...] = ("MD5", "SHA-256")
    nonce_ttl: int = 300
    t1_ms: int = 500
    t2_ms: int = 4000
    t4_ms: int = 5000
    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600
    max_contacts_per_aor: int = 10
    # RFC 5626 outbound: the keep-alive interval (Flow-Timer, seconds) told to a UA whose flow
    # ends at this server (0: none told)
    flow_timer: int = 120
    max_message_size: int = 65535
    tcp_idle_timeout: int = 600
    max_tcp_connections_per_ip: int = 100
    invite_timeout: int = 181  # Timer C: more than 3 minutes (RFC 3261 §16.8)
    # RFC 4028: the Session-Expires the proxy asks for in calls whose INVITE has none, so that
    # a call whose phone vanished ends (0 = do not ask; else at least 90)
    session_expires: int = 1800
    trusted_peers: tuple[str, ...] = ()  # "HOST" or "HOST:PORT" of carrier trunks: no digest auth
    # DNS servers ("ADDRESS" or "ADDRESS:PORT") for trunks named by host name; none: the
    # system's (/etc/resolv.conf)
    dns_servers: tuple[str, ...] = ()
    # A host name with both A and AAAA records: its IPv6 addresses tried first (the server
    # asks only for the families it listens on)
    prefer_ipv6: bool = False
    advertise: str | None = None  # address for Via/Record-Route when listening on 0.0.0.0
    md5_only_user_agents: tuple[str, ...] = ("baresip v0.", "baresip v1.")
    subscribe_max_expires: int = 3600  # presence/dialog subscriptions (RFC 6665)
    max_subscriptions_per_user: int = 100
    max_watchers_per_presentity: int = 2000
    presence_min_interval: int = 5  # seconds between NOTIFYs of published changes per watcher
    # SIP over TLS: PEM certificate (chain) and key; relative paths are in the data directory
    tls_cert: str = "tls/sip.crt"
    tls_key: str = "tls/sip.key"
    tls_handshake_timeout: int = 10  # seconds a TLS client gets to finish its handshake
    max_tls_handshakes: int = 200  # TLS handshakes in progress at once (more: closed)
    # Outbound TLS per carrier, "HOST" or "HOST:PORT" -> CA file, or "sha256:FINGERPRINT";
    # carriers not named are verified against the system's CAs
    trunk_tls: tuple[tuple[str, str], ...] = ()
    # Floods, scanners and password guessing (services/guard.py)
    flood_rate: int = 100  # requests per second per source IP, sustained (0: no limit)
    flood_burst: int = 300  # requests at once before the rate applies
    ban_time: int = 300  # seconds a source over the rate is dropped silently
    flood_exempt: tuple[str, ...] = ("127.0.0.1", "::1")  # never banned (a local front proxy)
    scanner_user_agents: tuple[str, ...] = DEFAULT_SCANNERS  # dropped unanswered (substrings)
    auth_account_failures: int = 5  # wrong passwords for one account before it backs off
    auth_source_failures: int = 30  # wrong passwords from one IP before it backs off
    auth_backoff_max: int = 300  # longest refusal window in seconds (it doubles per failure)
    max_tracked_nonces: int = 50_000  # nonce-counts kept for replay protection

    def guard(self) -> GuardSettings:
        """The flood, ban and guessing limits (at start and at a reload)."""
        return GuardSettings(
            rate=float(self.flood_rate),
            burst=self.flood_burst,
            ban_time=float(self.ban_time),
            scanner_user_agents=self.scanner_user_agents,
            account_failures=self.auth_account_failures,
            source_failures=self.auth_source_failures,
            backoff_max=float(self.auth_backoff_max),
        )


@dataclass(frozen=True)
class HttpSettings:
    listen: str | None = None  # "HOST:PORT"; None: no HTTP service
    tls_cert: str | None = None  # PEM certificate (chain) file: serve HTTPS instead of HTTP
    tls_key: str | None = None  # its PEM private key
    # Base of the links the file-transfer service hands out ("https://office.example.de");
    # default: http(s)://LISTEN-ADDRESS
    public_url: str | None = None
    # Addresses (or networks, "10.0.0.0/8") of reverse proxies whose X-Forwarded-For is believed;
    # from anybody else the socket's peer is the client's address (rate limits, logs).
    trusted_proxies: tuple[str, ...] = ()
    max_connections: int = 0  # open HTTP connections at once (more: refused); 0: from the fd limit
    header_timeout: int = 10  # seconds a client gets to send a request's headers (slowloris)
    keep_alive_timeout: int = 5  # seconds an idle keep-alive connection stays open
    max_body_kb: int = 256  # largest body of an API request (file uploads: [files] max_size_mb)


@dataclass(frozen=True)
class MessageSettings:
    """The messenger: SIP MESSAGE and the HTTP API's messages."""

    max_bytes: int = 16384  # largest message body accepted; larger: 413
    delivery_timeout: int = 10  # seconds registered devices get to accept before it is stored
    store_expiry: int = 7 * 86400  # seconds a stored message waits for an offline recipient
    retention_days: int = 0  # conversations idle this long are deleted with their files; 0: keep
    rate_per_minute: int = 120  # messages one user may send per minute (more: 503 / HTTP 429)
    max_stored_per_user: int = 1000  # messages waiting for one offline user (more: 480 / 409)


@dataclass(frozen=True)
class FileSettings:
    """The HTTP file-transfer service (uploads of dictations and documents)."""

    max_size_mb: int = 500  # largest single file
    quota_mb: int = 2048  # all files a user has stored at one time; 0: no quota
    link_days: int = 30  # days a download link stays valid (the file is deleted after)


@dataclass(frozen=True)
class DictationSettings:
    """[dictation]: typists' locks, Normzeilen, and the messenger address of dictation."""

    lock_minutes: int = 30  # a taken job returns to the queue after this idle time
    line_chars: int = 55  # characters (incl. spaces) of one Normzeile, 50-60
    address: str = ""  # user name audio files are sent to (becomes a job); sends the news
    phone_code: str = "*88"  # dialled from a client's phone: dictation by phone ("": off)
    phone_max_minutes: int = 30  # longest dictation by phone


@dataclass(frozen=True)
class MetricsSettings:
    """Who may read /metrics: addresses or networks, and a bearer token from anywhere."""

    allow: tuple[str, ...] = ("127.0.0.1", "::1")
    token: str | None = None

    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(a, strict=False) for a in self.allow)


@dataclass(frozen=True)
class Config:
    data_dir: Path
    domain: str
    sip: SipSettings = field(default_factory=SipSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    messages: MessageSettings = field(default_factory=MessageSettings)
    files: FileSettings = field(default_factory=FileSettings)
    # a level of LOG_LEVELS, optionally with levels per area: "info,sip=debug,web=warning";
    # info logs every registration change and call
    log_level: str = "info"
    log_format: str = "text"  # text, json (JSON lines) or logfmt
    log_numbers: str = "full"  # "short": phone numbers in log lines shortened to +4930…67
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    # [store] database_url: None = the SQLite file DATA/heimbuero.db; else a SQLAlchemy URL,
    # e.g. postgresql+psycopg://USER:PASSWORD@HOST/DB
    database_url: str | None = None
    mail: MailSettings = field(default_factory=MailSettings)
    dictation: DictationSettings = field(default_factory=DictationSettings)
    mediaapp: MediaAppSettings = field(default_factory=lambda: MediaAppSettings())
    media: RelaySettings = field(default_factory=RelaySettings)
    billing: BillingRunSettings = field(default_factory=lambda: BillingRunSettings())

    @property
    def files_dir(self) -> Path:
        return self.data_dir / FILES_DIR

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_FILE

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.db_path}"

    @property
    def uses_sqlite_file(self) -> bool:
        """True when the database is the SQLite file in the data directory."""
        return self.database_url is None

    @property
    def secret_path(self) -> Path:
        return self.data_dir / SECRET_FILE

    @property
    def tls_cert_path(self) -> Path:
        return self.data_dir / self.sip.tls_cert

    @property
    def tls_key_path(self) -> Path:
        return self.data_dir / self.sip.tls_key

    @property
    def uses_tls(self) -> bool:
        return any(a.transport == "tls" for a in self.sip.listen)


def resolve_data_dir(arg: str | None) -> Path:
    """The data directory from --data or HEIMBUERO_DATA."""
    value = arg or os.environ.get(DATA_ENV)
    if not value:
        raise ConfigError(f"no data directory: pass --data DIR or set {DATA_ENV}")
    return Path(value).expanduser().resolve()


DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


def parse_listen(spec: str) -> tuple[ListenAddress, ...]:
    """Parse `udp:HOST:PORT,tcp:HOST:PORT,tls:HOST:PORT` (IPv6 hosts in brackets; the port is
    always given: 5060 is usual for UDP and TCP, 5061 for TLS)."""
    out: list[ListenAddress] = []
    for part in spec.split(","):
        part = part.strip()
        transport, sep, rest = part.partition(":")
        transport = transport.lower()
        if not sep or transport not in DEFAULT_PORTS:
            raise ConfigError(
                f"malformed SIP listen address {part!r}: expected udp:HOST:PORT, tcp:HOST:PORT "
                "or tls:HOST:PORT"
            )
        host, port = parse_host_port(rest, what="SIP listen address")
        out.append(ListenAddress(transport, host, port))
    if not out:
        raise ConfigError("no SIP listen address given")
    return tuple(out)


def parse_host_port(spec: str, what: str = "address") -> tuple[str, int]:
    """Parse HOST:PORT or [V6]:PORT; the host must be an IP address or a hostname."""
    if spec.startswith("["):
        host, sep, port_s = spec[1:].partition("]:")
    else:
        host, sep, port_s = spec.rpartition(":")
        if ":" in host:  # `::1:5060` could be an address without port (RFC 5118 §4.3)
            raise ConfigError(
                f"malformed {what} {spec!r}: an IPv6 address goes in brackets, [V6]:PORT"
            )
    if not sep or not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ConfigError(
            f"malformed {what} {spec!r}: expected HOST:PORT with a port from 1 to 65535"
        )
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not all(c.isalnum() or c in "-." for c in host):
            raise ConfigError(f"malformed {what} {spec!r}: bad host {host!r}") from None
    return host, int(port_s)


def load(data_dir: Path) -> Config:
    """Read DIR/config.toml; raise ConfigError with a one-line reason when it is unusable."""
    if not data_dir.is_dir():
        raise ConfigError(
            f"no such data directory: {data_dir} "
            f"(create it with 'heimbuero init --data {data_dir}')"
        )
    path = data_dir / CONFIG_FILE
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: run 'heimbuero init --data {data_dir}'") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    server = raw.get("server", {})
    domain = server.get("domain")
    if not isinstance(domain, str) or not domain:
        raise ConfigError(f"{path}: [server] domain is missing")
    log_level = server.get("log_level", "info")
    try:
        parse_levels(str(log_level))
    except LogSpecError as exc:
        raise ConfigError(
            f"{path}: [server] log_level must be one of {', '.join(LOG_LEVELS)}, optionally "
            f"followed by AREA=LEVEL pairs ({exc})"
        ) from None
    log_format = server.get("log_format", "text")
    if log_format not in FORMATS:
        raise ConfigError(f"{path}: [server] log_format must be one of {', '.join(FORMATS)}")
    log_numbers = server.get("log_numbers", "full")
    if log_numbers not in NUMBER_MODES:
        raise ConfigError(f"{path}: [server] log_numbers must be one of {', '.join(NUMBER_MODES)}")
    metrics = _metrics(path, raw.get("metrics", {}))
    mail = _mail(path, raw.get("mail", {}))
    billing = _billing(path, raw.get("billing", {}))
    database_url = _database_url(path, raw.get("store", {}))
    sip_raw = dict(raw.get("sip", {}))
    defaults = SipSettings()
    kwargs: dict[str, object] = {}
    for key, value in sip_raw.items():
        if not hasattr(defaults, key):
            raise ConfigError(f"{path}: unknown setting [sip] {key}")
        if key == "listen":
            value = parse_listen(",".join(value) if isinstance(value, list) else str(value))
        elif key == "digest_algorithms":
            value = tuple(str(v).upper() for v in value)
            bad = [v for v in value if v not in DIGEST_ALGORITHMS]
            if bad or not value:
                raise ConfigError(f"{path}: [sip] digest_algorithms must name MD5 and/or SHA-256")
        elif key == "advertise":
            value = str(value) or None
        elif key in (
            "trusted_peers",
            "md5_only_user_agents",
            "flood_exempt",
            "scanner_user_agents",
        ):
            if not isinstance(value, list):
                raise ConfigError(f"{path}: [sip] {key} must be a list of strings")
            value = tuple(str(v) for v in value)
        elif key == "dns_servers":
            if not isinstance(value, list):
                raise ConfigError(f"{path}: [sip] dns_servers must be a list of strings")
            try:
                value = tuple(str(v) for v in value if split_server(str(v)))
            except ValueError as exc:
                raise ConfigError(f"{path}: [sip] dns_servers: {exc}") from None
        elif key in ("tls_cert", "tls_key"):
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{path}: [sip] {key} must be a file name")
        elif key == "trunk_tls":
            value = _trunk_tls(path, value)
        elif key == "prefer_ipv6":
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: [sip] prefer_ipv6 must be true or false")
        elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{path}: [sip] {key} must be a non-negative integer")
        if key == "session_expires" and 0 < value < 90:
            raise ConfigError(f"{path}: [sip] session_expires must be 0 (off) or at least 90")
        kwargs[key] = value
    sip = SipSettings(**kwargs)  # type: ignore[arg-type]
    http_raw = dict(raw.get("http", {}))
    http_kwargs: dict[str, Any] = {}
    for key, value in http_raw.items():
        if key in ("listen", "tls_cert", "tls_key", "public_url"):
            if not isinstance(value, str):
                raise ConfigError(f"{path}: [http] {key} must be a string")
            http_kwargs[key] = value or None
        elif key == "trusted_proxies":
            http_kwargs[key] = _address_list(path, "[http] trusted_proxies", value)
        elif key in ("max_connections", "header_timeout", "keep_alive_timeout", "max_body_kb"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{path}: [http] {key} must be a non-negative integer")
            if key != "max_connections" and value < 1:
                raise ConfigError(f"{path}: [http] {key} must be at least 1")
            http_kwargs[key] = value
        else:
            raise ConfigError(f"{path}: unknown setting [http] {key}")
    http = HttpSettings(**http_kwargs)
    if bool(http.tls_cert) != bool(http.tls_key):
        raise ConfigError(f"{path}: [http] tls_cert and tls_key must be set together")
    public = http.public_url
    if public is not None and not public.startswith(("http://", "https://")):
        raise ConfigError(f"{path}: [http] public_url must start with http:// or https://")
    messages = MessageSettings(**_integers(path, "messages", raw, MessageSettings()))
    files = FileSettings(**_integers(path, "files", raw, FileSettings()))
    if files.max_size_mb < 1 or files.link_days < 1:
        raise ConfigError(f"{path}: [files] max_size_mb and link_days must be at least 1")
    mediaapp, media = _mediaapp(path, raw), _media(path, raw)
    if media.port_min <= mediaapp.port_max and mediaapp.port_min <= media.port_max:
        raise ConfigError(f"{path}: the port ranges of [media] and [mediaapp] overlap")
    dictation = _dictation(path, raw.get("dictation", {}))
    if mediaapp.listen_code and mediaapp.listen_code == dictation.phone_code:
        raise ConfigError(f"{path}: [voicemail] phone_code and [dictation] phone_code are "
                          f"both {mediaapp.listen_code}")  # fmt: skip
    return Config(
        data_dir=data_dir, domain=domain.lower(), sip=sip, http=http, messages=messages,
        files=files, log_level=log_level, log_format=log_format, log_numbers=log_numbers,
        metrics=metrics, database_url=database_url, mail=mail, billing=billing,
        dictation=dictation, mediaapp=mediaapp, media=media,
    )  # fmt: skip


DATABASE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")


def check_database_url(url: str) -> str:
    """The URL when it names a database heimbuero can use; ConfigError with the reason else."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in DATABASE_SCHEMES or not rest:
        raise ConfigError(
            f"database_url must start with {' or '.join(s + '://' for s in DATABASE_SCHEMES)}"
        )
    if scheme == "postgresql":  # the installed driver, not SQLAlchemy's default psycopg2
        url = "postgresql+psycopg://" + rest
    return url


def _database_url(path: Path, table: object) -> str | None:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [store] must be a table")
    for key in table:
        if key != "database_url":
            raise ConfigError(f"{path}: unknown setting [store] {key}")
    value = table.get("database_url")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{path}: [store] database_url must be a string")
    try:
        return check_database_url(value)
    except ConfigError as exc:
        raise ConfigError(f"{path}: [store] {exc}") from None


def _address_list(path: Path, setting: str, value: object) -> tuple[str, ...]:
    """A list of IP addresses or networks (`10.0.0.0/8`), checked."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: {setting} must be a list of addresses")
    for v in value:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ConfigError(f"{path}: {setting}: not an address or network: {v!r}") from None
    return tuple(value)


def _metrics(path: Path, table: object) -> MetricsSettings:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [metrics] must be a table")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key == "allow":
            out[key] = _address_list(path, "[metrics] allow", value)
        elif key == "token":
            if not isinstance(value, str) or (value and len(value) < 16):
                raise ConfigError(f"{path}: [metrics] token must be a string of 16+ characters")
            out[key] = value or None
        else:
            raise ConfigError(f"{path}: unknown setting [metrics] {key}")
    return MetricsSettings(**out)


@dataclass(frozen=True)
class MediaAppSettings:
    """[mediaapp] and [voicemail]: the server's own media user agent (voicemail)."""

    address: str = "127.0.0.1"  # where its SIP socket and RTP ports listen
    port_min: int = 30000  # RTP ports of answered calls (one per call, even numbers)
    port_max: int = 30999
    max_sessions: int = 50  # calls answered at once; more get 503
    voicemail_max_seconds: int = 120  # [voicemail] max_seconds: longest recording
    listen_code: str = "*86"  # [voicemail] phone_code: dialled to listen to one's mailbox
    listen_max_minutes: int = 15  # [voicemail] phone_max_minutes: longest such call
    # [voicemail] sender: the user the "new voicemail" message comes from ("": the box's
    # owner himself, a note to self)
    voicemail_sender: str = ""


def _mediaapp(path: Path, raw: dict[str, Any]) -> MediaAppSettings:
    out: dict[str, Any] = {}
    table = raw.get("mediaapp", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [mediaapp] must be a table")
    for key, value in table.items():
        if key == "address":
            try:
                ipaddress.ip_address(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{path}: [mediaapp] address must be an IP address") from None
            out[key] = value
        elif key in ("port_min", "port_max", "max_sessions"):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
                raise ConfigError(f"{path}: [mediaapp] {key} must be a positive integer")
            out[key] = value
        else:
            raise ConfigError(f"{path}: unknown setting [mediaapp] {key}")
    vm = raw.get("voicemail", {})
    if not isinstance(vm, dict):
        raise ConfigError(f"{path}: [voicemail] must be a table")
    for key, value in vm.items():
        if key == "phone_code":
            out["listen_code"] = _service_code(path, "voicemail", value)
            continue
        if key == "phone_max_minutes":
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 120:
                raise ConfigError(f"{path}: [voicemail] phone_max_minutes must be 1..120")
            out["listen_max_minutes"] = value
            continue
        if key == "sender":
            if not isinstance(value, str) or (
                value and not re.fullmatch(r"[a-z0-9._-]{1,64}", value.lower())
            ):
                raise ConfigError(f"{path}: [voicemail] sender must be a user name")
            out["voicemail_sender"] = value.lower()
            continue
        if key != "max_seconds":
            raise ConfigError(f"{path}: unknown setting [voicemail] {key}")
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 3600:
            raise ConfigError(f"{path}: [voicemail] max_seconds must be 1..3600")
        out["voicemail_max_seconds"] = value
    settings = MediaAppSettings(**out)
    if not 1024 <= settings.port_min <= settings.port_max:
        raise ConfigError(f"{path}: [mediaapp] port_min must be 1024..port_max")
    return settings


def _media(path: Path, raw: dict[str, Any]) -> RelaySettings:
    table = raw.get("media", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [media] must be a table")
    for key in table:
        if key not in RELAY_KEYS:
            raise ConfigError(f"{path}: unknown setting [media] {key}")
    try:
        settings = parse_relay_settings(table)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return settings


@dataclass(frozen=True, slots=True)
class BillingRunSettings:
    """[billing]: the scheduled invoice run in `serve` (invoice_day 0 = off; 1 to 28: on that
    day of the month, from invoice_hour local time, the previous month is invoiced)."""

    invoice_day: int = 0
    invoice_hour: int = 6
    timezone: str = "Europe/Berlin"
    # e-mail the month's invoices never sent after the scheduled run (retried every 15
    # minutes while some fail: the mail server down, a client without a billing address)
    send_invoices: bool = False


def _billing(path: Path, table: object) -> BillingRunSettings:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [billing] must be a table")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key in ("invoice_day", "invoice_hour"):
            top = 28 if key == "invoice_day" else 23
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
                raise ConfigError(f"{path}: [billing] {key} must be an integer 0 to {top}")
            out[key] = value
        elif key == "timezone":
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{path}: [billing] timezone must be a time zone name")
            out[key] = value
        elif key == "send_invoices":
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: [billing] send_invoices must be true or false")
            out[key] = value
        else:
            raise ConfigError(f"{path}: unknown setting [billing] {key}")
    return BillingRunSettings(**out)


def _mail(path: Path, table: object) -> MailSettings:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [mail] must be a table")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key in ("host", "username", "password", "sender"):
            if not isinstance(value, str):
                raise ConfigError(f"{path}: [mail] {key} must be a string")
            out[key] = value or None
        elif key == "security":
            if value not in SECURITY_MODES:
                raise ConfigError(
                    f"{path}: [mail] security must be one of {', '.join(SECURITY_MODES)}"
                )
            out[key] = value
        elif key in ("port", "timeout"):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
                raise ConfigError(f"{path}: [mail] {key} must be a positive integer")
            out[key] = value
        else:
            raise ConfigError(f"{path}: unknown setting [mail] {key}")
    if out.get("sender") is None:
        out.pop("sender", None)
    elif "@" not in out["sender"]:
        raise ConfigError(f"{path}: [mail] sender must be an e-mail address")
    return MailSettings(**out)


MAX_PHONE_MINUTES = 120  # longest [dictation] phone_max_minutes
PICKUP_CODE = "*8"  # dialled to pick up a colleague's ringing call (office.pickup uses it)


def _service_code(path: Path, section: str, value: object) -> str:
    """A feature code dialled for a service of the server (dictation, listening to
    voicemail): * or # and 1-4 digits, not one of forwarding's; "" is off."""
    if (
        not isinstance(value, str)
        or not re.fullmatch(r"([*#][0-9]{1,4})?", value)
        or (value and re.match(r"[*#]2[12]", value))
        or value == PICKUP_CODE
    ):
        raise ConfigError(
            f"{path}: [{section}] phone_code must be * or # and 1-4 digits (not *21, "
            f'*22: forwarding, nor {PICKUP_CODE}: call pickup), or "" for off'
        )
    return value


def _dictation(path: Path, table: object) -> DictationSettings:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [dictation] must be a table")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key == "address":
            if not isinstance(value, str) or (value and not value.replace("-", "").isalnum()):
                raise ConfigError(f"{path}: [dictation] address must be a user name")
            out[key] = value.lower()
        elif key in ("lock_minutes", "line_chars", "phone_max_minutes"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{path}: [dictation] {key} must be a positive integer")
            out[key] = value
        elif key == "phone_code":
            out[key] = _service_code(path, "dictation", value)
        else:
            raise ConfigError(f"{path}: unknown setting [dictation] {key}")
    if not 50 <= out.get("line_chars", 55) <= 60:
        raise ConfigError(f"{path}: [dictation] line_chars must be 50-60")
    if out.get("phone_max_minutes", 30) > MAX_PHONE_MINUTES:
        raise ConfigError(
            f"{path}: [dictation] phone_max_minutes must be at most {MAX_PHONE_MINUTES} (a "
            "dictation by phone is held in memory until it ends: 1 MB a minute)"
        )
    return DictationSettings(**out)


def _trunk_tls(path: Path, table: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [sip.trunk_tls] must be a table of \"HOST\" = CA file or "
                          "\"sha256:FINGERPRINT\"")  # fmt: skip
    out = []
    for host, value in table.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: [sip.trunk_tls] {host} must be a CA file or sha256:…")
        if value.lower().startswith("sha256:"):
            from heimbuero.net.tls import normalise_fingerprint

            try:
                normalise_fingerprint(value)
            except ValueError as exc:
                raise ConfigError(f"{path}: [sip.trunk_tls] {host}: {exc}") from None
        else:
            value = str((path.parent / value).resolve())
        out.append((str(host), value))
    return tuple(out)


def _integers(path: Path, section: str, raw: dict[str, object], defaults: object) -> dict[str, int]:
    """The settings of a section whose values are all non-negative integers."""
    table = raw.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{section}] must be a table")
    out: dict[str, int] = {}
    for key, value in table.items():
        if not hasattr(defaults, key):
            raise ConfigError(f"{path}: unknown setting [{section}] {key}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{path}: [{section}] {key} must be a non-negative integer")
        out[key] = value
    return out


def default_config_text(domain: str, database_url: str | None = None) -> str:
    """The config.toml that `heimbuero init` writes: every setting with its default, commented."""
    d = SipSettings()
    m = MessageSettings()
    f = FileSettings()
    h = HttpSettings()
    listen = ", ".join(f'"{a}"' for a in d.listen)
    db_line = (
        f"database_url = {json.dumps(database_url)}"
        if database_url
        else '# database_url = "postgresql+psycopg://heimbuero:PASSWORD@localhost/heimbuero"'
    )
    algs = ", ".join(f'"{a}"' for a in d.digest_algorithms)
    return f"""# heimbuero configuration. Changes take effect at the next 'heimbuero serve'.

[server]
# SIP domain: the host part of every user's address (sip:NAME@DOMAIN) and the digest realm.
# Changing it later invalidates stored SIP password hashes (set them again with 'user passwd').
domain = "{domain}"
# What the server logs on stderr: "info" (one line per registration change and per call, and
# the other events), "warning" (problems only), "error" or "debug", optionally per area:
# "info,sip=debug,web=warning" (areas: sip, registrar, calls, trunks, presence, messages,
# security, web, files, store, ops). 'serve --log-level' overrides it; SIGHUP rereads it.
log_level = "info"
# Line format: "text", "json" (one JSON object per line) or "logfmt"
log_format = "text"
# "short": phone numbers in log lines are shortened (+4930…67); "full" keeps them
log_numbers = "full"

[sip]
listen = [{listen}]
# To serve phones on the network, listen on 0.0.0.0 (or this machine's address) and set the
# address the phones reach this server at, used in Via and Record-Route:
# advertise = "192.0.2.10"
# Digest challenge order (RFC 8760). Clients take the first algorithm they support.
digest_algorithms = [{algs}]
nonce_ttl = {d.nonce_ttl}            # seconds a digest nonce stays valid
t1_ms = {d.t1_ms}                # RFC 3261 timers
t2_ms = {d.t2_ms}
t4_ms = {d.t4_ms}
min_expires = {d.min_expires}           # shorter registrations get 423 Interval Too Brief
max_expires = {d.max_expires}
default_expires = {d.default_expires}
max_contacts_per_aor = {d.max_contacts_per_aor}
# RFC 5626 outbound: seconds between the keep-alives (CRLF over TCP/TLS, STUN over UDP) a phone
# or mobile app registering with reg-id is told to send (Flow-Timer); 0 = not told
flow_timer = {d.flow_timer}
max_message_size = {d.max_message_size}     # bytes; larger messages are refused (513) or dropped
tcp_idle_timeout = {d.tcp_idle_timeout}       # idle seconds before a TCP connection is closed
max_tcp_connections_per_ip = {d.max_tcp_connections_per_ip}
# Timer C: seconds a forked INVITE may ring before 408 (RFC 3261 §16.8: over 3 minutes, so
# smaller values count as 181)
invite_timeout = {d.invite_timeout}
# Session timers (RFC 4028): the Session-Expires asked for in calls whose INVITE has none;
# phones that support them refresh the call, and a call not refreshed in time is over: the
# server sends both ends a BYE and presence frees the agent. 0 = do not ask.
session_expires = {d.session_expires}
# Carrier trunks whose requests are not challenged: "HOST" or "HOST:PORT"
trusted_peers = []
# DNS servers for trunks named by host name ("ADDRESS" or "ADDRESS:PORT"); [] = the
# system's. A trunk with port 0 is looked up by SRV (RFC 3263), else by A/AAAA.
dns_servers = []
# A name with IPv4 and IPv6 addresses: IPv6 first? (Only the families of the listen
# addresses are looked up: a server listening on IPv4 alone never tries an AAAA address.)
prefer_ipv6 = false
# Clients that fail on a challenge list with an algorithm they do not know get MD5 alone
# (matched as User-Agent prefixes; baresip 1.x gives up on any SHA-256 challenge).
md5_only_user_agents = [{", ".join(f'"{u}"' for u in d.md5_only_user_agents)}]
# Presence (SUBSCRIBE/NOTIFY, PUBLISH): longest subscription granted, subscriptions a user may
# hold (more: 403), watchers of one user (more: 503), and the least seconds between two
# NOTIFYs of published status to one watcher (registration and call changes go out at once).
subscribe_max_expires = {d.subscribe_max_expires}
max_subscriptions_per_user = {d.max_subscriptions_per_user}
max_watchers_per_presentity = {d.max_watchers_per_presentity}
presence_min_interval = {d.presence_min_interval}
# SIP over TLS: add "tls:HOST:5061" to listen. Certificate and key (PEM; relative to the data
# directory). 'heimbuero init' makes a self-signed pair here; put a real one in their place.
tls_cert = "{d.tls_cert}"
tls_key = "{d.tls_key}"
tls_handshake_timeout = {d.tls_handshake_timeout}   # seconds a TLS client gets for its handshake
max_tls_handshakes = {d.max_tls_handshakes}     # TLS handshakes in progress at once
# Carriers reached over TLS are verified against the system's CAs; for a private carrier name
# its CA file or pin its certificate:
# [sip.trunk_tls]
# "sip.carrier.example" = "/etc/heimbuero/carrier-ca.pem"
# "192.0.2.20:5061" = "sha256:AB:CD:…"
# Floods and scanners (like Kamailio's pike and an htable ban): a source IP sending more than
# flood_rate requests per second (after a burst of flood_burst) is dropped silently for
# ban_time seconds; flood_exempt addresses never are. Requests whose User-Agent contains one of
# scanner_user_agents (case-insensitive) are dropped unanswered. 0 turns a limit off.
flood_rate = {d.flood_rate}
flood_burst = {d.flood_burst}
ban_time = {d.ban_time}
flood_exempt = [{", ".join(f'"{a}"' for a in d.flood_exempt)}]
scanner_user_agents = [{", ".join(f'"{u}"' for u in d.scanner_user_agents)}]
# Password guessing: after auth_account_failures wrong answers for one account (or
# auth_source_failures from one address) further attempts are refused (403) for a window that
# doubles per failure up to auth_backoff_max seconds. A phone that authenticated from its
# address before keeps working. Each failure is logged for fail2ban (docs/fail2ban/).
auth_account_failures = {d.auth_account_failures}
auth_source_failures = {d.auth_source_failures}
auth_backoff_max = {d.auth_backoff_max}
max_tracked_nonces = {d.max_tracked_nonces}  # nonce-counts kept against replays (bounded)

[http]
# listen = "127.0.0.1:8080"
# HTTPS (the file-transfer service takes SIP passwords' digests and files): both PEM files
# tls_cert = "/etc/heimbuero/cert.pem"
# tls_key = "/etc/heimbuero/key.pem"
# Base of the download links handed out, as clients reach this server:
# public_url = "https://office.example.de:8443"
# Reverse proxies (addresses or networks) whose X-Forwarded-For names the client; from anybody
# else the connection's own address counts (login limits, logs). Empty: no proxy is believed.
trusted_proxies = []
# Open HTTP connections at once (more are refused); 0: a share of the open-files limit
max_connections = 0
header_timeout = {h.header_timeout}        # seconds to send a request's headers (else: closed)
keep_alive_timeout = {h.keep_alive_timeout}    # seconds an idle connection stays open
max_body_kb = {h.max_body_kb}         # largest API request body (413); uploads: [files]

[store]
# The database: unset, the SQLite file heimbuero.db in the data directory; or PostgreSQL
# (12 or newer; the database must exist and belong to the user). 'heimbuero init' creates
# the tables; 'heimbuero backup' saves only the SQLite file (use pg_dump for PostgreSQL).
{db_line}

[metrics]
# GET /metrics on the HTTP port (Prometheus): open to these addresses or networks, and to
# "Authorization: Bearer TOKEN" from anywhere when a token (16+ characters) is set.
allow = ["127.0.0.1", "::1"]
# token = ""

[mail]
# E-mail to clients (call notes, voicemail, documents, invoices) through this SMTP server.
# No host: nothing is e-mailed.
# host = "mail.example.de"
# port = 587
# security = "starttls"   # "none", "starttls" or "tls"
# username = ""
# password = ""
# sender = "buero@example.de"

[mediaapp]
# The server answers calls itself (voicemail): its SIP socket and RTP ports, calls at once.
# address = "127.0.0.1"
# port_min = 30000
# port_max = 30999
# max_sessions = 50

[voicemail]
# max_seconds = 120        # longest recording; the caller ends earlier with #
# Listening by phone: a user dials this code and hears his mailbox (a client's owner: the
# client's). Keys: 1 again, 7 delete, 9 keep, # next. "" = off.
phone_code = "*86"
phone_max_minutes = 15   # longest such call, 1-120
# The user the "new voicemail" message with the recording's link comes from (add it first,
# e.g. 'heimbuero user add zentrale --role agent'); unset: from the box's owner himself.
# sender = "zentrale"

[media]
# The RTP relay: the audio of calls with a device behind a home router (NAT) goes through
# the server, so that both sides hear each other. "when_needed" (default), "always", "never".
# relay = "when_needed"
# port_min = 20000         # its UDP ports (four per call: RTP and RTCP of each side),
# port_max = 29999         # below the system's ephemeral ports (32768-60999 on Linux)
# advertise = "192.0.2.10" # the IPv4 address phones send audio to (default: [sip] advertise)
# advertise6 = "2001:db8::10"  # the IPv6 one (default: SIP's IPv6 address when it listens on
#                          # IPv6; none: IPv6 phones' audio is not relayed)
# silence_timeout = 60     # seconds without audio in either direction: the relay lets go
# backend = "builtin"      # or "rtpengine": Sipwise rtpengine, run by you (e.g. Debian's
#                          # rtpengine-daemon, --table=-1), asked over its ng protocol; ports,
#                          # address and timeout are then rtpengine's own options
# rtpengine = "udp:127.0.0.1:2223"  # its --listen-ng
# realtime_priority = 0   # builtin: 1-99 runs the relay with real-time scheduling (SCHED_FIFO)
#                          # so no other process delays audio; needs root or CAP_SYS_NICE
[billing]
# The scheduled invoice run of 'heimbuero serve': on this day of the month (1 to 28; 0 = off,
# run 'heimbuero invoices run --month YYYY-MM' yourself), from this hour, local time, the
# previous month is invoiced (clients invoiced already are skipped).
invoice_day = 0
invoice_hour = 6
# timezone = "Europe/Berlin"
# e-mail that month's invoices to the clients' billing addresses right after the run ([mail];
# what fails is tried again every 15 minutes; 'heimbuero invoices send' does it by hand)
send_invoices = false

[messages]
max_bytes = {m.max_bytes}           # largest MESSAGE body (413 beyond)
# seconds online devices get to accept a message before it is stored for later
delivery_timeout = {m.delivery_timeout}
store_expiry = {m.store_expiry}       # seconds a stored message waits for its offline recipient
# days after which an idle conversation is deleted with its files; 0 keeps them
retention_days = {m.retention_days}
rate_per_minute = {m.rate_per_minute}        # messages one user may send per minute
max_stored_per_user = {m.max_stored_per_user}   # messages that may wait for one offline user

[dictation]
lock_minutes = 30       # a job a typist took returns to the queue after this idle time
line_chars = 55         # characters (spaces included) of one Normzeile, 50-60
# A user audio files can be sent to in the messenger: each becomes a dictation job. It also
# sends the authors the news of their jobs and the finished documents. Add the user first.
# address = "diktat"
# Dictation by phone: a client's user dials this code, hears a prompt and a beep, and speaks;
# hanging up (or #) ends it, and the recording becomes a job in the typists' queue. "" = off.
phone_code = "*88"
phone_max_minutes = 30   # longest dictation by phone, 1-120 (held in memory: 1 MB a minute)

[files]
max_size_mb = {f.max_size_mb}          # largest file
quota_mb = {f.quota_mb}            # all files of one user at one time; 0: no quota
link_days = {f.link_days}            # days a download link is valid; the file is deleted after
"""


_WILDCARD_HOSTS = ("0.0.0.0", "::")


def own_sip_address(cfg: Config, host: str, port: int) -> ListenAddress | None:
    """The SIP listening address of this server that HOST:PORT reaches, or None.

    A trunk must not point at the server itself: its calls would loop back in. HOST matches
    a listening address with the same port when it is that address, `localhost` for a
    loopback one, or (for one on all interfaces) any loopback address; the configured
    advertise address and the SIP domain name this server too. Other names are not
    resolved."""

    def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(text.strip("[]"))
        except ValueError:
            return None

    name = host.strip().strip("[]").lower().rstrip(".")
    addr = ip(name)
    ours = {n.lower() for n in (cfg.domain, (cfg.sip.advertise or "").strip("[]")) if n}
    for listen in cfg.sip.listen:
        if listen.port != port:
            continue
        bound = ip(listen.host)
        if name in ours or name == listen.host.lower():
            return listen
        if addr is not None and bound is not None and addr == bound:
            return listen
        if listen.host in _WILDCARD_HOSTS and (
            name == "localhost"
            or (
                addr is not None and addr.is_loopback and (addr.version == 4 or listen.host == "::")
            )
        ):
            return listen
        if name == "localhost" and bound is not None and bound.is_loopback:
            return listen
    return None
