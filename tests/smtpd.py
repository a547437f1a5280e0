"""A real SMTP server on loopback for the tests: it keeps every message it receives, so a
test can check what heimbuero e-mailed (subject, recipient, text, attachments)."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Keeper:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.cond = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()
        return "250 OK"


class MailSink:
    """`with MailSink() as sink:` … `sink.port`, `sink.wait_for(lambda m: …)`."""

    def __init__(self) -> None:
        self.port = _free_port()
        self._keeper = _Keeper()
        self._controller = Controller(self._keeper, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> MailSink:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    @property
    def messages(self) -> list[EmailMessage]:
        with self._keeper.cond:
            return list(self._keeper.messages)

    def wait_for(
        self, match: Callable[[EmailMessage], bool], timeout: float = 10.0
    ) -> EmailMessage:
        deadline = time.monotonic() + timeout
        with self._keeper.cond:
            while True:
                for m in self._keeper.messages:
                    if match(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [str(m["Subject"]) for m in self._keeper.messages]
                    raise AssertionError(f"no matching e-mail within {timeout} s; got {got}")
                self._keeper.cond.wait(left)

    def config_toml(self, sender: str = "buero@heimbuero.test") -> str:
        """The [mail] section that points heimbuero at this server."""
        return f'[mail]\nhost = "127.0.0.1"\nport = {self.port}\nsender = "{sender}"\n'
