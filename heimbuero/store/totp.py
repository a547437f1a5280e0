"""The web console's second factor in the database: each user's TOTP secret with the last
time step a code was used for and the hashes of his unused backup codes, and the logins
waiting for their code (the cookie carries a
random id, the table only its SHA-256). The secret is never logged."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select, update

from heimbuero.store.db import Store
from heimbuero.store.errors import NoSuchUser
from heimbuero.store.models import LoginChallengeRow, User, UserTotpRow, as_utc
from heimbuero.store.uow import UnitOfWork


@dataclass(frozen=True, slots=True)
class TotpState:
    """A user's second factor: `enabled` False while a new secret awaits its first code."""

    secret: str
    enabled: bool
    last_step: int | None
    backup_left: int = 0  # unused backup codes

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        return f"TotpState(enabled={self.enabled}, last_step={self.last_step})"


@dataclass(frozen=True, slots=True)
class LoginChallenge:
    user: str
    csrf: str
    failures: int
    expires_at: datetime


def _user_id(uow: UnitOfWork, user: str) -> int | None:
    return uow.session.scalar(select(User.id).where(User.name == user))


def _hash(challenge_id: str) -> str:
    return hashlib.sha256(challenge_id.encode("utf-8", "surrogateescape")).hexdigest()


class SecondFactors:
    """Users' TOTP secrets (user_totp)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, user: str) -> TotpState | None:
        with self.store.unit_of_work(write=False) as uow:
            row = uow.session.scalar(
                select(UserTotpRow)
                .join(User, User.id == UserTotpRow.user_id)
                .where(User.name == user)
            )
            if row is None:
                return None
            left = len((row.backup_codes or "").split())
            return TotpState(row.secret, row.enabled, row.last_step, left)

    def enabled(self, user: str) -> bool:
        state = self.get(user)
        return state is not None and state.enabled

    def set(self, user: str, secret: str, *, enabled: bool, last_step: int | None = None) -> None:
        """Give `user` this secret (replacing any): on, or pending its first code."""
        now = datetime.now(UTC)
        with self.store.unit_of_work() as uow:
            uid = _user_id(uow, user)
            if uid is None:
                raise NoSuchUser(user)
            row = uow.session.get(UserTotpRow, uid)
            if row is None:
                row = UserTotpRow(user_id=uid)
                uow.session.add(row)
            row.secret, row.enabled, row.last_step, row.updated_at = (
                secret, enabled, last_step, now
            )  # fmt: skip
            row.backup_codes = None  # a new secret: the old secret's backup codes are void

    def confirm(self, user: str, secret: str, step: int) -> bool:
        """Switch on the pending `secret` of `user`, its code of `step` used; False when that
        secret is no longer the pending one (replaced or already on)."""
        with self.store.unit_of_work() as uow:
            uid = _user_id(uow, user)
            if uid is None:
                return False
            done = uow.session.execute(
                update(UserTotpRow)
                .where(
                    UserTotpRow.user_id == uid,
                    UserTotpRow.secret == secret,
                    UserTotpRow.enabled.is_(False),
                )
                .values(enabled=True, last_step=step, updated_at=datetime.now(UTC))
            )
            return bool(getattr(done, "rowcount", 0))

    def use_step(self, user: str, step: int) -> bool:
        """Record that the code of `step` was used; False when it (or a later one) already
        was. One conditional UPDATE: two requests with the same code cannot both pass."""
        with self.store.unit_of_work() as uow:
            uid = _user_id(uow, user)
            if uid is None:
                return False
            done = uow.session.execute(
                update(UserTotpRow)
                .where(
                    UserTotpRow.user_id == uid,
                    UserTotpRow.enabled.is_(True),
                    or_(UserTotpRow.last_step.is_(None), UserTotpRow.last_step < step),
                )
                .values(last_step=step, updated_at=datetime.now(UTC))
            )
            return bool(getattr(done, "rowcount", 0))

    def set_backup(self, user: str, hashes: list[str]) -> bool:
        """Replace the user's backup codes (their hashes); False when his second factor is not
        on."""
        with self.store.unit_of_work() as uow:
            uid = _user_id(uow, user)
            row = None if uid is None else uow.session.get(UserTotpRow, uid)
            if row is None or not row.enabled:
                return False
            row.backup_codes, row.updated_at = " ".join(hashes), datetime.now(UTC)
            return True

    def use_backup(self, user: str, code_hash: str) -> int | None:
        """Use up one backup code: how many are left, or None when it is not one of his
        unused codes. Read and written in one write unit of work (the store's writers take
        turns), so two logins with the same code cannot both pass."""
        with self.store.unit_of_work() as uow:
            uid = _user_id(uow, user)
            row = None if uid is None else uow.session.get(UserTotpRow, uid)
            if row is None or not row.enabled:
                return None
            left = (row.backup_codes or "").split()
            if code_hash not in left:
                return None
            left.remove(code_hash)
            row.backup_codes, row.updated_at = " ".join(left), datetime.now(UTC)
            return len(left)

    def users(self) -> list[str]:
        """The names of the users whose second factor is on, sorted."""
        with self.store.unit_of_work(write=False) as uow:
            q = (
                select(User.name)
                .join(UserTotpRow, UserTotpRow.user_id == User.id)
                .where(UserTotpRow.enabled.is_(True))
                .order_by(User.name)
            )
            return list(uow.session.scalars(q))

    def remove(self, user: str) -> bool:
        """Drop the user's second factor (pending or on); False when there was none."""
        with self.store.unit_of_work() as uow:
            uid = _user_id(uow, user)
            if uid is None:
                return False
            done = uow.session.execute(delete(UserTotpRow).where(UserTotpRow.user_id == uid))
            return bool(getattr(done, "rowcount", 0))


