"""Anchoring a call's audio at rtpengine (``[media] backend = "rtpengine"``): the proxy's
``MediaRelay`` seam, as the built-in relay's (services/media_relay.py) but with rtpengine
choosing the ports and rewriting the SDP.

rtpengine answers each offer and answer with the SDP to send on, so the rewrite cannot happen
inside the proxy's synchronous hooks. :class:`MediaGate` stands between the network layer and
the SIP core: a message carrying SDP of a call that is (or may become) anchored is held while
its ng ``offer``/``answer`` is under way (bounded by the ng client's timeout, never blocking
the loop), and handed to the core with the rewritten SDP ready; the proxy's hook then puts
it in the copy it forwards. Later messages of the same Call-ID wait behind a held one, so
the core sees each call's messages in the order they arrived.

Which calls are anchored: as for the built-in relay (``always``, ``never``, ``when_needed``).
A new call's offer goes to rtpengine before that decision (the callee is known only inside
the proxy); a call that turns out not to need the relay is deleted there at once.

Only the call's parties are heard: after a new call's first INVITE, SDP goes to rtpengine
only from the caller's address or an address the proxy sent the call to (a forged request
with the call's Call-ID and tags from elsewhere cannot move its media).

When rtpengine does not answer: a new call that needs the relay by what the gate can see
(``relay = "always"``, or the caller's SDP names another address than it sends from) is
refused with ``503 Media relay unavailable``; a call that would need it only for the callee's
sake connects without it (logged); messages of calls already anchored go on unchanged.

ng flags (what the built-in relay does): symmetric RTP with latching on the first packets
(rtpengine's default); the SDP's address is trusted only when it is the address the
signalling came from, otherwise rtpengine starts from the signalling's source address;
``origin`` and ``session-connection`` are replaced; ICE is removed; RTCP-mux stays as offered.
At the end of a call ``delete`` answers the call's statistics for its record (see
:func:`call_stats`: rtpengine counts packets and bytes; loss and jitter only as the phones
report them in RTCP, else they are unknown); a call that
rtpengine forgot (its own timeout: no media) is found by a ``query`` every few seconds and
ended like a call the built-in relay reports silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from heimbuero.media.ng import NgClient, NgError, NgUnavailable
from heimbuero.media.relay_config import RelaySettings
from heimbuero.media.relay_sdp import endpoints
from heimbuero.services.media_relay import SDP_METHODS, _loopback, _sdp
from heimbuero.sip.message import ParseError, Request, Response, parse
from heimbuero.sip.peer import Peer
from heimbuero.sip.sdp import SessionDescription

log = logging.getLogger("heimbuero.media")

UNAVAILABLE = "Media relay unavailable"
STALE = 64.0  # seconds: a new call's offer whose INVITE never went on is deleted at rtpengine
PER_SOURCE = 32  # new calls of one address at rtpengine before the proxy took them
MAX_SESSIONS = 20000


@dataclass(slots=True)
class Session:
    """One call at rtpengine."""

    caller_tag: str
    started: float  # time.monotonic() of its first offer
    offers: dict[tuple[int, str], str] = field(default_factory=dict)  # -> tag of who offered
    prepared: dict[tuple[Any, ...], bytes | None] = field(default_factory=dict)
    anchored: bool = False  # the proxy decided the call goes through rtpengine
    source: str = ""  # where the new call's INVITE came from (counted until the proxy decides)
    # the addresses the call's signalling comes from: the caller's, and each callee branch's
    parties: set[str] = field(default_factory=set)


class RtpengineRelay:
    """The proxy's media hooks for rtpengine, and the ng commands behind them."""

    def __init__(
        self,
        settings: RelaySettings,
        client: NgClient,
        on_stats: Callable[[str, dict[str, Any]], None],
        on_silent: Callable[[str], None],
        poll: float = 5.0,
    ) -> None:
        self.mode = settings.relay
        self.client = client
        self.on_stats, self.on_silent, self.poll = on_stats, on_silent, poll
        self.sessions: dict[str, Session] = {}  # every call rtpengine knows of
        self.calls: dict[str, Session] = {}  # the anchored ones
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waiting: dict[str, int] = {}  # source address -> its sessions not yet decided
        self._warned: set[str] = set()
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self.client.command("ping")
        except (NgUnavailable, NgError) as exc:
            log.error("media relay: %s; calls that need it are refused until it answers", exc)
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for call_id in list(self.sessions):
            self.end(call_id)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.client.timeout + 1)
        self.client.close()

    # -- the gate's question: what to ask rtpengine before the core sees a message ---------

    def job(
        self, msg: Request | Response, source: Peer
    ) -> Coroutine[Any, Any, tuple[int, str] | None] | None:
        """The ng command a message needs before it reaches the core (None: none)."""
        if self.mode == "never" or not _has_sdp(msg):
            return None
        if isinstance(msg, Request) and msg.method == "INVITE" and not msg.to.tag:
            session = self.sessions.get(msg.call_id)  # (a new call, perhaps not yet decided)
            if session is None:
                # a new call's offer goes out before the core has authenticated it: a source
                # holds at most PER_SOURCE calls at rtpengine that the proxy has not taken
                waiting = self._waiting.get(source.host, 0)
                if waiting >= PER_SOURCE or len(self.sessions) >= MAX_SESSIONS:
                    if source.host not in self._warned:  # (once while it stays over)
                        self._warned.add(source.host)
                        log.warning("media relay: %s has %d new calls waiting; its next ones "
                                    "are not prepared", source.host, waiting)  # fmt: skip
                    return None
                self._waiting[source.host] = waiting + 1
                session = Session(msg.from_.tag or "", time.monotonic(), source=source.host)
                session.parties.add(source.host)
                self.sessions[msg.call_id] = session
            elif source.host not in session.parties:
                return None  # (its Call-ID from elsewhere: no offer changes its media)
        else:
            session = self.calls.get(msg.call_id)  # (only an anchored call's later SDP)
            if session is None or source.host not in session.parties:
                return None  # (from no party of the call: rtpengine is not asked)
            if isinstance(msg, Request):
                if msg.method not in SDP_METHODS:
                    return None
            elif not 100 < msg.status < 300 or msg.cseq[1] not in SDP_METHODS:
                return None
        return self._prepare(msg, source, session)

    async def _prepare(
        self, msg: Request | Response, source: Peer, session: Session
    ) -> tuple[int, str] | None:
        key = _key(msg)
        if key in session.prepared:
            return None  # (a retransmission: rtpengine answered it already)
        sd = _sdp(msg)
        if sd is None:
            return None
        method = msg.method if isinstance(msg, Request) else None
        request = method is not None
        sender = (msg.from_.tag if request else msg.to.tag) or ""
        other = (msg.to.tag if request else msg.from_.tag) or ""
        # (each side counts its own CSeq: a transaction is its number and its sender's tag)
        cseq = (msg.cseq[0], msg.from_.tag or "")
        offerer = session.offers.get(cseq)
        if request:  # (the SDP of an ACK or PRACK answers; of an INVITE or UPDATE offers)
            answer = method in ("ACK", "PRACK")
        else:
            answer = offerer is not None and offerer != sender
        fields: dict[str, Any] = {
            "call-id": msg.call_id,
            "sdp": msg.body,
            "replace": ["origin", "session-connection"],
            "ICE": "remove",
            "received-from": ["IP6" if ":" in source.host else "IP4", source.host.strip("[]")],
        }
        if any(ep is not None and ep[0] == source.host for ep in endpoints(sd)):
            fields["flags"] = ["trust-address"]
        if answer:
            fields["from-tag"], fields["to-tag"] = other, sender
        else:
            fields["from-tag"] = sender
            if other:
                fields["to-tag"] = other
        try:
            reply = await self.client.command("answer" if answer else "offer", **fields)
        except (NgUnavailable, NgError) as exc:
            session.prepared[key] = None
            new = method == "INVITE" and not msg.to.tag
            if new and msg.call_id not in self.calls:
                if self._needed_here(sd, source):
                    log.error("call %s refused: media relay: %s", msg.call_id, exc)
                    if self.sessions.pop(msg.call_id, None) is session:
                        self._decided(session)
                    return 503, UNAVAILABLE
                log.warning("call %s: media relay: %s; not relayed", msg.call_id, exc)
            else:
                log.error("media of %s not rewritten: media relay: %s", msg.call_id, exc)
            return None
        if not answer:
            session.offers[cseq] = sender
        body = reply.get("sdp")
        session.prepared[key] = body if isinstance(body, bytes) else None
        return None

    def _needed_here(self, sd: SessionDescription, source: Peer) -> bool:
        """Whether a new call needs the relay by what its INVITE alone shows."""
        if self.mode == "always":
            return True
        return any(ep is not None and ep[0] != source.host for ep in endpoints(sd))

    # -- the proxy's hooks ----------------------------------------------------------------

    def on_offer(self, request: Request, source: Peer, dest: Peer) -> None:
        call_id = request.call_id
        if request.method == "BYE":
            self.end(call_id)
            return
        if request.method not in SDP_METHODS:
            return
        session = self.sessions.get(call_id)
        if session is None:
            return
        session.parties.add(dest.host)  # (the proxy chose it: its answers may be prepared)
        if call_id not in self.calls:
            if request.method != "INVITE" or request.to.tag:
                return
            sd = _sdp(request)
            if sd is None or not self._needed(sd, request, source, dest):
                self._decided(session)  # (this branch goes end to end; a later one may not)
                return
            self._decided(session)
            session.anchored = True
            self.calls[call_id] = session
        self._apply(request, session)

    def on_answer(self, response: Response, source: Peer) -> None:
        session = self.calls.get(response.call_id)
        if session is not None and response.cseq[1] in SDP_METHODS:
            self._apply(response, session)

    def on_end(self, call_id: str) -> None:
        self.end(call_id)

    def end(self, call_id: str) -> None:
        session = self.sessions.pop(call_id, None)
        anchored = self.calls.pop(call_id, None) is not None
        if session is None:
            return
        self._decided(session)
        self._spawn(self._delete(call_id, session.caller_tag, anchored))

    def _decided(self, session: Session) -> None:
        if session.source:
            left = self._waiting.get(session.source, 1) - 1
            if left > 0:
                self._waiting[session.source] = left
            else:
                self._waiting.pop(session.source, None)
                self._warned.discard(session.source)
            session.source = ""

    def _needed(self, sd: SessionDescription, request: Request, source: Peer, dest: Peer) -> bool:
        if self.mode == "always":
            return True
        if any(ep is not None and ep[0] != source.host for ep in endpoints(sd)):
            return True
        contact = request.ruri.host
        if contact and contact.strip("[]") != dest.host:
            return True
        return _loopback(dest.host) and not _loopback(source.host)

    def _apply(self, msg: Request | Response, session: Session) -> None:
        if not _has_sdp(msg):
            return
        body = session.prepared.get(_key(msg))
        if body is None:
            if _key(msg) not in session.prepared:
                log.warning("media of %s not relayed: SDP reached the proxy unprepared",
                            msg.call_id)  # fmt: skip
            return
        msg.body = body

    # -- ng commands in the background ---------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _delete(self, call_id: str, caller_tag: str, anchored: bool) -> None:
        try:
            reply = await self.client.command("delete", **{"call-id": call_id,
                                                           "from-tag": caller_tag})  # fmt: skip
        except NgError:
            return  # (rtpengine forgot it already: its own timeout)
        except NgUnavailable as exc:
            log.error("media relay: delete of %s failed: %s", call_id, exc)
            return
        if anchored:
            self.on_stats(f"{call_id}/0", call_stats(reply, caller_tag))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            now = time.monotonic()
            for call_id, session in list(self.sessions.items()):
                if not session.anchored:
                    if now - session.started > STALE:
                        self.end(call_id)  # (an INVITE that was challenged or never went on)
                    continue
                try:
                    await self.client.command("query", **{"call-id": call_id})
                except NgError:
                    if self.calls.get(call_id) is session:
                        self.on_silent(f"{call_id}/0")  # rtpengine let it go (no media)
                except NgUnavailable:
                    break


