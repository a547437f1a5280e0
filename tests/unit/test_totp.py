"""The TOTP second factor: RFC 6238's SHA-1 test vectors, the drift window, replay refusal
(durable: the last step used is in the database) and the handler's enrolment rules."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from heimbuero.app import Actor, Conflict, Forbidden, Unavailable
from heimbuero.app.secondfactor import SecondFactor, WrongCode
from heimbuero.domain import totp
from heimbuero.store import Store
from heimbuero.store.models import UserTotpRow
from heimbuero.store.sealing import Sealer
from heimbuero.store.totp import SecondFactors

# RFC 6238 appendix B: the SHA-1 seed is the ASCII "12345678901234567890", codes 8 digits
RFC_KEY = b"12345678901234567890"
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize(("now", "code"), RFC_VECTORS)
def test_rfc6238_sha1_vectors(now: int, code: str) -> None:
    assert totp.totp(RFC_KEY, now, digits=8) == code
    # the 6-digit code apps show is the same number's last six digits
    assert totp.totp(RFC_KEY, now) == code[-6:]


def test_rfc4226_hotp_vectors() -> None:
    expected = ["755224", "287082", "359152", "969429", "338314",
                "254676", "287922", "162583", "399871", "520489"]  # fmt: skip
    assert [totp.hotp(RFC_KEY, i) for i in range(10)] == expected


def test_secrets_are_base32_of_160_bits_and_differ() -> None:
    a, b = totp.new_secret(), totp.new_secret()
    assert a != b and len(a) == 32 and a.isupper()
    assert len(totp.secret_bytes(a)) == 20
    assert totp.secret_bytes(a.lower()[:16] + " " + a[16:]) == totp.secret_bytes(a)
    with pytest.raises(ValueError):
        totp.secret_bytes("not base32!")


SECRET = base64.b32encode(RFC_KEY).decode()  # GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ
NOW = 1_111_111_111.0  # step 37037037, 1 s into it


def test_drift_window_one_step_each_way() -> None:
    step = totp.step_of(NOW)
    key = totp.secret_bytes(SECRET)
    for delta in (-1, 0, 1):
        assert totp.match(SECRET, totp.hotp(key, step + delta), NOW) == step + delta
    for delta in (-2, 2, 10):
        assert totp.match(SECRET, totp.hotp(key, step + delta), NOW) is None


def test_malformed_codes_are_refused_and_spaces_tolerated() -> None:
    code = totp.totp(totp.secret_bytes(SECRET), NOW)
    assert totp.match(SECRET, f"{code[:3]} {code[3:]}", NOW) is not None
    for bad in ("", "12345", "1234567", "abcdef", "１２３４５６", code + "0"):
        assert totp.match(SECRET, bad, NOW) is None


def test_a_code_of_the_last_used_step_or_earlier_is_refused() -> None:
    key = totp.secret_bytes(SECRET)
    step = totp.step_of(NOW)
    code = totp.hotp(key, step)
    assert totp.match(SECRET, code, NOW, last_step=step - 1) == step
    assert totp.match(SECRET, code, NOW, last_step=step) is None
    # the previous step's code after the current one was used: refused (no going back)
    assert totp.match(SECRET, totp.hotp(key, step - 1), NOW, last_step=step) is None


def test_uri_for_authenticator_apps() -> None:
    uri = totp.uri("ABC234", "anna@office.example", "heimbuero")
    assert uri.startswith("otpauth://totp/heimbuero:anna@office.example?")
    for part in ("secret=ABC234", "issuer=heimbuero", "algorithm=SHA1", "digits=6", "period=30"):
        assert part in uri


# -- the handler over a real store -----------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


SERVER_SECRET = bytes(range(32))  # the data directory's `secret` (tests: a fixed one)


@pytest.fixture
def factor(db_url: str) -> Any:
    """The handler over a fresh SQLite file and a fresh PostgreSQL database."""
    store = Store(db_url)
    store.upgrade()
    store.add_user("anna", "agent", "0" * 32, "0" * 64, "x")
    store.add_user("bert", "agent", "0" * 32, "0" * 64, "x")
    clock = Clock(NOW)
    yield SecondFactor(store, lambda: "office.example", clock, SERVER_SECRET), clock, store
    store.close()


def _code(secret: str, now: float, delta: int = 0) -> str:
    return totp.hotp(totp.secret_bytes(secret), totp.step_of(now) + delta)


ANNA = Actor("anna", "agent")  # type: ignore[arg-type]


def test_enrolment_needs_a_first_code_before_it_counts(factor: Any) -> None:
    sf, clock, _ = factor
    e = sf.begin(ANNA)
    assert not e.enabled and not sf.enabled("anna") and e.secret not in repr(e)
    assert sf.pending(ANNA) == e
    with pytest.raises(WrongCode):
        sf.confirm(ANNA, "000000" if _code(e.secret, NOW) != "000000" else "111111")
    assert not sf.enabled("anna")
    sf.confirm(ANNA, _code(e.secret, NOW))
    assert sf.enabled("anna") and sf.pending(ANNA) is None
    # the code that confirmed it cannot log in
    with pytest.raises(WrongCode):
        sf.check("anna", _code(e.secret, NOW))
    with pytest.raises(Conflict):
        sf.begin(ANNA)


def test_login_codes_are_good_once_and_the_refusal_is_durable(factor: Any) -> None:
    sf, clock, store = factor
    e = sf.begin(ANNA)
    sf.confirm(ANNA, _code(e.secret, NOW))
    clock.now = NOW + 60
    code = _code(e.secret, clock.now)
    sf.check("anna", code)
    with pytest.raises(WrongCode):
        sf.check("anna", code)
    # a new handler over a reopened store (a restart) still refuses it
    store2 = Store(store.url)
    try:
        again = SecondFactor(store2, lambda: "office.example", clock, SERVER_SECRET)
        with pytest.raises(WrongCode):
            again.check("anna", code)
        # drift: the next step's code is good (once)
        again.check("anna", _code(e.secret, clock.now, +1))
    finally:
        store2.close()


def test_a_user_without_the_factor_has_no_code_to_give(factor: Any) -> None:
    sf, _, _ = factor
    with pytest.raises(WrongCode):
        sf.check("bert", "123456")
    sf.begin(Actor("bert", "agent"))  # type: ignore[arg-type]
    with pytest.raises(WrongCode):  # pending is not on
        sf.check("bert", "123456")


def test_disable_needs_a_current_code_and_admins_reset(factor: Any) -> None:
    sf, clock, _ = factor
    e = sf.begin(ANNA)
    sf.confirm(ANNA, _code(e.secret, NOW))
    clock.now = NOW + 90
    with pytest.raises(WrongCode):
        sf.disable(ANNA, "12345")
    assert sf.enabled("anna")
    sf.disable(ANNA, _code(e.secret, clock.now))
    assert not sf.enabled("anna")
    with pytest.raises(Forbidden):
        sf.reset(ANNA, "bert")
    with pytest.raises(Forbidden):
        sf.assign(ANNA, "bert")
    admin = Actor.local_admin()
    given = sf.assign(admin, "bert")
    assert given.enabled and sf.enabled("bert") and "secret=" + given.secret in given.uri
    sf.check("bert", _code(given.secret, clock.now))
    assert sf.reset(admin, "bert") and not sf.enabled("bert")
    assert not sf.reset(admin, "bert")


def test_removing_the_user_removes_the_secret(factor: Any) -> None:
    sf, _, store = factor
    sf.assign(Actor.local_admin(), "bert")
    assert store.remove_user("bert")
    store.add_user("bert", "agent", "0" * 32, "0" * 64, "x")
    assert not sf.enabled("bert") and sf.factors.get("bert") is None


def test_a_login_waiting_for_its_code_ends_after_five_minutes(factor: Any) -> None:
    from datetime import UTC, datetime, timedelta

    from heimbuero.store.totp import LoginChallenges

    _, _, store = factor
    challenges = LoginChallenges(store)
    start = datetime.now(UTC)
    cid, c = challenges.create("anna", now=start)
    assert c.expires_at == start + timedelta(minutes=5)
    assert challenges.get(cid, now=start + timedelta(minutes=4, seconds=59)) is not None
    assert challenges.get(cid, now=start + timedelta(minutes=5)) is None
    assert challenges.get("forged") is None and challenges.get("x" * 500) is None
    assert [challenges.failed(cid) for _ in range(3)] == [1, 2, 3]
    challenges.end(cid)
    assert challenges.get(cid, now=start) is None
    # only the SHA-256 of the cookie's id is stored
    import hashlib

    from sqlalchemy import text

    cid2, _ = challenges.create("anna")
    with store.unit_of_work(write=False) as uow:
        ids = [r[0] for r in uow.session.execute(text("SELECT id_hash FROM login_challenges"))]
    assert ids == [hashlib.sha256(cid2.encode()).hexdigest()]


def test_secrets_are_sealed_at_rest_and_bound_to_their_row(factor: Any) -> None:
    sf, clock, store = factor
    e = sf.begin(ANNA)
    sf.confirm(ANNA, _code(e.secret, NOW))
    with store.unit_of_work(write=False) as uow:
        rows = {r.user_id: r.secret for r in uow.session.scalars(select(UserTotpRow))}
    [stored] = rows.values()
    assert stored.startswith("v1:") and e.secret not in stored
    assert base64.b32decode(e.secret) not in base64.urlsafe_b64decode(stored[3:])
    # the sealed value copied to bert's row does not open there: his login is refused
    bert_id = store.get_user("bert").id
    with store.unit_of_work() as uow:
        uow.session.add(
            UserTotpRow(user_id=bert_id, secret=stored, enabled=True, last_step=None,
                        updated_at=datetime.now(UTC))
        )  # fmt: skip
    clock.now = NOW + 60
    with pytest.raises(Unavailable, match="does not open"):
        sf.check("bert", _code(e.secret, NOW + 60))
    sf.check("anna", _code(e.secret, NOW + 60))


def test_another_servers_secret_does_not_open_them_but_backup_codes_still_work(
    factor: Any,
) -> None:
    sf, clock, store = factor
    e = sf.begin(ANNA)
    backup = sf.confirm(ANNA, _code(e.secret, NOW))
    other = SecondFactor(store, lambda: "office.example", clock, bytes(32))
    clock.now = NOW + 60
    with pytest.raises(Unavailable, match="heimbuero user totp anna disable"):
        other.check("anna", _code(e.secret, NOW + 60))
    assert other.check("anna", backup[0]) == len(backup) - 1  # like a lost phone
    # without any key: counted and removed, not made or checked
    keyless = SecondFactor(store, lambda: "office.example", clock)
    assert keyless.enabled("anna")
    with pytest.raises(Unavailable):
        keyless.begin(Actor("bert", "agent"))  # type: ignore[arg-type]


def test_secrets_stored_in_clear_are_sealed_and_keep_working(factor: Any) -> None:
    sf, clock, store = factor
    secret = totp.new_secret()
    anna_id = store.get_user("anna").id
    with store.unit_of_work() as uow:  # as written before sealing came
        uow.session.add(
            UserTotpRow(user_id=anna_id, secret=secret, enabled=True, last_step=None,
                        updated_at=datetime.now(UTC))
        )  # fmt: skip
    sf.check("anna", _code(secret, NOW))  # read in clear
    assert SecondFactors(store, Sealer(SERVER_SECRET, b"totp")).seal_clear() == 1
    with store.unit_of_work(write=False) as uow:
        assert uow.session.get(UserTotpRow, anna_id).secret.startswith("v1:")
    clock.now = NOW + 30
    sf.check("anna", _code(secret, NOW + 30))
    assert SecondFactors(store, Sealer(SERVER_SECRET, b"totp")).seal_clear() == 0
