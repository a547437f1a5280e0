"""The presence server inside the SIP core: SUBSCRIBE/NOTIFY (RFC 6665) for the event packages
`presence` (PIDF, RFC 3863, with RPID activities of RFC 4480) and `dialog` (RFC 4235), and
PUBLISH (RFC 3903) with entity tags.

A user's presence is composed from three sources: registrations (online while any device is
registered), calls through the proxy (on the phone while a dialog is up) and published state
(which wins over the registration-derived status while it lives). Every change reaches every
watcher at once; published changes at most once per `min_interval` per watcher (RFC 3856 §6.6),
then the latest state. Who may watch whom is `may_see` (the office's roles and businesses).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple
from xml.sax.saxutils import escape, quoteattr

from heimbuero.events import (
    BindingChanged,
    CallAnswered,
    CallEnded,
    PhoneAlerting,
    PresenceChanged,
)
from heimbuero.office.visibility import may_see
from heimbuero.sip import transaction as tx
from heimbuero.sip.dialog import Dialog, DialogState
from heimbuero.sip.message import ParseError, Request, Response, parse_address
from heimbuero.sip.peer import Peer

if TYPE_CHECKING:
    from .core import SipCore

log = logging.getLogger("heimbuero.presence")

PACKAGES = ("presence", "dialog", "message-summary")
ALLOW_EVENTS = "presence, dialog, message-summary"
MESSAGE_SUMMARY = "application/simple-message-summary"
PIDF = "application/pidf+xml"
DIALOG_INFO = "application/dialog-info+xml"
ACTIVITIES = ("away", "busy", "on-the-phone", "meeting", "vacation")
MAX_BODY = 16_384  # bytes of a published document we parse

_NS_PIDF = "{urn:ietf:params:xml:ns:pidf}"
_NS_RPID = "{urn:ietf:params:xml:ns:pidf:rpid}"


@dataclass(frozen=True, slots=True)
class PresenceSettings:
    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 3600
    min_interval: float = 5.0  # seconds between NOTIFYs of published changes per watcher
    max_subscriptions_per_user: int = 100
    max_watchers_per_presentity: int = 2000


@dataclass(frozen=True, slots=True)
class PresenceState:
    """What watchers see of one user."""

    user: str
    online: bool  # PIDF basic open/closed
    activity: str | None = None  # RPID activity, if any
    note: str | None = None
    registered: bool = False
    on_the_phone: bool = False
    published: bool = False
    agent_status: str = "available"  # an agent's own status (domain.model.AGENT_STATUSES)

    @property
    def status(self) -> str:
        """One word for humans and the HTTP API: online, offline or the activity."""
        if self.activity:
            return self.activity
        return "online" if self.online else "offline"

    def as_dict(self) -> dict[str, object]:
        return {
            "user": self.user, "status": self.status, "basic": "open" if self.online else "closed",
            "activity": self.activity, "note": self.note, "registered": self.registered,
            "on_the_phone": self.on_the_phone, "published": self.published,
            "agent_status": self.agent_status,
        }  # fmt: skip


@dataclass(slots=True)
class Publication:
    """Published state of one user under one entity tag (RFC 3903)."""

    user: str
    etag: str
    expires_at: float
    basic: str | None  # "open" | "closed" | None
    activity: str | None
    note: str | None
    body: bytes = b""
    timer: list[object] | None = field(default=None, repr=False)


@dataclass(slots=True)
class Subscription:
    """One subscription dialog, the server side (RFC 6665 notifier)."""

    key: str  # Call-ID + our tag
    package: str
    watcher: str
    presentity: str
    call_id: str
    local_from: str  # the SUBSCRIBE's To with our tag: the NOTIFY's From
    remote_to: str  # the SUBSCRIBE's From: the NOTIFY's To
    remote_target: str  # the watcher's Contact URI: the NOTIFY's Request-URI
    dest: Peer  # where the SUBSCRIBE came from (NAT: that is where NOTIFYs go)
    expires_at: float
    route_set: tuple[str, ...] = ()  # the SUBSCRIBE's Record-Route: the NOTIFY's Route
    event_id: str | None = None
    local_cseq: int = 0
    remote_cseq: int = 0
    version: int = 0  # dialog-info version
    last_notify: float = float("-inf")
    terminated: bool = False
    expiry_timer: list[object] | None = field(default=None, repr=False)
    rate_timer: list[object] | None = field(default=None, repr=False)


_SUB_FIELDS = (
    "key", "package", "watcher", "presentity", "call_id", "local_from", "remote_to",
    "remote_target", "expires_at", "event_id", "local_cseq", "remote_cseq", "version",
)  # fmt: skip


def subscription_key(call_id: str, tag: str | None) -> str:
    """A subscription's key: its Call-ID and our tag, joined by a space (which neither can
    hold; NUL, used before, is refused by PostgreSQL in text)."""
    return f"{call_id} {tag or ''}"


def subscription_record(sub: Subscription) -> dict[str, Any]:
    """A subscription as plain JSON data for the store."""
    out: dict[str, Any] = {f: getattr(sub, f) for f in _SUB_FIELDS}
    out["dest"] = list(sub.dest)
    out["route_set"] = list(sub.route_set)
    return out


def subscription_from_record(d: dict[str, Any]) -> Subscription:
    kw = {f: d[f] for f in _SUB_FIELDS}
    kw["key"] = str(kw["key"]).replace("\0", " ")  # stored by a version that joined with NUL
    dest = d["dest"]
    route_set = tuple(str(r) for r in d.get("route_set") or ())
    return Subscription(
        dest=Peer(str(dest[0]), str(dest[1]), int(dest[2])), route_set=route_set, **kw
    )


def publication_record(pub: Publication) -> dict[str, Any]:
    return {
        "user": pub.user, "etag": pub.etag, "expires_at": pub.expires_at, "basic": pub.basic,
        "activity": pub.activity, "note": pub.note,
        "body": pub.body.decode("utf-8", "replace"),
    }  # fmt: skip


def publication_from_record(d: dict[str, Any]) -> Publication:
    return Publication(
        d["user"], d["etag"], float(d["expires_at"]), d.get("basic"), d.get("activity"),
        d.get("note"), str(d.get("body", "")).encode(),
    )  # fmt: skip


# ---------------------------------------------------------------------------- documents


def parse_pidf(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(basic, activity, note) of a PIDF document; ValueError when it is none."""
    if len(body) > MAX_BODY:
        raise ValueError("document too large")
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise ValueError("DTDs are not accepted")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ValueError(f"not XML: {exc}") from None
    if root.tag != f"{_NS_PIDF}presence":
        raise ValueError("not a PIDF presence document")
    basic = None
    for el in root.iter(f"{_NS_PIDF}basic"):
        text = (el.text or "").strip().lower()
        if text in ("open", "closed"):
            basic = "open" if text == "open" or basic == "open" else "closed"
    activity = None
    for acts in root.iter(f"{_NS_RPID}activities"):
        for child in acts:
            name = child.tag.rsplit("}", 1)[-1]
            if name in ACTIVITIES:
                activity = name
                break
        if activity:
            break
    note = None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "note" and (el.text or "").strip():
            note = el.text.strip()[:200]  # type: ignore[union-attr]
            break
    return basic, activity, note


