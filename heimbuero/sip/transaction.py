"""SIP transactions (RFC 3261 §17, corrected by RFC 6026), sans-IO.

The rule of this file: everything that affects the transaction state machines lives here.
The four figures of the RFCs are the four tables below, one row per arrow:
(state, input) -> (new state, actions). An input that has no row in the current state is
ignored, as the RFC ignores it (a late timer, a response nobody waits for). Entering
"Terminated" always stops the transaction's timers, forgets it and tells the TU
(`TransactionTerminated`); no row has to say so.

Nothing here touches a socket, a clock or an event loop: the network layer feeds messages in
(`receive_request`, `receive_response`), the transaction user (proxy, registrar) feeds its
decisions in (`send_request`, `send_response`), the time is passed in as `now` (seconds), and
the outputs are drained: `datagrams_to_send()`, `events()`, `get_timer()`.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias, TypeVar, cast

from .message import MAGIC_COOKIE, Request, Response, split_header_list

# The non-INVITE methods a CANCEL may name a server transaction of (§9.2; CANCEL and ACK have
# none of their own to be cancelled).
NON_INVITE_METHODS = (
    "MESSAGE", "OPTIONS", "BYE", "REGISTER", "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO",
    "UPDATE", "REFER", "PRACK",
)  # fmt: skip

__all__ = [
    "AckReceived",
    "ClientTransaction",
    "DEFAULT_TIMERS",
    "Event",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "State",
    "StrayResponse",
    "TimerSettings",
    "Transaction",
    "TransactionLayer",
    "TransactionTerminated",
    "TransactionTimeout",
    "TransportFailed",
    "UDP_REQUEST_LIMIT",
    "needs_stream",
]


# --------------------------------------------------------------------------------------------
# Timers (RFC 3261 Table 4, RFC 6026 §8.11)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """T1, T2, T4 in seconds; the timers A..M derive from them as RFC 3261 Table 4 says."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 >= 0):
            raise ValueError("need T1 > 0, T2 >= T1 and T4 >= 0")

    @property
    def a(self) -> float:
        """Initial INVITE retransmission interval (doubles each time, UDP only)."""
        return self.t1

    @property
    def b(self) -> float:
        """INVITE client transaction timeout."""
        return 64 * self.t1

    @property
    def d(self) -> float:
        """Wait for response retransmissions after a non-2xx to INVITE (UDP; 0 reliable)."""
        return 32.0

    @property
    def e(self) -> float:
        """Initial non-INVITE retransmission interval (doubles up to T2, UDP only)."""
        return self.t1

    @property
    def f(self) -> float:
        """Non-INVITE client transaction timeout."""
        return 64 * self.t1

    @property
    def g(self) -> float:
        """Initial INVITE final-response retransmission interval (doubles up to T2, UDP only)."""
        return self.t1

    @property
    def h(self) -> float:
        """Wait for the ACK of a non-2xx final response."""
        return 64 * self.t1

    @property
    def i(self) -> float:
        """Wait for ACK retransmissions (UDP; 0 reliable)."""
        return self.t4

    @property
    def j(self) -> float:
        """Wait for non-INVITE request retransmissions (UDP; 0 reliable)."""
        return 64 * self.t1

    @property
    def k(self) -> float:
        """Wait for non-INVITE response retransmissions (UDP; 0 reliable)."""
        return self.t4

    @property
    def l(self) -> float:  # noqa: E743 - the RFC's name
        """Server: wait in Accepted for 2xx retransmissions from the TU (RFC 6026)."""
        return 64 * self.t1

    @property
    def m(self) -> float:
        """Client: wait in Accepted for 2xx retransmissions and forks (RFC 6026)."""
        return 64 * self.t1


DEFAULT_TIMERS: Final = TimerSettings()

# RFC 3261 §18.1.1: a request larger than this (the path MTU unknown), or within 200 bytes of
# a known path MTU, goes over a congestion-controlled transport (TCP) instead of UDP.
UDP_REQUEST_LIMIT: Final = 1300


def needs_stream(size: int, path_mtu: int | None = None) -> bool:
    """Whether a request of `size` bytes must not go over UDP (RFC 3261 §18.1.1). If TCP then
    cannot be set up (a reset), the sender SHOULD retry over UDP."""
    return size > (path_mtu - 200 if path_mtu else UDP_REQUEST_LIMIT)


# --------------------------------------------------------------------------------------------
# States, inputs, actions: the vocabulary of the tables
# --------------------------------------------------------------------------------------------


class State(enum.StrEnum):
    """The boxes of the figures. INIT is the arrow into the first box; the TU never sees it."""

    INIT = "Init"
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


INIT: Final = State.INIT
CALLING: Final = State.CALLING
TRYING: Final = State.TRYING
PROCEEDING: Final = State.PROCEEDING
COMPLETED: Final = State.COMPLETED
CONFIRMED: Final = State.CONFIRMED
ACCEPTED: Final = State.ACCEPTED
TERMINATED: Final = State.TERMINATED

# Inputs: the labels above the line on the figures' arrows.
REQUEST: Final = "request"  # server: the request, first copy or retransmission
ACK: Final = "ACK"  # server INVITE: an ACK that matches the transaction
TU_1XX: Final = "1xx from TU"
TU_2XX: Final = "2xx from TU"
TU_300_699: Final = "300-699 from TU"
TU_200_699: Final = "200-699 from TU"  # non-INVITE: every final response
TU_REQUEST: Final = "request from TU"  # client: the TU hands over the request
RESP_1XX: Final = "1xx"
RESP_2XX: Final = "2xx"
RESP_300_699: Final = "300-699"
RESP_200_699: Final = "200-699"  # non-INVITE: every final response
TRANSPORT_ERR: Final = "Transport Err."
TIMER_A: Final = "Timer A"
TIMER_B: Final = "Timer B"
TIMER_D: Final = "Timer D"
TIMER_E: Final = "Timer E"
TIMER_F: Final = "Timer F"
TIMER_G: Final = "Timer G"
TIMER_H: Final = "Timer H"
TIMER_I: Final = "Timer I"
TIMER_J: Final = "Timer J"
TIMER_K: Final = "Timer K"
TIMER_L: Final = "Timer L"
TIMER_M: Final = "Timer M"

