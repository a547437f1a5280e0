"""Media applications: the server answers calls itself (voicemail, announcements).

A small SIP user agent server on its own UDP socket (on the server's event loop, next to
the proxy): the proxy forwards a plan's `voicemail:` step to it like to any device
(`sip:voicemail.OWNER@HOST:PORT`), so the call keeps the proxy's Record-Route, the call
record and CANCEL handling. Here each INVITE becomes a UAS dialog (sip/dialog.py: To tag,
Contact, route set from Record-Route); the 200 with the SDP answer is retransmitted until
the ACK (RFC 3261 §13.3.1.4); the application starts on the ACK and ends the call with BYE,
or stops on the caller's BYE. DTMF arrives as RFC 4733 packets or SIP INFO dtmf-relay."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import secrets
import subprocess
import time
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from heimbuero.config import MediaAppSettings
from heimbuero.media import ua
from heimbuero.media.dictaphone import KEYS, Action, Dictaphone
from heimbuero.media.ua_codec import parse_dtmf_relay
from heimbuero.office.voicemail import (
    DELETED_TEXT,
    END_TEXT,
    LISTEN_KEYS,
    MENU_TEXT,
    NO_MAILBOX,
    NOT_DELETED_TEXT,
    Listening,
    Next,
    decide,
    intro_text,
)
from heimbuero.services.presence import MESSAGE_SUMMARY, message_summary
from heimbuero.sip.dialog import Dialog
from heimbuero.sip.message import ParseError, Request, Response, parse
from heimbuero.store.models import as_utc
from heimbuero.store.voicemail import Voicemail

if TYPE_CHECKING:
    from heimbuero.services.core import SipCore

log = logging.getLogger("heimbuero.calls")

ANNOUNCE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

T1 = 0.5
MIN_RECORDING = 8000  # bytes of 8 kHz 16-bit audio (0.5 s): less is no message
GREETING = (
    "Sie sind verbunden mit {name}. Leider ist gerade niemand erreichbar. "
    "Bitte hinterlassen Sie eine Nachricht nach dem Signalton. Beenden Sie mit der Raute-Taste."
)


DICTATION_PROMPT = (
    "Bitte sprechen Sie Ihr Diktat nach dem Signalton. Stern unterbricht, "
    "Eins spielt die letzten Sekunden vor, Null beginnt neu. "
    "Legen Sie auf oder drücken Sie die Raute-Taste, wenn Sie fertig sind."
)
DICTATION_DISCARDED = "Das Diktat wurde gelöscht. Bitte sprechen Sie neu nach dem Signalton."
MIN_DICTATION = 16000  # bytes of 8 kHz 16-bit audio (1 s): less is no dictation
DICTATION_REVIEW = 10.0  # seconds `1` plays back
DICTATION_PAUSE = 300.0  # the longest pause; then the dictation is finished


def dictation_user(key: bytes, call_id: str, client: str, user: str) -> str:
    """The media applications' user part for a dictation by phone of `user` for `client`.
    Signed for the call: only the proxy, which authenticated `user`, can open one (a request
    sent to the media applications' port directly cannot name somebody else)."""
    mac = hmac.new(key, f"{call_id}\n{client}\n{user}".encode(), "sha256").hexdigest()[:24]
    return f"dictation.{client}.{user}.{mac}"


def listen_user(key: bytes, call_id: str, user: str) -> str:
    """The media applications' user part for `user` listening to his mailbox by phone,
    signed for the call like `dictation_user` (its signed text has one line more, so that
    neither signature stands for the other). The box is worked out from `user` again when
    the call arrives, never taken from the request."""
    text = f"{call_id}\n{user}\nlisten\n"
    mac = hmac.new(key, text.encode(), "sha256").hexdigest()[:24]
    return f"listen.{mac}.{user}"


class Mailbox(Protocol):
    """The store side of listening by phone (the server's, through the application layer):
    each write is committed when its call returns. `user` is the authenticated listener; the
    box is his (a client's owner: the client's)."""

    async def messages(self, user: str) -> list[Voicemail] | None: ...  # None: no box
    async def heard(self, user: str, voicemail_id: int) -> bool: ...
    async def delete(self, user: str, voicemail_id: int) -> bool: ...
    async def zone(self, user: str) -> tzinfo: ...  # the box's timezone (its client's)


INTRO_CACHE = "intros"  # media-cache/intros: a prompt per message and day, swept (sweep_intros)
INTRO_DAYS = 2  # (the day in them, "heute" or "gestern", changes anyway)


def sweep_intros(data_dir: Path, now: float) -> int:
    """Remove the spoken intros of messages (media-cache/intros) made more than INTRO_DAYS
    days ago; how many (a worker thread: the server's housekeeping)."""
    gone = 0
    for path in (data_dir / "media-cache" / INTRO_CACHE).glob("tts-*.wav"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < now - INTRO_DAYS * 86400:
                path.unlink()
                gone += 1
    return gone


@dataclass
class Dictated:
    """A dictation spoken by phone: whose, for which client, where the WAV lies."""

    client: str
    author: str
    call_id: str
    path: Path
    seconds: float


@dataclass
class Recording:
    """A voicemail left: for whom, from whom, where the WAV lies and how long it is."""

    owner: str
    caller: str
    call_id: str
    path: Path
    seconds: float


@dataclass
class Call:
    invite: Request
    source: tuple[str, int]
    dialog: Dialog
    session: ua.MediaSession
    response: bytes
    app: str
    owner: str
    greeting: bytes
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    ack_at: float | None = None
    listening: Listening[Voicemail] | None = None  # listening to voicemail by phone


class MediaApps(asyncio.DatagramProtocol):
    """The user agent server for the media applications."""

    def __init__(
        self,
        settings: MediaAppSettings,
        data_dir: Path,
        client_name: Callable[[str], str],
        on_recording: Callable[[Recording], Awaitable[None] | None] | None = None,
    ) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.client_name = client_name
        self.on_recording = on_recording
        self.ports = ua.PortRange(settings.port_min, settings.port_max, settings.max_sessions)
        self.calls: dict[str, Call] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.latencies: list[float] = []  # ACK → first RTP packet, seconds
        # dictation by phone (set by the server): the key its URIs are signed with, where a
        # recording goes, and its longest length
        self.dictation_key = b""
        self.on_dictation: Callable[[Dictated], Awaitable[None] | None] | None = None
        self.dictation_max_seconds = 1800.0
        # listening to voicemail by phone (set by the server; signed with dictation_key)
        self.mailbox: Mailbox | None = None
        self.listen_max_seconds = 900.0

    async def start(self, port: int = 0) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.settings.address, port)
        )
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self.settings.address, self.port

    def close(self) -> None:
        for call in list(self.calls.values()):
            self._end(call, send_bye=True)
        if self.transport is not None:
            self.transport.close()

    # -- signalling -----------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = parse(data)
        except ParseError:
            return
        if isinstance(msg, Response):
            return  # answers to our BYEs
        try:
            self._request(msg, addr)
        except (ParseError, ValueError) as exc:
            log.info("media apps: bad %s from %s: %s", msg.method, addr, exc)
            with contextlib.suppress(Exception):
                self._reply(msg, addr, 400, "Bad Request")

    def _reply(
        self,
        req: Request,
        addr: tuple[str, int],
        status: int,
        reason: str,
        to_tag: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
    ) -> bytes:
        resp = Response(status, reason)
        for v in req.get_all("via"):
            resp.add("Via", v)
        resp.add("From", req.get("from") or "")
        to = req.get("to") or ""
        if to_tag and ";tag=" not in to:
            to = f"{to};tag={to_tag}"
        resp.add("To", to)
        resp.add("Call-ID", req.call_id)
        resp.add("CSeq", req.get("cseq") or "")
        for name, value in headers:
            resp.add(name, value)
        if body:
            resp.add("Content-Type", "application/sdp")
        resp.body = body
        data = resp.serialize()
        if self.transport is not None:
            self.transport.sendto(data, addr)
        return data

    def _contact(self) -> str:
        return f"<sip:mediaapp@{self.settings.address}:{self.port}>"

    def _request(self, req: Request, addr: tuple[str, int]) -> None:
        call = self.calls.get(req.call_id)
        method = req.method
        if method == "INVITE":
            if call is not None:  # a retransmission: the same answer again
                if self.transport is not None:
                    self.transport.sendto(call.response, addr)
                return
            asyncio.ensure_future(self._invite(req, addr))
        elif method == "ACK":
            if call is not None and not call.acked.is_set():
                call.ack_at = time.monotonic()
                call.acked.set()
        elif method == "BYE":
            if call is None:
                self._reply(req, addr, 481, "Call/Transaction Does Not Exist")
                return
            self._reply(req, addr, 200, "OK")
            # The caller hung up: what was recorded until now is kept (the task ends its
            # recording and stores it; playing and recording stop as the session closes).
            self._end(call, send_bye=False, stop=False)
        elif method == "INFO":
            if call is None:
                self._reply(req, addr, 481, "Call/Transaction Does Not Exist")
                return
            digit = parse_dtmf_relay(req.body)
            if digit is not None:
                call.session.dtmf(digit)
            self._reply(req, addr, 200, "OK")
        elif method == "CANCEL":
            self._reply(req, addr, 200 if call is not None else 481, "OK")
            if call is not None and not call.dialog.confirmed:
                del self.calls[req.call_id]
                call.session.close()
                if call.task is not None:
                    call.task.cancel()
                self._reply(
                    call.invite, call.source, 487, "Request Terminated", call.dialog.local_tag
                )
        elif method == "OPTIONS":
            self._reply(req, addr, 200, "OK", headers=(("Allow", "INVITE, ACK, BYE, INFO"),))
        else:
            self._reply(
                req, addr, 405, "Method Not Allowed", headers=(("Allow", "INVITE, ACK, BYE, INFO"),)
            )

    async def _invite(self, req: Request, addr: tuple[str, int]) -> None:
        user = req.ruri.user or ""
        app, _, owner = user.partition(".")
        listening: Listening[Voicemail] | None = None
        if app == "announce":
            await self._announce(req, addr, owner)
            return
        if app == "dictation":
            parts = owner.split(".")
            want = (
                dictation_user(self.dictation_key, req.call_id, parts[0], parts[1])
                if len(parts) == 3 and self.dictation_key and self.on_dictation is not None
                else None
            )
            if want is None or not hmac.compare_digest(want.encode(), user.encode()):
                text = "Dictation by phone is dialled through the server"
                self._reply(req, addr, 403, "Forbidden",
                            headers=(("Reason", f'SIP;cause=403;text="{text}"'),))  # fmt: skip
                return
            owner = f"{parts[0]}.{parts[1]}"
        elif app == "listen":
            listening = await self._listen_invite(req, addr, user, owner)
            if listening is None:
                return
            owner = owner.partition(".")[2]
        elif app != "voicemail" or not owner:
            self._reply(req, addr, 404, "Not Found")
            return
        try:
            session = await ua.MediaSession.open(self.ports, self.settings.address, req.body)
        except ua.MediaError as exc:
            text = str(exc)
            if "too many" in text:
                status, reason = 503, "Service Unavailable"
            elif "no common codec" in text or "offer" in text:
                status, reason = 488, "Not Acceptable Here"
            else:
                status, reason = 503, "Service Unavailable"
            self._reply(
                req,
                addr,
                status,
                reason,
                headers=(("Reason", f'SIP;cause={status};text="{text}"'),),
            )
            log.info("media apps: %s refused %s: %s", req.call_id, status, text)
            return
        if req.call_id in self.calls:  # a retransmission raced the first
            session.close()
            return
        try:
            if listening is not None:
                greeting = await self._say(listening.summary)
            else:
                greeting = await (self._prompt() if app == "dictation" else self._greeting(owner))
        except Exception:
            session.close()
            raise
        if req.call_id in self.calls:
            session.close()
            return
        tag = secrets.token_hex(6)
        dialog = Dialog.as_uas(req, tag)
        headers = [("Record-Route", rr) for rr in req.get_all("record-route")]
        headers.append(("Contact", self._contact()))
        data = self._reply(req, addr, 200, "OK", tag, tuple(headers), session.answer)
        call = Call(req, addr, dialog, session, data, app, owner, greeting)
        if app == "listen":
            call.listening = listening
        self.calls[req.call_id] = call
        call.task = asyncio.ensure_future(self._run(call))

    async def _listen_invite(
        self, req: Request, addr: tuple[str, int], user: str, rest: str
    ) -> Listening[Voicemail] | None:
        """`listen.MAC.USER`: only a URI the proxy signed for this call opens a mailbox (403
        else); the user's messages, or None when answered already (403, 404: no box, 503)."""
        listener = rest.partition(".")[2]
        want = (
            listen_user(self.dictation_key, req.call_id, listener)
            if listener and self.dictation_key and self.mailbox is not None
            else None
        )
        if want is None or not hmac.compare_digest(want.encode(), user.encode()):
            text = "Voicemail by phone is dialled through the server"
            self._reply(req, addr, 403, "Forbidden",
                        headers=(("Reason", f'SIP;cause=403;text="{text}"'),))  # fmt: skip
            return None
        assert self.mailbox is not None
        try:
            messages = await self.mailbox.messages(listener)
        except Exception:
            log.exception("media apps: %s: the mailbox of %s unreadable", req.call_id, listener)
            self._reply(req, addr, 503, "Service Unavailable")
            return None
        if messages is None:
            self._reply(req, addr, 404, "Not Found",
                        headers=(("Reason", f'SIP;cause=404;text="{NO_MAILBOX}"'),))  # fmt: skip
            return None
        return Listening.of(messages)

    def announcement(self, client: str, name: str) -> Path | None:
        """DATA/announcements/CLIENT/NAME.(wav|mp3), else the provider's
        DATA/announcements/NAME.(wav|mp3)."""
        if not ANNOUNCE_NAME.match(name) or not ANNOUNCE_NAME.match(client):
            return None
        base = self.data_dir / "announcements"
        for folder in (base / client, base):
            for ext in ("wav", "mp3"):
                if (folder / f"{name}.{ext}").is_file():
                    return folder / f"{name}.{ext}"
        return None

    async def _announce(self, req: Request, addr: tuple[str, int], rest: str) -> None:
        """`announce.NAME.go.CLIENT`: early media (183 with the SDP answer), the file, then
        480 so that the plan goes on; `announce.NAME.end.CLIENT`: 200, the file, BYE."""
        name, _, rest = rest.partition(".")
        mode, _, client = rest.partition(".")
        path = self.announcement(client, name)
        if path is None or mode not in ("go", "end"):
            self._reply(req, addr, 404, "Not Found", headers=(
                ("Reason", f'SIP;cause=404;text="no announcement {name[:64]}"'),))  # fmt: skip
            return
        try:
            session = await ua.MediaSession.open(self.ports, self.settings.address, req.body)
            pcm = await asyncio.to_thread(
                lambda: ua.read_wav(ua.convert(path, self.data_dir / "media-cache"))
            )
        except (ua.MediaError, OSError, subprocess.SubprocessError) as exc:
            if "session" in locals():
                session.close()
            self._reply(req, addr, 503, "Service Unavailable", headers=(
                ("Reason", f'SIP;cause=503;text="{str(exc)[:80]}"'),))  # fmt: skip
            return
        if req.call_id in self.calls:
            session.close()
            return
        tag = secrets.token_hex(6)
        dialog = Dialog.as_uas(req, tag, 183 if mode == "go" else 200)
        headers = [("Record-Route", rr) for rr in req.get_all("record-route")]
        headers.append(("Contact", self._contact()))
        status, reason = (183, "Session Progress") if mode == "go" else (200, "OK")
        data = self._reply(req, addr, status, reason, tag, tuple(headers), session.answer)
        call = Call(req, addr, dialog, session, data, "announce", client, pcm)
        self.calls[req.call_id] = call
        if mode == "go":
            call.task = asyncio.ensure_future(self._early(call, tag))
        else:
            call.task = asyncio.ensure_future(self._run(call))

    async def _early(self, call: Call, tag: str) -> None:
        """Play over early media, then end the branch with 480 (the plan's next step)."""
        try:
            call.ack_at = time.monotonic()  # early media starts with the 183
            await self._play_first(call, call.greeting)
        finally:
            if self.calls.get(call.invite.call_id) is call:
                del self.calls[call.invite.call_id]
                call.session.close()
                call.response = self._reply(
                    call.invite, call.source, 480, "Temporarily Unavailable", tag,
                    (("Reason", 'SIP;cause=480;text="announcement played"'),),
                )  # fmt: skip

    async def _run(self, call: Call) -> None:
        try:
            interval = T1
            deadline = time.monotonic() + 64 * T1
            while not call.acked.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(call.acked.wait(), interval)
                if call.acked.is_set():
                    break
                if time.monotonic() > deadline:
                    self._end(call, send_bye=True)
                    return
                if self.transport is not None:
                    self.transport.sendto(call.response, call.source)
                interval = min(interval * 2, 4.0)
            if call.app == "announce":
                await self._play_first(call, call.greeting)
            elif call.app == "dictation":
                await self._dictation(call)
            elif call.app == "listen":
                try:
                    await asyncio.wait_for(self._listen(call), self.listen_max_seconds)
                except TimeoutError:
                    log.info("voicemail by phone of %s: ended after %.0f s", call.owner,
                             self.listen_max_seconds)  # fmt: skip
            else:
                await self._voicemail(call)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("media apps: %s failed", call.invite.call_id)
        finally:
            self._end(call, send_bye=True)

    async def _greeting(self, owner: str) -> bytes:
        """The owner's uploaded greeting, else the spoken default (made once, cached), then
        the beep. Ready before the 200 goes out, so playback starts on the ACK."""
        cache = self.data_dir / "media-cache"
        uploaded = self.data_dir / "voicemail" / "greetings" / f"{owner}.wav"
        try:
            if uploaded.exists():
                path = await asyncio.to_thread(ua.convert, uploaded, cache)
            else:
                text = GREETING.format(name=self.client_name(owner))
                path = await asyncio.to_thread(ua.speak, text, cache)
            pcm = await asyncio.to_thread(ua.read_wav, path)
        except (ua.MediaError, OSError, subprocess.SubprocessError) as exc:
            log.warning("media apps: no greeting for %s (%s); beep only", owner, exc)
            pcm = b""
        return pcm + ua.beep()

    async def _prompt(self, text: str = DICTATION_PROMPT) -> bytes:
        """A spoken prompt of dictation by phone (made once, cached), then the beep."""
        try:
            path = await asyncio.to_thread(ua.speak, text, self.data_dir / "media-cache")
            pcm = await asyncio.to_thread(ua.read_wav, path)
        except (ua.MediaError, OSError, subprocess.SubprocessError) as exc:
            log.warning("media apps: no dictation prompt (%s); beep only", exc)
            pcm = b""
        return pcm + ua.beep()

    async def _say(self, text: str, cache: str = "") -> bytes:
        """`text` spoken (made once, cached in media-cache/`cache`); nothing when it cannot be
        made."""
        try:
            path = await asyncio.to_thread(ua.speak, text, self.data_dir / "media-cache" / cache)
            return await asyncio.to_thread(ua.read_wav, path)
        except (ua.MediaError, OSError, subprocess.SubprocessError) as exc:
            log.warning("media apps: no prompt %r (%s)", text, exc)
            return b""

    async def _listen(self, call: Call) -> None:
        """The mailbox's messages one after the other (office/voicemail.py: the order and the
        keys), each followed by the key menu; a message played to its end is heard; `7`
        deletes (committed, then "gelöscht"); after the last one the end prompt, then BYE
        (by `_run`). A hang-up in the middle of a message leaves it as it was."""
        listening, mailbox, s = call.listening, self.mailbox, call.session
        assert listening is not None and mailbox is not None
        user = call.owner
        await self._play_first(call, call.greeting)  # the summary (# skips it)
        menu = await self._say(MENU_TEXT) + bytes(16000)  # + 1 s to press a key
        zone = await mailbox.zone(user)
        number = 0
        while (msg := listening.current) is not None and not s.closed.is_set():
            try:
                pcm = await asyncio.to_thread(ua.read_wav, self.data_dir / msg.path)
            except (OSError, EOFError, ua.MediaError, wave.Error) as exc:
                log.warning("voicemail %d of %s unreadable (%s): skipped", msg.id, user, exc)
                listening.advance()
                continue
            number += 1
            # "Nachricht 1, von 0 1 7 1 …, heute um 14 Uhr 5." (part of the message: the
            # keys work during it, and 1 replays the message without it)
            at = as_utc(msg.created_at).astimezone(zone)
            text = intro_text(number, msg.caller, at, datetime.now(zone))
            intro = await self._say(text, INTRO_CACHE)
            heard = msg.heard
            while not s.closed.is_set():
                key = await s.play(intro + pcm, stop_on=LISTEN_KEYS)
                if s.closed.is_set():
                    return  # hung up in the middle: the message stays as it was
                to_end = key is None
                if to_end and not heard:
                    heard = await asyncio.shield(mailbox.heard(user, msg.id))
                if key is None:
                    key = await s.play(menu, stop_on=LISTEN_KEYS)
                    if s.closed.is_set():
                        return
                step = decide(key, to_end)
                if step.heard and not heard:
                    heard = await asyncio.shield(mailbox.heard(user, msg.id))
                if step.next is Next.REPLAY:
                    intro = b""
                    continue
                if step.next is Next.DELETE:
                    done = await asyncio.shield(mailbox.delete(user, msg.id))
                    await s.play(await self._say(DELETED_TEXT if done else NOT_DELETED_TEXT))
                break
            listening.advance()
        if not s.closed.is_set():
            await s.play(await self._say(END_TEXT))

    async def _dictation(self, call: Call) -> None:
        """Prompt, beep, then record with the keys of a dictation machine (media/dictaphone)
        until the author presses #, hangs up, pauses too long or reaches the longest length;
        the WAV goes to `on_dictation` (which makes it a job)."""
        s = call.session
        machine = Dictaphone(self.dictation_max_seconds, DICTATION_REVIEW)
        await self._play_first(call, call.greeting)
        s.clear_digits()  # keys typed during the prompt do not count
        pending: str | None = None
        while not s.closed.is_set() and machine.remaining > 0:
            digit: str | None
            if pending is not None:
                digit, pending = pending, None
            elif machine.paused:
                digit = await s.next_digit(KEYS, DICTATION_PAUSE)
                if digit is None:
                    break  # hung up, or paused too long: what was recorded is kept
            else:
                began = time.monotonic()
                audio, digit = await s.record_until(machine.remaining, KEYS)
                machine.recorded(audio, time.monotonic() - began)
            if digit is None:
                continue  # the time is up or the call ended: the loop's test decides
            step = machine.key(digit)
            if step.action is Action.FINISH:
                break
            if step.action is Action.IGNORED:
                continue
            if step.action is Action.PAUSED:
                cue = ua.beep(0.15, 600) + bytes(1600) + ua.beep(0.15, 600)
            elif step.action is Action.PLAYBACK:
                cue = step.audio + ua.beep()
            elif step.action is Action.DISCARDED:
                cue = await self._prompt(DICTATION_DISCARDED)
            else:
                cue = ua.beep()
            pending = await s.play(cue, stop_on=KEYS)
        audio = bytes(machine.audio)
        client, author = call.owner.split(".", 1)
        if len(audio) < MIN_DICTATION:
            log.info("dictation by phone of %s: under a second recorded, no job", author)
            return
        folder = self.data_dir / "dictation-phone"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{int(time.time())}-{secrets.token_hex(4)}.wav"
        ua.write_wav(path, audio)
        seconds = len(audio) / 16000
        log.info("dictation by phone of %s for %s: %.1f s in %s", author, client, seconds, path)
        if self.on_dictation is not None:
            result = self.on_dictation(Dictated(client, author, call.invite.call_id, path, seconds))
            if result is not None:
                await result

    async def _voicemail(self, call: Call) -> None:
        s = call.session
        await self._play_first(call, call.greeting)
        audio = await s.record(self.settings.voicemail_max_seconds, "#")
        if len(audio) < MIN_RECORDING:
            log.info("voicemail for %s: nothing recorded (the caller hung up first)", call.owner)
            return
        folder = self.data_dir / "voicemail" / call.owner
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{int(time.time())}-{secrets.token_hex(4)}.wav"
        ua.write_wav(path, audio)
        seconds = len(audio) / 16000
        caller = call.invite.from_.uri.user or str(call.invite.from_.uri)
        log.info("voicemail for %s from %s: %.1f s in %s", call.owner, caller, seconds, path)
        if self.on_recording is not None:
            result = self.on_recording(
                Recording(call.owner, caller, call.invite.call_id, path, seconds)
            )
            if result is not None:
                await result

    async def _play_first(self, call: Call, pcm: bytes) -> None:
        task = asyncio.ensure_future(call.session.play(pcm, stop_on="#"))
        await asyncio.sleep(0)
        if call.session.first_packet_at is not None and call.ack_at is not None:
            self.latencies.append(call.session.first_packet_at - call.ack_at)
        await task

    def _end(self, call: Call, send_bye: bool, stop: bool = True) -> None:
        if self.calls.get(call.invite.call_id) is not call:
            return
        del self.calls[call.invite.call_id]
        call.session.close()
        if stop and call.task is not None and call.task is not asyncio.current_task():
            call.task.cancel()
        if send_bye and self.transport is not None:
            bye = call.dialog.create_request("BYE", contact=self._contact()[1:-1])
            branch = f"z9hG4bK{secrets.token_hex(8)}"
            bye.prepend("Via", f"SIP/2.0/UDP {self.settings.address}:{self.port};branch={branch}")
            hop = call.dialog.next_hop()
            data = bye.serialize()
            self.transport.sendto(data, (hop.host, hop.port or 5060))