def pidf(entity: str, state: PresenceState) -> bytes:
    """The PIDF document of `state`; RPID with the `rpid:` prefix (baresip matches it)."""
    basic = "open" if state.online else "closed"
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        f'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity={quoteattr(entity)}>\n'
        f'<tuple id="t1"><status><basic>{basic}</basic></status>'
        f"<contact>{escape(entity)}</contact></tuple>\n"
    ]
    if state.note:  # RFC 3863's schema: tuples, then notes, then extensions (the person)
        parts.append(f"<note>{escape(state.note)}</note>\n")
    if state.activity:
        parts.append(
            f'<dm:person id="p1"><rpid:activities><rpid:{state.activity}/></rpid:activities>'
            "</dm:person>\n"
        )
    parts.append("</presence>\n")
    return "".join(parts).encode()


class DialogEntry(NamedTuple):
    """One dialog of a dialog-info document. A ringing call (`early`) names the caller and
    the early dialog's tags (from the entity's side: local = its phone's To tag, remote = the
    caller's From tag), which is what a desk phone needs to show and pick up the call."""

    call_id: str
    state: str  # early | confirmed | terminated
    direction: str | None = None  # recipient | initiator
    local_tag: str | None = None
    remote_tag: str | None = None
    remote: str | None = None  # the other party's URI
    remote_display: str | None = None


