"""The web console's optional second factor (TOTP, RFC 6238): every user may switch it on
for himself (a new secret is confirmed by a first code before it counts) and off again (with
a current code); an admin may give a user a secret or take a user's away (a lost phone).

Codes are good for their 30-second step and the one before and after it (clock drift), and
only once: the last step used is stored, and a code of that step or an earlier one is
refused. Each user also gets 10 backup codes (shown once, stored as SHA-256), each good once
for a login without the phone. Passwords are checked by the adapters (their login limits
count the failures); so are wrong codes, which they count the same way. API tokens and SIP
digests do not use it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from heimbuero.app import policy
from heimbuero.app._util import valid
from heimbuero.app.errors import Conflict, Invalid, NotFound
from heimbuero.app.policy import Actor
from heimbuero.domain import totp
from heimbuero.office import accounts
from heimbuero.store import Store
from heimbuero.store.totp import LoginChallenges, SecondFactors, TotpState
from heimbuero.store.websessions import WebSessions

ISSUER = "heimbuero"
log = logging.getLogger("heimbuero.web")


class WrongCode(Invalid):
    """A code that is not the current one (or was used before): adapters count it as a
    failed login."""

    def __init__(self) -> None:
        super().__init__("code", "the code is wrong or was used before")


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A new secret for an authenticator app: as text and as the otpauth:// URI (QR code)."""

    user: str
    secret: str
    uri: str
    enabled: bool
    backup_codes: tuple[str, ...] = ()  # shown once (an admin's assign)

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        return f"Enrolment(user={self.user!r}, enabled={self.enabled})"


class SecondFactor:
    """See the module text. `realm` is the SIP domain, shown in the app next to the name."""

    def __init__(
        self, store: Store, realm: Callable[[], str], clock: Callable[[], float] = time.time
    ) -> None:
        self.store, self.realm, self.clock = store, realm, clock
        self.factors = SecondFactors(store)

    def _enrolment(self, user: str, secret: str, enabled: bool) -> Enrolment:
        return Enrolment(user, secret, totp.uri(secret, f"{user}@{self.realm()}", ISSUER), enabled)

    def _user(self, name: str) -> str:
        name = valid("name", accounts.validate_name, name)
        if self.store.get_user(name) is None:
            raise NotFound("user", name)
        return name

    def enabled(self, name: str) -> bool:
        """Whether `name` logs in with a code (a pending secret does not count)."""
        return self.factors.enabled(name)

    def state(self, actor: Actor, name: str) -> TotpState | None:
        """The user's second factor (admins: anyone's; everybody: their own)."""
        policy.require_self_or_admin(actor, name, "you may only see your own second factor")
        return self.factors.get(self._user(name))

    def begin(self, actor: Actor) -> Enrolment:
        """A new pending secret for the actor himself (his password checked by the adapter);
        it counts once `confirm` got a code of it. Conflict when one is on already."""
        name = self._user(actor.name)
        if self.factors.enabled(name):
            raise Conflict("the second factor is on already: switch it off first")
        secret = totp.new_secret()
        self.factors.set(name, secret, enabled=False)
        return self._enrolment(name, secret, False)

    def pending(self, actor: Actor) -> Enrolment | None:
        """The actor's secret that waits for its first code, or None."""
        state = self.factors.get(actor.name)
        if state is None or state.enabled:
            return None
        return self._enrolment(actor.name, state.secret, False)

    def confirm(self, actor: Actor, code: str) -> list[str]:
        """Switch the actor's pending secret on with a first code of it; WrongCode otherwise.
        Its backup codes, to be shown once (only their hashes are stored)."""
        state = self.factors.get(actor.name)
        if state is None or state.enabled:
            raise Conflict("no new second factor waits for its first code: start again")
        step = totp.match(state.secret, code, self.clock())
        if step is None or not self.factors.confirm(actor.name, state.secret, step):
            raise WrongCode()
        return self._new_backup_codes(actor.name)

    def _new_backup_codes(self, name: str) -> list[str]:
        codes = totp.new_backup_codes()
        hashes = [totp.backup_hash(c) for c in codes]
        self.factors.set_backup(name, [h for h in hashes if h is not None])
        return codes

    def check(self, name: str, code: str) -> int | None:
        """The login's second step: `code` is a current code of `name`'s secret, not used
        before (the step is stored at once), or one of his backup codes (used up at once);
        WrongCode otherwise. None for a code of the app; for a backup code, how many are
        left."""
        state = self.factors.get(name)
        if state is None or not state.enabled:
            raise WrongCode()
        backup = totp.backup_hash(code)
        if backup is not None:
            left = self.factors.use_backup(name, backup)
            if left is None:
                raise WrongCode()
            log.info("second factor of %s: a backup code used, %d left", name, left)
            return left
        step = totp.match(state.secret, code, self.clock(), state.last_step)
        if step is None or not self.factors.use_step(name, step):
            raise WrongCode()
        return None

    def backup_left(self, actor: Actor) -> int:
        """How many unused backup codes the actor has."""
        state = self.factors.get(actor.name)
        return 0 if state is None else state.backup_left

    def renew_backup_codes(self, actor: Actor, code: str) -> list[str]:
        """New backup codes for the actor (the old ones are void), after a current code of
        his app (his password is checked by the adapter); WrongCode otherwise."""
        state = self.factors.get(actor.name)
        if state is None or not state.enabled:
            raise Conflict("the second factor is off: there are no backup codes")
        if totp.backup_hash(code) is not None:  # a lost phone cannot renew them
            raise WrongCode()
        self.check(actor.name, code)
        return self._new_backup_codes(actor.name)

    def disable(self, actor: Actor, code: str) -> None:
        """Switch the actor's own second factor off: a current code is needed (his password
        is checked by the adapter)."""
        state = self.factors.get(actor.name)
        if state is None or not state.enabled:
            self.factors.remove(actor.name)  # a pending one goes without a code
            return
        self.check(actor.name, code)
        self.factors.remove(actor.name)

    def users(self, actor: Actor) -> list[str]:
        """Who logs in with a code (admins)."""
        policy.require_admin(actor)
        return self.factors.users()

    def reset(self, actor: Actor, name: str) -> bool:
        """Take a user's second factor away (admins: a lost phone); False when he had none."""
        policy.require_admin(actor)
        return self.factors.remove(self._user(name))

    def assign(self, actor: Actor, name: str) -> Enrolment:
        """Give a user a new secret, on at once (admins, for handing it over; it replaces any
        earlier one). His console sessions end: they were opened without it."""
        policy.require_admin(actor)
        name = self._user(name)
        secret = totp.new_secret()
        self.factors.set(name, secret, enabled=True)
        codes = self._new_backup_codes(name)
        WebSessions(self.store).end_all_of(name)
        LoginChallenges(self.store).end_all_of(name)
        e = self._enrolment(name, secret, True)
        return Enrolment(e.user, e.secret, e.uri, e.enabled, tuple(codes))
