"""The messenger inside the SIP core: MESSAGE (RFC 3428) between our users, with history and
store-and-forward, sans-IO.

A MESSAGE from an authenticated user to another user is checked (size, type, who may message
whom, the CPIM sender, files it shares) and then:

- recipient online and nothing older waiting for it: relayed through the proxy to all its
  registered devices at once (a `MessagePlan`); the first 2xx goes back to the sender. When no
  device accepts within `delivery_timeout` (or every device answers 408/480), the message is
  stored and the sender gets 202 Accepted.
- recipient offline, or older messages still waiting: stored at once (202).

Stored messages are sent by the server itself, oldest first and one at a time, to every device
of the recipient when one of them registers (a refresh retries too), each as a new MESSAGE
with the original sender in From and P-Asserted-Identity and its time in Date. A message
leaves the queue on the first 2xx, so it is delivered once; temporary failures (timeout,
408/480/5xx) keep it for the next registration, other refusals mark it failed; after
`store_expiry` it expires. Every message and what became of it goes to the history through
`MessageLog`; IMDN reports (RFC 5438) are relayed like messages and also mark the message they
report on as delivered or displayed.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from heimbuero.domain.model import UserTarget
from heimbuero.events import (
    BindingChanged,
    MessageDelivered,
    MessageStateChanged,
    MessageStored,
)
from heimbuero.office.messaging import (
    ACCEPTED_TYPES,
    CONTENT_CODINGS,
    MessageContent,
    MessageError,
    decode_body,
    describe,
    media_type,
)
from heimbuero.office.visibility import STAFF, may_see
from heimbuero.sip import transaction as tx
from heimbuero.sip.message import Request, Response
from heimbuero.sip.peer import Peer

from .proxy import Target

if TYPE_CHECKING:
    from .core import SipCore

log = logging.getLogger("heimbuero.messages")

TEMPORARY = frozenset({408, 480, 500, 503, 504})


@dataclass(frozen=True, slots=True)
class MessagingSettings:
    max_bytes: int = 16384
    delivery_timeout: float = 10.0
    store_expiry: float = 7 * 86400.0
    rate_per_minute: int = 120  # messages one user may send per minute (typing notices aside)
    max_stored_per_user: int = 1000  # messages waiting for one recipient


class MessageRejected(Exception):
    """A message that is not accepted: SIP status and reason (HTTP maps them too)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


# Runs a blocking function off the event loop, then calls back on it with (result, now);
# the callback gets None when the function failed; its caller moves what the callback sent to
# the network.
Defer = Callable[[Callable[[], Any], Callable[[Any, float], None]], None]


def _run_now(fn: Callable[[], Any], then: Callable[[Any, float], None]) -> None:
    """Defer without a loop (tests): run at once."""
    then(fn(), time.time())


class FileLinks(Protocol):
    """The file-transfer service, as messages that announce files see it."""

    def file_id_of(self, url: str) -> str | None: ...

    def grant(self, file_id: str, sender: str, recipient: str) -> bool: ...


class Message:
    """One message on its way, as the messenger holds it."""

    __slots__ = (
        "id", "sender", "recipient", "created_at", "content_type", "body", "expires_at",
        "content", "file_id", "origin", "state",
    )  # fmt: skip

    def __init__(
        self, id: str, sender: str, recipient: str, created_at: float, content_type: str,
        body: bytes, expires_at: float, content: MessageContent, file_id: str | None,
        origin: str, state: str = "sending",
    ) -> None:  # fmt: skip
        self.id = id
        self.sender = sender
        self.recipient = recipient
        self.created_at = created_at
        self.content_type = content_type
        self.body = body
        self.expires_at = expires_at
        self.content = content
        self.file_id = file_id
        self.origin = origin
        self.state = state

    def summary(self) -> dict[str, Any]:
        """What the HTTP live stream tells about it."""
        return {
            "id": self.id, "sender": self.sender, "recipient": self.recipient,
            "created_at": _iso(self.created_at), "content_type": self.content_type,
            "kind": self.content.kind, "text": self.content.text, "state": self.state,
            "file_id": self.file_id, "origin": self.origin,
        }  # fmt: skip


