"""Caller conditions of a rule (`when.caller`): VIP callers of the client, caller numbers and
starts of numbers; their validation in the rules document and their effect in route()."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from heimbuero.domain.model import Caller, Directory, Rule, Step, VipCaller, When
from heimbuero.domain.phone import PhoneError, parse_prefix
from heimbuero.office.routing import RoutingState, normalise_caller, route
from heimbuero.office.rules_doc import (
    MAX_CALLERS,
    RulesError,
    dump_rules_document,
    from_text,
    parse_rules_document,
    to_yaml,
)
from tests.unit.test_rules_doc import MOBILE, NO, bare_directory

VIP = "+491712222222"  # Herr Meier, a VIP caller of mueller
OTHER_VIP = "+491713333333"  # a VIP caller of schulz, not of mueller
AT = datetime(2026, 3, 4, 10, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # a Wednesday


def directory_with_vips() -> Directory:
    d = bare_directory()
    clients = dict(d.clients)
    clients["mueller"] = replace(clients["mueller"], vip_callers=(VipCaller(VIP, "Herr Meier"),))
    clients["schulz"] = replace(clients["schulz"], vip_callers=(VipCaller(OTHER_VIP, "Frau Lang"),))
    return replace(d, clients=clients)


def document(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"client": "mueller", "numbers": {NO: {"rules": list(rules)}}}


VIP_RULE = {
    "name": "VIP",
    "when": {"caller": {"vip": True}},
    "steps": [{"targets": [f"external:{MOBILE}"], "timeout": 20}],
}
OFFICE_RULE = {"name": "Büro", "steps": [{"targets": ["group:team"], "timeout": 30}]}


def parsed(doc: dict[str, Any]) -> Directory:
    d = directory_with_vips()
    return replace(d, numbers={**d.numbers, **parse_rules_document(doc, "mueller", d)})


def problems(doc: object) -> list[tuple[str, str]]:
    with pytest.raises(RulesError) as info:
        parse_rules_document(doc, "mueller", directory_with_vips())
    return info.value.problems


# ---------------------------------------------------------------------------------- routing


def test_vip_caller_goes_to_the_mobile_others_to_the_office() -> None:
    d = parsed(document(VIP_RULE, OFFICE_RULE))
    vip = route(NO, AT, RoutingState(), d, caller=VIP)
    assert (vip.rule, vip.steps[0].target_texts()) == ("VIP", [f"external:{MOBILE}"])
    other = route(NO, AT, RoutingState(), d, caller="+4930999999")
    assert (other.rule, other.steps[0].target_texts()) == ("Büro", ["group:team"])
    assert "+4930999999 is not a VIP caller" in other.reason


@pytest.mark.parametrize(
    "caller",
    ["0171 2222222", "sip:+491712222222@carrier.example;user=phone", "00491712222222",
     "sip:01712222222@10.0.0.1"],
)  # fmt: skip
def test_the_caller_is_read_as_typed_or_as_a_sip_uri(caller: str) -> None:
    d = parsed(document(VIP_RULE, OFFICE_RULE))
    assert route(NO, AT, RoutingState(), d, caller=caller).rule == "VIP"


@pytest.mark.parametrize("caller", [None, "", "anonymous", "sip:anonymous@anonymous.invalid"])
def test_an_unknown_caller_is_no_vip_and_matches_no_number(caller: str | None) -> None:
    d = parsed(
        document(
            VIP_RULE,
            {"name": "Nummern", "when": {"caller": {"prefixes": ["+49"]}},
             "steps": [{"targets": ["user:mueller"]}]},
            OFFICE_RULE,
        )
    )  # fmt: skip
    assert route(NO, AT, RoutingState(), d, caller=caller).rule == "Büro"


def test_another_clients_vip_is_no_vip_here() -> None:
    d = parsed(document(VIP_RULE, OFFICE_RULE))
    assert route(NO, AT, RoutingState(), d, caller=OTHER_VIP).rule == "Büro"
    assert route("+49301234567", AT, RoutingState(), d, caller=VIP).rule is None  # schulz


def test_numbers_and_prefixes() -> None:
    rule = {
        "name": "Stammkunden",
        "when": {"caller": {"numbers": ["030 5551234"], "prefixes": ["089", "+43"]}},
        "steps": [{"targets": ["user:mueller"]}],
    }
    d = parsed(document(rule, OFFICE_RULE))
    for caller, expected in [
        ("+49305551234", "Stammkunden"),
        ("+49305551235", "Büro"),
        ("089 7654321", "Stammkunden"),
        ("+4989123", "Stammkunden"),
        ("+43 1 234567", "Stammkunden"),
        ("+49 30 111111", "Büro"),
    ]:
        assert route(NO, AT, RoutingState(), d, caller=caller).rule == expected, caller


def test_vip_false_and_a_prefix_must_both_hold() -> None:
    rule = {
        "name": "Münchner ohne VIP",
        "when": {"caller": {"vip": False, "prefixes": ["0171"]}},
        "steps": [{"targets": ["user:mueller"]}],
    }
    d = parsed(document(rule, OFFICE_RULE))
    assert route(NO, AT, RoutingState(), d, caller="0171 9999999").rule == "Münchner ohne VIP"
    assert route(NO, AT, RoutingState(), d, caller=VIP).rule == "Büro"  # a VIP, though 0171


def test_caller_condition_combines_with_time() -> None:
    rule = dict(VIP_RULE, when={"caller": {"vip": True}, "time": "07:00-09:00"})
    d = parsed(document(rule, OFFICE_RULE))
    assert route(NO, AT, RoutingState(), d, caller=VIP).rule == "Büro"  # 10:00
    assert route(NO, AT.replace(hour=8), RoutingState(), d, caller=VIP).rule == "VIP"


def test_route_without_caller_keeps_working_for_rules_without_caller_conditions() -> None:
    d = parsed(document(OFFICE_RULE))
    assert route(NO, AT, RoutingState(), d).rule == "Büro"


def test_caller_holds() -> None:
    assert Caller(vip=True).holds("+491", True)
    assert not Caller(vip=True).holds("+491", False)
    assert Caller(numbers=("+491",)).holds("+491", False)
    assert not Caller(numbers=("+491",)).holds(None, False)
    assert Caller(prefixes=("+4989",)).holds("+49891", False)


def test_normalise_caller() -> None:
    assert normalise_caller("sip:0171 2222222@x", 49) == VIP
    assert normalise_caller("tel:+491712222222", 49) == VIP
    assert normalise_caller("bob", 49) is None
    assert normalise_caller(None, 49) is None


def test_parse_prefix() -> None:
    assert parse_prefix("089", 49) == "+4989"
    assert parse_prefix("0043 1", 49) == "+431"
    assert parse_prefix("0 89", 43) == "+4389"
    for bad in ("89", "", "+", "08a9", "0+49", "1" * 70):
        with pytest.raises(PhoneError):
            parse_prefix(bad, 49)


# ------------------------------------------------------------------------------- validation


def test_round_trip_normalises_numbers_and_prefixes() -> None:
    rule = {
        "name": "Stammkunden",
        "when": {"caller": {"vip": True, "numbers": ["030/5551234"], "prefixes": ["089"]}},
        "steps": [{"targets": ["user:mueller"]}],
    }
    d = parsed(document(rule))
    out = dump_rules_document("mueller", d)
    when = out["numbers"][NO]["rules"][0]["when"]
    assert when == {"caller": {"vip": True, "numbers": ["+49305551234"], "prefixes": ["+4989"]}}
    again = from_text(to_yaml(out))
    assert parse_rules_document(again, "mueller", d)[NO] == d.numbers[NO]
    assert d.numbers[NO].rules[0] == Rule(
        "Stammkunden",
        (Step(("user:mueller",), 30),),
        When(caller=Caller(vip=True, numbers=("+49305551234",), prefixes=("+4989",))),
    )


@pytest.mark.parametrize(
    ("caller", "path", "words"),
    [
        ({}, "caller", "needs vip, numbers and/or prefixes"),
        ({"vip": "schulz"}, "caller.vip", "expected true"),
        ({"vip": 1}, "caller.vip", "expected true"),
        ({"vip_of": "schulz"}, "caller.vip_of", "unknown key"),
        ({"client": "schulz", "vip": True}, "caller.client", "unknown key"),
        ({"numbers": ["hallo"]}, "caller.numbers[0]", "is not a phone number"),
        ({"numbers": [1712222222]}, "caller.numbers[0]", "quoted text"),
        ({"numbers": ["0171 2222222", "+491712222222"]}, "caller.numbers[1]", "listed twice"),
        ({"numbers": ["12345"]}, "caller.numbers[0]", "not a valid number"),
        ({"prefixes": ["89"]}, "caller.prefixes[0]", "with its 0"),
        ({"prefixes": {"a": 1}}, "caller.prefixes", "expected a list"),
        ("vip", "caller", "expected a mapping"),
    ],
)
def test_invalid_caller_conditions_are_explained(caller: Any, path: str, words: str) -> None:
    rule = {"name": "X", "when": {"caller": caller}, "steps": [{"targets": ["user:mueller"]}]}
    found = problems(document(rule))
    full = f"numbers.{NO}.rules[0].when.{path}"
    assert any(p == full and words in m for p, m in found), found


def test_too_many_callers_are_refused_before_validation() -> None:
    numbers = [f"+4930555{i:04d}" for i in range(MAX_CALLERS)]
    rule = {
        "name": "X",
        "when": {"caller": {"numbers": numbers, "prefixes": ["089"]}},
        "steps": [{"targets": ["user:mueller"]}],
    }
    found = problems(document(rule))
    assert found == [
        (
            f"numbers.{NO}.rules[0].when.caller",
            f"{MAX_CALLERS + 1} numbers and prefixes: at most {MAX_CALLERS} callers per rule",
        )
    ]
    rule["when"] = {"caller": {"numbers": numbers}}  # exactly the limit is fine
    assert parsed(document(rule)).numbers[NO].rules[0].when.caller is not None


def test_two_rules_with_the_same_caller_condition_are_unreachable() -> None:
    found = problems(document(VIP_RULE, dict(VIP_RULE, name="VIP 2"), OFFICE_RULE))
    assert any("rules[1]" in p and "same condition" in m for p, m in found), found


def test_vip_rule_without_vip_callers_is_accepted() -> None:
    d = bare_directory()  # mueller has no VIP callers (yet)
    numbers = parse_rules_document(document(VIP_RULE, OFFICE_RULE), "mueller", d)
    assert numbers[NO].rules[0].when.caller == Caller(vip=True)