# Actions: the labels below the line. Implemented near the end of this file.
PASS_REQUEST: Final = "pass request to TU"
SEND_RESPONSE: Final = "send response"
RESEND_RESPONSE: Final = "re-send last response"  # nothing when none was sent yet
PASS_ACK: Final = "pass ACK to TU"
SEND_REQUEST: Final = "send request"
RESEND_REQUEST: Final = "re-send request"
PASS_RESPONSE: Final = "response to TU"
SEND_ACK: Final = "send ACK"  # built once per To of the response (§17.1.1.3), then re-sent
INFORM_TIMEOUT: Final = "inform TU: timeout"
INFORM_TRANSPORT: Final = "inform TU: transport error"
# A transaction has a retransmission timer (A, E, G) and a lifetime timer (B, D, F, H-M);
# starting one replaces the one in the same slot, so "start D" also stops B.
START_A: Final = "start A = T1"  # unreliable transports only, like E and G
DOUBLE_A: Final = "reset A = 2*A"
STOP_A: Final = "stop A"
START_B: Final = "start B = 64*T1"
STOP_B: Final = "stop B"
START_D: Final = "start D = 32 s (0 reliable)"
START_E: Final = "start E = T1"
DOUBLE_E: Final = "reset E = min(2*E, T2)"
E_T2: Final = "reset E = T2"
STOP_E: Final = "stop E"
START_F: Final = "start F = 64*T1"
START_G: Final = "start G = T1"
DOUBLE_G: Final = "reset G = min(2*G, T2)"
STOP_G: Final = "stop G"
START_H: Final = "start H = 64*T1"
START_I: Final = "start I = T4 (0 reliable)"
START_J: Final = "start J = 64*T1 (0 reliable)"
START_K: Final = "start K = T4 (0 reliable)"
START_L: Final = "start L = 64*T1"
START_M: Final = "start M = 64*T1"

Row: TypeAlias = tuple[State, tuple[str, ...]]
Table: TypeAlias = dict[tuple[State, str], Row]

# fmt: off

# --------------------------------------------------------------------------------------------
# INVITE client transaction: RFC 3261 §17.1.1, Figure 5, as replaced by RFC 6026 Figure 5
#
#                                |INVITE from TU
#              Timer A fires     |INVITE sent      Timer B fires
#              Reset A,          V                 or Transport Err.
#              INVITE sent +-----------+           inform TU
#                +---------|           |--------------------------+
#                |         |  Calling  |                          |
#                +-------->|           |-----------+              |
# 300-699                  +-----------+ 2xx       |              |
# ACK sent                    |  |       2xx to TU |              |
# resp. to TU                 |  |1xx              |              |
# +---------------------------+  |1xx to TU        |              |
# |                              |                 |              |
# |                1xx           V                 |              |
# |                1xx to TU +-----------+         |              |
# |                +---------|           |         |              |
# |                |         |Proceeding |         |              |
# |                +-------->|           |         |              |
# |                          +-----------+ 2xx     |              |
# |         300-699             |    |     2xx to TU              |
# |         ACK sent,  +--------+    +---------------+            |
# |         resp. to TU|                           | |            |
# |                    |                           V V            |
# |                    |                     +-----------+        |
# |                    |                     |  Accepted |---+ 2xx|
# |                    |                     |           |   | 2xx to TU
# |                    |                     +-----------+<--+    |
# V                    V                           |              |
# +-----------+  300-699, ACK sent                 |Timer M fires |
# | Completed |---+                                |-             |
# |           |<--+                                |              |
# +-----------+---------------+ Transport Err.     |              |
#       |Timer D fires        | Inform TU          |              |
#       |-                    |                    |              |
#       V                     V                    V              |
# +--------------------------------------------------------+      |
# |                        Terminated                      |<-----+
# +--------------------------------------------------------+
# --------------------------------------------------------------------------------------------
INVITE_CLIENT: Table = {
    # (state,      input)           (new state,  actions)
    (INIT,       TU_REQUEST):    (CALLING,    (SEND_REQUEST, START_A, START_B)),
    (CALLING,    TIMER_A):       (CALLING,    (RESEND_REQUEST, DOUBLE_A)),
    (CALLING,    TIMER_B):       (TERMINATED, (INFORM_TIMEOUT,)),
    (CALLING,    TRANSPORT_ERR): (TERMINATED, (INFORM_TRANSPORT,)),
    (CALLING,    RESP_1XX):      (PROCEEDING, (STOP_A, STOP_B, PASS_RESPONSE)),
    (CALLING,    RESP_2XX):      (ACCEPTED,   (STOP_A, PASS_RESPONSE, START_M)),
    (CALLING,    RESP_300_699):  (COMPLETED,  (STOP_A, SEND_ACK, PASS_RESPONSE, START_D)),
    (PROCEEDING, RESP_1XX):      (PROCEEDING, (PASS_RESPONSE,)),
    (PROCEEDING, RESP_2XX):      (ACCEPTED,   (PASS_RESPONSE, START_M)),
    (PROCEEDING, RESP_300_699):  (COMPLETED,  (SEND_ACK, PASS_RESPONSE, START_D)),
    (COMPLETED,  RESP_300_699):  (COMPLETED,  (SEND_ACK,)),  # retransmission: ACK again
    # Not in the figure: a 2xx from another fork behind a stateless proxy after this fork's
    # non-2xx. The TU must see every 2xx (§13.2.2.4, §16.7 step 5), so it goes up.
    (COMPLETED,  RESP_2XX):      (COMPLETED,  (PASS_RESPONSE,)),
    (COMPLETED,  TRANSPORT_ERR): (TERMINATED, (INFORM_TRANSPORT,)),
    (COMPLETED,  TIMER_D):       (TERMINATED, ()),
    (ACCEPTED,   RESP_2XX):      (ACCEPTED,   (PASS_RESPONSE,)),  # retransmission or fork
    (ACCEPTED,   TIMER_M):       (TERMINATED, ()),
}

