"""Call transfers (REFER, RFC 3515; with Replaces, RFC 3891) as the server lets them happen.

A REFER inside a call the proxy record-routed is forwarded like any request in the dialog; the
phone that gets it (the transferee) then sends a new INVITE to the Refer-To target. That INVITE
is authorised by the same rules as any call: `Referred-By` (RFC 3892) is the caller's word,
never authentication. What a transfer adds is one exception, for a caller on the carrier's side
(which cannot authenticate as a user): a new INVITE from the carrier may reach the target of a
REFER the server saw and approved, once, within `TRANSFER_WINDOW` seconds. Approved means:

- the REFER came inside a routed call of ours (a call record, answered) from a registered
  device of one of our users in that call (its source address is the device's flow), and
- its Refer-To names a user of ours, one of our numbers, or an external number, in our domain.

The INVITE must come from the carrier (a trusted trunk) when the other party of the call was
the carrier, or from that user when it was one of ours, name the same target, and carry a
`Referred-By` naming the referrer. An INVITE with `Replaces` (an attended transfer, or any
other) must name an answered call the server record-routed and come from one of its two ends
or be the INVITE an approved REFER asked for with that very `Replaces`; else 481 (RFC 3891 §3).
(A busy-lamp pickup's `Replaces` names a ringing call: services/proxy.py checks it.) A
transfer to an external number is then a call out of the original call's client: the
destination policy, the caps and the trunk's prefixes apply as to any call out, and the
referrer must be allowed to dial out. An INVITE from the carrier with
`Referred-By` that matches no approved REFER is refused (403).

Call records: the transferred call gets its own record (rule `transfer`, the original number
and client) whose `transferred_from` is the original record's id; the original record ends as
`transferred` instead of `answered`. Presence needs nothing of its own: the referrer's BYE ends
the original call (`CallEnded`), the new call's 2xx puts its callee on the phone.
"""

from __future__ import annotations

from dataclasses import dataclass

TRANSFER_WINDOW = 30.0  # s: how long after the REFER the transferee's INVITE is let through


@dataclass(frozen=True, slots=True)
class PendingTransfer:
    """A REFER the server approved, waiting for the transferee's INVITE."""

    call_id: str  # the call being transferred
    client: str | None  # whose call it was (a call out is charged to this client)
    number: str  # the number the original call was for
    referrer: str  # our user who sent the REFER
    transferee: str | None  # our user on the other side; None: the carrier's caller
    target: str  # "user:NAME" or an E.164 number (`target_key`)
    expires: float
    # the call the Refer-To's `Replaces` names (an attended transfer): (Call-ID, to-tag,
    # from-tag); the transferee's INVITE must name the same
    replaces: tuple[str, str, str] | None = None


def target_key(user_part: str, users: set[str] | frozenset[str], number: str | None) -> str | None:
    """What a Refer-To or Request-URI user part in our domain names: "user:NAME" for a user of
    ours, else the E.164 `number` it dials (worked out by the caller), else None."""
    name = user_part.strip().lower()
    if name in users:
        return f"user:{name}"
    return number


def same_dialog(a: tuple[str, str, str] | None, b: tuple[str, str, str] | None) -> bool:
    """Whether two `Replaces` name the same dialog: its Call-ID and both tags (which of the
    two is the to-tag depends on whose view it is written from)."""
    if a is None or b is None:
        return False
    return a[0] == b[0] and {a[1], a[2]} == {b[1], b[2]}


class TransferBook:
    """The approved REFERs not yet used (sans-IO: time comes in)."""

    def __init__(self) -> None:
        self.pending: list[PendingTransfer] = []

    def add(self, transfer: PendingTransfer, now: float) -> None:
        self._expire(now)
        # a new REFER in the same call replaces an earlier one (the phone tries again)
        self.pending = [p for p in self.pending if p.call_id != transfer.call_id]
        self.pending.append(transfer)

    def take(
        self,
        target: str,
        referred_by: str | None,
        transferee: str | None,
        now: float,
        replaces: tuple[str, str, str] | None = None,
    ) -> PendingTransfer | None:
        """The approved REFER an INVITE fulfils (removed: each is used once), or None.

        `referred_by`: the user part of the INVITE's Referred-By (None: it had none);
        `transferee`: the authenticated user who sends the INVITE, None for the carrier;
        `replaces`: the call its `Replaces` names (then the REFER must have named it too)."""
        self._expire(now)
        if referred_by is None:
            return None
        who = referred_by.lower()
        for p in self.pending:
            if (
                p.target == target
                and p.referrer == who
                and p.transferee == transferee
                and (replaces is None or same_dialog(p.replaces, replaces))
            ):
                self.pending.remove(p)
                return p
        return None

    def expects(self, replaces: tuple[str, str, str], transferee: str | None, now: float) -> bool:
        """Whether an approved REFER asked `transferee` (None: the carrier's caller) for an
        INVITE that replaces the call `replaces` names (RFC 3891 §3: only then, or from a
        party of that call, may an INVITE replace it)."""
        self._expire(now)
        return any(
            p.transferee == transferee and same_dialog(p.replaces, replaces) for p in self.pending
        )

    def _expire(self, now: float) -> None:
        if self.pending:
            self.pending = [p for p in self.pending if p.expires > now]
