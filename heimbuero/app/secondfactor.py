"""The web console's optional second factor (TOTP, RFC 6238): every user may switch it on
for himself (a new secret is confirmed by a first code before it counts) and off again (with
a current code); an admin may give a user a secret or take a user's away (a lost phone).

Codes are good for their 30-second step and the one before and after it (clock drift), and
only once: the last step used is stored, and a code of that step or an earlier one is
refused. Passwords are checked by the adapters (their login limits count the failures); so
are wrong codes, which they count the same way. API tokens and SIP digests do not use it."""

from __future__ import annotations

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

    def confirm(self, actor: Actor, code: str) -> None:
        """Switch the actor's pending secret on with a first code of it; WrongCode otherwise."""
        state = self.factors.get(actor.name)
        if state is None or state.enabled:
            raise Conflict("no new second factor waits for its first code: start again")
        step = totp.match(state.secret, code, self.clock())
        if step is None or not self.factors.confirm(actor.name, state.secret, step):
            raise WrongCode()

    def check(self, name: str, code: str) -> None:
        """The login's second step: `code` is a current code of `name`'s secret, not used
        before (the step is stored at once); WrongCode otherwise."""
        state = self.factors.get(name)
        if state is None or not state.enabled:
            raise WrongCode()
        step = totp.match(state.secret, code, self.clock(), state.last_step)
        if step is None or not self.factors.use_step(name, step):
            raise WrongCode()

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
        WebSessions(self.store).end_all_of(name)
        LoginChallenges(self.store).end_all_of(name)
        return self._enrolment(name, secret, True)
