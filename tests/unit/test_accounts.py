"""Account rules: names, roles, password policy, stored hashes, and the account operations."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from heimbuero.office import accounts
from heimbuero.office.accounts import InvalidName, InvalidRole, WeakPassword
from heimbuero.store import NoSuchUser, Store, UserExists

REALM = "office.example"
GOOD = "correct horse battery"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    s.upgrade()
    yield s
    s.close()


# -- names and roles ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("alice", "alice"),
        ("Alice", "alice"),
        ("a", "a"),
        ("0.b_c-d", "0.b_c-d"),
        ("x" * 64, "x" * 64),
    ],
)
def test_valid_names(given: str, stored: str) -> None:
    assert accounts.validate_name(given) == stored


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("x" * 65, "longer than 64"),
        ("al ice", "invalid user name"),
        ("alice@example", "invalid user name"),
        (".alice", "starting with a letter or digit"),
        ("-alice", "starting with a letter or digit"),
        ("jürgen", "invalid user name"),
        ("a:b", "invalid user name"),
        ("\u212alara", "invalid user name"),  # KELVIN SIGN lowercases to an ASCII k
    ],
)
def test_invalid_names(name: str, reason: str) -> None:
    with pytest.raises(InvalidName, match=reason):
        accounts.validate_name(name)


def test_roles() -> None:
    assert accounts.ROLES == ("admin", "agent", "client", "employee")
    assert accounts.DEFAULT_ROLE in accounts.ROLES
    assert accounts.validate_role("Admin") == "admin"
    with pytest.raises(InvalidRole, match="admin, agent, client, employee"):
        accounts.validate_role("boss")


# -- password policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "password", "reason"),
    [
        ("alice", "", "empty"),
        ("alice", "Tr0ub4dor", "shorter than 10"),
        ("alice", "zzzzzzzzzzzz", "single character"),
        ("alice", "alice", "shorter than 10"),
        ("alicealice", "alicealice", "user name"),
        ("alice", "my-ALICE-password", "user name"),
        ("alice", "Password123", "common"),
        ("alice", "qwertzuiop", "common"),
    ],
)
def test_weak_passwords(name: str, password: str, reason: str) -> None:
    with pytest.raises(WeakPassword, match=reason):
        accounts.check_password(name, password)


@pytest.mark.parametrize(
    ("name", "password"),
    [("alice", GOOD), ("al", "also-fine-pal-2024"), ("bob", "ünïcödé-pässwörd")],
)
def test_acceptable_passwords(name: str, password: str) -> None:
    accounts.check_password(name, password)


# -- hashes ------------------------------------------------------------------------------------


def test_ha1_md5_matches_rfc2617_example() -> None:
    ha1_md5, _, _ = accounts.credentials("Mufasa", "testrealm@host.com", "Circle Of Life")
    assert ha1_md5 == "939e7578ed9e3c518a452acee763bce9"


def test_ha1_values_give_the_rfc7616_responses() -> None:
    ha1_md5, ha1_sha256, _ = accounts.credentials(
        "Mufasa", "http-auth@example.org", "Circle of Life"
    )
    nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
    cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"

    def response(algorithm: str, ha1: str) -> str:
        ha2 = hashlib.new(algorithm, b"GET:/dir/index.html").hexdigest()
        return hashlib.new(
            algorithm, f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}".encode()
        ).hexdigest()

    assert response("md5", ha1_md5) == "8ca523f5e9506fed4657c9700eebdbec"
    assert (
        response("sha256", ha1_sha256)
        == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )


def test_argon2id_hash_verifies_only_the_password(store: Store) -> None:
    user = accounts.add_user(store, REALM, "alice", GOOD)
    assert user.password_hash.startswith("$argon2id$")
    assert GOOD not in user.password_hash
    assert accounts.verify_password(user, GOOD)
    assert not accounts.verify_password(user, GOOD + "!")


# -- operations --------------------------------------------------------------------------------


def test_add_user_stores_normalized_name_role_and_hashes(store: Store) -> None:
    user = accounts.add_user(store, REALM, "Alice", GOOD, "admin")
    assert (user.name, user.role) == ("alice", "admin")
    assert user.ha1_md5 == "a231d67a800d50dbb7dec525b81c0dc7"  # md5("alice:office.example:" + GOOD)
    assert user.ha1_sha256 == "31698d213b48080839d3dfe3b458d969cd8af3968da404e87c48d5cbf0f5b558"
    assert store.get_user("alice") == user


def test_add_user_default_role_is_employee(store: Store) -> None:
    assert accounts.add_user(store, REALM, "bob", GOOD).role == "employee"


def test_add_user_rejections_store_nothing(store: Store) -> None:
    with pytest.raises(WeakPassword):
        accounts.add_user(store, REALM, "alice", "short")
    with pytest.raises(InvalidRole):
        accounts.add_user(store, REALM, "alice", GOOD, "boss")
    with pytest.raises(InvalidName):
        accounts.add_user(store, REALM, "al ice", GOOD)
    assert accounts.list_users(store) == []
    accounts.add_user(store, REALM, "alice", GOOD)
    with pytest.raises(UserExists):
        accounts.add_user(store, REALM, "ALICE", "another good secret")
    assert [u.name for u in accounts.list_users(store)] == ["alice"]


def test_set_password_replaces_every_hash(store: Store) -> None:
    old = accounts.add_user(store, REALM, "alice", GOOD)
    accounts.set_password(store, REALM, "alice", "a whole new secret")
    new = store.get_user("alice")
    assert new is not None
    expected = b"alice:office.example:a whole new secret"
    assert new.ha1_md5 == hashlib.md5(expected).hexdigest() != old.ha1_md5
    assert new.ha1_sha256 == hashlib.sha256(expected).hexdigest() != old.ha1_sha256
    assert accounts.verify_password(new, "a whole new secret")
    assert not accounts.verify_password(new, GOOD)
    with pytest.raises(WeakPassword):
        accounts.set_password(store, REALM, "alice", "alice-2024-x")
    with pytest.raises(NoSuchUser):
        accounts.set_password(store, REALM, "carol", "a whole new secret")


def test_remove_user(store: Store) -> None:
    accounts.add_user(store, REALM, "alice", GOOD)
    accounts.remove_user(store, "Alice")
    assert accounts.list_users(store) == []
    with pytest.raises(NoSuchUser):
        accounts.remove_user(store, "alice")
