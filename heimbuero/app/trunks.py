"""Carrier trunks: where calls come in from and go out to (staff read them, admins change
them). Checked here for both the HTTP API and the command line: a trunk must not point at
this server, and a trunk that registers to the carrier needs a user name and a password."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from heimbuero.app import policy
from heimbuero.app._util import valid
from heimbuero.app.errors import Invalid, NotFound
from heimbuero.app.policy import Actor
from heimbuero.domain.model import Trunk
from heimbuero.office import callpolicy, directory
from heimbuero.services.trunks import inbound_auth
from heimbuero.sip.locate import AUTO, DEFAULT_PORT, is_address
from heimbuero.store import Store

_INBOUND = ("inbound_auth", "inbound_username", "inbound_password")
REGISTER_NEEDS_CREDENTIALS = "registering to the carrier needs a user name and a password"


class Trunks:
    """`own_sip_address(host, port)` names the server's own SIP address that HOST:PORT
    reaches (None: not ours); `own_hint` is added to the refusal (where that is configured)."""

    def __init__(
        self,
        store: Store,
        realm: Callable[[], str],
        own_sip_address: Callable[[str, int], str | None] | None = None,
        own_hint: str = "",
    ) -> None:
        self.store, self.realm = store, realm
        self.own_sip_address, self.own_hint = own_sip_address, own_hint

    def list(self, actor: Actor) -> list[Trunk]:
        """Carrier trunks (staff; the adapters never show passwords)."""
        policy.require_staff(actor)
        return self.store.list_trunks()

    def _fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Validate trunk fields (names as in model.Trunk, plus inbound_auth/_username/
        _password); return them as Trunk fields."""
        out = {k: v for k, v in fields.items() if k not in _INBOUND}
        for required in ("host", "port", "transport", "prefixes", "register"):
            if required in out and out[required] is None:
                raise Invalid(required, "must not be null")
        if "host" in out and (not out["host"] or len(out["host"]) > 255):
            raise Invalid("host", "must be a host name or address of 1-255 characters")
        if "port" in out and not 0 <= out["port"] < 65536:
            raise Invalid("port", "must be 1-65535, or 0: by the host name's DNS SRV records")
        if "transport" in out:
            check = directory.validate_trunk_transport
            out["transport"] = valid("transport", check, out["transport"])
            if out["transport"] == AUTO and "port" not in out:
                out["port"] = 0  # DNS chooses: the port comes from the SRV record
        if "prefixes" in out:
            out["prefixes"] = tuple(
                valid("prefixes", directory.validate_prefix, p) for p in out["prefixes"]
            )
        for key in ("username", "password"):
            if key in out:
                out[key] = out[key] or None
        auth = fields.get("inbound_auth")
        username, password = fields.get("inbound_username"), fields.get("inbound_password")
        if auth is None:
            if username is not None or password is not None:
                raise Invalid(
                    "inbound_auth", "inbound credentials need the inbound authentication digest"
                )
        else:
            try:
                out["inbound"] = inbound_auth(auth, username, password, self.realm())
            except ValueError as exc:
                raise Invalid("inbound_auth", str(exc)) from None
        return out

    def _check(self, trunk: Trunk) -> Trunk:
        if trunk.transport == AUTO and (trunk.port or is_address(trunk.host)):
            raise Invalid(
                "transport", "auto (chosen by DNS NAPTR) needs a host name without a port"
            )
        if trunk.port == 0 and is_address(trunk.host):
            raise Invalid("port", "0 (by DNS SRV) needs a host name, not an address")
        if trunk.register and not (trunk.username and trunk.password):
            raise Invalid("register", REGISTER_NEEDS_CREDENTIALS)
        # (port 0, by SRV: a name without SRV records is reached on the default port)
        port = trunk.port or DEFAULT_PORT.get(trunk.transport, 5060)
        own = self.own_sip_address and self.own_sip_address(trunk.host, port)
        if own:
            hint = f", see {self.own_hint}" if self.own_hint else ""
            raise Invalid(
                "host",
                f"trunk {trunk.name} would point at this server itself ({trunk.host}:"
                f"{port} is its own SIP address {own}{hint}): give the carrier's address",
            )
        return trunk

    def create(
        self, actor: Actor, name: str, policy_json: dict[str, Any] | None = None, **fields: Any
    ) -> Trunk:
        policy.require_admin(actor)
        name = valid("name", directory.validate_slug, name, "trunk name")
        trunk = Trunk(name=name, **self._fields({"host": "", **fields}))
        if policy_json is not None:
            trunk = replace(trunk, call_policy=valid("body", callpolicy.parse_policy, policy_json))
        return self.store.add_trunk(self._check(trunk))

    def update(
        self,
        actor: Actor,
        name: str,
        change_policy: Callable[[callpolicy.CallPolicy], dict[str, Any]] | None = None,
        **fields: Any,
    ) -> Trunk:
        """Change the fields given; `change_policy(current)` gives the new call policy."""
        policy.require_admin(actor)
        name = valid("name", directory.validate_slug, name, "trunk name")
        changes = self._fields(fields)
        with self.store.unit_of_work() as uow:  # read, check and change in one transaction
            old = uow.trunks.get(name)
            if old is None:
                raise NotFound("trunk", name)
            if change_policy is not None:
                new_policy = valid("body", callpolicy.parse_policy, change_policy(old.call_policy))
                changes["call_policy"] = new_policy
            new = replace(old, **changes)
            if new.register and not (new.username and new.password):
                raise Invalid("register", REGISTER_NEEDS_CREDENTIALS)
            if "host" in changes or "port" in changes:
                self._check(new)
            return uow.trunks.update(name, **changes)

    def set_call_policy(self, actor: Actor, name: str, data: dict[str, Any]) -> Trunk:
        """Replace what a trunk carries (classes, prefixes, `max_concurrent`)."""
        return self.update(actor, name, change_policy=lambda _old: data)

    def remove(self, actor: Actor, name: str) -> str:
        policy.require_admin(actor)
        if not self.store.remove_trunk(name):
            raise NotFound("trunk", name)
        return name
