"""The relay keys of [media]: defaults, and a clear message for each bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from heimbuero.config import Config, ConfigError, load
from heimbuero.media.relay_config import RelaySettings, parse_relay_settings


def test_defaults_and_values() -> None:
    assert parse_relay_settings({}) == RelaySettings()
    s = parse_relay_settings(
        {"relay": "always", "port_min": 40000, "port_max": 40100, "advertise": "192.0.2.1",
         "silence_timeout": 30, "greeting": "left to the media applications"}
    )  # fmt: skip
    assert (s.relay, s.port_min, s.port_max, s.advertise, s.silence_timeout) == (
        "always", 40000, 40100, "192.0.2.1", 30.0
    )  # fmt: skip


def test_the_ipv6_relay_address_is_kept_in_canonical_form() -> None:
    s = parse_relay_settings({"advertise": "192.0.2.1", "advertise6": "2001:DB8:0::10"})
    assert (s.advertise, s.advertise6) == ("192.0.2.1", "2001:db8::10")
    assert RelaySettings().advertise6 is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"relay": "sometimes"}, "relay must be one of always, when_needed, never"),
        ({"backend": "asterisk"}, "backend must be one of builtin, rtpengine"),
        ({"port_min": 80}, "port_min must be a port number"),
        ({"port_max": True}, "port_max must be a port number"),
        ({"port_min": 40000, "port_max": 40001}, r"at least port_min \+ 3"),
        ({"silence_timeout": 0}, "silence_timeout must be a positive number"),
        ({"advertise": "relay.example"}, "advertise must be an IPv4 address"),
        ({"advertise": "2001:db8::1"}, r"IPv4 address \(an IPv6 address goes in advertise6\)"),
        ({"advertise6": "192.0.2.1"}, "advertise6 must be an IPv6 address"),
        ({"advertise6": "[2001:db8::1]"}, "advertise6 must be an IPv6 address"),
        ({"realtime_priority": 100}, "realtime_priority must be 0 .off. or a priority from 1"),
        ({"realtime_priority": -1}, "realtime_priority must be 0"),
        ({"realtime_priority": "high"}, "realtime_priority must be 0"),
        ({"realtime_priority": True}, "realtime_priority must be 0"),
    ],
)
def test_bad_values_are_named(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_relay_settings(table)


def _load(tmp_path: Path, media: str) -> Config:
    (tmp_path / "config.toml").write_text(
        f'[server]\ndomain = "x.test"\n\n[media]\n{media}\n', encoding="utf-8"
    )
    return load(tmp_path)


def test_config_toml_media_table(tmp_path: Path) -> None:
    cfg = _load(tmp_path, 'relay = "always"\nport_min = 50000\nport_max = 50099')
    assert (cfg.media.relay, cfg.media.port_min, cfg.media.port_max) == ("always", 50000, 50099)
    assert _load(tmp_path, "").media.relay == "when_needed"  # the default: NATed calls only
    assert _load(tmp_path, "").media.realtime_priority == 0  # normal scheduling
    assert _load(tmp_path, "realtime_priority = 10").media.realtime_priority == 10
    with pytest.raises(ConfigError, match=r"unknown setting \[media\] relais"):
        _load(tmp_path, 'relais = "always"')
    with pytest.raises(ConfigError, match="overlap"):  # [mediaapp] has 30000-30999
        _load(tmp_path, "port_min = 30500\nport_max = 31500")
    with pytest.raises(ConfigError, match=r"\[media\] relay must be one of"):
        _load(tmp_path, 'relay = "sometimes"')


def test_the_rtpengine_backend_and_its_ng_address(tmp_path: Path) -> None:
    cfg = _load(tmp_path, 'backend = "rtpengine"')
    assert (cfg.media.backend, cfg.media.rtpengine) == ("rtpengine", "udp:127.0.0.1:2223")
    cfg = _load(tmp_path, 'backend = "rtpengine"\nrtpengine = "udp:[::1]:9900"')
    assert cfg.media.rtpengine == "udp:[::1]:9900"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tcp:127.0.0.1:2223", "only UDP"),
        ("udp:127.0.0.1", "udp:HOST:PORT"),
        ("udp:127.0.0.1:0", "port from 1 to 65535"),
        ("udp:127.0.0.1:99999", "port from 1 to 65535"),
        ("udp:rtpengine.example:2223", "must name an IP address"),
        ("", "udp:HOST:PORT"),
    ],
)
def test_a_bad_ng_address_is_named(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"\[media\] rtpengine: .*{message}"):
        _load(tmp_path, f'backend = "rtpengine"\nrtpengine = "{value}"')
