"""Dialogs (RFC 3261 §12), sans-IO: the state a user agent keeps between two peers and the
requests it sends inside a dialog.

A dialog is made from the request that creates it and a response with a To tag: the UAS side
with `Dialog.as_uas(request, local_tag, status)` (§12.1.1), the UAC side with
`Dialog.as_uac(request, response)` (§12.1.2). It holds:

- its id (Call-ID, local tag, remote tag) and state: early (made by a 1xx), confirmed (a 2xx),
  terminated (§12.3: a non-2xx final to the request that made it early, a BYE, a 481 or 408
  to a request inside it);
- the route set from Record-Route: in the request's order for the UAS, reversed from the
  response for the UAC; fixed once the dialog is confirmed (§12.1);
- the local and remote CSeq numbers (§12.2.1.1, §12.2.2) and the remote target, refreshed by
  target refresh requests and their 2xx (§12.2);
- `create_request(method)`: a request inside the dialog (BYE, re-INVITE, NOTIFY, ...) with the
  Request-URI and Route of §12.2.1.1 for loose and strict routing. The caller adds its Via (and
  sends it to `next_hop()`, or to where it knows the peer is).

Header values are kept as text (From/To with display names and parameters as they were), so a
request built here says exactly what the peer said. Imports nothing of ours outside sip/.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .message import Message, ParseError, Request, Response, SipURI, parse_address

TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
MAX_CSEQ = 2**31 - 1


class DialogError(ValueError):
    """A message cannot make or continue a dialog (no Contact, no To tag, dialog over)."""


class DialogState(enum.StrEnum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogId:
    """§12: Call-ID, local tag and remote tag (the remote tag may be empty: RFC 2543 peers)."""

    call_id: str
    local_tag: str
    remote_tag: str


@dataclass(slots=True)
class Dialog:
    """One dialog, seen from our side."""

    call_id: str
    local_tag: str
    remote_tag: str
    local: str  # our address with our tag: From of the requests we send
    remote: str  # the peer's address with its tag: To of the requests we send
    remote_target: str  # the peer's Contact URI: Request-URI (loose routing)
    route_set: tuple[str, ...]  # Route values, first hop first
    local_seq: int | None  # CSeq of the last request we sent (None: none yet)
    remote_seq: int | None  # CSeq of the last request the peer sent (None: none yet)
    secure: bool = False
    state: DialogState = DialogState.EARLY

    # ------------------------------------------------------------------ making a dialog

    @classmethod
    def as_uas(
        cls, request: Request, local_tag: str, status: int = 200, secure: bool = False
    ) -> Dialog:
        """The UAS side (§12.1.1), made by our response with `status` (101-299) and To tag
        `local_tag` to the dialog-creating `request`. `secure`: it came over TLS with a sips
        Request-URI."""
        if not 101 <= status <= 299:
            raise DialogError(f"a {status} response makes no dialog")
        to = request.get("to")
        from_ = request.get("from")
        if to is None or from_ is None:
            raise DialogError("the request has no From or To")
        local = to if _has_tag(to) else f"{to};tag={local_tag}"
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_.tag or "",
            local=local,
            remote=from_,
            remote_target=_contact_uri(request),
            route_set=tuple(request.get_all("record-route")),
            local_seq=None,
            remote_seq=request.cseq[0],
            secure=secure,
            state=DialogState.CONFIRMED if status >= 200 else DialogState.EARLY,
        )

    @classmethod
    def as_uac(cls, request: Request, response: Response) -> Dialog:
        """The UAC side (§12.1.2), made by `response` (101-299 with a To tag) to our
        dialog-creating `request`."""
        if not 101 <= response.status <= 299:
            raise DialogError(f"a {response.status} response makes no dialog")
        remote_tag = response.to.tag
        if not remote_tag:
            raise DialogError("the response has no To tag")
        to = response.get("to")
        from_ = request.get("from")
        if to is None or from_ is None:
            raise DialogError("the request has no From or the response no To")
        return cls(
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=remote_tag,
            local=from_,
            remote=to,
            remote_target=_contact_uri(response),
            route_set=tuple(reversed(response.get_all("record-route"))),
            local_seq=request.cseq[0],
            remote_seq=None,
            secure=request.ruri.scheme == "sips",
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
        )

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    @property
    def confirmed(self) -> bool:
        return self.state is DialogState.CONFIRMED

    @property
    def terminated(self) -> bool:
        return self.state is DialogState.TERMINATED

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    # ------------------------------------------------------------------ what the peer sends

    def receive_request(self, request: Request) -> int | None:
        """A request from the peer inside this dialog (§12.2.2): None when it is in order
        (the dialog has taken its CSeq and, for a target refresh, its Contact), or the status
        to answer: 481 (the dialog is over), 500 (CSeq lower than the last one)."""
        if self.terminated:
            return 481
        seq, _ = request.cseq
        method = request.method
        if method in ("ACK", "CANCEL"):
            return None  # (they repeat the INVITE's number)
        if self.remote_seq is not None and seq <= self.remote_seq:
            return 500
        self.remote_seq = seq
        if method in TARGET_REFRESH and request.get("contact") is not None:
            # (a bad Contact refreshes nothing; the request is answered on its merits)
            with contextlib.suppress(DialogError):
                self.remote_target = _contact_uri(request)
        if method == "BYE":
            self.terminate()
        return None

    def receive_response(self, method: str, response: Response) -> None:
        """The peer's response to a request we sent inside this dialog, or to the request that
        made it early (§12.1.2, §12.2.1.2, §12.3)."""
        status = response.status
        if self.terminated or status < 200:
            return
        if status < 300:
            if self.state is DialogState.EARLY:
                # The 2xx confirms the dialog; its Record-Route is the route set (§13.2.2.4).
                self.route_set = tuple(reversed(response.get_all("record-route")))
                self.state = DialogState.CONFIRMED
            if method in TARGET_REFRESH and response.get("contact") is not None:
                with contextlib.suppress(DialogError):
                    self.remote_target = _contact_uri(response)
            if method == "BYE":
                self.terminate()
            return
        if self.state is DialogState.EARLY and method == "INVITE":
            self.terminate()  # a final non-2xx to the request that made the dialog (§12.3)
        elif status in (481, 408) or method == "BYE":
            self.terminate()  # §12.2.1.2; a BYE ends the dialog whatever its answer (§15)

    # ------------------------------------------------------------------ what we send

    def create_request(
        self,
        method: str,
        *,
        cseq: int | None = None,
        contact: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Request:
        """A request inside the dialog (§12.2.1.1), without Via. ACK and CANCEL take the
        INVITE's number as `cseq`; other methods take the next local CSeq (or `cseq` when
        given, which becomes the local one). `contact` (a URI) goes into Contact."""
        if self.terminated and method != "ACK":
            raise DialogError("the dialog is terminated")
        method = method.upper()
        if method in ("ACK", "CANCEL"):
            if cseq is None:
                raise DialogError(f"{method} needs the INVITE's CSeq number")
            number = cseq
        else:
            number = cseq if cseq is not None else (self.local_seq or 0) + 1
            if not 0 <= number <= MAX_CSEQ:
                raise DialogError("CSeq out of range")
            self.local_seq = number
        uri, routes = self.request_target()
        req = Request(method, uri)
        for value in routes:
            req.add("Route", value)
        req.add("Max-Forwards", "70")
        req.add("From", self.local)
        req.add("To", self.remote)
        req.add("Call-ID", self.call_id)
        req.add("CSeq", f"{number} {method}")
        if contact is not None:
            req.add("Contact", f"<{contact}>")
        for name, value in headers:
            req.add(name, value)
        if body:
            req.body = body
        return req

    def request_target(self) -> tuple[str, list[str]]:
        """(Request-URI, Route values) of a request inside the dialog (§12.2.1.1): the remote
        target and the route set when the route set is empty or its first entry is a loose
        router (lr); else (strict routing) the first entry's URI, without the parameters a
        Request-URI may not hold, and the rest of the route set with the remote target last."""
        routes = list(self.route_set)
        if not routes:
            return self.remote_target, []
        first = _route_uri(routes[0])
        if "lr" in first.params:
            return self.remote_target, routes
        uri = SipURI(
            first.scheme, first.user, first.password, first.host, first.port,
            {k: v for k, v in first.params.items() if k.lower() != "method"},
        )  # fmt: skip
        return str(uri), routes[1:] + [f"<{self.remote_target}>"]

    def next_hop(self) -> SipURI:
        """Where a request inside the dialog goes first (§8.1.2): the first Route entry when
        it is a loose router, else the Request-URI (the strict router, or the remote target
        when the route set is empty)."""
        if self.route_set:
            first = _route_uri(self.route_set[0])
            if "lr" in first.params:
                return first
        return _uri(self.request_target()[0])


def _has_tag(value: str) -> bool:
    try:
        return parse_address(value).tag is not None
    except ParseError:
        return ";tag=" in value.replace(" ", "").lower()


def _contact_uri(msg: Message) -> str:
    contacts = msg.get_all("contact")
    if len(contacts) != 1:
        raise DialogError("a dialog needs exactly one Contact")
    try:
        uri = parse_address(contacts[0]).uri
    except ParseError as exc:
        raise DialogError(f"bad Contact: {exc}") from None
    if not uri.is_sip:
        raise DialogError("the Contact is no sip: or sips: URI")
    return str(uri)


def _route_uri(value: str) -> SipURI:
    try:
        return parse_address(value).uri
    except ParseError as exc:
        raise DialogError(f"bad route: {exc}") from None


def _uri(text: str) -> SipURI:
    return _route_uri(f"<{text}>")


def parse_replaces(value: str) -> tuple[str, str, str] | None:
    """The dialog a `Replaces` header names (RFC 3891 §6.1): (Call-ID, to-tag, from-tag), or
    None when it is malformed (a tag missing, a Call-ID empty)."""
    call_id, _, rest = value.strip().partition(";")
    params: dict[str, str] = {}
    for item in rest.split(";"):
        key, _, val = item.partition("=")
        params[key.strip().lower()] = val.strip()
    to_tag, from_tag = params.get("to-tag"), params.get("from-tag")
    call_id = call_id.strip()
    if not call_id or not to_tag or not from_tag:
        return None
    return call_id, to_tag, from_tag


def proxy_dialogs(
    request: Request, response: Response, is_own: Callable[[str], bool]
) -> tuple[Dialog, Dialog]:
    """The dialog as a record-routing proxy stored it when it forwarded `request` (the INVITE
    that made it, as it came from the caller) and `response` (the callee's 2xx, with the whole
    Record-Route): (toward the caller, toward the callee), each seen as the other end would
    send from it, so the proxy can end the call at both ends itself (a BYE on a session timer
    that lapsed, RFC 4028 §10).

    Toward the caller the proxy speaks as the callee: From is the 2xx's To, To the INVITE's
    From, the Request-URI the caller's Contact, Route the Record-Route entries below ours (the
    hops between us and the caller, nearest first). Toward the callee it speaks as the caller:
    the Request-URI is the callee's Contact, Route the entries above ours, nearest first.
    `is_own(value)`: whether a Record-Route value is one of ours. The CSeq numbers start at
    the highest each side used (the INVITE's for the caller, none yet for the callee); a
    request seen later in the dialog raises them (`proxied_request`). DialogError when the
    messages make no dialog (no To tag, no single sip: Contact, none of the Record-Route is
    ours)."""
    rr = response.get_all("record-route")
    own = [i for i, value in enumerate(rr) if is_own(value)]
    if not own:
        raise DialogError("the dialog is not record-routed by us")
    to_callee = Dialog.as_uac(request, response)
    to_callee.route_set = tuple(reversed(rr[: own[0]]))
    to_callee.remote_seq = None
    to_caller = Dialog(
        call_id=to_callee.call_id,
        local_tag=to_callee.remote_tag,
        remote_tag=to_callee.local_tag,
        local=to_callee.remote,
        remote=to_callee.local,
        remote_target=_contact_uri(request),
        route_set=tuple(rr[own[-1] + 1 :]),
        local_seq=None,
        remote_seq=to_callee.local_seq,
        secure=to_callee.secure,
        state=DialogState.CONFIRMED,
    )
    return to_caller, to_callee


def proxied_request(ends: tuple[Dialog, Dialog], request: Request) -> None:
    """A request inside the dialog that the proxy forwarded: the side that sent it (by its
    From tag) has used its CSeq, so a BYE the proxy sends on its behalf must go higher."""
    to_caller, to_callee = ends
    tag = request.from_.tag
    seq = request.cseq[0]
    for sender in (to_callee, to_caller):  # (the caller's requests: as if sent toward the callee)
        if tag == sender.local_tag and request.method not in ("ACK", "CANCEL"):
            sender.local_seq = max(sender.local_seq or 0, seq)
    if request.method in TARGET_REFRESH:
        _refresh_target(ends, tag, request)


def proxied_response(ends: tuple[Dialog, Dialog], request: Request, response: Response) -> None:
    """A 2xx to a target refresh request inside the dialog that the proxy forwarded: a new
    Contact in it is the answering side's remote target from now on (§12.2.1.2, RFC 3311)."""
    if request.method in TARGET_REFRESH and 200 <= response.status < 300:
        _refresh_target(ends, response.to.tag, response)


def _refresh_target(ends: tuple[Dialog, Dialog], tag: str | None, msg: Message) -> None:
    """The dialog toward the party with tag `tag` takes `msg`'s Contact as its target."""
    if msg.get("contact") is None:
        return
    for dialog in ends:
        if tag is not None and tag == dialog.remote_tag:
            try:
                dialog.remote_target = _contact_uri(msg)
            except DialogError:
                return


def bye(dialog: Dialog, reason: str) -> Request:
    """The BYE that ends `dialog` (§15.1.1), with the `Reason` (RFC 3326) why, e.g.
    `SIP;cause=408;text="Session timer expired"`. Its CSeq is one above the highest the dialog
    has used from our side; the dialog is over afterwards. The caller adds its Via."""
    req = dialog.create_request("BYE", headers=[("Reason", reason)])
    dialog.terminate()
    return req
