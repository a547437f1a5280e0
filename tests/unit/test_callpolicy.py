"""The pure rules against toll fraud: classes of numbers, destination policy, caps, who may
change forwarding, and control characters in names and texts."""

from __future__ import annotations

import pytest

from heimbuero.office.callpolicy import (
    CallPolicy,
    PolicyError,
    cap_refusal,
    check_text,
    classify,
    destination_refusal,
    may_change_forwarding,
    may_change_rules,
    parse_policy,
    policy_from_json,
    text_problem,
)

CLASSIFIED = [
    # German fixed lines (area codes 02-09)
    ("+49891234567", "fixed"), ("+4930123456", "fixed"), ("+49221987654", "fixed"),
    ("+4970711234567", "fixed"), ("+4980311234", "fixed"), ("+499061234567", "fixed"),
    ("+4940123456789", "fixed"), ("+49711123456", "fixed"),
    # mobile 015x 016x 017x
    ("+491701111111", "mobile"), ("+4915112345678", "mobile"), ("+491601234567", "mobile"),
    ("+491761234567", "mobile"), ("+4915901234567", "mobile"), ("+491791234567", "mobile"),
    # allowed specials
    ("+498001234567", "freephone"), ("+49110", "emergency"), ("+49112", "emergency"),
    # premium and special ranges
    ("+49900123456", "premium"), ("+499001234567", "premium"), ("+491371234567", "premium"),
    ("+491381234567", "premium"), ("+49190123456", "premium"), ("+49193010", "premium"),
    ("+4919912345", "premium"), ("+491801234567", "shared_cost"),
    ("+4918051234567", "shared_cost"), ("+491806123456", "shared_cost"),
    ("+4918112345", "shared_cost"), ("+49189123", "shared_cost"), ("+4911833", "directory"),
    ("+49118800", "directory"), ("+4912345678", "innovative"), ("+497001234567", "personal"),
    ("+4932123456789", "national"), ("+4910010", "carrier_selection"),
    ("+491003312345678", "carrier_selection"), ("+49115", "special"),
    ("+49116117", "special"), ("+4931012345", "special"), ("+4914123456", "special"),
    ("+49170", "special"),
    # international and satellite / global
    ("+4319876543", "international"), ("+41441234567", "international"),
    ("+12125551234", "international"), ("+447911123456", "international"),
    ("+2341234567", "international"), ("+4812345678", "international"),
    ("+870772123456", "satellite"), ("+881612345678", "satellite"),
    ("+8821234567", "satellite"), ("+88351001234", "satellite"), ("+979123456789", "satellite"),
    ("+80812345678", "satellite"), ("+80012345678", "satellite"), ("+99112345", "satellite"),
    ("+87810012345", "satellite"), ("+88812345678", "satellite"),
]  # fmt: skip


@pytest.mark.parametrize(("number", "kind"), CLASSIFIED)
def test_classify(number: str, kind: str) -> None:
    assert classify(number) == kind


@pytest.mark.parametrize("bad", ["0891234567", "+0891234567", "49891234567", "+49 89 12", ""])
def test_classify_refuses_what_is_not_e164(bad: str) -> None:
    with pytest.raises(ValueError):
        classify(bad)


def test_defaults_allow_german_fixed_mobile_freephone_emergency_only() -> None:
    allowed = {n for n, _ in CLASSIFIED if destination_refusal(n, None, None) is None}
    assert {classify(n) for n in allowed} == {"fixed", "mobile", "freephone", "emergency"}
    assert destination_refusal("+49900123456", None, None) == (
        "Destination not allowed: premium rate"
    )
    assert destination_refusal("+4319876543", CallPolicy(), CallPolicy()) == (
        "Destination not allowed: international"
    )


def test_client_and_trunk_must_both_allow() -> None:
    intl = CallPolicy(allow=frozenset({"international"}))
    assert destination_refusal("+4319876543", intl, None) is not None
    assert destination_refusal("+4319876543", None, intl) is not None
    assert destination_refusal("+4319876543", intl, intl) is None
    # international does not open satellite numbers
    assert destination_refusal("+881612345678", intl, intl) == (
        "Destination not allowed: satellite or global network"
    )