def dialog_info(entity: str, version: int, calls: Iterable[DialogEntry]) -> bytes:
    """A full dialog-info document (RFC 4235)."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" '
        f'state="full" entity={quoteattr(entity)}>\n'
    ]
    for d in calls:
        did = hashlib.sha1(d.call_id.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        attrs = f" call-id={quoteattr(d.call_id)}"
        for name, value in (("local-tag", d.local_tag), ("remote-tag", d.remote_tag),
                            ("direction", d.direction)):  # fmt: skip
            if value:
                attrs += f" {name}={quoteattr(value)}"
        remote = ""
        if d.remote:
            display = f" display={quoteattr(d.remote_display)}" if d.remote_display else ""
            remote = (
                f"<remote><identity{display}>{escape(d.remote)}</identity>"
                f"<target uri={quoteattr(d.remote)}/></remote>"
            )
        parts.append(f'<dialog id="{did}"{attrs}><state>{d.state}</state>{remote}</dialog>\n')
    parts.append("</dialog-info>\n")
    return "".join(parts).encode()


@dataclass(slots=True)
class _Ringing:
    """A call ringing at a user's phones (one or more branches of it)."""

    entry: DialogEntry
    branches: int = 1


def _display_text(display: str | None) -> str | None:
    """The display name of a From header as text (quotes and escapes removed)."""
    if not display:
        return None
    if len(display) >= 2 and display[0] == display[-1] == '"':
        out, chars = [], iter(display[1:-1])
        for ch in chars:
            out.append(next(chars, "") if ch == "\\" else ch)
        display = "".join(out)
    return display or None


def message_summary(account: str, new: int, old: int) -> bytes:
    """The `application/simple-message-summary` body (RFC 3842 §5.2)."""
    return (
        f"Messages-Waiting: {'yes' if new else 'no'}\r\n"
        f"Message-Account: {account}\r\n"
        f"Voice-Message: {new}/{old}\r\n"
    ).encode()


# ---------------------------------------------------------------------------- the server


