"""Retention and expiry as the running server applies them: a conversation idle longer than
`retention_days` goes with the files its messages shared; stored messages and file links
expire. Real store, real file folder, the server's own sweep (time passed in)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from test_files import CTYPE, form

from heimbuero import config as hconfig
from heimbuero.cli import main as cli
from heimbuero.office.messaging import FILE_TRANSFER
from heimbuero.server import Server


def make_server(tmp_path: Path, retention_days: int) -> Server:
    data = tmp_path / "data"
    assert cli(["init", "--data", str(data), "--domain", "office.example"]) == 0
    for name, role in (("anna", "agent"), ("mia", "client"), ("kai", "agent")):
        assert cli(["user", "add", name, "--password", "Lavendel-Feld-71", "--role", role,
                    "--data", str(data)]) == 0  # fmt: skip
    cfg_path = data / "config.toml"
    text = cfg_path.read_text().replace("retention_days = 0", f"retention_days = {retention_days}")
    # links outlive the retention here: what deletes the files below is the retention
    assert "link_days = 30 " in text
    cfg_path.write_text(text.replace("link_days = 30 ", "link_days = 365 "))
    return Server(hconfig.load(data))


def upload(server: Server, owner: str, content: bytes, now: datetime) -> str:
    up = server.files.start_upload(owner, CTYPE, None, now, "file")
    try:
        up.feed(form(content, name="diktat.txt", ctype="text/plain"))
        up.finish()
        return server.files.complete_upload(up, owner, [], now).id
    finally:
        up.abort()


def send(server: Server, sender: str, to: str, ctype: str, body: bytes, now: float) -> None:
    """What the HTTP API does to send a message (without the loop)."""
    message, shared = server.messages.prepare(sender, to, ctype, body, now)
    assert server.messages.grant(message, shared)
    server.messages.submit(message, now)


def flush(server: Server) -> None:
    ops, server.message_ops = server.message_ops, []
    server.store.apply_message_log(ops)


def test_retention_deletes_idle_conversations_with_their_files(tmp_path: Path) -> None:
    server = make_server(tmp_path, retention_days=30)
    try:
        now = datetime.now(UTC)
        old = upload(server, "mia", b"Sehr geehrte Damen und Herren", now)
        info = server.files.file_info_xml(old)
        assert info is not None
        send(server, "mia", "anna", FILE_TRANSFER, info, time.time())
        send(server, "kai", "anna", "text/plain", b"Kaffee?", time.time())
        flush(server)
        assert (server.files.files_dir / old).is_file()
        assert server.files.get(old) is not None

        # 31 days on, kai writes again: only the conversation with mia is idle
        later = now + timedelta(days=31)
        send(server, "kai", "anna", "text/plain", b"Noch da?", later.timestamp())
        flush(server)
        server.sweep(later)
        assert server.store.conversation_messages("anna", "mia") is None
        assert server.files.get(old) is None
        assert not (server.files.files_dir / old).exists()
        kept = server.store.conversation_messages("anna", "kai")
        assert kept is not None and [m.body for m in kept] == [b"Kaffee?", b"Noch da?"]
    finally:
        server.writer.stop()
        server.store.close()


def test_zero_retention_keeps_everything(tmp_path: Path) -> None:
    server = make_server(tmp_path, retention_days=0)
    try:
        send(server, "mia", "anna", "text/plain", b"Hallo", time.time())
        flush(server)
        server.sweep(datetime.now(UTC) + timedelta(days=3650))
        assert server.store.conversation_messages("anna", "mia") is not None
    finally:
        server.writer.stop()
        server.store.close()