def call_stats(reply: dict[str, Any], caller_tag: str) -> dict[str, dict[str, Any]]:
    """rtpengine's ``delete``/``query`` answer as the built-in relay's statistics: ``a`` what
    the caller sent (packets rtpengine received from it), ``b`` what the callee sent.

    rtpengine (10.5, userspace) counts packets, bytes and errors per stream but no loss or
    jitter of its own: ``expected``, ``lost``, ``loss_pct`` and ``jitter_ms`` are None
    (unknown), never a false 0. What the receiving phone said in RTCP comes under
    ``reported`` as with the built-in relay: rtpengine lists an SSRC under ``SSRC`` once its
    phone's receiver reports gave a MOS (both phones send RTCP sender and receiver reports),
    keyed by the reporting phone's SSRC: its ``cumulative loss`` and the worst ``packet loss``
    (%) and ``jitter`` (ms) of its reports are what it received of the other side."""
    out: dict[str, dict[str, Any]] = {
        side: {"packets": 0, "bytes": 0, "dropped": 0, "expected": None, "lost": None,
               "loss_pct": None, "jitter_ms": None, "restarts": 0}
        for side in ("a", "b")
    }  # fmt: skip
    tags = reply.get("tags")
    if not isinstance(tags, dict):
        return out
    owners: dict[str, str] = {}  # SSRC (decimal) -> the side that sends it
    for tag, monologue in tags.items():
        if not isinstance(monologue, dict):
            continue
        name = "a" if tag == caller_tag else "b"
        side = out[name]
        medias = monologue.get("medias")
        if not isinstance(medias, list) or not medias or not isinstance(medias[0], dict):
            continue
        for stream in medias[0].get("streams") or ():
            if not isinstance(stream, dict):
                continue
            ssrc = stream.get("SSRC")
            if isinstance(ssrc, int) and not isinstance(ssrc, bool):
                owners.setdefault(str(ssrc), name)
            if b"RTCP" in _flags(stream):
                continue
            stats = stream.get("stats")
            if isinstance(stats, dict):
                side["packets"] += _int(stats.get("packets"))
                side["bytes"] += _int(stats.get("bytes"))
                side["dropped"] += _int(stats.get("errors"))
    ssrcs = reply.get("SSRC")
    if isinstance(ssrcs, dict):
        for ssrc, info in ssrcs.items():
            receiver = owners.get(ssrc.decode() if isinstance(ssrc, bytes) else str(ssrc))
            if receiver is None or not isinstance(info, dict):
                continue
            reported = _reported(info)
            if reported is not None:  # (the receiver's report is of the other side's audio)
                out["b" if receiver == "a" else "a"]["reported"] = reported
    return out


