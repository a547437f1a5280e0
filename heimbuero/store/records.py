"""What the store hands out and takes in: plain records of stored rows, and the mapping between
domain values (heimbuero.domain) and table rows. No sessions here."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from heimbuero.domain.callpolicy import policy_from_json
from heimbuero.domain.model import (
    CALL_END_REASONS,
    CALL_RESULTS,
    INBOUND_AUTH,
    Client,
    Provider,
    Step,
    Trunk,
    TrunkInbound,
    VipCaller,
    parse_target,
)
from heimbuero.domain.model import User as OfficeUser
from heimbuero.store.errors import StoreError
from heimbuero.store.models import CallRecordRow, ClientRow, ProviderRow, TrunkRow, User, as_utc


def check_call_update(fields: dict[str, Any]) -> None:
    unknown = set(fields) - CALL_UPDATE_FIELDS
    if unknown:
        raise StoreError(f"unknown call record fields: {', '.join(sorted(unknown))}")
    if fields.get("result") is not None and fields["result"] not in CALL_RESULTS:
        raise StoreError(f"invalid call result {fields['result']!r}")
    if fields.get("end_reason") is not None and fields["end_reason"] not in CALL_END_REASONS:
        raise StoreError(f"invalid call end reason {fields['end_reason']!r}")


def apply_call_update(row: CallRecordRow, fields: dict[str, Any]) -> None:
    for k, v in fields.items():
        setattr(row, k, as_utc(v) if isinstance(v, datetime) else v)


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A stored user as callers see it."""

    id: int
    name: str
    role: str
    ha1_md5: str
    ha1_sha256: str
    password_hash: str
    created_at: datetime  # timezone-aware, UTC
    client: str | None = None  # the client business of a client/employee user
    display_name: str | None = None
    mobile: str | None = None  # E.164
    status: str = "available"  # an agent's own status

    def office_user(self) -> OfficeUser:
        """The user as routing sees it."""
        return OfficeUser(
            name=self.name,
            role=self.role,
            client=self.client,
            display_name=self.display_name or "",
            mobile=self.mobile,
            status=self.status,
        )


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call as billing sees it; `result` is None while the call is in progress."""

    id: int
    call_id: str
    client: str | None
    number: str
    caller: str
    rule: str | None
    step: int | None
    answered_by: str | None
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    ring_seconds: float
    talk_seconds: float
    result: str | None
    media: dict[str, Any] | None = None  # the relay's statistics per side (a: caller, b: callee)
    transferred_from: int | None = None  # the record of the call this one was transferred from
    end_reason: str | None = None  # why the call ended (domain.model.CallEndReason)

    @property
    def audio(self) -> tuple[float, float] | None:
        """(loss %, jitter ms) of the worse direction of the call's audio; None: not relayed."""
        return audio_quality(self.media)

    @property
    def audio_loss_pct(self) -> float | None:
        quality = self.audio
        return None if quality is None else quality[0]

    @property
    def audio_jitter_ms(self) -> float | None:
        quality = self.audio
        return None if quality is None else quality[1]


# a call whose worse direction lost this much or jittered this much sounded poor (common VoIP
# guidance: loss above a few percent is heard, jitter above 30 ms strains a jitter buffer)
POOR_LOSS_PCT = 3.0
POOR_JITTER_MS = 30.0


def audio_quality(media: dict[str, Any] | None) -> tuple[float, float] | None:
    """The worst packet loss (%) and jitter (ms) over both directions of a call's audio: per
    direction the worse of what the relay counted and what the receiving phone reported in
    RTCP (which also covers the way from the relay to it). None: no statistics, or none that
    knows loss or jitter (rtpengine counts neither; without the phones' RTCP they are unknown)."""
    if not isinstance(media, dict) or not media:
        return None
    loss = jitter = 0.0
    known = False
    for side in media.values():
        if not isinstance(side, dict):
            continue
        for seen in (side, side.get("reported")):
            if not isinstance(seen, dict):
                continue
            if "loss_pct" not in seen:  # (records from before loss_pct: lost of lost + received)
                lost, packets = _number(seen.get("lost")) or 0.0, _number(seen.get("packets"))
                pct: float | None = (
                    100.0 * lost / (lost + packets)
                    if packets is not None and lost + packets
                    else 0.0
                )
            else:  # (null: not counted, as rtpengine counts no loss or jitter of its own)
                pct = None if seen["loss_pct"] is None else _number(seen["loss_pct"]) or 0.0
            if pct is not None or seen.get("jitter_ms") is not None:
                known = True
            loss = max(loss, pct or 0.0)
            jitter = max(jitter, _number(seen.get("jitter_ms")) or 0.0)
    return (round(loss, 1), round(jitter, 1)) if known else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value and abs(value) < 1e12 else None  # (no NaN)


@dataclass(frozen=True, slots=True)
class ApiToken:
    """An API token's metadata (the token itself is shown once, at creation)."""

    id: int
    user: str
    name: str
    created_at: datetime
    last_used: datetime | None = None


@dataclass(frozen=True, slots=True)
class ClientSlice:
    """One page of a client search: the clients on it (ordered by id) with their numbers,
    the page it is (1-based; a page after the last is the last), and how many match."""

    clients: list[Client]
    numbers: dict[str, tuple[str, ...]]
    page: int
    total: int


