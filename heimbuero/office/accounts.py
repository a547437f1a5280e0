"""Account rules: user names, roles, password policy and the hashes stored instead of passwords."""

from __future__ import annotations

import hashlib
import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from heimbuero.office import roles
from heimbuero.store import NoSuchUser, Store, UserRecord

ROLES = roles.ROLES  # the role names (office/roles.py)
DEFAULT_ROLE = roles.Role.EMPLOYEE.value
MIN_PASSWORD_LENGTH = 10
MAX_NAME_LENGTH = 64

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

# Passwords that pass the length rule but top every leaked-password list.
COMMON_PASSWORDS = frozenset(
    {
        "0000000000",
        "0123456789",
        "0987654321",
        "1111111111",
        "1234567890",
        "12345678910",
        "123456789a",
        "1q2w3e4r5t",
        "1qaz2wsx3edc",
        "a123456789",
        "abc1234567",
        "abcdefghij",
        "administrator",
        "asdfghjkl1",
        "changeme123",
        "hallo12345",
        "iloveyou12",
        "letmein123",
        "passwort123",
        "passwort1234",
        "password01",
        "password1!",
        "password12",
        "password123",
        "password1234",
        "q1w2e3r4t5",
        "qwertyuiop",
        "qwerty1234",
        "qwerty123456",
        "qwertz1234",
        "qwertzuiop",
        "sommer2024",
        "sommer2025",
        "welcome123",
        "willkommen",
        "willkommen1",
    }
)

_hasher = PasswordHasher()  # argon2id with the library's recommended parameters


class AccountError(ValueError):
    """Input that breaks an account rule; the message says which rule."""


class InvalidName(AccountError):
    """The user name is not allowed."""


class InvalidRole(AccountError):
    """The role is not one of ROLES."""


class WeakPassword(AccountError):
    """The password fails the password policy."""


def validate_name(name: str) -> str:
    """Return the name lowercased; raise InvalidName unless it is 1-64 of [a-z0-9._-]."""
    lowered = name.lower() if name.isascii() else name  # non-ASCII fails the pattern below
    if not lowered:
        raise InvalidName("user name is empty")
    if len(lowered) > MAX_NAME_LENGTH:
        raise InvalidName(f"user name is longer than {MAX_NAME_LENGTH} characters")
    if not _NAME_RE.fullmatch(lowered):
        raise InvalidName(
            f"invalid user name {name!r}: use letters a-z, digits and . _ -, "
            "starting with a letter or digit"
        )
    return lowered


def validate_role(role: str) -> str:
    """Return the role lowercased; raise InvalidRole unless it is one of ROLES."""
    lowered = role.lower()
    if lowered not in ROLES:
        raise InvalidRole(f"invalid role {role!r}: choose one of {', '.join(ROLES)}")
    return lowered


def check_password(name: str, password: str) -> None:
    """Raise WeakPassword saying why, unless the password is acceptable for that user."""
    if not password:
        raise WeakPassword("password is empty")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"password is shorter than {MIN_PASSWORD_LENGTH} characters")
    if len(set(password)) == 1:
        raise WeakPassword("password repeats a single character")
    folded, user = password.casefold(), name.casefold()
    # Containment only counts for names of 3+ characters: "al" may appear in a good password.
    if user and (folded == user or (len(user) >= 3 and user in folded)):
        raise WeakPassword("password contains the user name")
    if folded in COMMON_PASSWORDS:
        raise WeakPassword("password is on the list of common passwords")


def credentials(name: str, realm: str, password: str) -> tuple[str, str, str]:
    """(HA1 MD5, HA1 SHA-256, argon2id hash): what is stored instead of the password."""
    a1 = f"{name}:{realm}:{password}".encode()
    ha1_md5 = hashlib.md5(a1, usedforsecurity=False).hexdigest()
    ha1_sha256 = hashlib.sha256(a1).hexdigest()
    return ha1_md5, ha1_sha256, _hasher.hash(password)


def verify_password(user: UserRecord, password: str) -> bool:
    """True when the password matches the user's argon2id hash."""
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def add_user(
    store: Store, realm: str, name: str, password: str, role: str = DEFAULT_ROLE
) -> UserRecord:
    """Create a user after checking name, role and password; raise UserExists if taken."""
    name = validate_name(name)
    role = validate_role(role)
    check_password(name, password)
    return store.add_user(name, role, *credentials(name, realm, password))


def set_password(store: Store, realm: str, name: str, password: str) -> None:
    """Give an existing user a new password; raise NoSuchUser or WeakPassword."""
    name = validate_name(name)
    if store.get_user(name) is None:
        raise NoSuchUser(name)
    check_password(name, password)
    store.set_password(name, *credentials(name, realm, password))


def remove_user(store: Store, name: str) -> None:
    """Delete a user and its registrations; raise NoSuchUser when there is none."""
    name = validate_name(name)
    if not store.remove_user(name):
        raise NoSuchUser(name)


def list_users(store: Store) -> list[UserRecord]:
    """Every user, ordered by name."""
    return store.list_users()