def _reported(info: dict[str, Any]) -> dict[str, Any] | None:
    """One SSRC's entry of rtpengine's ``SSRC`` answer as a receiver's report (the shape of
    relay_core.ReportStats.as_dict): its reports' worst loss (%) and jitter, the cumulative
    loss it last reported; None when it holds no report."""
    blocks = [info.get(key) for key in ("average MOS", "lowest MOS", "highest MOS")]
    entries: list[Any] = []
    progression = info.get("MOS progression")
    if isinstance(progression, dict) and isinstance(progression.get("entries"), list):
        entries = [e for e in progression["entries"] if isinstance(e, dict)]
    blocks = [b for b in blocks if isinstance(b, dict)] + entries
    if not blocks:
        return None
    return {
        "reports": len(entries) or 1,  # (rtpengine keeps about ten of a call's reports)
        "loss_pct": float(max(_int(b.get("packet loss")) for b in blocks)),
        "lost": _int(info.get("cumulative loss")),
        "jitter_ms": float(max(_int(b.get("jitter")) for b in blocks)),
    }


def _flags(stream: dict[str, Any]) -> list[bytes]:
    flags = stream.get("flags")
    return [f for f in flags if isinstance(f, bytes)] if isinstance(flags, list) else []


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _has_sdp(msg: Request | Response) -> bool:
    ctype = (msg.get("content-type") or "").split(";")[0].strip().lower()
    return bool(msg.body) and ctype == "application/sdp"