def test_prefixes_allow_and_deny_beat_classes() -> None:
    vienna = CallPolicy(allow_prefixes=("+4319",))
    assert destination_refusal("+4319876543", vienna, vienna) is None
    assert destination_refusal("+4329876543", vienna, vienna) is not None
    no_0180 = CallPolicy(deny_prefixes=("+49180",), allow=frozenset({"shared_cost"}))
    assert destination_refusal("+491801234567", no_0180, no_0180) is not None
    assert destination_refusal("+491891234567", no_0180, no_0180) is None
    no_mobile = CallPolicy(deny_prefixes=("+4917",))
    assert destination_refusal("+491701111111", no_mobile, None) is not None


def test_policy_json_round_trip_and_errors() -> None:
    data = {
        "allow": ["international"], "allow_prefixes": ["+4319"], "deny_prefixes": ["+4932"],
        "approved_numbers": ["+491701111111"], "max_concurrent": 4, "max_minutes_per_day": 120,
    }  # fmt: skip
    policy = parse_policy(data)
    assert policy.to_json() == data
    assert parse_policy({}) == CallPolicy()
    for bad, key in [
        ({"allow": ["premium", "moon"]}, "allow"),
        ({"allow": "international"}, "allow"),
        ({"allow_prefixes": ["4319"]}, "allow_prefixes"),
        ({"approved_numbers": ["0170 1111111"]}, "approved_numbers"),
        ({"max_concurrent": -1}, "max_concurrent"),
        ({"max_concurrent": True}, "max_concurrent"),
        ({"max_minutes_per_day": "120"}, "max_minutes_per_day"),
        ({"alow": ["international"]}, "alow"),
    ]:
        with pytest.raises(PolicyError, match=key):
            parse_policy(bad)
    # a broken stored policy falls back to the safe defaults, never to "allow everything"
    assert policy_from_json({"allow": "everything"}) == CallPolicy()
    assert policy_from_json(None) == CallPolicy()


def test_caps() -> None:
    client = CallPolicy(max_concurrent=2, max_minutes_per_day=60)
    trunk = CallPolicy(max_concurrent=10)
    assert cap_refusal("m", client, "c", trunk, 1, 9, 59 * 60.0) is None
    busy = cap_refusal("m", client, "c", trunk, 2, 0, 0.0)
    assert busy is not None and busy.status == 503 and "cap of 2" in busy.warning
    spent = cap_refusal("m", client, "c", trunk, 0, 0, 60 * 60.0)
    assert spent is not None and spent.status == 403 and "60 minutes" in spent.warning
    full = cap_refusal("m", client, "c", trunk, 0, 10, 0.0)
    assert full is not None and full.status == 503 and "trunk c" in full.warning
    # defaults: 4 at once, 240 minutes a day; provider staff (no client): the trunk's cap only
    assert cap_refusal("m", CallPolicy(), "c", None, 4, 0, 0.0) is not None
    assert cap_refusal("m", CallPolicy(), "c", None, 0, 0, 240 * 60.0) is not None
    assert cap_refusal(None, None, "c", None, 100, 100, 0.0) is None
    assert cap_refusal(None, None, "c", trunk, 0, 10, 0.0) is not None


def test_rights_to_change_rules_and_forwarding() -> None:
    assert may_change_rules("admin", None, "mueller")
    assert may_change_rules("client", "mueller", "mueller")
    assert not may_change_rules("client", "schulz", "mueller")
    assert not may_change_rules("employee", "mueller", "mueller")
    assert not may_change_rules("agent", None, "mueller")
    assert may_change_forwarding("agent", None, "mueller")
    assert may_change_forwarding("client", "mueller", "mueller")
    assert not may_change_forwarding("employee", "mueller", "mueller")
    assert not may_change_forwarding("client", "schulz", "mueller")


@pytest.mark.parametrize(
    "bad",
    ["Müller\r\nVia: x", "a\nb", "nul\x00", "bell\x07", "del\x7f", "c1\x85", "\u202eevil",
     "\u202aa", "\u2066iso", "\u2069", "\u200fmark", "line\u2028sep"],
)  # fmt: skip
def test_control_characters_are_refused(bad: str) -> None:
    assert text_problem(bad) is not None
    with pytest.raises(PolicyError, match="client name"):
        check_text("client name", bad)


def test_ordinary_texts_pass() -> None:
    for good in ("Tischlerei Müller", "Sanitär Schulz & Söhne", "Tab\there", "日本語", "O'Brien"):
        assert check_text("name", good) == good
    assert text_problem("Zeile 1\r\nZeile 2", multiline=True) is None
    assert text_problem("Zeile 1\u202e", multiline=True) is not None
