"""The portal's form of one forwarding rule (/portal/forwarding/rule) and the list operations
on a client's rules document (add, change, move, remove), without the web framework.

The functions build a new rules document from the stored one; whether it is valid is decided
by the one validator (office/rules_doc.py, through app/rules.Rules.replace). Here only what
the form itself says is checked: a name that is too long, a time window with one end only, a
presence condition without its user or without what to check, too many caller numbers.
Problems are German texts of the page (the catalogue translates them), keyed by form field."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from heimbuero.domain.model import WEEKDAYS
from heimbuero.office.rules_doc import MAX_CALLERS

MAX_NAME = 80  # characters of a rule's name in the form
FORM_TARGETS = 3  # targets of a new rule's first step
CALENDAR = ("ignore", "exclude", "only")
OVERRIDES = ("", "office", "mobile")
YES_NO = ("", "yes", "no")  # a presence / VIP choice: either way, true, false
_LIST_SEP = re.compile(r"[,;\n]")

# form fields a problem of the validator belongs to, by the rest of its path
_FIELDS = (
    ("name", "name"),
    ("when.days", "days"),
    ("when.time", "time"),
    ("when.holidays", "holidays"),
    ("when.closures", "closures"),
    ("when.override", "override"),
    ("when.presence", "presence"),
    ("when.caller.numbers", "caller_numbers"),
    ("when.caller.prefixes", "caller_prefixes"),
    ("when.caller", "caller"),
    ("when", "when"),
    ("steps", "steps"),
)
_PATH = re.compile(r"^numbers\.(?P<number>[^.]+)\.rules\[(?P<index>\d+)\](?:\.(?P<rest>.+))?$")


class NoSuchRule(LookupError):
    """The form names a number or rule the client's document does not have."""


@dataclass
class RuleFields:
    """The form's values as the page shows them again."""

    name: str = ""
    days: tuple[str, ...] = ()
    time_from: str = ""
    time_to: str = ""
    next_day: bool = False
    holidays: str = "ignore"
    closures: str = "ignore"
    override: str = ""
    presence_user: str = ""
    presence_registered: str = ""  # YES_NO
    presence_in_call: str = ""  # YES_NO
    caller_vip: str = ""  # YES_NO
    caller_numbers: str = ""  # as typed, separated by commas
    caller_prefixes: str = ""
    targets: tuple[str, ...] = ("",) * FORM_TARGETS
    timeout: str = "30"


def _yes_no(value: object) -> str:
    return "yes" if value is True else "no" if value is False else ""


def _flag(value: str) -> bool | None:
    return True if value == "yes" else False if value == "no" else None


def _entries(text: str) -> list[str]:
    """The numbers of a field, separated by commas, semicolons or lines (at most one more than
    MAX_CALLERS are read: the rest is too many anyway)."""
    parts = _LIST_SEP.split(text, maxsplit=MAX_CALLERS + 1)[: MAX_CALLERS + 1]
    return [p.strip()[:65] for p in parts if p.strip()]


def fields_of_rule(rule: dict[str, Any]) -> RuleFields:
    """A stored rule as the form's values."""
    when = rule.get("when") or {}
    span = str(when.get("time", ""))
    start, _, end = span.partition("-")
    steps = rule.get("steps") or [{}]
    first = steps[0]
    targets = [str(t) for t in first.get("targets", [])][:FORM_TARGETS]
    presence, caller = when.get("presence"), when.get("caller")
    presence = presence if isinstance(presence, dict) else {}
    caller = caller if isinstance(caller, dict) else {}
    return RuleFields(
        name=str(rule.get("name", "")),
        days=tuple(d for d in WEEKDAYS if d in (when.get("days") or [])),
        time_from=start,
        time_to=end.removesuffix("+1"),
        next_day=end.endswith("+1"),
        holidays=str(when.get("holidays", "ignore")),
        closures=str(when.get("closures", "ignore")),
        override=str(when.get("override", "")),
        presence_user=str(presence.get("user", "")),
        presence_registered=_yes_no(presence.get("registered")),
        presence_in_call=_yes_no(presence.get("in_call")),
        caller_vip=_yes_no(caller.get("vip")),
        caller_numbers=", ".join(str(n) for n in caller.get("numbers") or []),
        caller_prefixes=", ".join(str(n) for n in caller.get("prefixes") or []),
        targets=tuple(targets + [""] * (FORM_TARGETS - len(targets))),
        timeout=str(first.get("timeout", 30)),
    )


