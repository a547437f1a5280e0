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

Over means: `CallEnded` on the event bus, as for a BYE (presence, call records with the end
reason, the media relay), and a BYE from the server to both ends of the call (RFC 4028 §10,
with a `Reason`, RFC 3326): the phone still there (the caller, or the carrier trunk that
would go on charging) learns that the call is over. The BYE is built only from what the proxy
stored itself when it forwarded the INVITE and its 2xx (`sip.dialog.proxy_dialogs`): Call-ID,
tags, each side's Contact and route set, and CSeq numbers above any the proxy saw from each
side. At most `MAX_DIALOGS` calls are kept; a BYE through us or `CallEnded` lets one go.
A relayed call without audio for `[media] silence_timeout` is hung up the same way
(`hang_up` with `NO_AUDIO_REASON`, by the server when the relay lets the call go).
Sans-IO: time comes in, timers are the core's.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from heimbuero.domain.model import CallEndReason
from heimbuero.events import CallEnded
from heimbuero.sip.dialog import (
    Dialog,
    DialogError,
    bye,
    proxied_request,
    proxied_response,
    proxy_dialogs,
)
from heimbuero.sip.dialogtoken import normal_flow
from heimbuero.sip.message import ParseError, Request, Response, parse_uri
from heimbuero.sip.peer import Peer

if TYPE_CHECKING:
    from heimbuero.services.core import SipCore

log = logging.getLogger("heimbuero.calls")

MIN_SE = 90  # RFC 4028 §4: the smallest session interval anyone may ask for
ENDING_STATUSES = frozenset({408, 481})
MAX_DIALOGS = 20_000  # answered calls kept to hang up (the oldest go first beyond this)
REASONS = {  # why the server ends a call: (the record's end reason, the BYE's Reason header)
    408: (CallEndReason.NO_RESPONSE, 'SIP;cause=408;text="No response inside the call"'),
    481: (CallEndReason.DIALOG_GONE, 'SIP;cause=481;text="Call unknown to the other side"'),
}
EXPIRED_REASON = 'SIP;cause=408;text="Session timer expired"'
# the media relay heard nothing in either direction for [media] silence_timeout
NO_AUDIO_REASON = 'SIP;cause=408;text="No audio"'


