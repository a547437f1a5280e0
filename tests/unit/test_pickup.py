"""office/pickup.may_pick_up: the provider's staff pick up for one another, nobody else."""

from __future__ import annotations

import pytest

from heimbuero.domain.model import User
from heimbuero.office.pickup import may_pick_up
from heimbuero.sip.dialog import parse_replaces

ANNA = User("anna", "agent")
BEN = User("ben", "agent")
ADMIN = User("admin", "admin")
OWNER = User("mueller", "client", client="mueller")
EMPLOYEE = User("lehrling", "employee", client="mueller")


@pytest.mark.parametrize(
    ("picker", "ringing", "allowed"),
    [
        (BEN, ANNA, True),  # a colleague's ringing phone
        (ADMIN, ANNA, True),  # admins are staff too
        (ANNA, ADMIN, True),
        (ANNA, ANNA, False),  # one's own phone is answered, not picked up
        (OWNER, ANNA, False),  # a client picks up nothing
        (EMPLOYEE, OWNER, False),  # (not even within his business)
        (ANNA, OWNER, False),  # a call ringing at a client's phone is the client's
        (ANNA, EMPLOYEE, False),
    ],
)
def test_who_may_pick_up_whose_call(picker: User, ringing: User, allowed: bool) -> None:
    assert may_pick_up(picker, ringing) is allowed


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("abc@h;to-tag=t1;from-tag=f1;early-only", ("abc@h", "t1", "f1")),
        (" abc@h ; from-tag=f1 ; TO-TAG=t1", ("abc@h", "t1", "f1")),
        ("abc@h;to-tag=t1", None),  # a tag missing
        ("abc@h;to-tag=;from-tag=f1", None),
        (";to-tag=t1;from-tag=f1", None),  # no Call-ID
        ("", None),
    ],
)
def test_the_dialog_a_replaces_header_names(value: str, named: tuple[str, str, str] | None) -> None:
    assert parse_replaces(value) == named
