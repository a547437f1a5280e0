"""The relay's settings: the relay keys of ``[media]`` in config.toml, checked once at load."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from heimbuero.media.ng import parse_ng_address

RELAY_MODES = ("always", "when_needed", "never")
BACKENDS = ("builtin", "rtpengine")
RELAY_KEYS = (
    "relay", "backend", "port_min", "port_max", "advertise", "advertise6", "silence_timeout",
    "rtpengine", "realtime_priority",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RelaySettings:
    relay: str = "when_needed"  # always / when_needed (a NATed device on either side) / never
    backend: str = "builtin"
    # below the ephemeral ports (Linux: 32768-60999), which other sockets take at random,
    # and below the media applications' 30000-30999
    port_min: int = 20000
    port_max: int = 29999
    # the addresses phones send media to, per family (default: SIP's advertised address of
    # that family); IPv6 media is relayed when the server listens on IPv6 or advertise6 is set
    advertise: str | None = None  # IPv4
    advertise6: str | None = None  # IPv6
    silence_timeout: float = 60.0  # seconds without RTP in both directions: the call is ended
    # backend "rtpengine": where its ng control protocol listens (its --listen-ng)
    rtpengine: str = "udp:127.0.0.1:2223"
    # backend "builtin": 1-99 runs the relay process with real-time scheduling (SCHED_FIFO at
    # this priority), so that other processes never make audio wait; 0: normal scheduling
    realtime_priority: int = 0


def parse_relay_settings(table: dict[str, object]) -> RelaySettings:
    """The relay keys of a ``[media]`` table (other keys are left to their owners).

    Raises ValueError with a message naming the key.
    """
    out: dict[str, object] = {}
    for key in RELAY_KEYS:
        if key not in table:
            continue
        value = table[key]
        if key == "relay" and value not in RELAY_MODES:
            raise ValueError(f"[media] relay must be one of {', '.join(RELAY_MODES)}")
        if key == "backend" and value not in BACKENDS:
            raise ValueError(f"[media] backend must be one of {', '.join(BACKENDS)}")
        if key in ("port_min", "port_max") and (
            not isinstance(value, int) or isinstance(value, bool) or not 1024 <= value <= 65535
        ):
            raise ValueError(f"[media] {key} must be a port number from 1024 to 65535")
        if key == "silence_timeout" and (
            not isinstance(value, int | float) or isinstance(value, bool) or value <= 0
        ):
            raise ValueError("[media] silence_timeout must be a positive number of seconds")
        if key in ("advertise", "advertise6"):
            version = 4 if key == "advertise" else 6
            try:
                ip = ipaddress.ip_address(str(value))
            except ValueError:
                raise ValueError(f"[media] {key} must be an IPv{version} address") from None
            if ip.version != version:
                hint = " (an IPv6 address goes in advertise6)" if version == 4 else ""
                raise ValueError(f"[media] {key} must be an IPv{version} address{hint}")
            value = str(ip)
        if key == "realtime_priority" and (
            not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 99
        ):
            raise ValueError("[media] realtime_priority must be 0 (off) or a priority from 1 to 99")
        if key == "rtpengine":
            try:
                parse_ng_address(value)
            except ValueError as exc:
                raise ValueError(f"[media] rtpengine: {exc}") from None
        out[key] = float(value) if key == "silence_timeout" else value  # type: ignore[arg-type]
    settings = RelaySettings(**out)  # type: ignore[arg-type]
    if settings.port_max - settings.port_min < 3:
        raise ValueError("[media] port_max must be at least port_min + 3 (one call's four ports)")
    return settings