# -- message waiting indication (RFC 3842) ------------------------------------------------


class _Unsolicited:
    """The owner of an unsolicited NOTIFY's client transaction: nothing to do on its answer
    (a phone that does not want it answers 489 or 481; the next voicemail tries again)."""

    def on_response(self, txn: object, resp: Response, now: float) -> None:
        return None

    def on_timeout(self, txn: object, now: float) -> None:
        return None

    def on_transport_error(self, txn: object, now: float) -> None:
        return None


def notify_waiting(core: SipCore, user: str, new: int, old: int, now: float) -> int:
    """An unsolicited NOTIFY Event: message-summary (RFC 3842 §4: the phone did not
    subscribe) to every registered device of `user`; the number of devices notified."""
    domain = core.settings.domain
    body = message_summary(f"sip:{user}@{domain}", new, old)
    sent = 0
    for uri, dest, route in core.proxy.device_targets(user, now):
        hdrs = [
            ["from", "From", f"<sip:{user}@{domain}>;tag={secrets.token_hex(6)}"],
            ["to", "To", f"<sip:{user}@{domain}>"],
            ["call-id", "Call-ID", f"mwi.{secrets.token_hex(8)}@{domain}"],
            ["cseq", "CSeq", "1 NOTIFY"],
            ["max-forwards", "Max-Forwards", "70"],
            ["event", "Event", "message-summary"],
            ["subscription-state", "Subscription-State", "active"],
            ["content-type", "Content-Type", MESSAGE_SUMMARY],
        ]  # fmt: skip
        hdrs += [["route", "Route", r] for r in route]  # the device's Path (RFC 3327 §5.4)
        try:
            core.send_request(Request("NOTIFY", uri, hdrs, body), dest, _Unsolicited(), now)
        except ValueError:
            continue
        sent += 1
    return sent
