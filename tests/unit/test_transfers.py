"""The book of approved REFERs (services/transfers.py), sans-IO: what an INVITE with
Referred-By must match to be let through, once, in time."""

from __future__ import annotations

import dataclasses

from heimbuero.services.transfers import (
    TRANSFER_WINDOW,
    PendingTransfer,
    TransferBook,
    same_dialog,
    target_key,
)

USERS = frozenset({"anna", "ben"})


def pending(call_id: str = "c1", target: str = "+491701111111", transferee: str | None = None,
            at: float = 100.0) -> PendingTransfer:  # fmt: skip
    return PendingTransfer(call_id, "mueller", "+49891234567", "anna", transferee, target,
                           at + TRANSFER_WINDOW)  # fmt: skip


def test_target_key_names_users_before_numbers() -> None:
    assert target_key("Ben", USERS, None) == "user:ben"
    assert target_key("01701111111", USERS, "+491701111111") == "+491701111111"
    assert target_key("mallory", USERS, None) is None


def test_an_approved_refer_is_taken_once_by_the_matching_invite() -> None:
    book = TransferBook()
    book.add(pending(), 100.0)
    assert book.take("+491701111111", None, None, 101.0) is None  # no Referred-By
    assert book.take("+491701111111", "ben", None, 101.0) is None  # another referrer
    assert book.take("+499001234567", "anna", None, 101.0) is None  # another target
    assert book.take("+491701111111", "anna", "eva", 101.0) is None  # not from the carrier
    found = book.take("+491701111111", "Anna", None, 101.0)
    assert found is not None and found.call_id == "c1"
    assert book.take("+491701111111", "anna", None, 102.0) is None  # used up


def test_an_approved_refer_lapses_and_a_new_one_in_the_call_replaces_it() -> None:
    book = TransferBook()
    book.add(pending(), 100.0)
    assert book.take("+491701111111", "anna", None, 100.0 + TRANSFER_WINDOW) is None
    book.add(pending(), 200.0)
    book.add(pending(target="user:ben", at=201.0), 201.0)
    assert book.take("+491701111111", "anna", None, 202.0) is None
    assert book.take("user:ben", "anna", None, 202.0) is not None
    assert book.pending == []


def test_an_attended_transfer_is_taken_only_with_the_replaces_its_refer_named() -> None:
    consult = ("k1@anna", "bob1", "a7")
    book = TransferBook()
    book.add(dataclasses.replace(pending(target="user:ben"), replaces=consult), 100.0)
    assert book.expects(("k1@anna", "a7", "bob1"), None, 101.0)  # (either tag order)
    assert not book.expects(consult, "eva", 101.0)  # asked of the carrier's caller, not eva
    assert not book.expects(("k2@anna", "bob1", "a7"), None, 101.0)  # another call
    assert not book.expects(("k1@anna", "bob1", "x"), None, 101.0)  # another tag
    other = ("k9@anna", "bob1", "a7")
    assert book.take("user:ben", "anna", None, 101.0, other) is None
    assert book.take("user:ben", "anna", None, 101.0, consult) is not None
    assert not book.expects(consult, None, 101.5)  # used up
    book.add(dataclasses.replace(pending(target="user:ben"), replaces=consult), 102.0)
    assert not book.expects(consult, None, 102.0 + TRANSFER_WINDOW + 1)  # lapsed


def test_same_dialog_needs_the_call_id_and_both_tags() -> None:
    assert same_dialog(("c", "a", "b"), ("c", "b", "a"))
    assert not same_dialog(("c", "a", "b"), ("c", "a", "a"))
    assert not same_dialog(("c", "a", "b"), ("d", "a", "b"))
    assert not same_dialog(None, ("c", "a", "b"))
