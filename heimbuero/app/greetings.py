"""Voicemail greetings and announcements: uploaded audio the server plays on calls.

A greeting belongs to a mailbox (`voicemail:CLIENT` or `voicemail:USER`) and lives in
DATA/voicemail/greetings/OWNER.wav; an announcement (`announce:NAME`) of a client lives in
DATA/announcements/CLIENT/NAME.wav. An upload (WAV, MP3 or Ogg, at most 10 MB and 5 minutes)
is converted with sox to 8 kHz mono WAV before anything is replaced, so a file sox cannot read
is refused and the old greeting stays; the new one is written to a temporary file, flushed to
disk and renamed over the old (the answer comes after that). Without a greeting the caller
hears the spoken default again.

Rights: a client's greeting and announcements are changed by staff and the client's owner
(like its forwarding); a user's own mailbox greeting by that user and admins. Another
business's mailbox looks like one that does not exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

from heimbuero.app import policy
from heimbuero.app.errors import Forbidden, Invalid, NotFound
from heimbuero.app.policy import Actor
from heimbuero.media import ua
from heimbuero.store import Store

MAX_BYTES = 10 * 1024 * 1024
MAX_SECONDS = 300
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# the first bytes of the formats sox reads here (uploads have no trustworthy name or type)
MAGIC = ((b"RIFF", ".wav"), (b"ID3", ".mp3"), (b"\xff\xfb", ".mp3"), (b"\xff\xf3", ".mp3"),
         (b"\xff\xf2", ".mp3"), (b"OggS", ".ogg"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Audio:
    """A stored greeting or announcement."""

    owner: str
    name: str  # "greeting" or the announcement's name
    seconds: float
    path: Path


class Greetings:
    def __init__(self, store: Store, data_dir: Path) -> None:
        self.store, self.data_dir = store, data_dir

    # -- where, and who may ----------------------------------------------------------------

    def _greeting_path(self, actor: Actor, owner: str) -> Path:
        if not NAME.match(owner):
            raise NotFound("mailbox", owner)
        if self.store.get_client(owner) is not None:
            if not policy.sees_client(actor, owner):
                raise NotFound("mailbox", owner)
            if not policy.may_change_forwarding(actor, owner):
                raise Forbidden("only staff and the client's owner change its greeting")
        elif self.store.get_user(owner) is not None:
            if not actor.admin and actor.name != owner:
                raise NotFound("mailbox", owner)
        else:
            raise NotFound("mailbox", owner)
        return self.data_dir / "voicemail" / "greetings" / f"{owner}.wav"

    def _announcement_path(self, actor: Actor, client: str, name: str) -> Path:
        if not NAME.match(client) or self.store.get_client(client) is None:
            raise NotFound("client", client)
        policy.require_client_visible(actor, client)
        if not policy.may_change_forwarding(actor, client):
            raise Forbidden("only staff and the client's owner change its announcements")
        if not NAME.match(name):
            raise Invalid(
                "name", "an announcement's name has letters, digits, - and _ (at most 64)"
            )
        return self.data_dir / "announcements" / client / f"{name}.wav"

    # -- greetings ---------------------------------------------------------------------------

    def set_greeting(self, actor: Actor, owner: str, data: bytes) -> Audio:
        path = self._greeting_path(actor, owner)
        return Audio(owner, "greeting", _store(data, path), path)

    def greeting(self, actor: Actor, owner: str) -> Audio:
        path = self._greeting_path(actor, owner)
        if not path.is_file():
            raise NotFound("greeting", owner)
        return Audio(owner, "greeting", _seconds(path), path)

    def delete_greeting(self, actor: Actor, owner: str) -> None:
        path = self._greeting_path(actor, owner)
        try:
            path.unlink()
        except FileNotFoundError:
            raise NotFound("greeting", owner) from None

    # -- announcements -----------------------------------------------------------------------

    def set_announcement(self, actor: Actor, client: str, name: str, data: bytes) -> Audio:
        path = self._announcement_path(actor, client, name)
        for other in (path.with_suffix(".mp3"),):  # an older MP3 of the name would be found first
            other.unlink(missing_ok=True)
        return Audio(client, name, _store(data, path), path)

    def announcements(self, actor: Actor, client: str) -> list[Audio]:
        self._announcement_path(actor, client, "x")
        folder = self.data_dir / "announcements" / client
        return [
            Audio(client, p.stem, _seconds(p), p)
            for p in sorted(folder.glob("*.wav"))
            if NAME.match(p.stem)
        ]

    def delete_announcement(self, actor: Actor, client: str, name: str) -> None:
        path = self._announcement_path(actor, client, name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise NotFound("announcement", name) from None


def _store(data: bytes, path: Path) -> float:
    """Convert `data` to 8 kHz mono WAV at `path` (atomically); its length in seconds."""
    if not data:
        raise Invalid("file", "the audio file is empty")
    if len(data) > MAX_BYTES:
        raise Invalid("file", f"the audio file is larger than {MAX_BYTES // (1024 * 1024)} MB")
    suffix = next((ext for magic, ext in MAGIC if data.startswith(magic)), None)
    if suffix is None:
        raise Invalid("file", "not an audio file the server reads (WAV, MP3 or Ogg)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".upload-") as tmp:
        source = Path(tmp) / f"upload{suffix}"
        source.write_bytes(data)
        try:
            converted = ua.convert(source, Path(tmp))
            seconds = _seconds(converted)
        except (ua.MediaError, subprocess.SubprocessError, wave.Error, EOFError) as exc:
            raise Invalid("file", f"the audio file could not be read: {_short(exc)}") from None
        if seconds > MAX_SECONDS:
            raise Invalid("file", f"the audio is longer than {MAX_SECONDS // 60} minutes")
        with converted.open("rb") as f:
            os.fsync(f.fileno())
        converted.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself is durable before the answer
    finally:
        os.close(fd)
    return seconds


def _seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / float(w.getframerate() or 1)


def _short(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        text = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        return text[-1][:200] if text else "sox failed"
    return str(exc)[:200]