class MessagePlan:
    """Relaying one MESSAGE to the recipient's devices (the proxy's PlanRunner): one step of
    every device, `delivery_timeout` long; nobody accepting means storing it (202)."""

    def __init__(
        self, messenger: Messenger, message: Message, targets: list[Target], timeout: float
    ) -> None:
        self.messenger = messenger
        self.message = message
        self.targets: list[Target] | None = targets
        self.timeout = timeout

    def next_step(self, now: float) -> tuple[list[Target], float] | None:
        targets, self.targets = self.targets, None
        return None if targets is None else (targets, self.timeout)

    def answered(self, target: Target, now: float) -> None:
        self.messenger.finished(self.message, "delivered", now)

    def answered_late(self, target: Target, now: float) -> None:
        if self.message.state == "queued":
            self.messenger.delivered_late(self.message, now)

    def failed(
        self,
        status: int,
        now: float,
        *,
        cancelled: bool = False,
        stopped: bool = False,
        unheard: bool = False,
    ) -> None:
        if status == 202:
            self.messenger.enqueue(self.message, now)
        else:
            self.messenger.finished(self.message, "failed", now)

    def final_hint(self) -> tuple[int, str, list[tuple[str, str]]] | None:
        return 202, "Accepted: stored for delivery", []


class Delivery:
    """A stored message the server is sending to the recipient's devices; the owner of those
    MESSAGE transactions (it hands their outcome to the messenger)."""

    __slots__ = ("messenger", "message", "open", "statuses", "done")

    def __init__(self, messenger: Messenger, message: Message) -> None:
        self.messenger = messenger
        self.message = message
        self.open: set[tx.ClientTransaction] = set()
        self.statuses: list[int] = []
        self.done = False

    def on_response(self, txn: tx.ClientTransaction, resp: Response, now: float) -> None:
        self.messenger.on_response(self, txn, resp, now)

    def on_timeout(self, txn: tx.ClientTransaction, now: float) -> None:
        self.messenger.on_failure(self, txn, now)

    def on_transport_error(self, txn: tx.ClientTransaction, now: float) -> None:
        self.messenger.on_failure(self, txn, now)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def _user_of(uri: str) -> str | None:
    scheme, _, rest = uri.partition(":")
    if scheme.lower() not in ("sip", "sips", "im", "pres") or "@" not in rest:
        return None
    return rest.split("@", 1)[0].lower()