def fields_of_form(form: dict[str, str]) -> RuleFields:
    """The posted form's values (trimmed; unknown days dropped)."""
    return RuleFields(
        name=form.get("name", "").strip(),
        days=tuple(d for d in WEEKDAYS if form.get(f"day.{d}")),
        time_from=form.get("time_from", "").strip(),
        time_to=form.get("time_to", "").strip(),
        next_day=bool(form.get("next_day")),
        holidays=form.get("holidays", "ignore").strip() or "ignore",
        closures=form.get("closures", "ignore").strip() or "ignore",
        override=form.get("override", "").strip(),
        presence_user=form.get("presence_user", "").strip()[:100],
        presence_registered=form.get("presence_registered", "").strip()[:8],
        presence_in_call=form.get("presence_in_call", "").strip()[:8],
        caller_vip=form.get("caller_vip", "").strip()[:8],
        caller_numbers=form.get("caller_numbers", "").strip(),
        caller_prefixes=form.get("caller_prefixes", "").strip(),
        targets=tuple(form.get(f"t{i}", "").strip() for i in range(FORM_TARGETS)),
        timeout=form.get("timeout", "").strip(),
    )


def rule_from_fields(
    f: RuleFields, old: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The rule the form describes, and the problems only the form can see. A changed rule
    keeps its steps (not on this form); a new rule gets the step of the form. No day ticked
    (or all seven) means every day; "egal" everywhere in presence or caller means no such
    condition."""
    errors: dict[str, str] = {}
    if len(f.name) > MAX_NAME:
        errors["name"] = "Der Name ist zu lang (höchstens 80 Zeichen)."
    when: dict[str, Any] = {}
    if f.days and len(f.days) < len(WEEKDAYS):
        when["days"] = list(f.days)
    if f.time_from or f.time_to:
        if not (f.time_from and f.time_to):
            errors["time"] = "Bitte Beginn und Ende der Uhrzeit angeben."
        else:
            when["time"] = f"{f.time_from[:8]}-{f.time_to[:8]}{'+1' if f.next_day else ''}"
    for key, value in (("holidays", f.holidays), ("closures", f.closures)):
        if value != "ignore":
            when[key] = value[:16]
    if f.override:
        when["override"] = f.override[:16]
    registered, in_call = _flag(f.presence_registered), _flag(f.presence_in_call)
    if f.presence_user or registered is not None or in_call is not None:
        if not f.presence_user:
            errors["presence"] = "Bitte den Benutzer wählen, auf den die Bedingung schaut."
        elif registered is None and in_call is None:
            errors["presence"] = (
                "Bitte bei „Telefon angemeldet“ oder „Im Gespräch“ etwas wählen "
                "(sonst gilt die Bedingung immer)."
            )
        else:
            presence: dict[str, Any] = {"user": f.presence_user}
            if registered is not None:
                presence["registered"] = registered
            if in_call is not None:
                presence["in_call"] = in_call
            when["presence"] = presence
    caller: dict[str, Any] = {}
    vip = _flag(f.caller_vip)
    if vip is not None:
        caller["vip"] = vip
    numbers, prefixes = _entries(f.caller_numbers), _entries(f.caller_prefixes)
    if len(numbers) + len(prefixes) > MAX_CALLERS:
        errors["caller"] = "Höchstens 50 Nummern und Nummernanfänge je Regel."
    if numbers:
        caller["numbers"] = numbers
    if prefixes:
        caller["prefixes"] = prefixes
    if caller:
        when["caller"] = caller
    rule: dict[str, Any] = {"name": f.name[: MAX_NAME + 1]}
    if when:
        rule["when"] = when
    if old is not None:
        rule["steps"] = copy.deepcopy(old.get("steps", []))
    else:
        step: dict[str, Any] = {"targets": [t for t in f.targets if t]}
        if f.timeout:  # left empty: the validator's default
            step["timeout"] = int(f.timeout) if f.timeout.isdigit() else f.timeout[:8]
        rule["steps"] = [step] if step["targets"] else []
    return rule, errors


def rules_of(doc: dict[str, Any], number: str) -> list[dict[str, Any]]:
    """The rules list of `number` in `doc` (NoSuchRule: not the client's number)."""
    entry = doc.get("numbers", {}).get(number)
    if not isinstance(entry, dict):
        raise NoSuchRule(number)
    rules = entry.setdefault("rules", [])
    if rules is None:
        rules = entry["rules"] = []
    return rules  # type: ignore[no-any-return]


def rule_at(doc: dict[str, Any], number: str, index: str | int) -> dict[str, Any]:
    """The rule `index` (as the form gives it) of `number`."""
    rules = rules_of(doc, number)
    i = _index(index, len(rules))
    return rules[i]


def _index(index: str | int, count: int) -> int:
    text = str(index).strip()
    if not text.isdigit() or len(text) > 6 or int(text) >= count:
        raise NoSuchRule(text)
    return int(text)


def insert_position(rules: list[dict[str, Any]]) -> int:
    """Where a new rule goes: before the first rule without a condition (it would never be
    reached behind it), else at the end."""
    return next((i for i, r in enumerate(rules) if not r.get("when")), len(rules))


def with_rule(
    stored: dict[str, Any], number: str, index: str | None, rule: dict[str, Any]
) -> tuple[dict[str, Any], int]:
    """A copy of the document with rule `index` replaced by `rule`, or with `rule` added
    (index None or ""); and the rule's index in it."""
    doc = copy.deepcopy(stored)
    rules = rules_of(doc, number)
    if index is None or index == "":
        at = insert_position(rules)
        rules.insert(at, rule)
        return doc, at
    at = _index(index, len(rules))
    rules[at] = rule
    return doc, at


def moved(stored: dict[str, Any], number: str, index: str, direction: str) -> dict[str, Any]:
    """A copy of the document with rule `index` one place up or down (at the edge: as is)."""
    if direction not in ("up", "down"):
        raise NoSuchRule(direction)
    doc = copy.deepcopy(stored)
    rules = rules_of(doc, number)
    i = _index(index, len(rules))
    j = i - 1 if direction == "up" else i + 1
    if 0 <= j < len(rules):
        rules[i], rules[j] = rules[j], rules[i]
    return doc


def removed(stored: dict[str, Any], number: str, index: str) -> dict[str, Any]:
    """A copy of the document without rule `index`."""
    doc = copy.deepcopy(stored)
    rules = rules_of(doc, number)
    del rules[_index(index, len(rules))]
    return doc


def field_of(path: str, number: str, index: int) -> str | None:
    """The form field of a validator problem about rule `index` of `number`; None for a
    problem elsewhere in the document (shown above the form)."""
    m = _PATH.match(path)
    if m is None or m["number"] != number or int(m["index"]) != index:
        return None
    rest = m["rest"]
    if rest is None:
        return "when"  # the whole rule: unreachable behind another
    for prefix, name in _FIELDS:
        if rest == prefix or rest.startswith((prefix + ".", prefix + "[")):
            return name
    return None


def explain(msg: str) -> str:
    """A problem of the validator in the page's German words (the catalogue translates);
    its own text when there is none."""
    if msg in ("missing", "expected a non-empty text"):
        return "Bitte einen Namen angeben."
    if msg.startswith("duplicate rule name"):
        return "Diesen Namen hat schon eine andere Regel."
    if msg.startswith("contains the"):
        return "Der Name enthält unzulässige Zeichen."
    if msg.startswith(("start:", "end:")) or "is not a window" in msg:
        return "Die Uhrzeit ist ungültig (SS:MM)."
    if "must end before it starts" in msg:
        return "Über Mitternacht muss das Ende vor dem Beginn liegen."
    if msg.startswith("end ") and "is not after start" in msg:
        return (
            "Das Ende liegt nicht nach dem Beginn (über Mitternacht: "
            "„bis in den nächsten Tag“ ankreuzen)."
        )
    if msg.startswith("holidays: only together with closures: only"):
        return "„Nur an Feiertagen“ und „nur im Betriebsurlaub“ passen (fast) nie zusammen."
    if "is unreachable" in msg and "has no condition" in msg:
        return "Die Regel käme nie dran: eine Regel davor gilt immer."
    if "is unreachable" in msg:
        return "Die Regel käme nie dran: eine Regel davor hat dieselben Bedingungen."
    if msg.endswith("is listed twice in this step"):
        return "Dieses Ziel steht zweimal im Schritt."
    if msg.endswith("is listed twice"):
        return "Diese Nummer steht zweimal in der Liste."
    if "callers per rule" in msg:
        return "Höchstens 50 Nummern und Nummernanfänge je Regel."
    if "with its 0" in msg or "is not the start of a phone number" in msg:
        return "Den Anfang einer Nummer mit 0 (089) oder mit + und Ländervorwahl (+43) schreiben."
    if (
        "is not a phone number" in msg
        or "is not a valid number" in msg
        or "has the wrong length" in msg
        or msg == "number is empty"
    ):
        return "Eine Nummer ist ungültig: bitte so schreiben wie 0171 2345678 oder +43 1 234567."
    if msg.startswith(("no steps", "missing: a rule needs")):
        return "Eine Regel braucht mindestens einen Schritt mit einem Ziel."
    if msg.startswith("expected whole seconds") or " is not within " in msg:
        return "Die Klingeldauer muss %(min)s bis %(max)s ganze Sekunden sein."
    if msg.startswith("expected one of"):
        return "Bitte einen Wert aus der Liste wählen."
    if " rules: at most " in msg or msg.startswith("more than "):
        return "Zu viele Regeln: höchstens 50 je Rufnummer."
    if " is not approved for forwarding" in msg:
        return "Diese Nummer ist nicht für die Weiterleitung freigegeben."
    if msg.startswith(("unknown ", "user ")):
        return "Dieses Ziel gibt es nicht oder es gehört nicht zum Betrieb."
    return msg
