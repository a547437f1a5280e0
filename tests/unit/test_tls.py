"""SIP over TLS settings and the self-signed certificate `init` makes."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from heimbuero import config
from heimbuero.config import ConfigError, ListenAddress, parse_listen
from heimbuero.net.tls import SipTls, file_fingerprint, generate_self_signed, normalise_fingerprint


def test_parse_listen_accepts_tls() -> None:
    assert parse_listen("udp:127.0.0.1:5060,tls:[::1]:5061") == (
        ListenAddress("udp", "127.0.0.1", 5060),
        ListenAddress("tls", "::1", 5061),
    )
    with pytest.raises(ConfigError, match="tls:HOST:PORT"):
        parse_listen("dtls:127.0.0.1:5061")


def _data_dir(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "config.toml").write_text(
        config.default_config_text("office.test") + extra, encoding="utf-8"
    )
    return tmp_path


def test_config_tls_settings_and_trunk_pins(tmp_path: Path) -> None:
    fp = "ab" * 32
    cfg = config.load(
        _data_dir(
            tmp_path,
            f'\n[sip.trunk_tls]\n"carrier.example" = "sha256:{fp}"\n"192.0.2.1:5061" = "ca.pem"\n',
        )
    )
    assert cfg.tls_cert_path == tmp_path / "tls" / "sip.crt"
    assert cfg.tls_key_path == tmp_path / "tls" / "sip.key"
    assert cfg.sip.tls_handshake_timeout == 10
    assert not cfg.uses_tls
    pins = dict(cfg.sip.trunk_tls)
    assert pins["carrier.example"] == f"sha256:{fp}"
    assert pins["192.0.2.1:5061"] == str(tmp_path / "ca.pem")
    tls = SipTls(None, None, pins)
    assert tls.pin("carrier.example", 5061) == normalise_fingerprint(fp)
    assert tls.pin("192.0.2.1", 5061) is None
    ctx = tls.client_context("carrier.example", 5061)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_config_refuses_a_bad_pin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trunk_tls"):
        config.load(_data_dir(tmp_path, '\n[sip.trunk_tls]\n"x" = "sha256:1234"\n'))


def test_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls" / "sip.crt", tmp_path / "tls" / "sip.key"
    fp = generate_self_signed(cert, key, ["office.test", "192.0.2.10", "office.test"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert fp == file_fingerprint(cert) and len(fp) == 95
    c = x509.load_pem_x509_certificate(cert.read_bytes())
    cn = c.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    assert cn == "office.test"
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["office.test"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.10"]
    # it loads as a server certificate, TLS 1.2 at least
    ctx = SipTls(cert, key).server_context()
    assert ctx is not None and ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_trunk_over_tls_defaults_to_port_5061(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from heimbuero.cli import main

    data = str(tmp_path / "data")
    assert main(["init", "--data", data, "--domain", "office.test"]) == 0
    assert main(["trunk", "add", "a", "--address", "192.0.2.1", "--transport", "tls",
                 "--data", data]) == 0  # fmt: skip
    assert main(["trunk", "add", "b", "--address", "192.0.2.1:7000", "--transport", "TLS",
                 "--data", data]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "tls:192.0.2.1:5061" in out and "tls:192.0.2.1:7000" in out