class Messenger:
    """MESSAGE handling, the queue of stored messages, and their delivery."""

    def __init__(
        self,
        core: SipCore,
        settings: MessagingSettings,
        log_op: Callable[[tuple[Any, ...]], None],
        files: FileLinks | None = None,
        defer: Defer | None = None,
    ) -> None:
        self.core = core
        self.settings = settings
        self.log_op = log_op
        self.files = files
        self.defer: Defer = defer or _run_now
        self.queues: dict[str, deque[Message]] = {}
        self.inflight: dict[str, Delivery] = {}
        self._sent: dict[str, deque[float]] = {}  # send times per user, the last minute
        self.stats = {"received": 0, "relayed": 0, "stored": 0, "delivered": 0, "expired": 0}
        core.handle_authenticated("MESSAGE", self)
        core.events.subscribe(BindingChanged, self.on_bindings_changed)

    # ------------------------------------------------------------------ incoming MESSAGE

    def wants(self, req: Request) -> bool:
        """A MESSAGE outside a dialog to one of our users."""
        uri = req.ruri
        return (
            req.method == "MESSAGE"
            and bool(uri.user)
            and not req.to.tag
            and not req.get("route")
            and self.core.is_local_uri(uri)
        )

    def on_request(self, txn: tx.ServerTransaction, sender: str, now: float) -> None:
        """A MESSAGE from the authenticated `sender`."""
        core = self.core
        req = txn.request
        self.stats["received"] += 1
        recipient = (req.ruri.user or "").lower()
        if core.gruus.is_gruu(req.ruri):
            # RFC 5627: a GRUU names one device of a user; the messenger keeps one conversation
            # per user, so a message to a GRUU is its user's (every device and the portal).
            gruu = core.gruus.resolve(req.ruri)
            if isinstance(gruu, tuple):
                core.respond(txn, gruu[0], now, reason=gruu[1])
                return
            recipient = gruu.aor
        ctype = req.get("content-type") or ""
        try:
            body = self._decoded(req)
            message, shared = self._accept(sender, recipient, ctype, body, now, "sip")
        except MessageRejected as exc:
            headers = None
            if exc.status == 415:
                headers = [("Accept", ", ".join(ACCEPTED_TYPES)),
                           ("Accept-Encoding", ", ".join(CONTENT_CODINGS))]  # fmt: skip
            if exc.status == 503:
                headers = [("Retry-After", "60")]
            log.info("MESSAGE %s -> %s refused: %d %s", sender, recipient, exc.status, exc.reason)
            core.respond(txn, exc.status, now, reason=exc.reason, headers=headers)
            return
        if message.content.kind == "composing":
            # Typing notices are for the moment: relayed to online devices, never stored.
            core.proxy.route_request(txn, None, now)
            return
        if not shared:
            self._relay(txn, message, now)
            return

        def granted(ok: bool | None, at: float) -> None:
            if txn.state not in (tx.State.TRYING, tx.State.PROCEEDING):
                return  # the server stopped meanwhile
            if ok:
                self._relay(txn, message, at)
            elif ok is None:
                core.respond(txn, 500, at, reason="Could not share the file")
            else:
                reason = "The announced file is not the sender's to share"
                core.respond(txn, 403, at, reason=reason)

        # The grant writes to the store: off the event loop, the MESSAGE waits for it.
        self.defer(functools.partial(self.grant, message, shared), granted)

    def _decoded(self, req: Request) -> bytes:
        """The body as its content type reads it. Relayed copies keep the body as sent; stored
        and later re-sent ones carry the decoded body (without Content-Encoding)."""
        coding = req.get("content-encoding")
        if not coding:
            return req.body
        limit = self.settings.max_bytes
        try:
            return decode_body(coding, req.body, limit)
        except MessageError as exc:
            raise MessageRejected(415, str(exc)[:100]) from None
        except OverflowError:
            raise MessageRejected(413, f"Message too large (at most {limit} bytes)") from None

    def _relay(self, txn: tx.ServerTransaction, message: Message, now: float) -> None:
        """Send a checked MESSAGE on: to the recipient's devices, or into its queue."""
        core = self.core
        req = txn.request
        sender, recipient = message.sender, message.recipient
        targets = core.proxy.device_targets(recipient, now)
        store = recipient in self.queues or recipient in self.inflight or not targets
        if store and self._full(recipient):
            core.respond(txn, 480, now, reason="Too many messages waiting for this user")
            return
        self._log_new(message)
        req.remove("p-asserted-identity")
        req.add("P-Asserted-Identity", f"<sip:{sender}@{core.settings.domain}>")
        if store:
            self.enqueue(message, now)
            self._accepted_when_stored(txn, message, now)
            self.kick(recipient, now)
            return
        self.stats["relayed"] += 1
        plan = MessagePlan(
            self,
            message,
            [Target(t.uri, t.dest, UserTarget(recipient), route=t.route) for t in targets],
            self.settings.delivery_timeout,
        )
        core.proxy.execute_plan(txn, plan, now, record_route=False)

    def _accepted_when_stored(
        self, txn: tx.ServerTransaction, message: Message, now: float
    ) -> None:
        """Answer 202 once the stored message is committed; when the commit failed, 500 and the
        message leaves the queue (the sender sends it again, so it must not arrive twice)."""
        core = self.core

        def answer(ok: bool, at: float) -> None:
            if not ok:
                self.withdraw(message)
            if txn.state not in (tx.State.TRYING, tx.State.PROCEEDING):
                return
            if ok:
                core.respond(txn, 202, at, reason="Accepted: stored for delivery")
            else:
                log.error("message %s could not be stored: answering 500", message.id)
                core.respond(txn, 500, at, reason="The message could not be stored")

        core.after_commit(answer, now)

    def withdraw(self, message: Message) -> None:
        """A message whose storing failed (its sender got an error and sends it again): out of
        the queue unless a device is being sent it right now."""
        delivery = self.inflight.get(message.recipient)
        if delivery is None or delivery.message is not message:
            self._unqueue(message)
            message.state = "failed"
            self._notify("state", message, message.created_at)

    def prepare(
        self, sender: str, recipient: str, content_type: str, body: bytes, now: float,
        origin: str = "http",
    ) -> tuple[Message, list[str]]:  # fmt: skip
        """Check a message sent by other means than SIP (the HTTP API): the Message and the ids
        of our files it shares, which the caller grants (`grant`, blocking) before `submit`.
        Raises MessageRejected."""
        message, shared = self._accept(sender, recipient, content_type, body, now, origin)
        if message.content.kind == "composing":
            raise MessageRejected(415, "typing notices are not stored")
        return message, shared

    def _full(self, recipient: str) -> bool:
        queue = self.queues.get(recipient)
        return queue is not None and len(queue) >= self.settings.max_stored_per_user

    def _rate_exceeded(self, sender: str, now: float) -> bool:
        """Count one message of `sender`; True when it is over the per-minute limit."""
        times = self._sent.setdefault(sender, deque())
        while times and times[0] <= now - 60.0:
            times.popleft()
        if len(times) >= self.settings.rate_per_minute:
            return True
        times.append(now)
        return False

    def grant(self, message: Message, file_ids: list[str]) -> bool:
        """Let the recipient download the files the message shares (blocking: the store);
        False when one is not the sender's to share."""
        assert self.files is not None
        return all(self.files.grant(f, message.sender, message.recipient) for f in file_ids)

    def submit(self, message: Message, now: float) -> None:
        """Store a prepared message and send it to the recipient's devices like any stored
        message. Raises MessageRejected when too many wait for the recipient already."""
        if self._full(message.recipient):
            raise MessageRejected(480, "Too many messages waiting for this user")
        message.state = "queued"
        self.stats["stored"] += 1
        self._log_new(message)
        self._queue(message)
        self.kick(message.recipient, now)

    def _accept(
        self, sender: str, recipient: str, content_type: str, body: bytes, now: float, origin: str
    ) -> tuple[Message, list[str]]:
        """Check a message: the Message to send and the ids of our files it shares (still to
        be granted), or MessageRejected."""
        core = self.core
        if len(body) > self.settings.max_bytes:
            raise MessageRejected(
                413, f"Message too large (at most {self.settings.max_bytes} bytes)"
            )
        kind = media_type(content_type)
        if not kind:
            raise MessageRejected(415, "Content-Type missing")
        if kind not in ACCEPTED_TYPES:
            raise MessageRejected(415, f"Unsupported message type {kind}")
        if not body:
            raise MessageRejected(400, "Empty message")
        s_person = core.person(sender, now)
        r_person = core.person(recipient, now) if recipient else None
        if not may_see(sender, s_person, recipient, r_person):
            if r_person is None and s_person is not None and s_person.role in STAFF:
                raise MessageRejected(404, "No such user")
            # Unknown and forbidden recipients get the same answer: no probing for users.
            raise MessageRejected(403, "Not allowed to message this user")
        try:
            content = describe(content_type, body)
        except MessageError as exc:
            raise MessageRejected(400, str(exc)[:100]) from None
        if content.cpim_from is not None and _user_of(content.cpim_from) != sender:
            raise MessageRejected(403, "CPIM From does not match the authenticated user")
        if content.kind != "composing" and self._rate_exceeded(sender, now):
            raise MessageRejected(503, "Too many messages: try again in a minute")
        shared: list[str] = []
        if content.files and self.files is not None:
            for info in content.files:
                fid = self.files.file_id_of(info.url)
                if fid is not None:  # (links to other servers pass as they are)
                    shared.append(fid)
        message = Message(
            id=f"{int(now * 1000):012x}{secrets.token_hex(6)}",
            sender=sender, recipient=recipient, created_at=now, content_type=content_type,
            body=body, expires_at=now + self.settings.store_expiry, content=content,
            file_id=shared[0] if shared else None, origin=origin,
        )  # fmt: skip
        return message, shared

    def _log_new(self, m: Message) -> None:
        self.log_op(("add", self._record(m)))
        c = m.content
        if c.kind == "imdn" and c.report_for:
            # The recipient reports on a message it got: mark that message in the history.
            self.log_op(("report", c.report_for[:200], m.sender, c.report_state))
        self._notify("message", m, m.created_at)

    def _record(self, m: Message) -> dict[str, Any]:
        return {
            "id": m.id, "sender": m.sender, "recipient": m.recipient,
            "created_at": datetime.fromtimestamp(m.created_at, UTC),
            "content_type": m.content_type[:200], "body": m.body, "state": m.state,
            "state_at": None, "expires_at": datetime.fromtimestamp(m.expires_at, UTC),
            "imdn_id": (m.content.imdn_id or None) and m.content.imdn_id[:200],
            "imdn_state": None, "file_id": m.file_id, "origin": m.origin,
        }  # fmt: skip

    # ------------------------------------------------------------------ outcomes

    def finished(self, m: Message, state: str, now: float) -> None:
        """A message reached its end: delivered, failed or expired."""
        m.state = state
        self.log_op(("state", m.id, state, datetime.fromtimestamp(now, UTC)))
        if state == "delivered":
            self.stats["delivered"] += 1
        elif state == "expired":
            self.stats["expired"] += 1
        self._notify("state", m, now)

    def enqueue(self, m: Message, now: float) -> None:
        """Store a message for later delivery."""
        m.state = "queued"
        self.stats["stored"] += 1
        self.log_op(("state", m.id, "queued", datetime.fromtimestamp(now, UTC)))
        self._queue(m)
        self._notify("state", m, now)

    def _queue(self, m: Message) -> None:
        self.queues.setdefault(m.recipient, deque()).append(m)

    def delivered_late(self, m: Message, now: float) -> None:
        """A device accepted a message after it had been stored: it leaves the queue."""
        queue = self.queues.get(m.recipient)
        delivery = self.inflight.get(m.recipient)
        if delivery is not None and delivery.message is m:
            return  # the server's own delivery of it is under way and will finish it
        if queue is not None and m in queue:
            queue.remove(m)
            if not queue:
                del self.queues[m.recipient]
            self.finished(m, "delivered", now)

    def _notify(self, event: str, m: Message, at: float) -> None:
        kind: type[MessageStored] = (
            MessageStored if event == "message"
            else MessageDelivered if m.state == "delivered"
            else MessageStateChanged
        )  # fmt: skip
        events = self.core.events
        if events.has_subscribers(kind):  # (the live HTTP streams)
            events.publish(kind(at, m.summary()))

    # ------------------------------------------------------------------ stored messages

    def load(self, messages: Iterable[Message]) -> None:
        """Messages stored before a restart, oldest first."""
        for m in messages:
            m.state = "queued"
            self._queue(m)

    def on_bindings_changed(self, event: BindingChanged) -> None:
        for user in {b.aor for b in event.added}:
            if user in self.queues:
                self.kick(user, event.at)

    def kick(self, user: str, now: float) -> None:
        """Send the oldest stored message of `user` to its devices, unless one is under way."""
        if user in self.inflight:
            return
        queue = self.queues.get(user)
        while queue and queue[0].expires_at <= now:
            self.finished(queue.popleft(), "expired", now)
        if not queue:
            self.queues.pop(user, None)
            return
        targets = self.core.proxy.device_targets(user, now)
        if not targets:
            return
        delivery = Delivery(self, queue[0])
        self.inflight[user] = delivery
        for uri, dest, route in targets:
            self._send(delivery, uri, dest, route, now)
        if not delivery.open:
            del self.inflight[user]

    def _send(
        self, delivery: Delivery, uri: str, dest: Peer, route: tuple[str, ...], now: float
    ) -> None:
        core = self.core
        m = delivery.message
        domain = core.settings.domain
        sender = f"<sip:{m.sender}@{domain}>"
        hdrs = [
            ["from", "From", f"{sender};tag={secrets.token_hex(6)}"],
            ["to", "To", f"<sip:{m.recipient}@{domain}>"],
            ["call-id", "Call-ID", f"{m.id}.{secrets.token_hex(4)}@{domain}"],
            ["cseq", "CSeq", "1 MESSAGE"],
            ["max-forwards", "Max-Forwards", "70"],
            ["date", "Date", email.utils.formatdate(m.created_at, usegmt=True)],
            ["p-asserted-identity", "P-Asserted-Identity", sender],
            ["content-type", "Content-Type", m.content_type],
        ]  # fmt: skip
        hdrs += [["route", "Route", r] for r in route]  # the device's Path (RFC 3327 §5.4)
        req = Request("MESSAGE", uri, hdrs, m.body)
        try:
            ctxn = core.send_request(req, dest, delivery, now)
        except ValueError:
            log.warning("could not send stored message %s to %s", m.id, dest)
            return
        delivery.open.add(ctxn)

    def on_response(
        self, d: Delivery, ctxn: tx.ClientTransaction, resp: Response, now: float
    ) -> None:
        if resp.status >= 200:
            self._outcome(d, ctxn, resp.status, now)

    def on_failure(self, d: Delivery, ctxn: tx.ClientTransaction, now: float) -> None:
        self._outcome(d, ctxn, 408, now)

    def _outcome(self, d: Delivery, ctxn: tx.ClientTransaction, status: int, now: float) -> None:
        if ctxn not in d.open:
            return
        d.open.discard(ctxn)
        d.statuses.append(status)
        m = d.message
        user = m.recipient
        if d.done:
            return
        if 200 <= status < 300:
            d.done = True
            self._unqueue(m)
            self.finished(m, "delivered", now)
        elif d.open:
            return  # other devices may still accept it
        elif any(s in TEMPORARY for s in d.statuses):
            log.info("stored message %s not accepted (%s): kept", m.id, d.statuses)
            d.done = True
            if self.inflight.get(user) is d:
                del self.inflight[user]
            return  # kept for the next registration
        else:
            d.done = True
            self._unqueue(m)
            log.info("stored message %s refused (%s)", m.id, d.statuses)
            self.finished(m, "failed", now)
        if self.inflight.get(user) is d:
            del self.inflight[user]
        self.kick(user, now)

    def _unqueue(self, m: Message) -> None:
        queue = self.queues.get(m.recipient)
        if queue is not None and m in queue:
            queue.remove(m)
            if not queue:
                del self.queues[m.recipient]

    def expire(self, now: float) -> int:
        """Stored messages past their expiry become expired; returns how many."""
        count = 0
        for user in list(self.queues):
            queue = self.queues[user]
            delivery = self.inflight.get(user)
            for m in [m for m in queue if m.expires_at <= now]:
                if delivery is not None and delivery.message is m:
                    continue  # under way: its outcome decides
                queue.remove(m)
                self.finished(m, "expired", now)
                count += 1
            if not queue:
                del self.queues[user]
        return count

    def waiting(self) -> int:
        return sum(len(q) for q in self.queues.values())


def message_from_record(record: Any, now: float) -> Message:
    """A stored message (heimbuero.store.messages.MessageRecord) back in the queue."""
    try:
        content = describe(record.content_type, record.body)
    except MessageError:
        content = MessageContent("other")
    expires = record.expires_at.timestamp() if record.expires_at is not None else now
    return Message(
        id=record.id, sender=record.sender, recipient=record.recipient,
        created_at=record.created_at.timestamp(), content_type=record.content_type,
        body=record.body, expires_at=expires, content=content, file_id=record.file_id,
        origin=record.origin, state="queued",
    )  # fmt: skip


def enable_messaging(
    core: SipCore,
    settings: MessagingSettings,
    log_op: Callable[[tuple[Any, ...]], None],
    files: FileLinks | None = None,
    defer: Defer | None = None,
) -> Messenger:
    """Attach a messenger to the core: MESSAGEs to users, and stored ones sent at registration."""
    messenger = Messenger(core, settings, log_op, files, defer)
    core.messages = messenger
    return messenger
