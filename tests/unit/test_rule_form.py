"""The portal's form of one forwarding rule (web/console/rule_form.py): form values to a rule,
a rule back to form values, add/move/remove on a copy of the document, validator problems to
form fields; and the whole chain through the one validator (office/rules_doc.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from heimbuero.office.demo import MUELLER_NUMBER, mueller_rules
from heimbuero.office.rules_doc import RulesError, document_version, parse_rules_document
from heimbuero.web.console import rule_form as rf

N = MUELLER_NUMBER


def names(doc: dict[str, Any]) -> list[str]:
    return [r["name"] for r in doc["numbers"][N]["rules"]]


def test_form_to_rule_with_every_condition() -> None:
    form = {
        "name": "  Mittag ", "day.mon": "1", "day.fri": "1", "day.xyz": "1",
        "time_from": "12:00", "time_to": "13:30", "holidays": "exclude", "closures": "only",
        "override": "office", "t0": "voicemail:mueller", "t1": "", "t2": "user:mueller",
        "timeout": "25",
    }  # fmt: skip
    rule, errors = rf.rule_from_fields(rf.fields_of_form(form), None)
    assert errors == {}
    assert rule == {
        "name": "Mittag",
        "when": {"days": ["mon", "fri"], "time": "12:00-13:30", "holidays": "exclude",
                 "closures": "only", "override": "office"},
        "steps": [{"targets": ["voicemail:mueller", "user:mueller"], "timeout": 25}],
    }  # fmt: skip


def test_no_conditions_and_all_days_mean_always() -> None:
    every = {f"day.{d}": "1" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    for form in ({"name": "A"}, {"name": "A", **every}):
        rule, errors = rf.rule_from_fields(rf.fields_of_form(form), None)
        assert errors == {} and "when" not in rule
        assert rule["steps"] == []  # no target: the validator says a step is missing


def test_across_midnight_and_one_sided_time() -> None:
    f = rf.fields_of_form({"name": "Nacht", "time_from": "22:00", "time_to": "06:00",
                           "next_day": "1"})  # fmt: skip
    rule, _ = rf.rule_from_fields(f, None)
    assert rule["when"] == {"time": "22:00-06:00+1"}
    assert rf.fields_of_rule(rule).next_day and rf.fields_of_rule(rule).time_to == "06:00"
    _, errors = rf.rule_from_fields(rf.fields_of_form({"name": "X", "time_from": "08:00"}), None)
    assert set(errors) == {"time"}


def test_a_too_long_name_is_the_forms_problem() -> None:
    _, errors = rf.rule_from_fields(rf.fields_of_form({"name": "x" * 10_000}), None)
    assert errors["name"].startswith("Der Name ist zu lang")
    rule, errors = rf.rule_from_fields(rf.fields_of_form({"name": "x" * rf.MAX_NAME}), None)
    assert errors == {} and len(rule["name"]) == rf.MAX_NAME


def test_a_changed_rule_keeps_its_steps_and_takes_presence_from_the_form() -> None:
    old = {"name": "Chef da", "when": {"presence": {"user": "mueller", "registered": True},
                                       "days": ["mon"]},
           "steps": [{"targets": ["user:mueller"], "timeout": 20}]}  # fmt: skip
    fields = rf.fields_of_rule(old)
    assert fields.days == ("mon",) and fields.targets[0] == "user:mueller"
    assert (fields.presence_user, fields.presence_registered, fields.presence_in_call) == (
        "mueller", "yes", "")  # fmt: skip
    form = {"name": "Chef da", "day.tue": "1", "t0": "group:team",  # the step is not taken
            "presence_user": "mueller", "presence_registered": "yes",
            "presence_in_call": "no"}  # fmt: skip
    rule, errors = rf.rule_from_fields(rf.fields_of_form(form), old)
    assert errors == {}
    assert rule["when"] == {
        "days": ["tue"], "presence": {"user": "mueller", "registered": True, "in_call": False}
    }  # fmt: skip
    assert rule["steps"] == old["steps"] and rule["steps"] is not old["steps"]
    # "egal" everywhere and no user: the presence condition is gone
    rule, errors = rf.rule_from_fields(rf.fields_of_form({"name": "Chef da"}), old)
    assert errors == {} and "when" not in rule


def test_an_incomplete_presence_condition_is_the_forms_problem() -> None:
    for form in ({"presence_registered": "yes"}, {"presence_user": "mueller"}):
        rule, errors = rf.rule_from_fields(rf.fields_of_form({"name": "x", **form}), None)
        assert set(errors) == {"presence"}, form
        assert "presence" not in rule.get("when", {})


def test_caller_fields_to_rule_and_back() -> None:
    form = {"name": "VIP", "caller_vip": "yes", "caller_numbers": "0171 2222222; 030 5551234",
            "caller_prefixes": "089,\n +43, "}  # fmt: skip
    rule, errors = rf.rule_from_fields(rf.fields_of_form(form), None)
    assert errors == {}
    assert rule["when"] == {"caller": {"vip": True, "numbers": ["0171 2222222", "030 5551234"],
                                       "prefixes": ["089", "+43"]}}  # fmt: skip
    back = rf.fields_of_rule(rule)
    assert (back.caller_vip, back.caller_numbers, back.caller_prefixes) == (
        "yes", "0171 2222222, 030 5551234", "089, +43")  # fmt: skip
    rule, _ = rf.rule_from_fields(rf.fields_of_form({"name": "x", "caller_vip": "no"}), None)
    assert rule["when"] == {"caller": {"vip": False}}
    # a forged choice is "egal"
    rule, _ = rf.rule_from_fields(rf.fields_of_form({"name": "x", "caller_vip": "schulz"}), None)
    assert "when" not in rule


def test_too_many_caller_numbers_are_the_forms_problem() -> None:
    many = ",".join(f"030 555{i:04d}" for i in range(10_000))
    rule, errors = rf.rule_from_fields(
        rf.fields_of_form({"name": "x", "caller_numbers": many}), None
    )
    assert errors["caller"].startswith("Höchstens 50")
    assert len(rule["when"]["caller"]["numbers"]) == rf.MAX_CALLERS + 1  # read no further


def test_form_values_round_trip_through_a_stored_rule() -> None:
    werktag = mueller_rules()["numbers"][N]["rules"][2]
    rule, errors = rf.rule_from_fields(rf.fields_of_rule(werktag), werktag)
    assert errors == {} and rule == werktag


def test_a_new_rule_goes_before_the_unconditional_one() -> None:
    stored = mueller_rules()
    before = copy.deepcopy(stored)
    doc, at = rf.with_rule(stored, N, None, {"name": "Neu", "steps": []})
    assert names(doc) == ["Override", "Override Handy", "Werktag", "Neu", "Sonst"] and at == 3
    assert stored == before  # a copy
    doc, at = rf.with_rule(stored, N, "2", {"name": "W2"})
    assert names(doc)[2] == "W2" and at == 2
    assert rf.insert_position([]) == 0


def test_move_and_remove() -> None:
    stored = mueller_rules()
    assert names(rf.moved(stored, N, "2", "up"))[1:3] == ["Werktag", "Override Handy"]
    assert names(rf.moved(stored, N, "2", "down"))[2:] == ["Sonst", "Werktag"]
    assert names(rf.moved(stored, N, "0", "up")) == names(stored)  # at the edge: as is
    assert names(rf.removed(stored, N, "1")) == ["Override", "Werktag", "Sonst"]
    assert names(stored)[1] == "Override Handy"


@pytest.mark.parametrize(
    ("number", "index"),
    [(N, "4"), (N, "-1"), (N, "1e3"), (N, "9" * 40), (N, ""), ("+4930123456", "0"), ("x", "0")],
)
def test_forged_numbers_and_indexes_are_no_rule(number: str, index: str) -> None:
    with pytest.raises(rf.NoSuchRule):
        rf.removed(mueller_rules(), number, index)
    with pytest.raises(rf.NoSuchRule):
        rf.moved(mueller_rules(), number, index, "up")


def test_a_forged_direction_is_no_rule() -> None:
    with pytest.raises(rf.NoSuchRule):
        rf.moved(mueller_rules(), N, "1", "sideways")


def test_problems_find_their_fields() -> None:
    p = f"numbers.{N}.rules[3]"
    assert rf.field_of(f"{p}.name", N, 3) == "name"
    assert rf.field_of(f"{p}.when.days[0]", N, 3) == "days"
    assert rf.field_of(f"{p}.when.time", N, 3) == "time"
    assert rf.field_of(f"{p}.when", N, 3) == "when"
    assert rf.field_of(p, N, 3) == "when"
    assert rf.field_of(f"{p}.steps[0].timeout", N, 3) == "steps"
    assert rf.field_of(f"{p}.name", N, 2) is None  # another rule: above the form
    assert rf.field_of(f"numbers.{N}.rules", N, 3) is None
    assert rf.field_of("client", N, 3) is None


def test_version_changes_with_the_order() -> None:
    doc = mueller_rules()
    assert document_version(doc) == document_version(copy.deepcopy(doc))
    assert document_version(rf.moved(doc, N, "1", "up")) != document_version(doc)


# -- through the validator --------------------------------------------------------------------


@pytest.fixture
def directory(tmp_path: Any) -> Any:
    from heimbuero.office.demo import seed_demo
    from heimbuero.store import Store

    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    seed_demo(store, "office.example")
    yield store.load_directory()
    store.close()


def problems(directory: Any, doc: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        parse_rules_document(doc, "mueller", directory)
    except RulesError as exc:
        return exc.problems
    return []


def test_invalid_times_are_named_by_the_validator(directory: Any) -> None:
    for start, end, nxt, said in (
        ("25:00", "26:00", "", "Die Uhrzeit ist ungültig (SS:MM)."),
        ("17:00", "16:00", "", "Das Ende liegt nicht nach dem Beginn"),
        ("08:00", "16:00", "1", "Über Mitternacht muss das Ende vor dem Beginn liegen."),
        ("8 Uhr", "9 Uhr", "", "Die Uhrzeit ist ungültig (SS:MM)."),
    ):
        form = {"name": "T", "time_from": start, "time_to": end, "next_day": nxt,
                "t0": "voicemail:mueller", "timeout": "20"}  # fmt: skip
        rule, errors = rf.rule_from_fields(rf.fields_of_form(form), None)
        assert errors == {}
        doc, at = rf.with_rule(mueller_rules(), N, None, rule)
        found = problems(directory, doc)
        assert [rf.field_of(path, N, at) for path, _ in found] == ["time"], found
        assert rf.explain(found[0][1]).startswith(said)


def test_a_new_rule_without_a_step_or_behind_always_is_refused(directory: Any) -> None:
    rule, _ = rf.rule_from_fields(rf.fields_of_form({"name": "Leer", "day.sat": "1"}), None)
    doc, at = rf.with_rule(mueller_rules(), N, None, rule)
    found = problems(directory, doc)
    assert [rf.field_of(p, N, at) for p, _ in found] == ["steps"]
    assert rf.explain(found[0][1]).startswith("Eine Regel braucht")
    # moved behind "Sonst" (no condition): never reached
    rule, _ = rf.rule_from_fields(rf.fields_of_form(
        {"name": "Samstag", "day.sat": "1", "t0": "voicemail:mueller"}), None)  # fmt: skip
    doc, at = rf.with_rule(mueller_rules(), N, None, rule)
    assert problems(directory, doc) == []
    doc = rf.moved(doc, N, str(at), "down")
    found = problems(directory, doc)
    assert [rf.field_of(p, N, at + 1) for p, _ in found] == ["when"]
    assert rf.explain(found[0][1]) == "Die Regel käme nie dran: eine Regel davor gilt immer."


def test_too_many_rules_are_refused_before_validation(directory: Any) -> None:
    doc = mueller_rules()
    doc["numbers"][N]["rules"] = [
        {"name": f"R{i}", "when": {"days": ["mon"], "time": f"{i % 24:02d}:00-{i % 24:02d}:30"},
         "steps": [{"targets": ["voicemail:mueller"]}]}
        for i in range(1000)
    ]  # fmt: skip
    found = problems(directory, doc)
    assert found and all(rf.field_of(p, N, 999) is None for p, _ in found)
    assert rf.explain(found[0][1]) == "Zu viele Regeln: höchstens 50 je Rufnummer."
