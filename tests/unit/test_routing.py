"""route(), expand_group() and feature_code() over tricky calendars, on the demo configuration."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from heimbuero.domain.model import (
    Client,
    Directory,
    Group,
    Number,
    Override,
    Presence,
    Provider,
    Rule,
    Step,
    Trunk,
    User,
    When,
)
from heimbuero.office.routing import (
    RoutePlan,
    RoutingState,
    expand_group,
    feature_code,
    holiday_name,
    normalise_number,
    route,
)

BERLIN = ZoneInfo("Europe/Berlin")
MUELLER_NO = "+49891234567"
SCHULZ_NO = "+49301234567"
MOBILE = "+491701111111"
WORKDAYS = ("mon", "tue", "wed", "thu", "fri")

TEAM = (Step(("group:team",), 30),)
OFFICE_HOURS = When(days=WORKDAYS, start="07:00", end="16:00", holidays="exclude")


def weekday_rules(owner: str, mobile: str) -> tuple[Rule, ...]:
    """The demo rules of issue 3: override, Werktag, Sonst."""
    return (
        Rule("Override", TEAM, When(override="office")),
        Rule("Override Handy", (Step((f"external:{mobile}",), 20),), When(override="mobile")),
        Rule(
            "Werktag",
            (Step((f"user:{owner}",), 15), Step(("group:team",), 30)),
            OFFICE_HOURS,
        ),
        Rule("Sonst", (Step(("group:team",), 30), Step((f"external:{mobile}",), 20))),
    )


def demo_directory() -> Directory:
    mueller = Client(
        id="mueller",
        name="Tischlerei Müller",
        trade="Tischlerei",
        timezone="Europe/Berlin",
        bundesland="BY",
        closure_days=(date(2026, 12, 28), date(2026, 12, 29)),
    )
    schulz = Client(id="schulz", name="Sanitär Schulz", timezone="Europe/Berlin", bundesland="BE")
    users = {
        "anna": User("anna", "agent", display_name="Anna"),
        "ben": User("ben", "agent", display_name="Ben"),
        "cleo": User("cleo", "agent", display_name="Cleo"),
        "mueller": User("mueller", "client", client="mueller", mobile=MOBILE),
        "schulz": User("schulz", "client", client="schulz"),
    }
    return Directory(
        provider=Provider("Büroservice Sonnenschein", default_steps=TEAM),
        clients={"mueller": mueller, "schulz": schulz},
        numbers={
            MUELLER_NO: Number(MUELLER_NO, "mueller", weekday_rules("mueller", MOBILE)),
            # not part of the demo: schulz gets the same shape of rules, for the Bundesland test
            SCHULZ_NO: Number(SCHULZ_NO, "schulz", weekday_rules("schulz", "+491702222222")),
        },
        users=users,
        groups={
            "team": Group("team", "ring_all", ("anna", "ben")),
            "idle": Group("idle", "longest_idle", ("anna", "ben", "cleo")),
            "rr": Group("rr", "round_robin", ("anna", "ben", "cleo")),
        },
        trunks={"carrier": Trunk("carrier", "127.0.0.1", 5090, prefixes=("+49",))},
    )


def berlin(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=BERLIN)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


def with_rules(directory: Directory, number: str, *rules: Rule) -> Directory:
    numbers = dict(directory.numbers)
    numbers[number] = replace(numbers[number], rules=rules)
    return replace(directory, numbers=numbers)


@pytest.fixture
def demo() -> Directory:
    return demo_directory()


def rule_at(directory: Directory, at: datetime, state: RoutingState | None = None) -> str | None:
    return route(MUELLER_NO, at, state or RoutingState(), directory).rule


# ------------------------------------------------------------------------------ the demo rules


def test_weekday_in_office_hours_rings_owner_then_team(demo: Directory) -> None:
    plan = route(MUELLER_NO, berlin(2026, 10, 2, 9, 30), RoutingState(), demo)  # Friday
    assert plan == RoutePlan(
        client="mueller",
        number=MUELLER_NO,
        rule="Werktag",
        steps=(Step(("user:mueller",), 15), Step(("group:team",), 30)),
        reason=plan.reason,
    )
    assert plan.reason.startswith("rule 'Werktag' matched: Fri 2026-10-02 09:30 Europe/Berlin")


def test_to_json_shape(demo: Directory) -> None:
    plan = route(MUELLER_NO, berlin(2026, 10, 2, 9, 30), RoutingState(), demo)
    assert plan.to_json() == {
        "client": "mueller",
        "number": MUELLER_NO,
        "rule": "Werktag",
        "steps": [
            {"targets": ["user:mueller"], "timeout": 15},
            {"targets": ["group:team"], "timeout": 30},
        ],
        "reason": plan.reason,
        "dictation": False,
    }


@pytest.mark.parametrize(
    ("at", "rule"),
    [
        (berlin(2026, 10, 2, 6, 59), "Sonst"),  # before opening
        (berlin(2026, 10, 2, 7, 0), "Werktag"),  # start is inclusive
        (berlin(2026, 10, 2, 15, 59, 59), "Werktag"),
        (berlin(2026, 10, 2, 16, 0), "Sonst"),  # end is exclusive
        (berlin(2026, 10, 4, 10, 0), "Sonst"),  # Sunday
        (berlin(2026, 10, 3, 10, 0), "Sonst"),  # Saturday (and a holiday)
    ],
)
def test_office_hours_edges(demo: Directory, at: datetime, rule: str) -> None:
    assert rule_at(demo, at) == rule


def test_at_in_any_zone_is_evaluated_in_client_zone(demo: Directory) -> None:
    # 05:30 UTC on a summer Friday is 07:30 in Berlin
    assert rule_at(demo, utc(2026, 7, 3, 5, 30)) == "Werktag"
    assert rule_at(demo, datetime(2026, 7, 3, 1, 30, tzinfo=ZoneInfo("America/New_York"))) == (
        "Werktag"
    )
    assert rule_at(demo, utc(2026, 7, 3, 4, 30)) == "Sonst"  # 06:30 local


def test_naive_at_is_refused(demo: Directory) -> None:
    with pytest.raises(ValueError, match="aware"):
        route(MUELLER_NO, datetime(2026, 10, 2, 9, 30), RoutingState(), demo)


def test_sonst_steps_go_to_team_then_mobile(demo: Directory) -> None:
    plan = route(MUELLER_NO, berlin(2026, 10, 2, 20, 0), RoutingState(), demo)
    assert plan.rule == "Sonst"
    assert plan.steps == (Step(("group:team",), 30), Step((f"external:{MOBILE}",), 20))
    assert "'Werktag': 20:00 not in 07:00-16:00" in plan.reason


# ------------------------------------------------------------------------------------ holidays


def test_holiday_on_a_weekday_skips_werktag(demo: Directory) -> None:
    # 2025-10-03 (Tag der Deutschen Einheit) is a Friday; 2026-10-03 is a Saturday
    plan = route(MUELLER_NO, berlin(2025, 10, 3, 10, 0), RoutingState(), demo)
    assert plan.rule == "Sonst"
    assert "public holiday Tag der Deutschen Einheit (BY)" in plan.reason
    assert rule_at(demo, berlin(2025, 10, 2, 10, 0)) == "Werktag"  # the Thursday before


def test_holiday_2026_10_03_named_in_reason(demo: Directory) -> None:
    every_day = When(start="07:00", end="16:00", holidays="exclude")
    d = with_rules(demo, MUELLER_NO, Rule("Tag", TEAM, every_day))
    plan = route(MUELLER_NO, berlin(2026, 10, 3, 10, 0), RoutingState(), d)
    assert plan.rule is None
    assert "Tag der Deutschen Einheit" in plan.reason
    assert route(MUELLER_NO, berlin(2026, 10, 4, 10, 0), RoutingState(), d).rule == "Tag"


def test_client_in_another_bundesland(demo: Directory) -> None:
    # 2026-01-06 Heilige Drei Könige (Tuesday): a holiday in Bavaria, not in Berlin
    at = berlin(2026, 1, 6, 10, 0)
    assert route(MUELLER_NO, at, RoutingState(), demo).rule == "Sonst"
    assert route(SCHULZ_NO, at, RoutingState(), demo).rule == "Werktag"
    # Fronleichnam 2026-06-04 (Thursday): Bavaria only
    at = berlin(2026, 6, 4, 10, 0)
    assert route(MUELLER_NO, at, RoutingState(), demo).rule == "Sonst"
    assert route(SCHULZ_NO, at, RoutingState(), demo).rule == "Werktag"
    # the other way round: Internationaler Frauentag 2027-03-08 (Monday) is a Berlin holiday only
    at = berlin(2027, 3, 8, 10, 0)
    assert route(MUELLER_NO, at, RoutingState(), demo).rule == "Werktag"
    plan = route(SCHULZ_NO, at, RoutingState(), demo)
    assert plan.rule == "Sonst" and "Frauentag (BE)" in plan.reason


def test_holiday_name_lookup() -> None:
    assert holiday_name("BY", date(2026, 1, 6)) == "Heilige Drei Könige"
    assert holiday_name("BE", date(2026, 1, 6)) is None
    assert "Frauentag" in (holiday_name("BE", date(2026, 3, 8)) or "")
    assert holiday_name("BY", date(2026, 3, 8)) is None
    with pytest.raises(ValueError, match="Bundesland"):
        holiday_name("XX", date(2026, 1, 1))


def test_holidays_only_rule(demo: Directory) -> None:
    d = with_rules(
        demo,
        MUELLER_NO,
        Rule("Feiertag", (Step(("voicemail:mueller",), 10),), When(holidays="only")),
        *weekday_rules("mueller", MOBILE),
    )
    assert rule_at(d, berlin(2026, 12, 25, 10, 0)) == "Feiertag"
    assert rule_at(d, berlin(2026, 12, 23, 10, 0)) == "Werktag"


def test_closure_days(demo: Directory) -> None:
    # 2026-12-28 is a Monday and a closure day of mueller
    # no rule of the number mentions closures: on a closure day the office (default plan) takes
    # the call; override rules still apply
    plan = route(MUELLER_NO, berlin(2026, 12, 28, 10, 0), RoutingState(), demo)
    assert plan.rule is None and plan.reason.startswith("closure day")
    assert rule_at(demo, berlin(2026, 12, 30, 10, 0)) == "Werktag"
    closed = replace(OFFICE_HOURS, closures="exclude")
    d = with_rules(
        demo,
        MUELLER_NO,
        Rule("Betriebsferien", TEAM, When(closures="only")),
        Rule("Werktag", (Step(("user:mueller",), 15),), closed),
    )
    plan = route(MUELLER_NO, berlin(2026, 12, 28, 10, 0), RoutingState(), d)
    assert plan.rule == "Betriebsferien"
    assert rule_at(d, berlin(2026, 12, 30, 10, 0)) == "Werktag"
    d2 = with_rules(demo, MUELLER_NO, Rule("Werktag", (Step(("user:mueller",), 15),), closed))
    plan = route(MUELLER_NO, berlin(2026, 12, 29, 10, 0), RoutingState(), d2)
    assert plan.rule is None and "closure day" in plan.reason


# -------------------------------------------------------------------------------- DST changes


@pytest.fixture
def every_day_7_16(demo: Directory) -> Directory:
    return with_rules(demo, MUELLER_NO, Rule("Tag", TEAM, When(start="07:00", end="16:00")))


@pytest.mark.parametrize(
    ("at", "matches"),
    [
        # 2026-03-29, last Sunday of March: from 03:00 local it is CEST (UTC+2)
        (utc(2026, 3, 29, 4, 59), False),  # 06:59 CEST
        (utc(2026, 3, 29, 5, 0), True),  # 07:00 CEST
        (utc(2026, 3, 29, 5, 30), True),  # 07:30 CEST (06:30 if one wrongly kept CET)
        (utc(2026, 3, 29, 13, 59), True),  # 15:59 CEST
        (utc(2026, 3, 29, 14, 0), False),  # 16:00 CEST
        (utc(2026, 3, 29, 14, 30), False),  # 16:30 CEST (15:30 if one wrongly kept CET)
        # 2026-10-25, last Sunday of October: from 03:00 CEST it is 02:00 CET (UTC+1)
        (utc(2026, 10, 25, 5, 30), False),  # 06:30 CET (07:30 if one wrongly kept CEST)
        (utc(2026, 10, 25, 6, 0), True),  # 07:00 CET
        (utc(2026, 10, 25, 14, 59), True),  # 15:59 CET
        (utc(2026, 10, 25, 15, 0), False),  # 16:00 CET
        (utc(2026, 10, 25, 14, 30), True),  # 15:30 CET (16:30 if one wrongly kept CEST)
    ],
)
def test_window_on_dst_sundays(every_day_7_16: Directory, at: datetime, matches: bool) -> None:
    assert rule_at(every_day_7_16, at) == ("Tag" if matches else None)


def test_nonexistent_0230_on_spring_forward_day(demo: Directory) -> None:
    d = with_rules(
        demo,
        MUELLER_NO,
        Rule("Zwei", TEAM, When(start="02:00", end="03:00")),
        Rule("Drei", TEAM, When(start="03:00", end="04:00")),
    )
    # 02:30 does not exist on 2026-03-29; PEP 495 (fold=0) reads it as 01:30 UTC = 03:30 CEST
    plan = route(MUELLER_NO, berlin(2026, 3, 29, 2, 30), RoutingState(), d)
    assert plan.rule == "Drei"
    assert "Sun 2026-03-29 03:30 Europe/Berlin" in plan.reason
    # no real instant of that day is in 02:00-03:00
    t = utc(2026, 3, 28, 23, 0)
    while t < utc(2026, 3, 29, 3, 0):
        assert route(MUELLER_NO, t, RoutingState(), d).rule != "Zwei"
        t += timedelta(minutes=1)


def test_repeated_0230_on_fall_back_day_matches_twice(demo: Directory) -> None:
    d = with_rules(demo, MUELLER_NO, Rule("Zwei", TEAM, When(start="02:00", end="03:00")))
    assert rule_at(d, utc(2026, 10, 25, 0, 30)) == "Zwei"  # 02:30 CEST
    assert rule_at(d, utc(2026, 10, 25, 1, 30)) == "Zwei"  # 02:30 CET
    assert rule_at(d, utc(2026, 10, 25, 2, 0)) is None  # 03:00 CET


# ---------------------------------------------------------------------------------- overrides


def test_override_office_wins_and_expires_at_exactly_until(demo: Directory) -> None:
    until = berlin(2026, 10, 2, 14, 0)
    state = RoutingState(overrides={"mueller": Override("mueller", "office", until)})
    plan = route(MUELLER_NO, berlin(2026, 10, 2, 13, 59, 59), state, demo)
    assert (plan.rule, plan.steps) == ("Override", TEAM)
    assert rule_at(demo, berlin(2026, 10, 2, 14, 0), state) == "Werktag"  # expired at until
    assert rule_at(demo, utc(2026, 10, 2, 12, 0), state) == "Werktag"  # same instant in UTC
    assert rule_at(demo, utc(2026, 10, 2, 11, 59, 59), state) == "Override"
    plan = route(MUELLER_NO, berlin(2026, 10, 2, 14, 0), state, demo)
    assert "no override office active" in plan.reason


def test_override_without_until_and_mobile(demo: Directory) -> None:
    state = RoutingState(overrides={"mueller": Override("mueller", "office")})
    assert rule_at(demo, berlin(2030, 1, 1, 3, 0), state) == "Override"
    state = RoutingState(overrides={"mueller": Override("mueller", "mobile")})
    plan = route(MUELLER_NO, berlin(2026, 10, 2, 9, 30), state, demo)
    assert plan.rule == "Override Handy"
    assert plan.steps == (Step((f"external:{MOBILE}",), 20),)
    # another client's override changes nothing for mueller
    state = RoutingState(overrides={"schulz": Override("schulz", "office")})
    assert rule_at(demo, berlin(2026, 10, 2, 9, 30), state) == "Werktag"
    assert route(SCHULZ_NO, berlin(2026, 10, 2, 9, 30), state, demo).rule == "Override"


# ------------------------------------------------------------------ overlapping, midnight, presence


def test_overlapping_windows_first_wins(demo: Directory) -> None:
    d = with_rules(
        demo,
        MUELLER_NO,
        Rule("Vormittag", (Step(("user:anna",), 10),), When(start="08:00", end="12:00")),
        Rule("Mittag", (Step(("user:ben",), 10),), When(start="10:00", end="14:00")),
    )
    assert rule_at(d, berlin(2026, 10, 2, 9, 0)) == "Vormittag"
    assert rule_at(d, berlin(2026, 10, 2, 11, 0)) == "Vormittag"  # both match: first wins
    assert rule_at(d, berlin(2026, 10, 2, 12, 0)) == "Mittag"
    assert rule_at(d, berlin(2026, 10, 2, 13, 59)) == "Mittag"
    assert rule_at(d, berlin(2026, 10, 2, 14, 0)) is None


def test_window_across_midnight_belongs_to_its_start_day(demo: Directory) -> None:
    d = with_rules(
        demo, MUELLER_NO, Rule("Nacht", TEAM, When(days=("fri",), start="22:00", end="06:00"))
    )
    assert rule_at(d, berlin(2026, 10, 2, 22, 0)) == "Nacht"  # Friday 22:00
    assert rule_at(d, berlin(2026, 10, 3, 3, 0)) == "Nacht"  # Saturday 03:00: Friday's window
    assert rule_at(d, berlin(2026, 10, 3, 6, 0)) is None  # end exclusive
    assert rule_at(d, berlin(2026, 10, 2, 3, 0)) is None  # Friday 03:00 is Thursday's window
    assert rule_at(d, berlin(2026, 10, 3, 22, 30)) is None  # Saturday evening
    assert rule_at(d, berlin(2026, 10, 2, 12, 0)) is None


def test_empty_window_never_matches(demo: Directory) -> None:
    d = with_rules(demo, MUELLER_NO, Rule("Leer", TEAM, When(start="08:00", end="08:00")))
    assert rule_at(d, berlin(2026, 10, 2, 8, 0)) is None


def test_start_or_end_alone(demo: Directory) -> None:
    d = with_rules(
        demo,
        MUELLER_NO,
        Rule("Abend", TEAM, When(start="18:00")),
        Rule("Frueh", TEAM, When(end="06:00")),
    )
    assert rule_at(d, berlin(2026, 10, 2, 23, 59)) == "Abend"
    assert rule_at(d, berlin(2026, 10, 2, 5, 59)) == "Frueh"
    assert rule_at(d, berlin(2026, 10, 2, 12, 0)) is None


def test_presence_conditions(demo: Directory) -> None:
    office = When(presence=Presence("mueller", registered=True, in_call=False))
    d = with_rules(
        demo,
        MUELLER_NO,
        Rule("Im Büro", (Step(("user:mueller",), 15),), office),
        Rule("Sonst", TEAM),
    )
    at = berlin(2026, 10, 2, 9, 30)
    assert route(MUELLER_NO, at, RoutingState(), d).rule == "Sonst"  # not registered
    registered = frozenset({"mueller"})
    assert route(MUELLER_NO, at, RoutingState(registered=registered), d).rule == "Im Büro"
    busy = RoutingState(registered=registered, in_call=frozenset({"mueller"}))
    plan = route(MUELLER_NO, at, busy, d)
    assert plan.rule == "Sonst" and "mueller in a call" in plan.reason
    # another user's presence is irrelevant
    other = RoutingState(registered=frozenset({"anna"}))
    plan = route(MUELLER_NO, at, other, d)
    assert plan.rule == "Sonst" and "mueller not registered" in plan.reason


def test_presence_unregistered(demo: Directory) -> None:
    away = When(presence=Presence("mueller", registered=False))
    d = with_rules(demo, MUELLER_NO, Rule("Weg", TEAM, away))
    at = berlin(2026, 10, 2, 9, 30)
    assert route(MUELLER_NO, at, RoutingState(), d).rule == "Weg"
    assert route(MUELLER_NO, at, RoutingState(registered=frozenset({"mueller"})), d).rule is None


# ---------------------------------------------------------------------- numbers and default plan


@pytest.mark.parametrize(
    "written",
    ["+49891234567", "+49 89 1234567", "0049 89 1234567", "0049891234567", "+49 (89) 123-45/67"],
)
def test_number_normalisation(demo: Directory, written: str) -> None:
    assert normalise_number(written) == MUELLER_NO
    assert route(written, berlin(2026, 10, 2, 9, 30), RoutingState(), demo).client == "mueller"


@pytest.mark.parametrize("bad", ["089 1234567", "abc", "", "+", "+0891234567", "+4989123456789012"])
def test_bad_numbers_are_refused(demo: Directory, bad: str) -> None:
    with pytest.raises(ValueError, match="E.164"):
        route(bad, berlin(2026, 10, 2, 9, 30), RoutingState(), demo)


def test_unknown_number_gets_provider_default(demo: Directory) -> None:
    plan = route("+49 40 999999", berlin(2026, 10, 2, 9, 30), RoutingState(), demo)
    assert (plan.client, plan.number, plan.rule, plan.steps) == (None, "+4940999999", None, TEAM)
    assert "belongs to no client" in plan.reason
    assert plan.to_json()["client"] is None


def test_number_without_rules_or_no_match_gets_provider_default(demo: Directory) -> None:
    d = with_rules(demo, MUELLER_NO)
    plan = route(MUELLER_NO, berlin(2026, 10, 2, 9, 30), RoutingState(), d)
    assert (plan.client, plan.rule, plan.steps) == ("mueller", None, TEAM)
    assert "no rules" in plan.reason
    d = with_rules(demo, MUELLER_NO, Rule("Nie", TEAM, When(days=("sun",))))
    plan = route(MUELLER_NO, berlin(2026, 10, 2, 9, 30), RoutingState(), d)
    assert (
        plan.rule is None and "no rule matched" in plan.reason and "Fri not in sun" in plan.reason
    )


# -------------------------------------------------------------------------------- expand_group


def test_ring_all_keeps_order_and_skips_busy_and_paused(demo: Directory) -> None:
    assert expand_group("team", RoutingState(), demo) == ["anna", "ben"]
    assert expand_group("group:team", RoutingState(), demo) == ["anna", "ben"]
    assert expand_group("team", RoutingState(in_call=frozenset({"anna"})), demo) == ["ben"]
    assert expand_group("team", RoutingState(paused=frozenset({"ben"})), demo) == ["anna"]
    everyone_busy = RoutingState(in_call=frozenset({"anna"}), paused=frozenset({"ben"}))
    assert expand_group("team", everyone_busy, demo) == []
    assert expand_group("nope", RoutingState(), demo) == []


def test_longest_idle(demo: Directory) -> None:
    state = RoutingState(last_answered={"anna": 300.0, "ben": 100.0})
    assert expand_group("idle", state, demo) == ["cleo", "ben", "anna"]  # cleo never answered
    state = RoutingState(last_answered={"anna": 300.0, "ben": 100.0, "cleo": 200.0})
    assert expand_group("idle", state, demo) == ["ben", "cleo", "anna"]
    state = RoutingState(last_answered={"anna": 300.0}, in_call=frozenset({"ben"}))
    assert expand_group("idle", state, demo) == ["cleo", "anna"]
    assert expand_group("idle", RoutingState(), demo) == ["anna", "ben", "cleo"]  # ties: order


def test_round_robin(demo: Directory) -> None:
    assert expand_group("rr", RoutingState(), demo) == ["anna", "ben", "cleo"]
    assert expand_group("rr", RoutingState(rr_last={"rr": "anna"}), demo) == ["ben", "cleo", "anna"]
    assert expand_group("rr", RoutingState(rr_last={"rr": "cleo"}), demo) == ["anna", "ben", "cleo"]
    state = RoutingState(rr_last={"rr": "ben"}, paused=frozenset({"cleo"}))
    assert expand_group("rr", state, demo) == ["anna", "ben"]
    state = RoutingState(rr_last={"rr": "gone"})  # no longer a member: from the start
    assert expand_group("rr", state, demo) == ["anna", "ben", "cleo"]


# ------------------------------------------------------------------------------- feature codes


NOW = berlin(2026, 10, 2, 9, 0)


def test_star21_sets_office_until_cancelled() -> None:
    act = feature_code("*21", "mueller", NOW)
    assert act is not None
    assert (act.action, act.target, act.until, act.code) == ("set", "office", None, "*21")
    assert act.text_de == "Rufumleitung Büroservice aktiv"
    assert act.override() == Override("mueller", "office", None)


def test_star21_with_time_today_and_tomorrow() -> None:
    act = feature_code("*21*1400", "mueller", NOW)
    assert act is not None and act.until == berlin(2026, 10, 2, 14, 0)
    assert act.until.utcoffset() == timedelta(hours=2)
    assert (
        act.text
        == "Rufumleitung Büroservice aktiv bis 14:00 / Forwarding to office service until 14:00"
    )
    later = feature_code("*21*0800", "mueller", NOW)  # 08:00 has passed: tomorrow
    assert later is not None and later.until == berlin(2026, 10, 3, 8, 0)
    assert later.text_de == "Rufumleitung Büroservice aktiv bis morgen 08:00"
    same = feature_code("*21*0900", "mueller", NOW)  # exactly now: would expire at once
    assert same is not None and same.until == berlin(2026, 10, 3, 9, 0)


def test_until_across_dst_change() -> None:
    # set on Saturday evening before the autumn change, until Sunday 08:00 (now CET)
    act = feature_code("*21*0800", "mueller", berlin(2026, 10, 24, 20, 0))
    assert act is not None and act.until is not None
    assert act.until.astimezone(UTC) == utc(2026, 10, 25, 7, 0)
    # until 02:30 on the spring-forward day: that wall time does not exist, 03:30 CEST it is
    act = feature_code("*21*0230", "mueller", berlin(2026, 3, 29, 1, 0))
    assert act is not None and act.until is not None
    assert act.until.astimezone(UTC) == utc(2026, 3, 29, 1, 30)
    assert act.text_de.endswith("03:30")


@pytest.mark.parametrize(
    ("dialled", "action", "target"),
    [
        ("#21", "cancel", "office"),
        ("*22", "set", "mobile"),
        ("#22", "cancel", "mobile"),
        ("%2A21", "set", "office"),
        ("%2a22", "set", "mobile"),
        ("%2321", "cancel", "office"),
        ("%2322", "cancel", "mobile"),
        ("*21#", "set", "office"),  # send key
    ],
)
def test_codes(dialled: str, action: str, target: str) -> None:
    act = feature_code(dialled, "mueller", NOW)
    assert act is not None and (act.action, act.target) == (action, target)


def test_cancel_texts() -> None:
    act = feature_code("#22", "mueller", NOW)
    assert act is not None and act.text == "Rufumleitung Handy aus / Forwarding to mobile off"
    assert act.override() is None


@pytest.mark.parametrize(
    "bad", ["*21*2561", "*21*2400", "*21*99", "*21*", "#21*1400", "*21x", "*21*14:00"]
)
def test_invalid_codes(bad: str) -> None:
    with pytest.raises(ValueError, match="feature code"):
        feature_code(bad, "mueller", NOW)


@pytest.mark.parametrize("other", ["+49891234567", "100", "*99", "*210", "anna", "%2B4989"])
def test_not_a_feature_code(other: str) -> None:
    assert feature_code(other, "mueller", NOW) is None


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        feature_code("*21", "mueller", datetime(2026, 10, 2, 9, 0))


def test_apply_and_next_call_follows(demo: Directory) -> None:
    act = feature_code("*21*1400", "mueller", NOW)
    assert act is not None
    state = RoutingState(overrides=act.apply({}))
    assert rule_at(demo, berlin(2026, 10, 2, 9, 30), state) == "Override"
    assert rule_at(demo, berlin(2026, 10, 2, 14, 0), state) == "Werktag"
    # *22 replaces *21; #21 then leaves the mobile override alone; #22 removes it
    mobile = feature_code("*22", "mueller", NOW)
    cancel_office = feature_code("#21", "mueller", NOW)
    cancel_mobile = feature_code("#22", "mueller", NOW)
    assert mobile and cancel_office and cancel_mobile
    ov = mobile.apply(state.overrides)
    assert ov == {"mueller": Override("mueller", "mobile", None)}
    assert cancel_office.apply(ov) == ov
    assert cancel_mobile.apply(ov) == {}
    assert state.overrides == {"mueller": Override("mueller", "office", berlin(2026, 10, 2, 14, 0))}