@dataclass(frozen=True, slots=True)
class DirectoryProblem:
    """A stored rules document that no longer validates; its numbers use the default plan."""

    client: str
    problems: list[str] = field(default_factory=list)


CALL_UPDATE_FIELDS = frozenset(
    {
        "client",
        "rule",
        "step",
        "answered_by",
        "answered_at",
        "ended_at",
        "ring_seconds",
        "talk_seconds",
        "result",
        "transferred_from",
        "end_reason",
    }
)
TOKEN_PREFIX = "hb_"


def user_record(row: User) -> UserRecord:
    return UserRecord(
        id=row.id,
        name=row.name,
        role=row.role,
        ha1_md5=row.ha1_md5,
        ha1_sha256=row.ha1_sha256,
        password_hash=row.password_hash,
        created_at=as_utc(row.created_at),
        client=row.client,
        display_name=row.display_name,
        mobile=row.mobile,
        status=row.status or "available",
    )


def utc_opt(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def steps_to_json(steps: Iterable[Step]) -> list[dict[str, Any]]:
    return [{"targets": s.target_texts(), "timeout": s.timeout} for s in steps]


def steps_from_json(data: Any) -> tuple[Step, ...]:
    return tuple(
        Step(targets=tuple(parse_target(str(t)) for t in d["targets"]), timeout=int(d["timeout"]))
        for d in data or ()
    )


def provider_from_row(row: ProviderRow | None) -> Provider:
    if row is None:
        return Provider(name="")
    return Provider(
        name=row.name,
        address=row.address,
        vat_id=row.vat_id,
        iban=row.iban,
        bic=row.bic,
        default_steps=steps_from_json(row.default_steps),
        country_code=row.country_code if row.country_code is not None else 49,
    )


def client_from_row(row: ClientRow) -> Client:
    return Client(
        id=row.id,
        name=row.name,
        trade=row.trade,
        contact_person=row.contact_person,
        greeting=row.greeting,
        notes=row.notes,
        timezone=row.timezone,
        bundesland=row.bundesland,
        closure_days=tuple(date.fromisoformat(d) for d in row.closure_days or ()),
        call_policy=policy_from_json(row.call_policy),
        email=row.email or "",
        vip_callers=tuple(
            VipCaller(v["number"], v["name"], v.get("remark", "")) for v in row.vip_callers or ()
        ),
    )


def client_values(c: Client) -> dict[str, Any]:
    return {
        "name": c.name,
        "trade": c.trade,
        "contact_person": c.contact_person,
        "greeting": c.greeting,
        "notes": c.notes,
        "timezone": c.timezone,
        "bundesland": c.bundesland,
        "closure_days": sorted(d.isoformat() for d in c.closure_days),
        "call_policy": c.call_policy.to_json(),
        "email": c.email,
        "vip_callers": [
            {"number": v.number, "name": v.name, "remark": v.remark} for v in c.vip_callers
        ],
    }


def trunk_from_row(row: TrunkRow) -> Trunk:
    return Trunk(
        name=row.name,
        host=row.host,
        port=row.port,
        transport=row.transport,
        prefixes=tuple(row.prefixes or ()),
        username=row.username,
        password=row.password,
        register=bool(row.register),
        call_policy=policy_from_json(row.call_policy),
        inbound=trunk_inbound_from_json(row.inbound),
    )


def trunk_inbound_from_json(data: dict[str, Any] | None) -> TrunkInbound:
    """`trunks.inbound` as stored (JSON; keys as in model.TrunkInbound); unknown -> address."""
    data = data or {}
    auth = data.get("auth")
    return TrunkInbound(
        auth=auth if auth in INBOUND_AUTH else "address",
        username=data.get("username") or None,
        ha1_md5=data.get("ha1_md5") or None,
        ha1_sha256=data.get("ha1_sha256") or None,
    )


def call_record(row: CallRecordRow) -> CallRecord:
    return CallRecord(
        id=row.id,
        call_id=row.call_id,
        client=row.client,
        number=row.number,
        caller=row.caller,
        rule=row.rule,
        step=row.step,
        answered_by=row.answered_by,
        started_at=as_utc(row.started_at),
        answered_at=utc_opt(row.answered_at),
        ended_at=utc_opt(row.ended_at),
        ring_seconds=row.ring_seconds,
        talk_seconds=row.talk_seconds,
        result=row.result,
        media=json.loads(row.media) if row.media else None,
        transferred_from=row.transferred_from,
        end_reason=row.end_reason,
    )


def token_hash(token: str) -> str:
    """What is stored of an API token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def mentions(data: Any, target: str) -> bool:
    """True when the JSON value contains the string `target` anywhere."""
    if isinstance(data, str):
        return data == target
    if isinstance(data, dict):
        return any(mentions(v, target) for v in data.values())
    if isinstance(data, list):
        return any(mentions(v, target) for v in data)
    return False


def trunk_values(t: Trunk) -> dict[str, Any]:
    return {
        "name": t.name,
        "host": t.host,
        "port": t.port,
        "transport": t.transport,
        "prefixes": list(t.prefixes),
        "username": t.username,
        "password": t.password,
        "register": t.register,
        "inbound": {k: v for k, v in asdict(t.inbound).items() if v is not None},
        "call_policy": t.call_policy.to_json(),
    }
