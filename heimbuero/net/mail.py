"""Outgoing e-mail over SMTP: call notes, voicemail, documents and invoices reach a client's
address. The standard library's smtplib does the protocol; it runs in a worker thread so a
slow mail server never blocks the event loop. What is sent, and to whom, is the caller's
business; this module only delivers one message and says whether the server took it."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid


@dataclass(frozen=True)
class MailSettings:
    """[mail] in config.toml. No host: e-mail is off and `Mailer.enabled` is False."""

    host: str | None = None
    port: int = 25
    security: str = "none"  # "none", "starttls" or "tls" (SMTPS)
    username: str | None = None
    password: str | None = None
    sender: str = "heimbuero@localhost"  # From: address
    timeout: int = 20  # seconds for the whole exchange with the mail server


SECURITY_MODES = ("none", "starttls", "tls")


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mime_type: str = "application/octet-stream"


class MailError(Exception):
    """The mail server could not be reached or refused the message."""


def build_message(
    sender: str,
    to: str,
    subject: str,
    text: str,
    attachments: tuple[Attachment, ...] = (),
    reply_to: str | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    msg.set_content(text)
    for a in attachments:
        main, _, sub = a.mime_type.partition("/")
        msg.add_attachment(
            a.content, maintype=main or "application", subtype=sub or "octet-stream",
            filename=a.filename,
        )  # fmt: skip
    return msg


class Mailer:
    """Sends one message at a time per call; at most `parallel` exchanges run at once."""

    def __init__(self, settings: MailSettings, parallel: int = 4) -> None:
        self.settings = settings
        self._slots = asyncio.Semaphore(parallel)

    @property
    def enabled(self) -> bool:
        return bool(self.settings.host)

    async def send(
        self, to: str, subject: str, text: str, attachments: tuple[Attachment, ...] = ()
    ) -> None:
        """Hand the message to the mail server; MailError when it did not take it."""
        if not self.enabled:
            raise MailError("e-mail is not configured ([mail] host)")
        msg = build_message(self.settings.sender, to, subject, text, attachments)
        async with self._slots:
            await asyncio.to_thread(self._deliver, msg)

    def deliver(
        self,
        to: str,
        subject: str,
        text: str,
        attachments: tuple[Attachment, ...] = (),
        reply_to: str | None = None,
    ) -> None:
        """`send` for callers outside the event loop (a worker thread, the command line): it
        blocks until the mail server took the message; MailError when it did not."""
        if not self.enabled:
            raise MailError("e-mail is not configured ([mail] host in config.toml)")
        self._deliver(build_message(self.settings.sender, to, subject, text, attachments, reply_to))

    def _deliver(self, msg: EmailMessage) -> None:
        s = self.settings
        assert s.host is not None
        try:
            smtp: smtplib.SMTP
            if s.security == "tls":
                smtp = smtplib.SMTP_SSL(
                    s.host, s.port, timeout=s.timeout, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            with smtp:
                if s.security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                if s.username:
                    smtp.login(s.username, s.password or "")
                smtp.send_message(msg)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(f"mail to {msg['To']} not sent: {exc}") from exc
