"""The data directory and its config.toml: every setting, its default, and its validation."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.toml"
DB_FILE = "heimbuero.db"
SECRET_FILE = "secret"
FILES_DIR = "files"
DATA_ENV = "HEIMBUERO_DATA"

DIGEST_ALGORITHMS = ("MD5", "SHA-256")


class ConfigError(Exception):
    """A setting, address or data directory is unusable; the message says which and why."""


@dataclass(frozen=True)
class ListenAddress:
    """One SIP listening socket: transport, host and port."""

    transport: str  # "udp" or "tcp"
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"


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
    max_message_size: int = 65535
    tcp_idle_timeout: int = 600
    max_tcp_connections_per_ip: int = 100
    invite_timeout: int = 180
    trusted_peers: tuple[str, ...] = ()  # "HOST" or "HOST:PORT" of carrier trunks: no digest auth
    advertise: str | None = None  # address for Via/Record-Route when listening on 0.0.0.0
    md5_only_user_agents: tuple[str, ...] = ("baresip v0.", "baresip v1.")
    subscribe_max_expires: int = 3600  # presence/dialog subscriptions (RFC 6665)
    max_subscriptions_per_user: int = 100
    max_watchers_per_presentity: int = 2000
    presence_min_interval: int = 5  # seconds between NOTIFYs of published changes per watcher


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
class Config:
    data_dir: Path
    domain: str
    sip: SipSettings = field(default_factory=SipSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    messages: MessageSettings = field(default_factory=MessageSettings)
    files: FileSettings = field(default_factory=FileSettings)

    @property
    def files_dir(self) -> Path:
        return self.data_dir / FILES_DIR

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_FILE

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.db_path}"

    @property
    def secret_path(self) -> Path:
        return self.data_dir / SECRET_FILE


def resolve_data_dir(arg: str | None) -> Path:
    """The data directory from --data or HEIMBUERO_DATA."""
    value = arg or os.environ.get(DATA_ENV)
    if not value:
        raise ConfigError(f"no data directory: pass --data DIR or set {DATA_ENV}")
    return Path(value).expanduser().resolve()


def parse_listen(spec: str) -> tuple[ListenAddress, ...]:
    """Parse `udp:HOST:PORT,tcp:HOST:PORT` (IPv6 hosts in brackets)."""
    out: list[ListenAddress] = []
    for part in spec.split(","):
        part = part.strip()
        transport, sep, rest = part.partition(":")
        transport = transport.lower()
        if not sep or transport not in ("udp", "tcp"):
            raise ConfigError(
                f"malformed SIP listen address {part!r}: expected udp:HOST:PORT or tcp:HOST:PORT"
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
        elif key in ("trusted_peers", "md5_only_user_agents"):
            value = tuple(str(v) for v in value)
        elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{path}: [sip] {key} must be a non-negative integer")
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
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: [http] trusted_proxies must be a list of addresses")
            for v in value:
                try:
                    ipaddress.ip_network(v, strict=False)
                except ValueError:
                    raise ConfigError(
                        f"{path}: [http] trusted_proxies: not an address or network: {v!r}"
                    ) from None
            http_kwargs[key] = tuple(value)
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
    return Config(
        data_dir=data_dir, domain=domain.lower(), sip=sip, http=http, messages=messages,
        files=files,
    )  # fmt: skip


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


def default_config_text(domain: str) -> str:
    """The config.toml that `heimbuero init` writes: every setting with its default, commented."""
    d = SipSettings()
    m = MessageSettings()
    f = FileSettings()
    h = HttpSettings()
    listen = ", ".join(f'"{a}"' for a in d.listen)
    algs = ", ".join(f'"{a}"' for a in d.digest_algorithms)
    return f"""# heimbuero configuration. Changes take effect at the next 'heimbuero serve'.

[server]
# SIP domain: the host part of every user's address (sip:NAME@DOMAIN) and the digest realm.
# Changing it later invalidates stored SIP password hashes (set them again with 'user passwd').
domain = "{domain}"

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
max_message_size = {d.max_message_size}     # bytes; larger messages are refused (513) or dropped
tcp_idle_timeout = {d.tcp_idle_timeout}       # idle seconds before a TCP connection is closed
max_tcp_connections_per_ip = {d.max_tcp_connections_per_ip}
invite_timeout = {d.invite_timeout}         # seconds a forked INVITE may ring before 408
# Carrier trunks whose requests are not challenged: "HOST" or "HOST:PORT"
trusted_peers = []
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

[messages]
max_bytes = {m.max_bytes}           # largest MESSAGE body (413 beyond)
# seconds online devices get to accept a message before it is stored for later
delivery_timeout = {m.delivery_timeout}
store_expiry = {m.store_expiry}       # seconds a stored message waits for its offline recipient
# days after which an idle conversation is deleted with its files; 0 keeps them
retention_days = {m.retention_days}
rate_per_minute = {m.rate_per_minute}        # messages one user may send per minute
max_stored_per_user = {m.max_stored_per_user}   # messages that may wait for one offline user

[files]
max_size_mb = {f.max_size_mb}          # largest file
quota_mb = {f.quota_mb}            # all files of one user at one time; 0: no quota
link_days = {f.link_days}            # days a download link is valid; the file is deleted after
"""