class PresenceServer:
    """Subscriptions, publications and the composed presence of every user, sans-IO."""

    def __init__(self, core: SipCore, settings: PresenceSettings | None = None) -> None:
        self.core = core
        self.settings = settings or PresenceSettings()
        self.subs: dict[str, Subscription] = {}
        self.by_presentity: dict[str, dict[str, Subscription]] = {}
        self.by_watcher: dict[str, set[str]] = {}
        self.pubs: dict[str, Publication] = {}  # etag -> publication
        self.pubs_by_user: dict[str, dict[str, Publication]] = {}
        self.calls: dict[str, tuple[str, ...]] = {}  # Call-ID -> our users in the call
        self.in_call: dict[str, set[str]] = {}  # user -> Call-IDs
        self.ringing: dict[str, dict[str, _Ringing]] = {}  # user -> Call-ID -> ringing call
        self.last: dict[str, PresenceState] = {}
        self.stats = {"notify_sent": 0}
        self._dirty_subs: set[str] = set()
        self._gone_subs: set[str] = set()
        self._dirty_pubs: set[str] = set()
        self._gone_pubs: set[str] = set()
        self._tags = itertools.count(1)
        # message waiting (RFC 3842): (new, old) voicemails of a user's mailbox; None: the
        # package is refused (489) as before the server had voicemail
        self.mailbox: Callable[[str], tuple[int, int]] | None = None
        core.handle("SUBSCRIBE", self)
        core.handle("PUBLISH", self)
        events = core.events
        events.subscribe(BindingChanged, self.on_bindings_changed)
        events.subscribe(CallAnswered, self.on_call_answered)
        events.subscribe(CallEnded, self.on_call_ended)
        events.subscribe(PhoneAlerting, self.on_phone_alerting)

    # ------------------------------------------------------------------ who is who

    def visible(self, watcher: str, presentity: str, now: float) -> bool:
        person = self.core.person
        return may_see(watcher, person(watcher, now), presentity, person(presentity, now))

    def known_users(self) -> list[str]:
        calls = self.core.calls
        names = set(calls.directory.users) if calls is not None else set()
        names.update(self.core.location.aors())
        return sorted(names)

    # ------------------------------------------------------------------ composition

    def state(self, user: str, now: float) -> PresenceState:
        registered = self.core.location.is_registered(user, now)
        on_phone = bool(self.in_call.get(user))
        pub = None
        for p in (self.pubs_by_user.get(user) or {}).values():
            if p.expires_at > now and (pub is None or p.expires_at > pub.expires_at):
                pub = p
        online = registered or on_phone
        activity = None
        note = None
        if pub is not None:
            if pub.basic is not None:
                online = pub.basic == "open"
            activity, note = pub.activity, pub.note
        calls = self.core.calls
        account = calls.directory.users.get(user) if calls is not None else None
        agent_status = account.status if account is not None else "available"
        if agent_status == "off":  # end of shift
            online, activity = False, None
        elif agent_status == "dnd":
            activity = "busy"
        elif agent_status in ("break", "away"):
            activity, note = "away", note or ("Pause" if agent_status == "break" else None)
        if on_phone:
            activity = "on-the-phone"
        return PresenceState(user, online, activity, note, registered, on_phone, pub is not None,
                             agent_status)  # fmt: skip

    def entity(self, user: str) -> str:
        return f"sip:{user}@{self.core.settings.domain}"

    # ------------------------------------------------------------------ requests

    def wants(self, req: Request) -> bool:
        """Whether a SUBSCRIBE or PUBLISH is for the presence server, not to be proxied."""
        event = _event(req)[0]
        if req.method == "SUBSCRIBE" and req.to.tag:
            key = subscription_key(req.call_id, req.to.tag)
            return key in self.subs or (event in PACKAGES and self.core.is_local_uri(req.ruri))
        if event not in PACKAGES and req.method == "SUBSCRIBE":
            return False
        uri = req.ruri
        return bool(uri.user) and (
            self.core.is_local_uri(uri) or uri.host == self.core.settings.domain
        )

    def on_request(self, txn: tx.ServerTransaction, now: float) -> None:
        if txn.request.method == "PUBLISH":
            self._on_publish(txn, now)
        else:
            self._on_subscribe(txn, now)

    def _reject(self, txn: tx.ServerTransaction, status: int, now: float, reason: str | None = None,
                headers: list[tuple[str, str]] | None = None) -> None:  # fmt: skip
        self.core.respond(txn, status, now, reason=reason, headers=headers)

    def _expires(self, req: Request) -> int | None:
        raw = req.get("expires")
        if raw is None:
            return self.settings.default_expires
        raw = raw.strip()
        if not raw.isdigit():
            return None
        return min(int(raw), self.settings.max_expires)

    def _on_subscribe(self, txn: tx.ServerTransaction, now: float) -> None:
        req = txn.request
        event, event_id = _event(req)
        if event not in PACKAGES or (event == "message-summary" and self.mailbox is None):
            self._reject(txn, 489, now, "Bad Event", [("Allow-Events", ALLOW_EVENTS)])
            return
        watcher = ""
        if not req.to.tag:
            authenticated = self.core.authenticate(txn, now, proxy=True)
            if authenticated is None:
                return
            watcher = authenticated
            from_user = req.from_.uri.user
            if from_user is None or from_user.lower() != watcher:
                self._reject(txn, 403, now, "From does not match the authenticated user")
                return
        expires = self._expires(req)
        if expires is None:
            self._reject(txn, 400, now, "Bad Expires")
            return
        if 0 < expires < self.settings.min_expires:
            self._reject(txn, 423, now, headers=[("Min-Expires", str(self.settings.min_expires))])
            return
        if req.to.tag:
            self._resubscribe(txn, event, expires, now)
            return
        presentity = (req.ruri.user or "").lower()
        if event == "message-summary" and presentity != watcher:
            self._reject(txn, 403, now)  # message waiting: only of one's own mailbox
            return
        if not self.visible(watcher, presentity, now):
            self._reject(txn, 403, now)  # forbidden and unknown look the same
            return
        if len(self.by_watcher.get(watcher, ())) >= self.settings.max_subscriptions_per_user:
            self._reject(txn, 403, now, "Too many subscriptions for this user")
            return
        watchers = self.by_presentity.get(presentity, {})
        if len(watchers) >= self.settings.max_watchers_per_presentity:
            self._reject(txn, 503, now, "Too many watchers of this user",
                         [("Retry-After", "60")])  # fmt: skip
            return
        contact = req.get("contact")
        try:
            target = parse_address(contact).uri if contact else None
        except ParseError:
            target = None
        if target is None or not target.is_sip:
            self._reject(txn, 400, now, "SUBSCRIBE needs a Contact")
            return
        tag = _tag(req, next(self._tags))
        # RFC 3261 §12.1.1: the answer that makes the dialog carries the request's
        # Record-Route, in order, so the watcher's refreshes take the same route set.
        record_route = [("Record-Route", rr) for rr in req.get_all("record-route")]
        resp = self.core.make_response(req, 200, headers=[
            *record_route, ("Expires", str(expires)), ("Contact", f"<{self._contact(txn)}>"),
            ("Allow-Events", ALLOW_EVENTS),
        ], to_tag=tag)  # fmt: skip
        self.core.layer.send_response(txn, resp, now)
        sub = Subscription(
            key=subscription_key(req.call_id, tag), package=event, watcher=watcher,
            presentity=presentity,
            call_id=req.call_id, local_from=resp.get("to") or "", remote_to=req.get("from") or "",
            remote_target=str(target), dest=txn.source,  # type: ignore[arg-type]
            expires_at=now + expires, event_id=event_id, remote_cseq=req.cseq[0],
            route_set=tuple(req.get_all("record-route")),
        )  # fmt: skip
        log.info("%s subscribed to %s of %s for %ds", watcher, event, presentity, expires)
        if expires == 0:  # a fetch: one NOTIFY and done
            self._send_notify(sub, now, terminated="timeout")
            return
        self._add(sub, now)
        self._send_notify(sub, now)

    def _resubscribe(self, txn: tx.ServerTransaction, event: str, expires: int, now: float) -> None:
        req = txn.request
        sub = self.subs.get(subscription_key(req.call_id, req.to.tag))
        if sub is None or sub.terminated or sub.package != event:
            self._reject(txn, 481, now, "Subscription does not exist")
            return
        if req.cseq[0] <= sub.remote_cseq:
            self._reject(txn, 500, now, "CSeq out of order")
            return
        sub.remote_cseq = req.cseq[0]
        sub.dest = txn.source  # type: ignore[assignment]
        headers = [("Expires", str(expires)), ("Contact", f"<{self._contact(txn)}>"),
                   ("Allow-Events", ALLOW_EVENTS)]  # fmt: skip
        self.core.respond(txn, 200, now, headers=headers)
        if expires == 0:
            self._end(sub, now, "timeout")
            return
        sub.expires_at = now + expires
        self._arm_expiry(sub)
        self._dirty_subs.add(sub.key)
        self._send_notify(sub, now)

    def _contact(self, txn: tx.ServerTransaction) -> str:
        transport, source_host = txn.source[0], txn.source[1]  # type: ignore[index]
        host, port = self.core.local_address(transport, source_host)
        t = "" if transport == "udp" else f";transport={transport}"
        return f"sip:{host}:{port}{t}"

    def _add(self, sub: Subscription, now: float) -> None:
        self.subs[sub.key] = sub
        self.by_presentity.setdefault(sub.presentity, {})[sub.key] = sub
        self.by_watcher.setdefault(sub.watcher, set()).add(sub.key)
        self._arm_expiry(sub)
        self._dirty_subs.add(sub.key)
        self._gone_subs.discard(sub.key)

    def _arm_expiry(self, sub: Subscription) -> None:
        timers = self.core.timers
        timers.cancel(sub.expiry_timer)
        sub.expiry_timer = timers.call_at(sub.expires_at, functools.partial(self._expired, sub))

    def _expired(self, sub: Subscription, now: float) -> None:
        sub.expiry_timer = None
        if not sub.terminated:
            self._end(sub, now, "timeout")

    def _remove(self, sub: Subscription) -> None:
        sub.terminated = True
        timers = self.core.timers
        timers.cancel(sub.expiry_timer)
        timers.cancel(sub.rate_timer)
        sub.expiry_timer = sub.rate_timer = None
        self.subs.pop(sub.key, None)
        watchers = self.by_presentity.get(sub.presentity)
        if watchers is not None:
            watchers.pop(sub.key, None)
            if not watchers:
                del self.by_presentity[sub.presentity]
        mine = self.by_watcher.get(sub.watcher)
        if mine is not None:
            mine.discard(sub.key)
            if not mine:
                del self.by_watcher[sub.watcher]
        self._dirty_subs.discard(sub.key)
        self._gone_subs.add(sub.key)

    def _end(self, sub: Subscription, now: float, reason: str) -> None:
        """End a subscription with a final NOTIFY (Subscription-State terminated)."""
        self._remove(sub)
        self._send_notify(sub, now, terminated=reason)

    # ------------------------------------------------------------------ NOTIFY

    def dialogs(self, user: str) -> list[DialogEntry]:
        """The user's calls for the dialog package: answered ones, then ringing ones."""
        ids = self.in_call.get(user) or set()
        out = [DialogEntry(c, "confirmed") for c in sorted(ids)]
        ringing = self.ringing.get(user) or {}
        out.extend(r.entry for c, r in sorted(ringing.items()) if c not in ids)
        return out

    def _send_notify(
        self, sub: Subscription, now: float, terminated: str | None = None,
        document: bytes | None = None, ended: Iterable[DialogEntry] = (),
    ) -> None:  # fmt: skip
        """NOTIFY one watcher; `document` is the presentity's PIDF when the caller made it
        already (the same for every watcher of one change); `ended`: dialogs that just ended,
        shown once as `terminated` to the dialog package."""
        core = self.core
        sub.last_notify = now
        if terminated is not None:
            state = f"terminated;reason={terminated}"
        else:
            state = f"active;expires={max(0, int(sub.expires_at - now + 0.5))}"
        entity = self.entity(sub.presentity)
        if sub.package == "presence":
            body = document or pidf(entity, self.state(sub.presentity, now))
            ctype = PIDF
        elif sub.package == "message-summary":
            new, old = self.mailbox(sub.presentity) if self.mailbox is not None else (0, 0)
            body = message_summary(entity, new, old)
            ctype = MESSAGE_SUMMARY
        else:
            sub.version += 1
            body = dialog_info(entity, sub.version - 1, [*self.dialogs(sub.presentity), *ended])
            ctype = DIALOG_INFO
        dest = sub.dest
        host, port = core.local_address(dest[0], dest[1])
        event = sub.package + (f";id={sub.event_id}" if sub.event_id else "")
        dialog = _dialog(sub)
        if not sub.terminated:
            self._dirty_subs.add(sub.key)
        try:
            req = dialog.create_request(
                "NOTIFY",
                contact=f"sip:{host}:{port}" + (f";transport={dest[0]}" if dest.reliable else ""),
                headers=(("Event", event), ("Subscription-State", state), ("Content-Type", ctype)),
                body=body,
            )
            sub.local_cseq = dialog.local_seq or 0
            core.send_request(req, dest, _NotifyOwner(self, sub), now)
        except ValueError:
            log.warning("could not send NOTIFY for %s", sub.key)
            return
        self.stats["notify_sent"] += 1

    def on_response(self, sub: Subscription, resp: Response, now: float) -> None:
        """The answer to a NOTIFY: 481 (or another failure that ends it) ends the dialog."""
        if resp.status < 200:
            return
        ends = resp.status in (481, 408, 480) or (resp.status >= 500 and resp.status != 503)
        if ends and not sub.terminated:
            log.info("NOTIFY for %s answered %d: subscription ended", sub.key, resp.status)
            self._remove(sub)

    def on_failure(self, sub: Subscription, now: float) -> None:
        """A NOTIFY timed out or could not be sent: the subscription ends (RFC 6665 §4.2.2)."""
        if not sub.terminated:
            log.info("NOTIFY for %s got no answer: subscription ended", sub.key)
            self._remove(sub)

    def changed(
        self, user: str, now: float, source: str = "registration",
        ended: Iterable[DialogEntry] = (),
    ) -> None:  # fmt: skip
        """Tell every watcher of `user` its new state. `source` is registration, call or
        publish; published changes reach each watcher at most once per `min_interval`.
        `ended`: the user's dialogs that just ended (source call)."""
        state = self.state(user, now)
        old = self.last.get(user)
        self.last[user] = state
        if old != state:
            events = self.core.events
            if events.has_subscribers(PresenceChanged):  # (the live HTTP streams)
                events.publish(PresenceChanged(now, user, state.as_dict()))
        subs = self.by_presentity.get(user)
        if not subs:
            return  # nobody watches: the common case on every call, decided at once
        interval = self.settings.min_interval
        document = pidf(self.entity(user), state)
        for sub in list(subs.values()):
            if sub.package == "message-summary":
                continue  # (mailbox_changed)
            if sub.package == "dialog":
                if source == "call":
                    self._send_notify(sub, now, ended=ended)
                continue
            if old == state:
                continue
            if source == "publish" and now - sub.last_notify < interval:
                if sub.rate_timer is None:
                    sub.rate_timer = self.core.timers.call_at(
                        sub.last_notify + interval, functools.partial(self._rate_due, sub)
                    )
                continue
            self.core.timers.cancel(sub.rate_timer)
            sub.rate_timer = None
            self._send_notify(sub, now, document=document)

    def mailbox_changed(self, user: str, now: float) -> bool:
        """NOTIFY `user`'s message-summary subscribers; False when there are none (then the
        caller sends the unsolicited NOTIFY, RFC 3842 §4)."""
        subs = [s for s in (self.by_presentity.get(user) or {}).values()
                if s.package == "message-summary"]  # fmt: skip
        for s in subs:
            self._send_notify(s, now)
        return bool(subs)

    def _rate_due(self, sub: Subscription, now: float) -> None:
        sub.rate_timer = None
        if not sub.terminated:
            self._send_notify(sub, now)

    # ------------------------------------------------------------------ sources of state

    def on_bindings_changed(self, event: BindingChanged) -> None:
        for user in event.users():
            self.changed(user, event.at)

    def on_call_answered(self, event: CallAnswered) -> None:
        self.call_answered(event.call_id, event.users, event.at)

    def on_call_ended(self, event: CallEnded) -> None:
        self.call_ended(event.call_id, event.at)

    def call_answered(self, call_id: str, users: Iterable[str], now: float) -> None:
        users = tuple(sorted({u for u in users if u}))
        if not users or call_id in self.calls:
            return
        self.calls[call_id] = users
        for u in users:
            self.in_call.setdefault(u, set()).add(call_id)
        for u in users:
            self.changed(u, now, "call")

    def call_ended(self, call_id: str, now: float) -> None:
        users = self.calls.pop(call_id, None)
        if users is None:
            return
        for u in users:
            ids = self.in_call.get(u)
            if ids is not None:
                ids.discard(call_id)
                if not ids:
                    del self.in_call[u]
        ended = (DialogEntry(call_id, "terminated"),)
        for u in users:
            self.changed(u, now, "call", ended)

    def on_phone_alerting(self, event: PhoneAlerting) -> None:
        """A call starts or stops ringing at a user's phone (one branch of it): `early` in
        the user's dialog-info while any branch rings; `terminated` once when it stops
        without the user taking it (the caller gave up, a colleague answered)."""
        user, call_id, now = event.user, event.call_id, event.at
        calls = self.ringing.setdefault(user, {})
        ring = calls.get(call_id)
        if event.ringing:
            if ring is not None:
                ring.branches += 1
                return
            entry = DialogEntry(call_id, "early", "recipient", event.to_tag, event.from_tag,
                                event.caller or None, _display_text(event.display))  # fmt: skip
            calls[call_id] = _Ringing(entry)
            if call_id not in (self.in_call.get(user) or ()):
                self.changed(user, now, "call")
            return
        if ring is None:
            return
        ring.branches -= 1
        if ring.branches > 0:
            return
        del calls[call_id]
        if not calls:
            del self.ringing[user]
        if call_id not in (self.in_call.get(user) or ()):  # (taken: it shows as confirmed)
            self.changed(user, now, "call", (ring.entry._replace(state="terminated"),))

    # ------------------------------------------------------------------ PUBLISH

    def _on_publish(self, txn: tx.ServerTransaction, now: float) -> None:
        req = txn.request
        user = self.core.authenticate(txn, now, proxy=True)
        if user is None:
            return
        if (req.ruri.user or "").lower() != user:
            self._reject(txn, 403, now, "Only the user may publish its own presence")
            return
        event = _event(req)[0]
        if event != "presence":
            self._reject(txn, 489, now, "Bad Event", [("Allow-Events", "presence")])
            return
        expires = self._expires(req)
        if expires is None:
            self._reject(txn, 400, now, "Bad Expires")
            return
        if 0 < expires < self.settings.min_expires:
            self._reject(txn, 423, now, headers=[("Min-Expires", str(self.settings.min_expires))])
            return
        match = (req.get("sip-if-match") or "").strip()
        body = req.body
        doc: tuple[str | None, str | None, str | None] | None = None
        if body:
            ctype = (req.get("content-type") or "").split(";")[0].strip().lower()
            if ctype != PIDF:
                self._reject(txn, 415, now, headers=[("Accept", PIDF)])
                return
            try:
                doc = parse_pidf(body)
            except ValueError as exc:
                self._reject(txn, 400, now, f"Bad PIDF document: {exc}")
                return
        if match:
            pub = self.pubs.get(match)
            if pub is None or pub.user != user or pub.expires_at <= now:
                self._reject(txn, 412, now, "Conditional Request Failed")
                return
            self._drop_pub(pub)
            if expires == 0:
                self.core.respond(txn, 200, now, headers=[("Expires", "0")])
                log.info("%s removed published presence", user)
                self.changed(user, now, "publish")
                return
            if doc is None:  # refresh: same document, new tag
                doc = (pub.basic, pub.activity, pub.note)
                body = pub.body
        elif doc is None:
            self._reject(txn, 400, now, "PUBLISH without SIP-If-Match needs a body")
            return
        elif expires == 0:
            self.core.respond(txn, 200, now, headers=[("Expires", "0")])
            return
        etag = secrets.token_hex(8)
        pub = Publication(user, etag, now + expires, doc[0], doc[1], doc[2], body)
        self._add_pub(pub)
        self.core.respond(txn, 200, now, headers=[("SIP-ETag", etag), ("Expires", str(expires))])
        log.info("%s published %s/%s for %ds", user, doc[0], doc[1], expires)
        self.changed(user, now, "publish")

    def _add_pub(self, pub: Publication) -> None:
        self.pubs[pub.etag] = pub
        self.pubs_by_user.setdefault(pub.user, {})[pub.etag] = pub
        pub.timer = self.core.timers.call_at(
            pub.expires_at, functools.partial(self._pub_expired, pub)
        )
        self._dirty_pubs.add(pub.etag)
        self._gone_pubs.discard(pub.etag)

    def _drop_pub(self, pub: Publication) -> None:
        self.core.timers.cancel(pub.timer)
        pub.timer = None
        self.pubs.pop(pub.etag, None)
        mine = self.pubs_by_user.get(pub.user)
        if mine is not None:
            mine.pop(pub.etag, None)
            if not mine:
                del self.pubs_by_user[pub.user]
        self._dirty_pubs.discard(pub.etag)
        self._gone_pubs.add(pub.etag)

    def _pub_expired(self, pub: Publication, now: float) -> None:
        pub.timer = None
        if self.pubs.get(pub.etag) is pub:
            self._drop_pub(pub)
            self.changed(pub.user, now, "publish")

    # ------------------------------------------------------------------ persistence

    def take_changes(self) -> tuple[list[Subscription], list[str], list[Publication], list[str]]:
        subs = [self.subs[k] for k in self._dirty_subs if k in self.subs]
        pubs = [self.pubs[k] for k in self._dirty_pubs if k in self.pubs]
        out = (subs, sorted(self._gone_subs), pubs, sorted(self._gone_pubs))
        self._dirty_subs, self._gone_subs = set(), set()
        self._dirty_pubs, self._gone_pubs = set(), set()
        return out

    def has_changes(self) -> bool:
        return bool(self._dirty_subs or self._gone_subs or self._dirty_pubs or self._gone_pubs)

    def load(self, subs: Iterable[Subscription], pubs: Iterable[Publication], now: float) -> None:
        """Subscriptions and publications kept by the last run (expired ones are skipped)."""
        for pub in pubs:
            if pub.expires_at > now:
                self._add_pub(pub)
        for sub in subs:
            if sub.expires_at > now:
                sub.local_cseq += 100  # NOTIFYs sent after the last write must stay behind
                self._add(sub, now)
        self._dirty_subs.clear()
        self._dirty_pubs.clear()

    def notify_all(self, now: float) -> None:
        """A fresh NOTIFY to every watcher (after a restart)."""
        for sub in list(self.subs.values()):
            self._send_notify(sub, now)

    def visible_states(self, watcher: str, now: float) -> list[PresenceState]:
        return [self.state(u, now) for u in self.known_users() if self.visible(watcher, u, now)]