# --------------------------------------------------------------------------------------------
# Non-INVITE client transaction: RFC 3261 §17.1.2, Figure 6
#
#                                    |Request from TU
#                                    |send request
#                Timer E             V
#                send request  +-----------+
#                    +---------|           |-------------------+
#                    |         |  Trying   |  Timer F          |
#                    +-------->|           |  or Transport Err.|
#                              +-----------+  inform TU        |
#                 200-699         |  |                         |
#                 resp. to TU     |  |1xx                      |
#                 +---------------+  |resp. to TU              |
#                 |                  |                         |
#                 |   Timer E        V       Timer F           |
#                 |   send req +-----------+ or Transport Err. |
#                 |  +---------|           | inform TU         |
#                 |  |         |Proceeding |------------------>|
#                 |  +-------->|           |-----+             |
#                 |            +-----------+     |1xx          |
#                 |              |      ^        |resp to TU   |
#                 | 200-699      |      +--------+             |
#                 | resp. to TU  |                             |
#                 |              |                             |
#                 |              V                             |
#                 |            +-----------+                   |
#                 |            |           |                   |
#                 +----------->| Completed |                   |
#                              |           |                   |
#                              +-----------+                   |
#                                ^   |                         |
#                                |   | Timer K                 |
#                                +---+ -                       |
#                                    |                         |
#                                    V                         |
#              NOTE:           +-----------+                   |
#                              |           |                   |
#          transitions         | Terminated|<------------------+
#          labeled with        |           |
#          the event           +-----------+
#          over the action
#          to take
# --------------------------------------------------------------------------------------------
NON_INVITE_CLIENT: Table = {
    # (state,      input)           (new state,  actions)
    (INIT,       TU_REQUEST):    (TRYING,     (SEND_REQUEST, START_E, START_F)),
    (TRYING,     TIMER_E):       (TRYING,     (RESEND_REQUEST, DOUBLE_E)),
    (TRYING,     TIMER_F):       (TERMINATED, (INFORM_TIMEOUT,)),
    (TRYING,     TRANSPORT_ERR): (TERMINATED, (INFORM_TRANSPORT,)),
    (TRYING,     RESP_1XX):      (PROCEEDING, (PASS_RESPONSE,)),
    (TRYING,     RESP_200_699):  (COMPLETED,  (STOP_E, PASS_RESPONSE, START_K)),
    (PROCEEDING, TIMER_E):       (PROCEEDING, (RESEND_REQUEST, E_T2)),
    (PROCEEDING, TIMER_F):       (TERMINATED, (INFORM_TIMEOUT,)),
    (PROCEEDING, TRANSPORT_ERR): (TERMINATED, (INFORM_TRANSPORT,)),
    (PROCEEDING, RESP_1XX):      (PROCEEDING, (PASS_RESPONSE,)),
    (PROCEEDING, RESP_200_699):  (COMPLETED,  (STOP_E, PASS_RESPONSE, START_K)),
    (COMPLETED,  RESP_200_699):  (COMPLETED,  ()),  # retransmission absorbed
    (COMPLETED,  TIMER_K):       (TERMINATED, ()),
}

# --------------------------------------------------------------------------------------------
# INVITE server transaction: RFC 3261 §17.2.1, Figure 7, as replaced by RFC 6026 Figure 7
#
#                                |INVITE
#                                |pass INV to TU
#             INVITE             V send 100 if TU won't in 200 ms
#             send response+------------+
#                 +--------|            |--------+ 101-199 from TU
#                 |        |            |        | send response
#                 +------->|            |<-------+
#                          | Proceeding |
#                          |            |--------+ Transport Err.
#                          |            |        | Inform TU
#                          |            |<-------+
#                          +------------+
#             300-699 from TU |    |2xx from TU
#             send response   |    |send response
#              +--------------+    +------------+
#              |                                |
# INVITE       V          Timer G fires         |
# send response+-----------+ send response      |
#      +-------|           |--------+           |
#      |       |           |        |           |
#      +------>| Completed |<-------+   INVITE  |  Transport Err.
#              |           |            -       |  Inform TU
#      +-------|           |----+       +-----+ |  +---+
#      |       +-----------+    | ACK   |     | v  |   v
#      |         ^   |          | -     |  +------------+
#      |         |   |          |       |  |            |---+ ACK
#      +---------+   |          |       +->|  Accepted  |   | to TU
#      Transport Err.|          |          |            |<--+
#      Inform TU     |          V          +------------+
#                    |      +-----------+     |  ^     |
#                    |      |           |     |  |     |
#                    |      | Confirmed |     |  +-----+
#                    |      |           |     |  2xx from TU
#      Timer H fires |      +-----------+     |  send response
#      -             |          |             |
#                    |          | Timer I     |
#                    |          | fires       | Timer L fires
#                    |          | -           | -
#                    |          V             |
#                    |      +------------+    |
#                    |      |            |<---+
#                    +----->| Terminated |
#                           |            |
#                           +------------+
# --------------------------------------------------------------------------------------------
INVITE_SERVER: Table = {
    # (state,      input)           (new state,  actions)
    # No automatic 100 Trying: the proxy TU sends its 100 at once (§16.2 "SHOULD ... at once").
    (INIT,       REQUEST):       (PROCEEDING, (PASS_REQUEST,)),
    (PROCEEDING, REQUEST):       (PROCEEDING, (RESEND_RESPONSE,)),  # the last provisional
    (PROCEEDING, TU_1XX):        (PROCEEDING, (SEND_RESPONSE,)),
    (PROCEEDING, TU_2XX):        (ACCEPTED,   (SEND_RESPONSE, START_L)),
    (PROCEEDING, TU_300_699):    (COMPLETED,  (SEND_RESPONSE, START_G, START_H)),
    (PROCEEDING, TRANSPORT_ERR): (PROCEEDING, (INFORM_TRANSPORT,)),  # RFC 6026: TU decides
    (COMPLETED,  REQUEST):       (COMPLETED,  (RESEND_RESPONSE,)),
    (COMPLETED,  TIMER_G):       (COMPLETED,  (RESEND_RESPONSE, DOUBLE_G)),
    (COMPLETED,  ACK):           (CONFIRMED,  (STOP_G, START_I)),
    (COMPLETED,  TIMER_H):       (TERMINATED, ()),  # RFC 6026 Figure 7: "-"
    (COMPLETED,  TRANSPORT_ERR): (COMPLETED,  (INFORM_TRANSPORT,)),
    (CONFIRMED,  REQUEST):       (CONFIRMED,  ()),  # absorbed (§17.2.1)
    (CONFIRMED,  ACK):           (CONFIRMED,  ()),  # absorbed: what Confirmed is for
    (CONFIRMED,  TIMER_I):       (TERMINATED, ()),
    (ACCEPTED,   REQUEST):       (ACCEPTED,   ()),  # absorbed, not passed up (RFC 6026 §7.1)
    (ACCEPTED,   ACK):           (ACCEPTED,   (PASS_ACK,)),
    (ACCEPTED,   TU_2XX):        (ACCEPTED,   (SEND_RESPONSE,)),  # the TU's retransmission
    (ACCEPTED,   TRANSPORT_ERR): (ACCEPTED,   (INFORM_TRANSPORT,)),
    (ACCEPTED,   TIMER_L):       (TERMINATED, ()),
}