class LoginChallenges:
    """Logins past the password that wait for the code: short-lived, in the database."""

    def __init__(self, store: Store, lifetime: timedelta = timedelta(minutes=5)) -> None:
        self.store, self.lifetime = store, lifetime

    def create(self, user: str, now: datetime | None = None) -> tuple[str, LoginChallenge]:
        now = now or datetime.now(UTC)
        challenge_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires = now + self.lifetime
        with self.store.unit_of_work() as uow:
            uow.session.execute(delete(LoginChallengeRow).where(LoginChallengeRow.expires_at < now))
            uow.session.add(
                LoginChallengeRow(
                    id_hash=_hash(challenge_id), user=user, csrf=csrf, failures=0,
                    expires_at=expires,
                )
            )  # fmt: skip
        return challenge_id, LoginChallenge(user, csrf, 0, expires)

    def get(self, challenge_id: str, now: datetime | None = None) -> LoginChallenge | None:
        if not challenge_id or len(challenge_id) > 128:
            return None
        now = now or datetime.now(UTC)
        with self.store.unit_of_work(write=False) as uow:
            row = uow.session.get(LoginChallengeRow, _hash(challenge_id))
            if row is None:
                return None
            found = LoginChallenge(row.user, row.csrf, row.failures, as_utc(row.expires_at))
        return found if found.expires_at > now else None

    def failed(self, challenge_id: str) -> int:
        """Count a wrong code; the failures so far."""
        with self.store.unit_of_work() as uow:
            row = uow.session.get(LoginChallengeRow, _hash(challenge_id))
            if row is None:
                return 0
            row.failures += 1
            return row.failures

    def end(self, challenge_id: str) -> None:
        with self.store.unit_of_work() as uow:
            uow.session.execute(
                delete(LoginChallengeRow).where(LoginChallengeRow.id_hash == _hash(challenge_id))
            )

    def end_all_of(self, user: str) -> None:
        with self.store.unit_of_work() as uow:
            uow.session.execute(delete(LoginChallengeRow).where(LoginChallengeRow.user == user))
