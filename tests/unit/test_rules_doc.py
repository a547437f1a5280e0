"""The rules document: parse + validate (every problem with its path), dump, YAML round trip."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import pytest

from heimbuero.domain.model import (
    Client,
    Directory,
    Group,
    Number,
    Presence,
    Provider,
    Rule,
    Step,
    Trunk,
    User,
    When,
)
from heimbuero.office.callpolicy import CallPolicy
from heimbuero.office.rules_doc import (
    RulesError,
    dump_rules_document,
    from_text,
    parse_rules_document,
    to_yaml,
)

NO = "+49891234567"
NO2 = "+49891234568"
MOBILE = "+491701111111"
P = f"numbers.{NO}"

DEMO_YAML = """\
client: mueller
numbers:
  "+49891234567":
    rules:
      - name: Override
        when: {override: office}
        steps: [{targets: ["group:team"], timeout: 30}]
      - name: Override Handy
        when: {override: mobile}
        steps: [{targets: ["external:+491701111111"], timeout: 20}]
      - name: Werktag
        when:
          days: [mon, tue, wed, thu, fri]
          time: "07:00-16:00"
          holidays: exclude
        steps:
          - {targets: ["user:mueller"], timeout: 15}
          - {targets: ["group:team"], timeout: 30}
      - name: Sonst
        steps:
          - {targets: ["group:team"], timeout: 30}
          - {targets: ["external:+491701111111"], timeout: 20}
"""

DEMO_RULES = (
    Rule("Override", (Step(("group:team",), 30),), When(override="office")),
    Rule("Override Handy", (Step((f"external:{MOBILE}",), 20),), When(override="mobile")),
    Rule(
        "Werktag",
        (Step(("user:mueller",), 15), Step(("group:team",), 30)),
        When(
            days=("mon", "tue", "wed", "thu", "fri"),
            start="07:00",
            end="16:00",
            holidays="exclude",
        ),
    ),
    Rule("Sonst", (Step(("group:team",), 30), Step((f"external:{MOBILE}",), 20))),
)


def bare_directory() -> Directory:
    """The demo configuration without rules, plus a second (rule-less) number for mueller."""
    return Directory(
        provider=Provider("Büroservice Sonnenschein", default_steps=(Step(("group:team",), 30),)),
        clients={
            "mueller": Client(
                "mueller",
                "Tischlerei Müller",
                bundesland="BY",
                call_policy=CallPolicy(approved_numbers=(MOBILE,)),
            ),  # fmt: skip
            "schulz": Client("schulz", "Sanitär Schulz", bundesland="BE"),
        },
        numbers={
            NO: Number(NO, "mueller"),
            NO2: Number(NO2, "mueller"),
            "+49301234567": Number("+49301234567", "schulz"),
        },
        users={
            "anna": User("anna", "agent"),
            "ben": User("ben", "agent"),
            "admin": User("admin", "admin"),
            "mueller": User("mueller", "client", client="mueller", mobile=MOBILE),
            "azubi": User("azubi", "employee", client="mueller"),
            "schulz": User("schulz", "client", client="schulz"),
        },
        groups={"team": Group("team", "ring_all", ("anna", "ben"))},
        trunks={"carrier": Trunk("carrier", "127.0.0.1", 5090, prefixes=("+49",))},
    )


@pytest.fixture
def directory() -> Directory:
    return bare_directory()


@pytest.fixture
def doc() -> dict[str, Any]:
    loaded = from_text(DEMO_YAML)
    assert isinstance(loaded, dict)
    return loaded


def problems(doc: object, directory: Directory, client: str = "mueller") -> list[tuple[str, str]]:
    with pytest.raises(RulesError) as info:
        parse_rules_document(doc, client, directory)
    return info.value.problems


def with_numbers(directory: Directory, numbers: dict[str, Number]) -> Directory:
    return replace(directory, numbers={**directory.numbers, **numbers})


# ----------------------------------------------------------------------------------- parsing


def test_demo_document_parses(doc: dict[str, Any], directory: Directory) -> None:
    numbers = parse_rules_document(doc, "mueller", directory)
    assert list(numbers) == [NO, NO2]  # every number of the client, schulz's not
    assert numbers[NO] == Number(NO, "mueller", DEMO_RULES)
    assert numbers[NO2] == Number(NO2, "mueller", ())  # left out of the document: no rules


def test_routing_md_example_parses(directory: Directory) -> None:
    text = DEMO_YAML.replace(
        "          holidays: exclude\n",
        "          holidays: exclude\n"
        "          closures: exclude\n"
        "          presence: {user: mueller, registered: true, in_call: false}\n",
    )
    rules = parse_rules_document(from_text(text), "mueller", directory)[NO].rules
    assert rules[2].when.closures == "exclude"
    assert rules[2].when.presence == Presence("mueller", registered=True, in_call=False)


def test_json_document_parses(doc: dict[str, Any], directory: Directory) -> None:
    loaded = from_text(json.dumps(doc, indent="\t"))
    assert parse_rules_document(loaded, "mueller", directory)[NO].rules == DEMO_RULES


def test_number_keys_are_normalised(doc: dict[str, Any], directory: Directory) -> None:
    doc["numbers"] = {"+49 89 1234567": doc["numbers"][NO]}
    assert parse_rules_document(doc, "mueller", directory)[NO].rules == DEMO_RULES


def test_lenient_forms(directory: Directory) -> None:
    text = """\