class CallEnds:
    """One answered call as the proxy forwarded it: the dialog toward each end and the flow
    it reaches that end on."""

    __slots__ = ("to_caller", "caller", "to_callee", "callee")

    def __init__(self, to_caller: Dialog, caller: Peer, to_callee: Dialog, callee: Peer) -> None:
        self.to_caller, self.caller = to_caller, caller
        self.to_callee, self.callee = to_callee, callee


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
        self.calls: OrderedDict[str, CallEnds] = OrderedDict()  # Call-ID -> its two ends
        core.events.subscribe(CallEnded, self._on_ended)

    def confirmed(
        self, request: Request, response: Response, caller: Peer, callee: Peer,
        is_own: Callable[[str], bool],
    ) -> None:  # fmt: skip
        """The 2xx that answered a new call (`request`, as the caller sent it) and that the
        proxy forwarded to the caller: keep what a BYE to each end needs. `caller`/`callee`:
        the flows the proxy got the INVITE on and sent it to."""
        call_id = request.call_id
        if call_id in self.calls:
            return  # (a retransmitted 2xx)
        try:
            to_caller, to_callee = proxy_dialogs(request, response, is_own)
        except (DialogError, ParseError) as exc:
            log.debug("call %s: no BYE can be built for it: %s", call_id, exc)
            return
        for dialog in (to_caller, to_callee):
            dialog.remote_target = _without_alias(dialog.remote_target)
        self.calls[call_id] = CallEnds(to_caller, caller, to_callee, callee)
        while len(self.calls) > MAX_DIALOGS:
            self.calls.popitem(last=False)

    def proxied(self, request: Request) -> None:
        """A request inside a call that the proxy forwards (from a party of the dialog). One
        that does not name both of the call's tags changes nothing: not its targets, not
        its end (the phone it goes to judges it by its own dialog)."""
        ends = self.calls.get(request.call_id)
        if ends is None or not self.tags_match(request):
            return
        try:
            proxied_request((ends.to_caller, ends.to_callee), request)
        except ParseError:
            return
        _plain_targets(ends)
        if request.method == "BYE":
            del self.calls[request.call_id]  # (the phones end it themselves)

    def party_of(self, named: tuple[str, str, str], source: Peer) -> bool | None:
        """For an INVITE whose `Replaces` names (Call-ID, to-tag, from-tag): None when the
        proxy knows no such answered call, else whether `source` is the flow of one of its
        ends (RFC 3891 §3: who may replace a call)."""
        call_id, to_tag, from_tag = named
        ends = self.calls.get(call_id)
        if ends is None:
            return None
        if {to_tag, from_tag} != {ends.to_callee.local_tag, ends.to_callee.remote_tag}:
            return None
        flow = normal_flow(source)
        return flow in (normal_flow(ends.caller), normal_flow(ends.callee))

    def tags_match(self, request: Request) -> bool:
        """Whether an in-dialog request names both tags of the call the proxy tracks under its
        Call-ID (either direction); True for a call it does not track."""
        ends = self.calls.get(request.call_id)
        if ends is None:
            return True
        try:
            tags = {request.from_.tag, request.to.tag}
        except ParseError:
            return False
        return tags == {ends.to_callee.local_tag, ends.to_callee.remote_tag}

    def hang_up(self, call_id: str, reason: str, now: float) -> bool:
        """Send a BYE with `reason` (a Reason header value) to both ends of the call, when
        the proxy answered it and still knows it; whether it did."""
        ends = self.calls.pop(call_id, None)
        if ends is None:
            return False
        for dialog, dest in ((ends.to_caller, ends.caller), (ends.to_callee, ends.callee)):
            try:
                request = bye(dialog, reason)
            except DialogError as exc:  # (a CSeq at the end of its range)
                log.info("call %s: no BYE to %s:%s:%d: %s", call_id, *dest, exc)
                continue
            self.core.send_request(request, dest, None, now)
        return True

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
        ends = self.calls.get(request.call_id)
        if ends is not None:
            with contextlib.suppress(ParseError):
                proxied_response((ends.to_caller, ends.to_callee), request, response)
            _plain_targets(ends)
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
        record, reason = REASONS[status]
        hung_up = self.hang_up(request.call_id, reason, now)
        log.info("call %s ended: a %s inside it was answered %d%s", request.call_id,
                 request.method, status, "; BYE sent to both ends" if hung_up else "")  # fmt: skip
        self.core.events.publish(CallEnded(now, request.call_id, record))

    def _expired(self, call_id: str, interval: int, now: float) -> None:
        self.timers.pop(call_id, None)
        hung_up = self.hang_up(call_id, EXPIRED_REASON, now)
        log.info("call %s ended: its session timer (%d s) lapsed without a refresh%s",
                 call_id, interval, "; BYE sent to both ends" if hung_up else "")  # fmt: skip
        self.core.events.publish(CallEnded(now, call_id, CallEndReason.SESSION_EXPIRED))

    def _on_ended(self, event: CallEnded) -> None:
        self.calls.pop(event.call_id, None)
        handle = self.timers.pop(event.call_id, None)
        if handle is not None:
            self.core.timers.cancel(handle)


def _plain_targets(ends: CallEnds) -> None:
    """Both ends' targets as the phones wrote them (after a target refresh)."""
    for dialog in (ends.to_caller, ends.to_callee):
        dialog.remote_target = _without_alias(dialog.remote_target)


def _without_alias(uri: str) -> str:
    """A Contact URI as the phone wrote it: the `alias` the proxy added for NAT removed."""
    try:
        parsed = parse_uri(uri)
    except ParseError:
        return uri
    if parsed.params.pop("alias", None) is None:
        return uri
    return str(parsed)
