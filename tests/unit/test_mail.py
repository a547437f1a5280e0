"""heimbuero.net.mail against a real local SMTP server, and the [mail] settings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from heimbuero.config import ConfigError, load
from heimbuero.net.mail import Attachment, Mailer, MailError, MailSettings
from tests.smtpd import MailSink


def test_message_with_attachment_reaches_the_server() -> None:
    with MailSink() as sink:
        mailer = Mailer(MailSettings(host="127.0.0.1", port=sink.port, sender="b@x.test"))
        audio = b"RIFF" + bytes(100)
        asyncio.run(
            mailer.send(
                "kunde@example.test", "Telefonnotiz: Herr Meier", "Bitte zurückrufen.",
                (Attachment("nachricht.wav", audio, "audio/wav"),),
            )
        )  # fmt: skip
        got = sink.wait_for(lambda m: "Meier" in str(m["Subject"]))
    assert got["To"] == "kunde@example.test"
    assert got["From"] == "b@x.test"
    body = got.get_body(("plain",))
    assert body is not None and "zurückrufen" in body.get_content()
    parts = list(got.iter_attachments())
    assert [p.get_filename() for p in parts] == ["nachricht.wav"]
    assert parts[0].get_content() == audio


def test_deliver_blocks_until_the_server_took_it_with_a_reply_to() -> None:
    """`deliver` (no event loop: the command line, a worker thread) and Reply-To."""
    with MailSink() as sink:
        mailer = Mailer(MailSettings(host="127.0.0.1", port=sink.port, sender="b@x.test"))
        pdf = b"%PDF-1.7" + bytes(range(256))
        mailer.deliver("kunde@example.test", "Rechnung RE-1", "Guten Tag",
                       (Attachment("RE-1.pdf", pdf, "application/pdf"),),
                       "rechnung@x.test")  # fmt: skip
        (got,) = sink.messages  # there when deliver returned: no waiting
    assert (got["To"], got["Reply-To"]) == ("kunde@example.test", "rechnung@x.test")
    (part,) = got.iter_attachments()
    assert part.get_content_type() == "application/pdf" and part.get_content() == pdf
    with pytest.raises(MailError, match="not configured"):
        Mailer(MailSettings()).deliver("a@b.test", "x", "y")


def test_unreachable_server_is_a_mail_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        mailer = Mailer(MailSettings(host="127.0.0.1", port=port, timeout=2))
        with pytest.raises(MailError):
            asyncio.run(mailer.send("a@b.test", "x", "y"))
        with pytest.raises(MailError, match="not sent"):
            mailer.deliver("a@b.test", "x", "y")


def test_without_host_mail_is_off() -> None:
    mailer = Mailer(MailSettings())
    assert not mailer.enabled
    with pytest.raises(MailError):
        asyncio.run(mailer.send("a@b.test", "x", "y"))


def _config(tmp_path: Path, mail: str) -> Path:
    (tmp_path / "config.toml").write_text(f'[server]\ndomain = "x.test"\n\n[mail]\n{mail}\n')
    return tmp_path


def test_mail_settings_are_read_and_checked(tmp_path: Path) -> None:
    cfg = load(_config(tmp_path, 'host = "smtp.x.test"\nport = 587\nsecurity = "starttls"'
                              '\nsender = "buero@x.test"'))  # fmt: skip
    assert cfg.mail == MailSettings(
        host="smtp.x.test", port=587, security="starttls", sender="buero@x.test"
    )
    for bad, words in [
        ('security = "ssl"', "security must be one of"),
        ("port = 0", "port must be a positive integer"),
        ('sender = "nobody"', "sender must be an e-mail address"),
        ("colour = 1", "unknown setting [mail] colour"),
    ]:
        with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
            load(_config(tmp_path, bad))