client: mueller
numbers:
  "+49891234567":
    rules:
      - name: " Nacht "
        when: {days: [Fri, fri, MON], time: "22:00 - 6:00 +1"}
        steps: [{targets: "voicemail:mueller"}]
      - name: Tag
        when: {}
        steps: [{targets: ["voicemail:azubi", "user:admin"], timeout: 600}]
  "+49891234568":
"""
    numbers = parse_rules_document(from_text(text), "mueller", directory)
    nacht, tag = numbers[NO].rules
    assert nacht == Rule(
        "Nacht",
        (Step(("voicemail:mueller",), 30),),  # timeout defaults to 30
        When(days=("mon", "fri"), start="22:00", end="06:00"),
    )
    assert tag.when.always and tag.steps == (Step(("voicemail:azubi", "user:admin"), 600),)
    assert numbers[NO2].rules == ()


def test_empty_numbers_clears_all(directory: Directory) -> None:
    numbers = parse_rules_document({"client": "mueller", "numbers": {}}, "mueller", directory)
    assert numbers == {NO: Number(NO, "mueller"), NO2: Number(NO2, "mueller")}


# ------------------------------------------------------------------------------ round trip


def test_round_trip_dump_parse(doc: dict[str, Any], directory: Directory) -> None:
    numbers = parse_rules_document(doc, "mueller", directory)
    loaded = with_numbers(directory, numbers)
    dumped = dump_rules_document("mueller", loaded)
    assert dumped["client"] == "mueller"
    assert list(dumped["numbers"]) == [NO, NO2]
    assert dumped["numbers"][NO2] == {"rules": []}
    assert dumped["numbers"][NO]["rules"][0] == {
        "name": "Override",
        "when": {"override": "office"},
        "steps": [{"targets": ["group:team"], "timeout": 30}],
    }
    assert "when" not in dumped["numbers"][NO]["rules"][3]  # Sonst: unconditional
    assert parse_rules_document(dumped, "mueller", directory) == numbers
    # and through YAML and JSON text
    assert parse_rules_document(from_text(to_yaml(dumped)), "mueller", directory) == numbers
    assert parse_rules_document(from_text(json.dumps(dumped)), "mueller", directory) == numbers


def test_round_trip_every_condition(directory: Directory) -> None:
    rules = (
        Rule(
            "Alles",
            (Step(("user:mueller", "group:team"), 25), Step(("voicemail:mueller",), 5)),
            When(
                days=("sat", "sun"),
                start="22:00",
                end="06:00",
                holidays="only",
                closures="exclude",
                presence=Presence("mueller", registered=True, in_call=False),
                override="mobile",
            ),
        ),
        Rule("Bis Mitternacht", (Step(("user:anna",), 10),), When(start="18:00", end="24:00")),
        Rule("Zu", (Step(("user:ben",), 10),), When(closures="only")),
        Rule("Weg", (Step(("user:ben",), 10),), When(presence=Presence("mueller", False))),
    )
    loaded = with_numbers(directory, {NO: Number(NO, "mueller", rules)})
    dumped = dump_rules_document("mueller", loaded)
    assert dumped["numbers"][NO]["rules"][0]["when"]["time"] == "22:00-06:00+1"
    assert dumped["numbers"][NO]["rules"][1]["when"]["time"] == "18:00-24:00"
    text = to_yaml(dumped)
    assert parse_rules_document(from_text(text), "mueller", directory)[NO].rules == rules


def test_to_yaml_is_readable_and_stable(doc: dict[str, Any], directory: Directory) -> None:
    numbers = parse_rules_document(doc, "mueller", directory)
    numbers[NO] = replace(numbers[NO], rules=(replace(DEMO_RULES[0], name="Büro über Mittag"),))
    dumped = dump_rules_document("mueller", with_numbers(directory, numbers))
    text = to_yaml(dumped)
    assert text.startswith("client: mueller\nnumbers:\n  '+49891234567':\n    rules:\n")
    assert "Büro über Mittag" in text  # unicode kept, not escaped
    assert "- targets: [group:team]" in text or "- targets: ['group:team']" in text
    # keys in a stable order whatever order the input had
    shuffled = {"numbers": dumped["numbers"], "client": "mueller"}
    rule = shuffled["numbers"][NO]["rules"][0]
    shuffled["numbers"][NO]["rules"][0] = {k: rule[k] for k in reversed(list(rule))}
    assert to_yaml(shuffled) == text
    assert text.index("name:") < text.index("when:") < text.index("steps:")


# ------------------------------------------------------------------------------ validation


def rule_doc(*rules: dict[str, Any], number: str = NO) -> dict[str, Any]:
    return {"client": "mueller", "numbers": {number: {"rules": list(rules)}}}


def team(timeout: int = 30) -> list[dict[str, Any]]:
    return [{"targets": ["group:team"], "timeout": timeout}]


def r(name: str = "R", **when: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "steps": team()}
    if when:
        out["when"] = when
    return out


def step_rule(*targets: Any, timeout: Any = 30) -> dict[str, Any]:
    return {"name": "R", "steps": [{"targets": list(targets), "timeout": timeout}]}


R0 = f"{P}.rules[0]"
T0 = f"{R0}.steps[0].targets[0]"

CASES: list[tuple[str, object, str, str]] = [
    # (id, document, path, message part)
    ("not a mapping", ["client", "mueller"], "(document)", "expected a mapping"),
    ("empty document", None, "(document)", "got nothing"),
    ("client missing", {"numbers": {}}, "client", "missing (must be 'mueller')"),
    ("client mismatch", {"client": "schulz", "numbers": {}}, "client", "for client 'schulz'"),
    ("numbers missing", {"client": "mueller"}, "numbers", "missing"),
    ("numbers a list", {"client": "mueller", "numbers": [NO]}, "numbers", "expected a mapping"),
    ("top-level typo", {"client": "mueller", "numbers": {}, "numbrs": {}}, "numbrs",
     "unknown key 'numbrs' (did you mean 'numbers'?)"),
    ("number of another client", rule_doc(r(), number="+49301234567"), "numbers.+49301234567",
     "does not belong to client 'mueller'"),
    ("unknown number", rule_doc(r(), number="+49899999999"), "numbers.+49899999999",
     "does not belong"),
    ("not a number", rule_doc(r(), number="089 12x"), "numbers.089 12x", "not a phone number"),
    ("unquoted number", {"client": "mueller", "numbers": {49891234567: None}},
     "numbers.49891234567", 'quoted string, e.g. "+49891234567"'),
    ("number key typo", {"client": "mueller", "numbers": {NO: {"rule": []}}}, f"{P}.rule",
     "did you mean 'rules'?"),
    ("rules not a list", {"client": "mueller", "numbers": {NO: {"rules": {}}}}, f"{P}.rules",
     "expected a list of rules"),
    ("rule not a mapping", rule_doc("Sonst"), R0, "expected a rule"),  # type: ignore[arg-type]
    ("rule key typo", rule_doc({**r(), "wen": {}}), f"{R0}.wen", "did you mean 'when'?"),
    ("name missing", rule_doc({"steps": team()}), f"{R0}.name", "missing"),
    ("name empty", rule_doc(r(" ")), f"{R0}.name", "non-empty"),
    ("name with CR/LF", rule_doc(r("Nachts\r\nX: y")), f"{R0}.name", "control character U+000D"),
    ("name with bidi", rule_doc(r("\u202eNachts")), f"{R0}.name", "bidirectional control"),
    ("duplicate names", rule_doc(r("A", days=["mon"]), r("a", days=["tue"])), f"{P}.rules[1].name",
     "duplicate rule name 'a' (also rules[0])"),
    ("unknown user", rule_doc(step_rule("user:mueler")), T0, "unknown user 'mueler'"),
    ("other client's user", rule_doc(step_rule("user:schulz")), T0,
     "user 'schulz' is neither an agent nor a user of client 'mueller'"),
    ("unknown group", rule_doc(step_rule("group:tema")), T0, "unknown group 'tema'"),
    ("unknown voicemail", rule_doc(step_rule("voicemail:schulz")), T0,
     "unknown voicemail 'schulz'"),
    ("external not a number", rule_doc(step_rule("external:0170 11x")), T0,
     "'0170 11x' is not a phone number"),
    ("external not allowed", rule_doc(step_rule("external:+4312345678")), T0,
     "no trunk allows calls to +4312345678"),
    ("external premium", rule_doc(step_rule("external:+49900123456")), T0,
     "+49900123456: destination not allowed: premium rate"),
    ("external shared cost", rule_doc(step_rule("external:+491805123456")), T0,
     "destination not allowed: shared-cost service"),
    ("external not approved", rule_doc(step_rule("external:+491702222222")), T0,
     "+491702222222 is not approved for forwarding of client 'mueller'"),
    ("unknown target kind", rule_doc(step_rule("sip:anna@example.org")), T0, "is not a target"),
    ("target not text", rule_doc(step_rule(7)), T0, "expected a target text"),
    ("duplicate target", rule_doc(step_rule("group:team", "group:team")),
     f"{R0}.steps[0].targets[1]", "listed twice"),
    ("timeout 0", rule_doc(step_rule("group:team", timeout=0)), f"{R0}.steps[0].timeout",
     "0 is not within 1..600 seconds"),
    ("timeout 601", rule_doc(step_rule("group:team", timeout=601)), f"{R0}.steps[0].timeout",
     "601 is not within 1..600"),
    ("timeout text", rule_doc(step_rule("group:team", timeout="30")), f"{R0}.steps[0].timeout",
     "whole seconds"),
    ("timeout bool", rule_doc(step_rule("group:team", timeout=True)), f"{R0}.steps[0].timeout",
     "whole seconds"),
    ("timeout typo", rule_doc({"name": "R", "steps": [{"targets": ["group:team"], "tmeout": 5}]}),
     f"{R0}.steps[0].tmeout", "unknown key 'tmeout' (did you mean 'timeout'?)"),
    ("no steps", rule_doc({"name": "R", "steps": []}), f"{R0}.steps", "at least one step"),
    ("steps missing", rule_doc({"name": "R"}), f"{R0}.steps", "missing"),
    ("no targets", rule_doc(step_rule()), f"{R0}.steps[0].targets", "at least one target"),
    ("targets missing", rule_doc({"name": "R", "steps": [{"timeout": 5}]}),
     f"{R0}.steps[0].targets", "missing"),
    ("empty days", rule_doc(r(days=[])), f"{R0}.when.days", "can never match"),
    ("bad day", rule_doc(r(days=["mon", "mo"])), f"{R0}.when.days[1]", "'mo' is not one of"),
    ("days as text", rule_doc(r(days="mon-fri")), f"{R0}.when.days", "expected a list of days"),
    ("inverted window", rule_doc(r(time="17:00-16:00")), f"{R0}.when.time",
     'end 16:00 is not after start 17:00 (for a window across midnight write "17:00-16:00+1")'),
    ("empty window", rule_doc(r(time="08:00-08:00")), f"{R0}.when.time",
     "end 08:00 is not after start 08:00 (empty window)"),
    ("across midnight too long", rule_doc(r(time="06:00-22:00+1")), f"{R0}.when.time",
     "must end before it starts"),
    ("bad window", rule_doc(r(time="7-16")), f"{R0}.when.time", "is not a window"),
    ("bad hour", rule_doc(r(time="07:00-25:00")), f"{R0}.when.time", "end: '25:00'"),
    ("unquoted time", rule_doc(r(time=420)), f"{R0}.when.time", "quoted text"),
    ("bad holidays", rule_doc(r(holidays=False)), f"{R0}.when.holidays",
     "expected one of exclude, only, ignore"),
    ("bad closures", rule_doc(r(closures="skip")), f"{R0}.when.closures", "expected one of"),
    ("holidays and closures only", rule_doc(r(holidays="only", closures="only")), f"{R0}.when",
     "holidays: only together with closures: only"),
    ("bad override", rule_doc(r(override="home")), f"{R0}.when.override",
     "expected one of office, mobile"),
    ("when typo", rule_doc(r(tme="07:00-16:00")), f"{R0}.when.tme", "did you mean 'time'?"),
    ("when not a mapping", rule_doc({**r(), "when": "always"}), f"{R0}.when",
     "expected a mapping of conditions"),
    ("presence without flags", rule_doc(r(presence={"user": "mueller"})), f"{R0}.when.presence",
     "needs registered and/or in_call"),
    ("presence unknown user", rule_doc(r(presence={"user": "x", "registered": True})),
     f"{R0}.when.presence.user", "unknown user 'x'"),
    ("presence user missing", rule_doc(r(presence={"registered": True})),
     f"{R0}.when.presence.user", "missing"),
    ("presence flag not bool", rule_doc(r(presence={"user": "mueller", "registered": "ja"})),
     f"{R0}.when.presence.registered", "expected true or false"),
    ("presence impossible",
     rule_doc(r(presence={"user": "mueller", "registered": False, "in_call": True})),
     f"{R0}.when.presence", "can never match"),
    ("presence typo", rule_doc(r(presence={"user": "mueller", "in_cal": True})),
     f"{R0}.when.presence.in_cal", "did you mean 'in_call'?"),
    ("after unconditional", rule_doc(r("Sonst"), r("Werktag", days=["mon"])), f"{P}.rules[1]",
     "rule 'Werktag' is unreachable: rules[0] has no condition"),
    ("same condition", rule_doc(r("A", days=["mon"]), r("B", days=["mon"])), f"{P}.rules[1]",
     "rule 'B' is unreachable: rules[0] has the same condition"),
    ("number twice", {"client": "mueller", "numbers": {NO: None, "+49 89 1234567": None}},
     "numbers.+49 89 1234567", "listed twice"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "path", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_validation_error(directory: Directory, doc: object, path: str, message: str) -> None:
    found = problems(copy.deepcopy(doc), directory)
    assert len(found) == 1, found
    assert found[0][0] == path
    assert message in found[0][1]


def test_unknown_client(directory: Directory) -> None:
    found = problems({"client": "meier", "numbers": {}}, directory, client="meier")
    assert found == [("client", "unknown client 'meier'")]


def test_empty_text_is_empty_document(directory: Directory) -> None:
    assert from_text("") is None
    assert problems(from_text("# nothing\n"), directory)[0][0] == "(document)"


def test_all_problems_at_once(doc: dict[str, Any], directory: Directory) -> None:
    rules = doc["numbers"][NO]["rules"]
    rules[2]["when"]["time"] = "17:00-16:00"
    rules[2]["steps"][0]["tmeout"] = rules[2]["steps"][0].pop("timeout")
    rules[3]["steps"][1]["targets"] = ["external:+4312345678"]
    rules.append({"name": "Sonst", "steps": team(0)})
    doc["client"] = "schulz"
    with pytest.raises(RulesError) as info:
        parse_rules_document(doc, "mueller", directory)
    assert str(info.value).splitlines() == [
        "client: the document is for client 'schulz', not 'mueller'",
        f"{P}.rules[2].when.time: end 16:00 is not after start 17:00 "
        '(for a window across midnight write "17:00-16:00+1")',
        f"{P}.rules[2].steps[0].tmeout: unknown key 'tmeout' (did you mean 'timeout'?); "
        "allowed: targets, timeout",
        f"{P}.rules[3].steps[1].targets[0]: no trunk allows calls to +4312345678 "
        "(check the trunk prefixes)",
        f"{P}.rules[4].steps[0].timeout: 0 is not within 1..600 seconds",
        f"{P}.rules[4].name: duplicate rule name 'Sonst' (also rules[3])",
        f"{P}.rules[4]: rule 'Sonst' is unreachable: rules[3] has no condition and always matches",
    ]
    assert isinstance(info.value, ValueError)


def test_broken_rule_does_not_make_later_rules_unreachable(directory: Directory) -> None:
    # rules[0] has a broken condition; that must not read as "no condition"
    found = problems(rule_doc(r("A", days=[]), r("B", days=["mon"])), directory)
    assert [p for p, _ in found] == [f"{R0}.when.days"]


def test_dump_unknown_client(directory: Directory) -> None:
    with pytest.raises(ValueError, match="unknown client"):
        dump_rules_document("meier", directory)


# -------------------------------------------------------------------------------- YAML text


def test_yaml_syntax_error_has_line_number() -> None:
    text = "client: mueller\nnumbers:\n  '+49891234567':\n    rules: [\n      - name: x\n"
    with pytest.raises(RulesError) as info:
        from_text(text)
    (path, message), *_ = info.value.problems
    assert path.startswith("line ") and ", column " in path
    assert str(info.value).startswith("line ")
    text = "client: mueller\nnumbers:\n  x: 1\n y: 2\n"
    with pytest.raises(RulesError) as info:
        from_text(text)
    assert info.value.problems[0][0] == "line 4, column 2"


def test_yaml_duplicate_key_is_an_error() -> None:
    text = "client: mueller\nnumbers: {}\nclient: schulz\n"
    with pytest.raises(RulesError) as info:
        from_text(text)
    assert (
        str(info.value)
        == "line 3, column 1: found the key 'client' twice (while reading a mapping)"
    )


def test_json_errors() -> None:
    with pytest.raises(RulesError) as info:
        from_text('{"client": "mueller",\n "numbers": }')
    assert info.value.problems[0][0] == "line 2, column 13"
    with pytest.raises(RulesError, match="found the key 'client' twice"):
        from_text('{"client": "a", "client": "b"}')


def test_yaml_anchors_and_merge_keys_work(directory: Directory) -> None:
    text = """\
