"""Calls that end without a BYE through the proxy: phones that crash, lose their Wi-Fi, or send
their BYE past us. Without this a call stays "on the phone" forever: presence shows the agent
busy and group routing skips them until a restart.

The proxy tells this what it sees of the calls it record-routed:

- a request inside a call answered 481 (the other side knows no such call) or 408 / no
  answer at all (it is gone): the call is over (RFC 5057 §5.1, RFC 4028 §10);
- a 2xx to an INVITE or UPDATE with `Session-Expires` (RFC 4028, as the phones negotiated it):
  the call must be refreshed within that many seconds; a call not refreshed in time is over.
  A new call's INVITE without one gets `[sip] session_expires` added (a callee that does not
  support timers ignores it, its 2xx has none, and the call stays untimed).

Over means: `CallEnded` on the event bus, as for a BYE (presence, call records, the media
relay). Sans-IO: time comes in, timers are the core's.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from heimbuero.events import CallEnded
from heimbuero.sip.message import ParseError, Request, Response

if TYPE_CHECKING:
    from heimbuero.services.core import SipCore

log = logging.getLogger("heimbuero.calls")

MIN_SE = 90  # RFC 4028 §4: the smallest session interval anyone may ask for
ENDING_STATUSES = frozenset({408, 481})


def session_expires(msg: Response) -> int | None:
    """The delta-seconds of a `Session-Expires` (or compact `x`) header, or None."""
    raw = msg.get("session-expires")
    if raw is None:
        return None
    value = raw.split(";", 1)[0].strip()
    if not value.isdigit():
        return None
    return max(MIN_SE, min(int(value), 86400))


class DialogLiveness:
    """The session timers of calls through the proxy, and the end of calls that vanished."""

    def __init__(self, core: SipCore) -> None:
        self.core = core
        self.timers: dict[str, list[object]] = {}  # Call-ID -> the timer of its session expiry
        core.events.subscribe(CallEnded, self._on_ended)

    def offer(self, request: Request) -> None:
        """An INVITE the proxy forwards: a new call without `Session-Expires` asks for the
        configured interval (RFC 4028 §8.1: a proxy may add it; `Supported: timer` stays the
        caller's word, so a callee that does the timer refreshes itself, `refresher=uas`)."""
        interval = self.core.settings.session_expires
        if (
            interval
            and request.method == "INVITE"
            and not request.to.tag
            and request.get("session-expires") is None
        ):
            request.add("Session-Expires", str(max(MIN_SE, interval)))

    def answered(self, request: Request, response: Response, now: float) -> None:
        """A 2xx the proxy forwards: INVITE or UPDATE with Session-Expires (re)starts the
        call's timer; the first 2xx without it leaves the call untimed."""
        if request.method not in ("INVITE", "UPDATE"):
            return
        interval = session_expires(response)
        if interval is None:
            return
        call_id = request.call_id
        timers = self.core.timers
        timers.cancel(self.timers.pop(call_id, None))
        # (RFC 4028 §10: the phones give up at expiry minus min(32, SE/3); we wait the
        # whole interval, so a refresh that comes late but in time for them still counts)
        self.timers[call_id] = timers.call_at(
            now + interval, functools.partial(self._expired, call_id, interval)
        )

    def failed(self, request: Request, status: int, now: float) -> None:
        """The final answer (or none: 408) to a request the proxy forwarded."""
        if status not in ENDING_STATUSES or request.method == "BYE":
            return
        try:
            if not request.to.tag:
                return  # not inside a call
        except ParseError:
            return  # (a request the server made itself, e.g. a stored MESSAGE)
        log.info("call %s ended: a %s inside it was answered %d", request.call_id,
                 request.method, status)  # fmt: skip
        self.core.events.publish(CallEnded(now, request.call_id))

    def _expired(self, call_id: str, interval: int, now: float) -> None:
        self.timers.pop(call_id, None)
        log.info("call %s ended: its session timer (%d s) lapsed without a refresh",
                 call_id, interval)  # fmt: skip
        self.core.events.publish(CallEnded(now, call_id))

    def _on_ended(self, event: CallEnded) -> None:
        handle = self.timers.pop(event.call_id, None)
        if handle is not None:
            self.core.timers.cancel(handle)