def _dialog(sub: Subscription) -> Dialog:
    """The subscription's dialog, the notifier's side (RFC 6665 §4.2 with RFC 3261 §12)."""
    return Dialog(
        call_id=sub.call_id, local_tag="", remote_tag="", local=sub.local_from,
        remote=sub.remote_to, remote_target=sub.remote_target, route_set=sub.route_set,
        local_seq=sub.local_cseq, remote_seq=sub.remote_cseq, state=DialogState.CONFIRMED,
    )  # fmt: skip


class _NotifyOwner:
    """The owner of one NOTIFY's client transaction: its answer goes to the subscription."""

    __slots__ = ("server", "sub")

    def __init__(self, server: PresenceServer, sub: Subscription) -> None:
        self.server = server
        self.sub = sub

    def on_response(self, txn: tx.ClientTransaction, resp: Response, now: float) -> None:
        self.server.on_response(self.sub, resp, now)

    def on_timeout(self, txn: tx.ClientTransaction, now: float) -> None:
        self.server.on_failure(self.sub, now)

    def on_transport_error(self, txn: tx.ClientTransaction, now: float) -> None:
        self.server.on_failure(self.sub, now)


def _event(req: Request) -> tuple[str, str | None]:
    raw = req.get("event") or ""
    parts = [p.strip() for p in raw.split(";")]
    name = parts[0].lower()
    event_id = None
    for p in parts[1:]:
        k, _, v = p.partition("=")
        if k.strip().lower() == "id":
            event_id = v.strip()
    return name, event_id


def _tag(req: Request, n: int) -> str:
    seed = f"{req.call_id}\0{req.from_.tag}\0{n}".encode("utf-8", "surrogateescape")
    return "p" + hashlib.sha1(seed, usedforsecurity=False).hexdigest()[:12]


def enable_presence(core: SipCore, settings: PresenceSettings | None = None) -> PresenceServer:
    """Attach a presence server to `core`: it gets SUBSCRIBE/PUBLISH for our users and hears of
    registration changes."""
    server = PresenceServer(core, settings)
    core.presence = server
    return server