# --------------------------------------------------------------------------------------------
# Non-INVITE server transaction: RFC 3261 §17.2.2, Figure 8
#
#                                   |Request received
#                                   |pass to TU
#                                   V
#                             +-----------+
#                             |           |
#                             | Trying    |-------------+
#                             |           |             |
#                             +-----------+             |200-699 from TU
#                                   |                   |send response
#                                   |1xx from TU        |
#                                   |send response      |
#                                   |                   |
#                Request            V      1xx from TU  |
#                send response+-----------+send response|
#                    +--------|           |--------+    |
#                    |        | Proceeding|        |    |
#                    +------->|           |<-------+    |
#             +<--------------|           |             |
#             |Trnsprt Err    +-----------+             |
#             |Inform TU            |                   |
#             |                     |                   |
#             |                     |200-699 from TU    |
#             |                     |send response      |
#             |  Request            V                   |
#             |  send response+-----------+             |
#             |      +--------|           |             |
#             |      |        | Completed |<------------+
#             |      +------->|           |
#             +<--------------|           |
#             |Trnsprt Err    +-----------+
#             |Inform TU            |
#             |                     |Timer J fires
#             |                     |-
#             |                     |
#             |                     V
#             |               +-----------+
#             |               |           |
#             +-------------->| Terminated|
#                             |           |
#                             +-----------+
# --------------------------------------------------------------------------------------------
NON_INVITE_SERVER: Table = {
    # (state,      input)           (new state,  actions)
    (INIT,       REQUEST):       (TRYING,     (PASS_REQUEST,)),
    (TRYING,     REQUEST):       (TRYING,     ()),  # absorbed: no response to repeat yet
    (TRYING,     TU_1XX):        (PROCEEDING, (SEND_RESPONSE,)),
    (TRYING,     TU_200_699):    (COMPLETED,  (SEND_RESPONSE, START_J)),
    (PROCEEDING, REQUEST):       (PROCEEDING, (RESEND_RESPONSE,)),
    (PROCEEDING, TU_1XX):        (PROCEEDING, (SEND_RESPONSE,)),
    (PROCEEDING, TU_200_699):    (COMPLETED,  (SEND_RESPONSE, START_J)),
    (PROCEEDING, TRANSPORT_ERR): (TERMINATED, (INFORM_TRANSPORT,)),
    (COMPLETED,  REQUEST):       (COMPLETED,  (RESEND_RESPONSE,)),
    (COMPLETED,  TRANSPORT_ERR): (TERMINATED, (INFORM_TRANSPORT,)),
    (COMPLETED,  TIMER_J):       (TERMINATED, ()),
}

# fmt: on

# Lifetime timers that are 0 on a reliable transport: they fire at once, inside the row that
# starts them, so such a start must be the row's last action (checked when the tables load).
_ZERO_WHEN_RELIABLE: Final = frozenset({TIMER_D, TIMER_I, TIMER_J, TIMER_K})
_RETRANSMIT_TIMERS: Final = frozenset({TIMER_A, TIMER_E, TIMER_G})


# --------------------------------------------------------------------------------------------
# Events for the TU
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RequestReceived:
    """A new request (never an ACK) made a server transaction; `txn.request` is it."""

    txn: ServerTransaction


@dataclass(slots=True)
class AckReceived:
    """An ACK for the TU: it matched no INVITE server transaction (the ACK of a 2xx), or it
    matched one in the Accepted state (RFC 6026)."""

    request: Request
    source: object


@dataclass(slots=True)
class ResponseReceived:
    """A response the client transaction passes up (per the figures)."""

    txn: ClientTransaction
    response: Response


@dataclass(slots=True)
class StrayResponse:
    """A response that matches no client transaction (a proxy forwards a 2xx statelessly)."""

    response: Response
    source: object


@dataclass(slots=True)
class TransactionTimeout:
    """Timer B or F fired: no final response; the TU treats it as a 408."""

    txn: ClientTransaction


@dataclass(slots=True)
class TransportFailed:
    """The TU reported a transport error for this transaction (see `transport_error`)."""

    txn: ClientTransaction | ServerTransaction


@dataclass(slots=True)
class TransactionTerminated:
    """The transaction reached Terminated and is forgotten; the TU may drop its references."""

    txn: ClientTransaction | ServerTransaction


Event: TypeAlias = (
    RequestReceived
    | AckReceived
    | ResponseReceived
    | StrayResponse
    | TransactionTimeout
    | TransportFailed
    | TransactionTerminated
)


# --------------------------------------------------------------------------------------------
# Transactions
# --------------------------------------------------------------------------------------------

_Key: TypeAlias = tuple[str | int | None, ...]


class _Timer:
    """A heap entry's handle: cancelling clears `txn`, the heap drops it when it comes up."""

    __slots__ = ("txn", "kind")

    def __init__(self, txn: Transaction, kind: str) -> None:
        self.txn: Transaction | None = txn
        self.kind = kind


class Transaction:
    """What client and server transactions share. `context` is free for the TU's own use."""

    __slots__ = (
        "request",
        "reliable",
        "is_invite",
        "state",
        "context",
        "_key",
        "_wire",
        "_retransmit",
        "_lifetime",
        "_interval",
    )

    def __init__(self, request: Request, reliable: bool, key: _Key) -> None:
        self.request = request
        self.reliable = reliable
        self.is_invite = request.method == "INVITE"
        self.state: State = INIT
        self.context: object = None
        self._key = key
        self._wire = b""  # the bytes last sent, kept for retransmission
        self._retransmit: _Timer | None = None  # A, E or G
        self._lifetime: _Timer | None = None  # B, D, F, H, I, J, K, L or M
        self._interval = 0.0  # the current retransmission interval

    @property
    def method(self) -> str:
        return self.request.method


