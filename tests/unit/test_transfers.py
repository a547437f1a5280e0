"""The book of approved REFERs (services/transfers.py), sans-IO: what an INVITE with
Referred-By must match to be let through, once, in time."""

from __future__ import annotations

from heimbuero.services.transfers import TRANSFER_WINDOW, PendingTransfer, TransferBook, target_key

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