client: mueller
numbers:
  "+49891234567":
    rules:
      - name: A
        when: &werktag {days: [mon, tue], holidays: exclude}
        steps: [{targets: ["user:mueller"], timeout: 15}]
      - name: B
        when: {<<: *werktag, holidays: only}
        steps: [{targets: ["group:team"], timeout: 30}]
"""
    rules = parse_rules_document(from_text(text), "mueller", directory)[NO].rules
    assert rules[1].when == When(days=("mon", "tue"), holidays="only")


def test_external_targets_need_approval_and_at_most_three_per_step(directory: Directory) -> None:
    """Forwarding leaves through the carrier: only numbers an admin approved for the client,
    within its destination policy, and never more than three at once."""
    extra = ("+491702222221", "+491702222222", "+491702222223")
    mueller = directory.clients["mueller"]
    approved = replace(
        mueller,
        call_policy=CallPolicy(approved_numbers=(MOBILE, *extra, "+4319000000", "+49900123")),
    )
    d = replace(directory, clients={**directory.clients, "mueller": approved})
    four = rule_doc(step_rule(*(f"external:{n}" for n in (MOBILE, *extra))))
    assert problems(copy.deepcopy(four), d) == [
        (f"{R0}.steps[0].targets[3]", "a step may ring at most 3 external numbers at once")
    ]
    three = rule_doc(step_rule(*(f"external:{n}" for n in (MOBILE, *extra[:2]))))
    parse_rules_document(three, "mueller", d)  # no RulesError
    # approved, but premium: the destination policy still refuses it
    premium = problems(rule_doc(step_rule("external:+49900123")), d)
    assert premium == [(T0, "+49900123: destination not allowed: premium rate (ask the provider)")]
    # the trunk's prefixes decide before the class: +43 is not on the demo trunk
    assert "no trunk allows" in problems(rule_doc(step_rule("external:+4319000000")), d)[0][1]