def _key(msg: Request | Response) -> tuple[Any, ...]:
    kind = msg.method if isinstance(msg, Request) else "response"
    return (kind, msg.cseq[0], hashlib.sha1(msg.body).digest())


class MediaGate:
    """The network layer's endpoint when rtpengine is the relay: holds a message while its
    SDP is at rtpengine, then gives it to the SIP core (see the module's docstring)."""

    def __init__(self, core: Any, relay: RtpengineRelay) -> None:
        self.core, self.relay = core, relay
        self.transports: Any = None  # set by the server: its now() and flush()
        self._chains: dict[str, asyncio.Task[None]] = {}

    def receive(self, data: bytes, source: Peer, now: float) -> None:
        if not self._chains and b"application/sdp" not in data.lower():
            self.core.receive(data, source, now)
            return
        if type(source) is not Peer:
            source = Peer(*source)
        if self.core.guard.banned(source.host, now):
            self.core.receive(data, source, now)  # (the core drops it; rtpengine never hears)
            return
        try:
            msg = parse(data, datagram=not source.reliable)
            if msg.check() is not None:
                raise ValueError("bad message")
            call_id = msg.call_id
            job = self.relay.job(msg, source)
        except (ParseError, ValueError, KeyError, IndexError):
            self.core.receive(data, source, now)  # (the core answers what it cannot parse)
            return
        chain = self._chains.get(call_id)
        if job is None and chain is None:
            self.core.receive(data, source, now)
            return
        task = asyncio.get_running_loop().create_task(
            self._hold(call_id, chain, job, data, source, msg)
        )
        self._chains[call_id] = task

    async def _hold(
        self,
        call_id: str,
        chain: asyncio.Task[None] | None,
        job: Coroutine[Any, Any, tuple[int, str] | None] | None,
        data: bytes,
        source: Peer,
        msg: Request | Response,
    ) -> None:
        try:
            if chain is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(chain)
            refusal = None
            if job is not None:
                try:
                    refusal = await job
                except Exception:  # (the message goes on unchanged; the core judges it)
                    log.exception("media relay: preparing %s failed", call_id)
            if refusal is not None and isinstance(msg, Request):
                self._refuse(msg, source, refusal)
            else:
                self.core.receive(data, source, self.transports.now())
            self.transports.flush()
        finally:
            if self._chains.get(call_id) is asyncio.current_task():
                del self._chains[call_id]

    def _refuse(self, msg: Request, source: Peer, refusal: tuple[int, str]) -> None:
        """A new call the relay is needed for while it does not answer: a 503 of our own."""
        self.core.refuse(msg, source, refusal[0], refusal[1])

    def outgoing(self) -> list[tuple[bytes, Peer]]:
        out: list[tuple[bytes, Peer]] = self.core.outgoing()
        return out

    def next_deadline(self) -> float | None:
        deadline: float | None = self.core.next_deadline()
        return deadline

    def on_timer(self, now: float) -> None:
        self.core.on_timer(now)

    def unreachable(self, dest: Peer, now: float) -> None:
        self.core.unreachable(dest, now)

    def clock_stepped(self, delta: float) -> None:
        self.core.clock_stepped(delta)

    def admit(self, source: Peer, now: float) -> bool:
        admitted: bool = self.core.admit(source, now)
        return admitted