class ServerTransaction(Transaction):
    """A request received. Responses go to `response_dest` (the TU may change it; by default
    the request's source: the network layer applies §18.2.2)."""

    __slots__ = ("source", "response_dest", "last_response", "_machine")

    def __init__(self, request: Request, source: object, reliable: bool, key: _Key) -> None:
        super().__init__(request, reliable, key)
        self.source = source
        self.response_dest = source
        self.last_response: Response | None = None
        self._machine = _INVITE_SERVER if self.is_invite else _NON_INVITE_SERVER

    def __repr__(self) -> str:
        return f"<ServerTransaction {self.request.method} {self.state}>"


class ClientTransaction(Transaction):
    """A request sent to `dest`. For a non-2xx final response to an INVITE, `ack` is the ACK
    this layer built and sent (§17.1.1.3)."""

    __slots__ = ("dest", "branch", "ack", "_ack_wire", "_ack_to", "_machine")

    def __init__(
        self, request: Request, dest: object, reliable: bool, branch: str, key: _Key
    ) -> None:
        super().__init__(request, reliable, key)
        self.dest = dest
        self.branch = branch
        self.ack: Request | None = None
        self._ack_wire = b""
        self._ack_to: str | None = None  # the To of the response `ack` acknowledges
        self._machine = _INVITE_CLIENT if self.is_invite else _NON_INVITE_CLIENT

    def __repr__(self) -> str:
        return f"<ClientTransaction {self.request.method} {self.branch} {self.state}>"


# --------------------------------------------------------------------------------------------
# The layer
# --------------------------------------------------------------------------------------------


