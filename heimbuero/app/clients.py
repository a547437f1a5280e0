"""Client businesses, their numbers, their policy for calls out, and the provider."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from heimbuero.app import policy
from heimbuero.app._util import country_of, valid
from heimbuero.app.errors import Invalid, NotFound
from heimbuero.app.policy import Actor
from heimbuero.domain import phone
from heimbuero.domain.model import Client, Number, Provider, VipCaller
from heimbuero.office import callpolicy, directory
from heimbuero.store import Store, UnitOfWork

MAX_VIPS = 100
PER_PAGE = 50  # clients on a page of the admin's list
MAX_PER_PAGE = 200
MAX_SEARCH = 100  # characters of a client search
_TEXTS = (("name", "client name"), ("trade", "client trade"),
          ("contact_person", "client contact"), ("greeting", "client greeting"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """A client with its numbers, as the adapters show it."""

    client: Client
    numbers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClientPage:
    """One page of a client search: the clients on it with their numbers, ordered by id."""

    items: tuple[ClientInfo, ...]
    page: int  # 1-based; asked past the last page: the last
    per_page: int
    total: int  # clients that match, on every page

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def first(self) -> int:
        """The position of the page's first client among all that match (1-based; 0: none)."""
        return (self.page - 1) * self.per_page + 1 if self.items else 0


def check_search(text: str) -> str:
    """A client search as typed, trimmed; Invalid when too long or with control characters
    (a NUL is no text PostgreSQL takes)."""
    text = text.strip()
    if len(text) > MAX_SEARCH:
        raise Invalid("q", f"the search is at most {MAX_SEARCH} characters")
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in text):
        raise Invalid("q", "the search has a control character")
    return text


def _check_fields(fields: dict[str, Any], country: int = 49) -> dict[str, Any]:
    """Validate the client fields present; return them normalised (`country`: the provider's
    calling code, for VIP numbers typed without +)."""
    out = dict(fields)
    if "name" in out and not 1 <= len(out["name"] or "") <= 200:
        raise Invalid("name", "give the client's name (1-200 characters)")
    if "vip_callers" in out:
        out["vip_callers"] = _vip_callers(out["vip_callers"], country)
    for key, what in _TEXTS:
        if out.get(key):
            valid(key, callpolicy.check_text, what, out[key])
    if out.get("notes"):
        valid("notes", callpolicy.check_text, "client notes", out["notes"], True)
    if "timezone" in out:
        out["timezone"] = valid("timezone", directory.validate_timezone, out["timezone"])
    if "bundesland" in out:
        out["bundesland"] = valid("bundesland", directory.validate_bundesland, out["bundesland"])
    if "closure_days" in out:
        out["closure_days"] = tuple(out["closure_days"])
    if out.get("email"):
        out["email"] = _email(out["email"])
    return out


def _vip_callers(entries: Any, country: int) -> tuple[VipCaller, ...]:
    """VIP callers from VipCaller objects or {"number", "name", "remark"?} mappings: numbers
    normalised to E.164, one entry per number (the last wins), at most MAX_VIPS."""
    out: dict[str, VipCaller] = {}
    for i, entry in enumerate(entries):
        e = entry if isinstance(entry, dict) else {"number": entry.number, "name": entry.name,
                                                     "remark": entry.remark}  # fmt: skip
        where = f"vip_callers[{i}]"
        number = valid(where, directory.validate_e164, str(e.get("number", "")), "number", country)
        name, remark = str(e.get("name", "")).strip(), str(e.get("remark", "") or "").strip()
        if not name or len(name) > 100:
            raise Invalid(where, "give the caller's name (1-100 characters)")
        if len(remark) > 200:
            raise Invalid(where, "the remark is at most 200 characters")
        valid(where, callpolicy.check_text, "VIP caller", name)
        if remark:
            valid(where, callpolicy.check_text, "VIP remark", remark)
        out.pop(number, None)
        out[number] = VipCaller(number, name, remark)
    if len(out) > MAX_VIPS:
        raise Invalid("vip_callers", f"at most {MAX_VIPS} VIP callers per client")
    return tuple(out.values())


def _email(address: str) -> str:
    """A plain address (`name@host.tld`), or Invalid."""
    address = address.strip()
    local, at, host = address.rpartition("@")
    if (not at or not local or "." not in host or len(address) > 254
            or any(ch.isspace() or ch in '<>,;"' for ch in address)):  # fmt: skip
        raise Invalid("email", "not an e-mail address (name@example.de)")
    return address


class Clients:
    """The provider's client businesses (admins change them; staff read all; client users and
    employees read their own)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _info(self, c: Client) -> ClientInfo:
        return ClientInfo(c, tuple(n.e164 for n in self.store.list_numbers(c.id)))

    def _get(self, client_id: str) -> Client:
        c = self.store.get_client(client_id)
        if c is None:
            raise NotFound("client", client_id)
        return c

    def visible(self, actor: Actor, client_id: str) -> Client:
        """The client, when the actor may see it (others' and missing ids: NotFound)."""
        policy.require_client_visible(actor, client_id)
        return self._get(client_id)

    def list(self, actor: Actor) -> list[ClientInfo]:
        clients = self.store.list_clients()
        numbers: dict[str, list[str]] = {}
        for n in self.store.list_numbers():
            numbers.setdefault(n.client, []).append(n.e164)
        return [
            ClientInfo(c, tuple(numbers.get(c.id, ())))
            for c in clients
            if policy.sees_client(actor, c.id)
        ]

    def find(
        self, actor: Actor, text: str = "", page: int = 1, per_page: int = PER_PAGE
    ) -> ClientPage:
        """One page of the clients the actor sees whose id, name or one of whose numbers
        contains `text` (case-insensitive; a number also as typed nationally, `089 1234`),
        ordered by id. The store counts and cuts the page; numbers are read for its clients
        only. Invalid: a search too long or with control characters, a page below 1, a page
        size outside 1..MAX_PER_PAGE."""
        text = check_search(text)
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            raise Invalid("page", "the page is a whole number from 1")
        if (
            isinstance(per_page, bool)
            or not isinstance(per_page, int)
            or not (1 <= per_page <= MAX_PER_PAGE)
        ):
            raise Invalid("per_page", f"clients per page: a whole number from 1 to {MAX_PER_PAGE}")
        only = None if actor.staff else (actor.client or "")
        parts = phone.search_parts(text, country_of(self.store)) if text else ()
        got = self.store.find_clients(text, parts, page=page, per_page=per_page, only=only)
        items = tuple(ClientInfo(c, got.numbers.get(c.id, ())) for c in got.clients)
        return ClientPage(items, got.page, per_page, got.total)

    def get(self, actor: Actor, client_id: str) -> ClientInfo:
        return self._info(self.visible(actor, client_id))

    def create(self, actor: Actor, client_id: str, name: str, **fields: Any) -> ClientInfo:
        policy.require_admin(actor)
        client_id = valid("id", directory.validate_slug, client_id)
        checked = _check_fields({"name": name, **fields}, country_of(self.store))
        return self._info(self.store.add_client(Client(id=client_id, **checked)))

    def update(self, actor: Actor, client_id: str, **changes: Any) -> ClientInfo:
        policy.require_admin(actor)
        self._get(client_id)
        checked = _check_fields(changes, country_of(self.store))
        return self._info(self.store.update_client(client_id, **checked))

    def set_vip(
        self, actor: Actor, client_id: str, number: str, name: str, remark: str = ""
    ) -> tuple[VipCaller, ...]:
        """Add or replace one VIP caller of a client (admins); the client's VIP callers."""
        return self._change_vips(actor, client_id, lambda vips, n: (
            *vips, {"number": number, "name": name, "remark": remark}))  # fmt: skip

    def remove_vip(self, actor: Actor, client_id: str, number: str) -> tuple[VipCaller, ...]:
        """Remove a VIP caller (admins); NotFound when the number is none of them."""

        def without(vips: tuple[VipCaller, ...], e164: str) -> tuple[VipCaller, ...]:
            if not any(v.number == e164 for v in vips):
                raise NotFound("", "", f"{e164} is no VIP caller of client {client_id!r}")
            return tuple(v for v in vips if v.number != e164)

        return self._change_vips(actor, client_id, without, number)

    def _change_vips(
        self, actor: Actor, client_id: str, change: Callable[..., Any], number: str = ""
    ) -> tuple[VipCaller, ...]:
        policy.require_admin(actor)
        client_id = valid("id", directory.validate_slug, client_id)
        country = country_of(self.store)
        e164 = valid("number", directory.validate_e164, number, "number", country) if number else ""
        with self.store.unit_of_work() as uow:  # read and change in one transaction
            c = _client(uow, client_id)
            vips = _vip_callers(change(c.vip_callers, e164), country)
            return uow.clients.update(c.id, vip_callers=vips).vip_callers

    def remove(self, actor: Actor, client_id: str) -> str:
        """Remove a client with its numbers, rules and override (call records stay)."""
        policy.require_admin(actor)
        client_id = valid("id", directory.validate_slug, client_id)
        if not self.store.remove_client(client_id):
            raise NotFound("client", client_id)
        return client_id

    # -- calls out --

    def call_policy(self, actor: Actor, client_id: str) -> callpolicy.CallPolicy:
        return self.visible(actor, valid("id", directory.validate_slug, client_id)).call_policy

    def change_call_policy(
        self,
        actor: Actor,
        client_id: str,
        change: Callable[[callpolicy.CallPolicy], dict[str, Any]],
    ) -> callpolicy.CallPolicy:
        """Replace the client's policy with `change(current policy)` as JSON (admins)."""
        policy.require_admin(actor)
        client_id = valid("id", directory.validate_slug, client_id)
        with self.store.unit_of_work() as uow:  # read and change in one transaction
            c = _client(uow, client_id)
            new = valid("body", callpolicy.parse_policy, change(c.call_policy))
            if new != c.call_policy:
                uow.clients.update(c.id, call_policy=new)
        return new

    def approve_number(self, actor: Actor, client_id: str, number: str) -> callpolicy.CallPolicy:
        """Approve an external number for the client's forwarding rules (admins); Invalid
        when no trunk carries it or the client's or the trunk's policy refuses it."""
        policy.require_admin(actor)
        client_id = valid("id", directory.validate_slug, client_id)
        e164 = valid("number", directory.validate_e164, number, "number", country_of(self.store))
        with self.store.unit_of_work() as uow:  # read and change in one transaction
            c = _client(uow, client_id)
            trunk = next((t for t in uow.trunks.all() if e164.startswith(t.prefixes)), None)
            if trunk is None:  # the client's own policy first, then: no trunk carries it
                reason = callpolicy.destination_refusal(e164, c.call_policy, None)
                reason = reason or f"no trunk allows calls to {e164}"
            else:
                reason = callpolicy.destination_refusal(e164, c.call_policy, trunk.call_policy)
            if reason is not None:
                raise Invalid("number", reason)
            approved = tuple(dict.fromkeys((*c.call_policy.approved_numbers, e164)))
            new = replace(c.call_policy, approved_numbers=approved)
            return uow.clients.update(c.id, call_policy=new).call_policy

    def withdraw_number(self, actor: Actor, client_id: str, number: str) -> str:
        """Withdraw an approval (admins); rules that still forward there stop validating."""
        policy.require_admin(actor)
        client_id = valid("id", directory.validate_slug, client_id)
        e164 = valid("number", directory.validate_e164, number, "number", country_of(self.store))
        with self.store.unit_of_work() as uow:  # read and change in one transaction
            c = _client(uow, client_id)
            if e164 not in c.call_policy.approved_numbers:
                raise NotFound("", "", f"{e164} is not approved for client {c.id!r}")
            approved = tuple(n for n in c.call_policy.approved_numbers if n != e164)
            uow.clients.update(c.id, call_policy=replace(c.call_policy, approved_numbers=approved))
        return e164


def _country_code(code: int) -> int:
    try:
        return phone.valid_country(code)
    except phone.PhoneError as exc:
        raise directory.DirectoryError(str(exc)) from None


def _client(uow: UnitOfWork, client_id: str) -> Client:
    c = uow.clients.get(client_id)
    if c is None:
        raise NotFound("client", client_id)
    return c


class Numbers:
    """The clients' phone numbers."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def list(self, actor: Actor, client_id: str | None = None) -> list[Number]:
        """Numbers of every client (staff) or of the actor's own business."""
        if client_id is not None:
            policy.require_client_visible(actor, client_id)
            if self.store.get_client(client_id) is None:
                raise NotFound("client", client_id)
        elif not actor.staff:
            if actor.client is None:
                return []
            client_id = actor.client
        return self.store.list_numbers(client_id)

    def add(self, actor: Actor, number: str, client_id: str, dictation: bool = False) -> Number:
        """Give a client a number; `dictation`: as its dictation number (its calls start
        dictation by phone for the client, from the client's users only)."""
        policy.require_admin(actor)
        e164 = valid("number", directory.validate_e164, number, "number", country_of(self.store))
        client_id = valid("client", directory.validate_slug, client_id)
        return self.store.add_number(e164, client_id, dictation)

    def set_dictation(self, actor: Actor, number: str, dictation: bool) -> Number:
        """Make a number its client's dictation number, or an ordinary one again."""
        policy.require_admin(actor)
        e164 = valid("number", directory.validate_e164, number, "number", country_of(self.store))
        changed = self.store.set_number_dictation(e164, dictation)
        if changed is None:
            raise NotFound("number", e164)
        return changed

    def remove(self, actor: Actor, number: str) -> str:
        policy.require_admin(actor)
        e164 = valid("number", directory.validate_e164, number, "number", country_of(self.store))
        if not self.store.remove_number(e164):
            raise NotFound("number", e164)
        return e164


class Providers:
    """The provider itself: its name, bank details and default plan."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, actor: Actor) -> Provider:
        policy.require_staff(actor)
        return self.store.get_provider()

    def set(self, actor: Actor, provider: Provider) -> Provider:
        policy.require_admin(actor)
        valid("country_code", _country_code, provider.country_code)
        self.store.set_provider(provider)
        return provider