class TransactionLayer:
    """All transactions of one SIP element, their timers (one heap), and the outputs."""

    __slots__ = (
        "timers",
        "_server",
        "_client",
        "_outbox",
        "_events",
        "_heap",
        "_seq",
        "_cancelled",
        "_t1",
        "_t2",
        "_lifetimes",
        "retransmissions",
        "_by_dest",
    )

    def __init__(self, timers: TimerSettings = DEFAULT_TIMERS) -> None:
        self.timers = timers
        self._server: dict[_Key, ServerTransaction] = {}
        self._client: dict[_Key, ClientTransaction] = {}
        self._outbox: list[tuple[bytes, object]] = []
        self._events: list[Event] = []
        # Entries (deadline, sequence, handle); cancelled handles stay until they come up,
        # or until they are the majority and the heap is rebuilt.
        self._heap: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()
        self._cancelled = 0
        self._t1 = timers.t1
        self._t2 = timers.t2
        self.retransmissions = 0  # messages sent again by timer A, E or G (for metrics)
        # Client transactions per destination, so that a transport error (an ICMP error for
        # every keep-alive to a vanished phone) finds its transactions without a scan.
        self._by_dest: dict[object, set[ClientTransaction]] = {}
        self._lifetimes = {
            TIMER_B: timers.b,
            TIMER_D: timers.d,
            TIMER_F: timers.f,
            TIMER_H: timers.h,
            TIMER_I: timers.i,
            TIMER_J: timers.j,
            TIMER_K: timers.k,
            TIMER_L: timers.l,
            TIMER_M: timers.m,
        }

    def __len__(self) -> int:
        return len(self._server) + len(self._client)

    # ---- input from the network -------------------------------------------------------------

    def receive_request(self, req: Request, source: object, reliable: bool, now: float) -> None:
        """A request from the network, already parsed and checked (`Request.check`)."""
        method = req.method
        via = req.top_via
        branch = via.params.get("branch")
        # A branch that is the bare cookie names nothing (RFC 4475 §3.2.1): RFC 2543 rules.
        if branch is not None and len(branch) > 7 and branch.startswith(MAGIC_COOKIE):
            # §17.2.3: branch + sent-by + method, where an ACK belongs to its INVITE.
            key: _Key = (branch, via.host, via.port, "INVITE" if method == "ACK" else method)
            txn = self._server.get(key)
            if method == "ACK":
                if txn is None:
                    self._events.append(AckReceived(req, source))
                else:
                    self._step_server(txn, ACK, req, source, now)
                return
        elif method == "ACK":
            txn = self._find_2543_ack_match(req)
            if txn is None:
                self._events.append(AckReceived(req, source))
            else:
                self._step_server(txn, ACK, req, source, now)
            return
        else:
            key = _key_2543(req, method, req.to.tag)
            txn = self._server.get(key)
        if txn is None:
            txn = ServerTransaction(req, source, reliable, key)
            self._server[key] = txn
        self._step_server(txn, REQUEST, req, source, now)

    def receive_response(self, resp: Response, source: object, reliable: bool, now: float) -> None:
        """A response from the network, already parsed and checked (`Response.check`)."""
        branch = resp.top_via.params.get("branch")
        txn = None if branch is None else self._client.get((branch, resp.cseq[1]))
        if txn is None:
            self._events.append(StrayResponse(resp, source))
            return
        status = resp.status
        if status < 200:
            inp = RESP_1XX
        elif not txn.is_invite:
            inp = RESP_200_699
        elif status < 300:
            inp = RESP_2XX
        else:
            inp = RESP_300_699
        self._step_client(txn, inp, resp, source, now)

    # ---- input from the transaction user ----------------------------------------------------

    def send_response(self, txn: ServerTransaction, resp: Response, now: float) -> None:
        """Send a response within `txn`. One the figures do not allow in the transaction's
        state (a second final response, anything after Terminated) is discarded."""
        status = resp.status
        if status < 200:
            inp = TU_1XX
        elif not txn.is_invite:
            inp = TU_200_699
        elif status < 300:
            inp = TU_2XX
        else:
            inp = TU_300_699
        self._step_server(txn, inp, resp, None, now)

    def reject_stateless(self, txn: ServerTransaction, resp: Response) -> None:
        """Answer `txn` once, statelessly (RFC 3261 §8.2.7; Kamailio's sl_send_reply), and
        forget it at once: no retransmission, no timer, nothing kept. For challenges and
        refusals to unauthenticated requests, so a forged source gets one answer per request
        and a flood holds no memory. A retransmission of the request gets a fresh answer; the
        ACK of a final answer to an INVITE finds no transaction (the TU absorbs it)."""
        if txn.state is TERMINATED:
            return
        self._outbox.append((resp.serialize(), txn.response_dest))
        txn.last_response = resp
        txn.state = TERMINATED
        self._drop(txn)

    def send_request(
        self, req: Request, dest: object, reliable: bool, now: float
    ) -> ClientTransaction:
        """Start a client transaction; `req` already has its top Via with a fresh branch.
        An ACK is no transaction: send it with `send_stateless`."""
        method = req.method
        if method == "ACK":
            raise ValueError("an ACK has no client transaction; use send_stateless")
        branch = req.top_via.params.get("branch")
        if not branch:
            raise ValueError("the top Via of a request to send needs a branch")
        key: _Key = (branch, method)
        if key in self._client:
            raise ValueError(f"branch {branch} is already in use for {method}")
        txn = ClientTransaction(req, dest, reliable, branch, key)
        txn._wire = req.serialize()
        self._client[key] = txn
        self._by_dest.setdefault(dest, set()).add(txn)
        self._step_client(txn, TU_REQUEST, None, None, now)
        return txn

    def send_stateless(self, msg: Request | Response, dest: object) -> None:
        """Queue a message that belongs to no transaction (the ACK of a 2xx, a 2xx forwarded
        statelessly) with the transactions' datagrams."""
        self._outbox.append((msg.serialize(), dest))

    def transport_error(self, txn: ClientTransaction | ServerTransaction, now: float) -> None:
        """The network layer could not send a message of `txn` (the TU maps it back)."""
        if isinstance(txn, ServerTransaction):
            self._step_server(txn, TRANSPORT_ERR, None, None, now)
        else:
            self._step_client(txn, TRANSPORT_ERR, None, None, now)

    def destination_failed(self, dest: object, now: float) -> int:
        """The transport could not reach `dest` at all (a refused or timed-out connection,
        RFC 3261 §18.4): every client transaction that sent there and has no answer yet fails
        at once (`TransportFailed`) instead of waiting for Timer B or F. Returns how many."""
        waiting = [t for t in self._by_dest.get(dest, ()) if t.state in (CALLING, TRYING)]
        for txn in waiting:
            self._step_client(txn, TRANSPORT_ERR, None, None, now)
        return len(waiting)

    def terminate(self, txn: ClientTransaction | ServerTransaction, now: float) -> None:
        """Destroy a transaction the figures would leave waiting on the TU: an INVITE client
        transaction in Proceeding whose CANCEL got no final answer (§9.1), or Timer C (§16.8)."""
        if txn.state is not TERMINATED:
            txn.state = TERMINATED
            self._drop(txn)

    def find_invite_server_transaction(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL (or any request) names (§9.2): §17.2.3
        matching with the method taken as INVITE, RFC 2543 rules when there is no cookie."""
        via = cancel.top_via
        branch = via.params.get("branch")
        if branch is not None and len(branch) > 7 and branch.startswith(MAGIC_COOKIE):
            return self._server.get((branch, via.host, via.port, "INVITE"))
        return self._server.get(_key_2543(cancel, "INVITE", cancel.to.tag))

    def find_cancelled_non_invite(self, cancel: Request) -> ServerTransaction | None:
        """The non-INVITE server transaction a CANCEL names (§9.2: it matched a transaction, so
        it gets 200 and has no effect). The CANCEL does not say the method: the methods a
        server transaction here can be for are tried, with the §17.2.3 key of each."""
        via = cancel.top_via
        branch = via.params.get("branch")
        cookie = branch is not None and len(branch) > 7 and branch.startswith(MAGIC_COOKIE)
        for method in NON_INVITE_METHODS:
            key: _Key = (
                (branch, via.host, via.port, method)
                if cookie
                else _key_2543(cancel, method, cancel.to.tag)
            )
            txn = self._server.get(key)
            if txn is not None:
                return txn
        return None

    # ---- output -----------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, object]]:
        """Drain the outbox: (wire bytes, destination) in the order they were queued."""
        out = self._outbox
        self._outbox = []
        return out

    def events(self) -> list[Event]:
        """Drain the events for the TU, oldest first."""
        out = self._events
        self._events = []
        return out

    def get_timer(self) -> float | None:
        """The earliest deadline (same clock as `now`), or None when no timer runs."""
        heap = self._heap
        while heap and heap[0][2].txn is None:
            heapq.heappop(heap)
            self._cancelled -= 1
        return heap[0][0] if heap else None

    def clock_stepped(self, delta: float) -> None:
        """The clock `now` comes from jumped by `delta` seconds (an NTP step, a suspended VM):
        every running timer moves with it, so it still fires after the time it was started
        with (protocol timers measure durations; a step must neither fire nor stall them)."""
        self._heap[:] = [(at + delta, seq, handle) for at, seq, handle in self._heap]

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at `now`. Restarted timers count from `now`."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            handle = heapq.heappop(heap)[2]
            txn = handle.txn
            if txn is None:
                self._cancelled -= 1
                continue
            handle.txn = None
            if txn._retransmit is handle:
                txn._retransmit = None
            else:
                txn._lifetime = None
            self._fire(txn, handle.kind, now)

    # ---- the engine -------------------------------------------------------------------------

    def _step_server(
        self,
        txn: ServerTransaction,
        inp: str,
        msg: Request | Response | None,
        source: object,
        now: float,
    ) -> None:
        row = txn._machine[txn.state].get(inp)
        if row is None:
            return
        new, actions = row
        txn.state = new
        for action in actions:
            action(self, txn, msg, source, now)
        if new is TERMINATED:
            self._drop(txn)

    def _step_client(
        self, txn: ClientTransaction, inp: str, msg: Response | None, source: object, now: float
    ) -> None:
        row = txn._machine[txn.state].get(inp)
        if row is None:
            return
        new, actions = row
        txn.state = new
        for action in actions:
            action(self, txn, msg, source, now)
        if new is TERMINATED:
            self._drop(txn)

    def _fire(self, txn: Transaction, kind: str, now: float) -> None:
        if kind in _RETRANSMIT_TIMERS:
            self.retransmissions += 1
        if type(txn) is ServerTransaction:
            self._step_server(txn, kind, None, None, now)
        else:
            self._step_client(cast(ClientTransaction, txn), kind, None, None, now)

    def _drop(self, txn: ClientTransaction | ServerTransaction) -> None:
        self._cancel(txn._retransmit)
        self._cancel(txn._lifetime)
        txn._retransmit = txn._lifetime = None
        table: dict[_Key, ServerTransaction] | dict[_Key, ClientTransaction]
        table = self._server if type(txn) is ServerTransaction else self._client
        if table.get(txn._key) is txn:
            del table[txn._key]
        if type(txn) is ClientTransaction:
            same = self._by_dest.get(txn.dest)
            if same is not None:
                same.discard(txn)
                if not same:
                    del self._by_dest[txn.dest]
        txn._wire = b""
        self._events.append(TransactionTerminated(txn))

    # ---- timers -----------------------------------------------------------------------------

    def _arm(self, txn: Transaction, kind: str, delay: float, now: float) -> None:
        handle = _Timer(txn, kind)
        if kind in _RETRANSMIT_TIMERS:
            self._cancel(txn._retransmit)
            txn._retransmit = handle
        else:
            self._cancel(txn._lifetime)
            txn._lifetime = handle
        heapq.heappush(self._heap, (now + delay, next(self._seq), handle))

    def _cancel(self, handle: _Timer | None) -> None:
        if handle is None or handle.txn is None:
            return
        handle.txn = None
        self._cancelled += 1
        heap = self._heap
        if self._cancelled > 512 and 2 * self._cancelled > len(heap):
            heap[:] = [e for e in heap if e[2].txn is not None]  # in place: handle_timer holds it
            heapq.heapify(heap)
            self._cancelled = 0

    # ---- RFC 2543 matching (§17.2.3, last paragraphs) ---------------------------------------

    def _find_2543_ack_match(self, ack: Request) -> ServerTransaction | None:
        """The INVITE transaction an ACK without cookie acknowledges: same Request-URI, From
        tag, Call-ID, CSeq number and top Via as the INVITE, and the To tag of the ACK equal
        to the To tag of the response the transaction sent."""
        tag = ack.to.tag
        txn = self._server.get(_key_2543(ack, "INVITE", tag))  # a re-INVITE: tag already set
        if txn is None and tag is not None:
            txn = self._server.get(_key_2543(ack, "INVITE", None))
        if txn is not None and txn.last_response is not None and txn.last_response.to.tag != tag:
            return None
        return txn


_RELEASED: dict[str, Request] = {}


def _released(method: str) -> Request:
    """A stand-in for the request of a completed non-INVITE server transaction."""
    stub = _RELEASED.get(method)
    if stub is None:
        stub = Request(method, "sip:released.invalid")
        if len(_RELEASED) < 256:
            _RELEASED[method] = stub
    return stub


def _key_2543(req: Request, method: str, to_tag: str | None) -> _Key:
    """Request-URI, From tag, Call-ID, CSeq number, top Via (whole value), method, To tag."""
    return (req.uri, req.from_.tag, req.call_id, req.cseq[0], str(req.top_via), method, to_tag)


def _build_ack(req: Request, resp: Response) -> Request:
    """The ACK of a non-2xx final response (§17.1.1.3): Request-URI, Call-ID, From and CSeq
    number of the request, To of the response, the request's Route fields, one Via: the
    request's top one (same branch)."""
    headers = [["via", "Via", split_header_list(req.get("via") or "")[0]]]
    headers.extend([h[0], h[1], h[2]] for h in req.headers if h[0] == "route")
    headers.append(["max-forwards", "Max-Forwards", req.get("max-forwards") or "70"])
    headers.append(["from", "From", req.get("from") or ""])
    headers.append(["to", "To", resp.get("to") or ""])
    headers.append(["call-id", "Call-ID", req.call_id])
    headers.append(["cseq", "CSeq", f"{req.cseq[0]} ACK"])
    return Request("ACK", req.uri, headers)


# --------------------------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------------------------

_ServerAction: TypeAlias = Callable[
    [TransactionLayer, ServerTransaction, "Request | Response | None", object, float], None
]
_ClientAction: TypeAlias = Callable[
    [TransactionLayer, ClientTransaction, "Response | None", object, float], None
]
_AnyTxn: TypeAlias = ClientTransaction | ServerTransaction


def _pass_request(
    layer: TransactionLayer, txn: ServerTransaction, msg: object, src: object, now: float
) -> None:
    layer._events.append(RequestReceived(txn))


def _send_response(
    layer: TransactionLayer, txn: ServerTransaction, msg: object, src: object, now: float
) -> None:
    resp = cast(Response, msg)
    txn._wire = wire = resp.serialize()
    layer._outbox.append((wire, txn.response_dest))
    if txn.is_invite or resp.status < 200:
        txn.last_response = resp
    else:
        # A completed non-INVITE transaction only re-sends its final bytes until Timer J (32 s
        # over UDP): drop the parsed messages, which are most of its memory under load.
        txn.last_response = None
        txn.request = _released(txn.request.method)


def _resend_response(
    layer: TransactionLayer, txn: ServerTransaction, msg: object, src: object, now: float
) -> None:
    if txn._wire:
        layer._outbox.append((txn._wire, txn.response_dest))


def _pass_ack(
    layer: TransactionLayer, txn: ServerTransaction, msg: object, src: object, now: float
) -> None:
    layer._events.append(AckReceived(cast(Request, msg), src))


def _send_request(
    layer: TransactionLayer, txn: ClientTransaction, msg: object, src: object, now: float
) -> None:
    layer._outbox.append((txn._wire, txn.dest))


def _pass_response(
    layer: TransactionLayer, txn: ClientTransaction, msg: object, src: object, now: float
) -> None:
    layer._events.append(ResponseReceived(txn, cast(Response, msg)))


def _send_ack(
    layer: TransactionLayer, txn: ClientTransaction, msg: object, src: object, now: float
) -> None:
    resp = cast(Response, msg)
    to = resp.get("to")
    if txn.ack is None or to != txn._ack_to:
        txn.ack = ack = _build_ack(txn.request, resp)
        txn._ack_to = to
        txn._ack_wire = ack.serialize()
    layer._outbox.append((txn._ack_wire, txn.dest))


def _inform_timeout(
    layer: TransactionLayer, txn: ClientTransaction, msg: object, src: object, now: float
) -> None:
    layer._events.append(TransactionTimeout(txn))


def _inform_transport(
    layer: TransactionLayer, txn: _AnyTxn, msg: object, src: object, now: float
) -> None:
    layer._events.append(TransportFailed(txn))


_TimerAction: TypeAlias = Callable[[TransactionLayer, _AnyTxn, object, object, float], None]


def _start_retransmit(kind: str) -> _TimerAction:
    def start(layer: TransactionLayer, txn: _AnyTxn, msg: object, src: object, now: float) -> None:
        if not txn.reliable:
            txn._interval = layer._t1
            layer._arm(txn, kind, layer._t1, now)

    return start


def _reset_retransmit(kind: str, cap: bool) -> _TimerAction:
    def reset(layer: TransactionLayer, txn: _AnyTxn, msg: object, src: object, now: float) -> None:
        interval = 2 * txn._interval
        if cap and interval > layer._t2:
            interval = layer._t2
        txn._interval = interval
        layer._arm(txn, kind, interval, now)

    return reset


def _e_t2(layer: TransactionLayer, txn: _AnyTxn, msg: object, src: object, now: float) -> None:
    txn._interval = layer._t2
    layer._arm(txn, TIMER_E, layer._t2, now)


def _stop_retransmit(
    layer: TransactionLayer, txn: _AnyTxn, msg: object, src: object, now: float
) -> None:
    layer._cancel(txn._retransmit)
    txn._retransmit = None


def _stop_lifetime(
    layer: TransactionLayer, txn: _AnyTxn, msg: object, src: object, now: float
) -> None:
    layer._cancel(txn._lifetime)
    txn._lifetime = None


def _start_lifetime(kind: str) -> _TimerAction:
    zero_when_reliable = kind in _ZERO_WHEN_RELIABLE

    def start(layer: TransactionLayer, txn: _AnyTxn, msg: object, src: object, now: float) -> None:
        delay = 0.0 if zero_when_reliable and txn.reliable else layer._lifetimes[kind]
        if delay > 0:
            layer._arm(txn, kind, delay, now)
        else:  # a timer of 0 fires at once: the row that started it ends here
            _stop_lifetime(layer, txn, msg, src, now)
            layer._fire(txn, kind, now)

    return start


_TIMER_ACTIONS: dict[str, _TimerAction] = {
    START_A: _start_retransmit(TIMER_A),
    DOUBLE_A: _reset_retransmit(TIMER_A, cap=False),
    STOP_A: _stop_retransmit,
    START_B: _start_lifetime(TIMER_B),
    STOP_B: _stop_lifetime,
    START_D: _start_lifetime(TIMER_D),
    START_E: _start_retransmit(TIMER_E),
    DOUBLE_E: _reset_retransmit(TIMER_E, cap=True),
    E_T2: _e_t2,
    STOP_E: _stop_retransmit,
    START_F: _start_lifetime(TIMER_F),
    START_G: _start_retransmit(TIMER_G),
    DOUBLE_G: _reset_retransmit(TIMER_G, cap=True),
    STOP_G: _stop_retransmit,
    START_H: _start_lifetime(TIMER_H),
    START_I: _start_lifetime(TIMER_I),
    START_J: _start_lifetime(TIMER_J),
    START_K: _start_lifetime(TIMER_K),
    START_L: _start_lifetime(TIMER_L),
    START_M: _start_lifetime(TIMER_M),
}

_SERVER_ACTIONS: dict[str, _ServerAction] = {
    PASS_REQUEST: _pass_request,
    SEND_RESPONSE: _send_response,
    RESEND_RESPONSE: _resend_response,
    PASS_ACK: _pass_ack,
    INFORM_TRANSPORT: _inform_transport,
    **_TIMER_ACTIONS,
}


def _start_m(
    layer: TransactionLayer, txn: ClientTransaction, msg: object, src: object, now: float
) -> None:
    """Timer M, and let go of the request: an accepted INVITE client transaction only passes
    2xx retransmissions up until Timer M and never sends the INVITE again; the parsed request
    is most of its memory while a busy proxy holds thousands of them for 32 s."""
    txn.request = _released(txn.request.method)
    txn._wire = b""
    _TIMER_ACTIONS[START_M](layer, txn, msg, src, now)


_CLIENT_ACTIONS: dict[str, _ClientAction] = {
    SEND_REQUEST: _send_request,
    RESEND_REQUEST: _send_request,
    PASS_RESPONSE: _pass_response,
    SEND_ACK: _send_ack,
    INFORM_TIMEOUT: _inform_timeout,
    INFORM_TRANSPORT: _inform_transport,
    **_TIMER_ACTIONS,
    START_M: _start_m,
}


# --------------------------------------------------------------------------------------------
# Loading the tables: state -> input -> (new state, action functions)
# --------------------------------------------------------------------------------------------

_A = TypeVar("_A")
_Machine: TypeAlias = dict[State, dict[str, tuple[State, tuple[_A, ...]]]]

_MAY_FIRE_AT_ONCE: Final = frozenset({START_D, START_I, START_J, START_K})


def _compile(table: Table, actions: Mapping[str, _A]) -> _Machine[_A]:
    machine: _Machine[_A] = {state: {} for state in State}
    for (state, inp), (new, names) in table.items():
        if state is TERMINATED:
            raise AssertionError("no transition leaves Terminated")
        if any(n in _MAY_FIRE_AT_ONCE for n in names[:-1]):
            raise AssertionError(f"{state}/{inp}: a timer that may be 0 must be started last")
        machine[state][inp] = (new, tuple(actions[n] for n in names))
    return machine


_INVITE_CLIENT: Final = _compile(INVITE_CLIENT, _CLIENT_ACTIONS)
_NON_INVITE_CLIENT: Final = _compile(NON_INVITE_CLIENT, _CLIENT_ACTIONS)
_INVITE_SERVER: Final = _compile(INVITE_SERVER, _SERVER_ACTIONS)
_NON_INVITE_SERVER: Final = _compile(NON_INVITE_SERVER, _SERVER_ACTIONS)
