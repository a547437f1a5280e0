"""The rules document of a client (YAML or JSON): parse + validate, dump, text round trip.

The format is described in docs/ROUTING.md. `parse_rules_document()` reports every problem at
once, each with the path of the offending field (`numbers.+49891234567.rules[2].when.time`).

Decisions where ROUTING.md is silent:

- The parse result is the complete new state of the client's numbers: every number of the client
  in the directory, with the rules from the document, or no rules when the document leaves the
  number out (import replaces the client's rules). `dump_rules_document()` lists every number, so
  the two round-trip.
- Numbers may be written like '+49 89 1234567' or '0049…' and are normalised; a number YAML read as
  an integer (unquoted `+49891234567:`) is refused with a hint to quote it.
- `time: "HH:MM-HH:MM"`, start inclusive, end exclusive, end may be 24:00. The end must be after
  the start; a window across midnight is written with `+1`: `"22:00-06:00+1"` (then the end must
  be before the start). So a typo like "17:00-16:00" is refused instead of silently becoming a
  23-hour window. In the model an across-midnight window is simply `start > end`.
- `timeout` defaults to 30 when left out; `rules:`/`numbers:` left empty mean none; `when` left
  out or empty means always.
- Refused as never matching: empty `days`, an empty/inverted window, `holidays: only` with
  `closures: only`, `presence` with neither `registered` nor `in_call`, and `registered: false`
  with `in_call: true`. Refused as unreachable: any rule after an unconditional one, and a rule
  whose condition equals an earlier rule's.
- `caller:` lists numbers (`numbers`, typed as people write them) and starts of numbers
  (`prefixes`: "089", "+43"; a national start needs its 0), read with the provider's country
  code; at most MAX_CALLERS of them per rule together, none twice. `vip: true` means the
  client's own VIP callers (clients.vip_callers): a document cannot name another client's. A
  `vip: true` rule of a client without VIP callers is accepted (VIPs may be added later).
- `user:` targets, `voicemail:` user ids and `presence.user` must be provider staff (role admin
  or agent) or a user of this client; `voicemail:` may also name the client itself. A target
  may appear only once per step.
- `external:` targets (forwarding through the carrier trunk) must be numbers an admin approved
  for the client (`call_policy.approved_numbers`) and allowed by the client's and the trunk's
  destination policy (office/callpolicy.py); a step may ring at most 3 external numbers at once.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Hashable, Sequence
from typing import Any

import yaml

from heimbuero.domain.model import (
    OVERRIDE_TARGETS,
    WEEKDAYS,
    Caller,
    Directory,
    Number,
    Presence,
    RingTarget,
    Rule,
    Step,
    When,
    parse_target,
)
from heimbuero.domain.phone import PhoneError, parse_number, parse_prefix
from heimbuero.domain.rules import RulesInvalid
from heimbuero.office.callpolicy import MAX_EXTERNAL_PER_STEP, destination_refusal, text_problem
from heimbuero.office.routing import parse_hhmm

__all__ = [
    "RulesError",
    "document_version",
    "dump_rules_document",
    "from_text",
    "parse_rules_document",
    "to_yaml",
]

TOP_KEYS = ("client", "numbers")
NUMBER_KEYS = ("rules",)
RULE_KEYS = ("name", "when", "steps")
WHEN_KEYS = ("days", "time", "holidays", "closures", "presence", "caller", "override")
PRESENCE_KEYS = ("user", "registered", "in_call")
CALLER_KEYS = ("vip", "numbers", "prefixes")
STEP_KEYS = ("targets", "timeout")
CALENDAR_VALUES = ("exclude", "only", "ignore")
STAFF_ROLES = ("admin", "agent")
TIMEOUT_MIN, TIMEOUT_MAX, TIMEOUT_DEFAULT = 1, 600, 30
_TIME_RE = re.compile(r"^\s*(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})\s*(\+1)?\s*$")
_KEY_ORDER = (
    "client", "numbers", "name", "when", "days", "time", "holidays", "closures", "presence",
    "user", "registered", "in_call", "caller", "vip", "prefixes", "override", "steps", "rules",
    "targets", "timeout",
)  # fmt: skip


class RulesError(RulesInvalid):
    """An invalid rules document: every problem as (path, message)."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems: list[tuple[str, str]] = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{path}: {msg}" if path else msg for path, msg in self.problems)


# ------------------------------------------------------------------------------------- parsing


class _Parser:
    def __init__(self, client_id: str, directory: Directory) -> None:
        self.client_id = client_id
        self.directory = directory
        self.problems: list[tuple[str, str]] = []
        self.when_ok = True  # the last rule's condition parsed without problems

    def problem(self, path: str, msg: str) -> None:
        self.problems.append((path, msg))

    def mapping(
        self, value: object, path: str, allowed: tuple[str, ...], what: str
    ) -> dict[str, Any] | None:
        """`value` as a dict with only `allowed` keys (unknown keys are reported, dropped)."""
        if not isinstance(value, dict):
            self.problem(path, f"expected {what}, got {_kind(value)}")
            return None
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and key in allowed:
                out[key] = item
                continue
            hint = ""
            if isinstance(key, str):
                close = difflib.get_close_matches(key, allowed, n=1)
                if close:
                    hint = f" (did you mean {close[0]!r}?)"
            self.problem(
                _join(path, str(key)),
                f"unknown key {key!r}{hint}; allowed: {', '.join(allowed)}",
            )
        return out

    # document ---------------------------------------------------------------------------

    def document(self, doc: object) -> dict[str, Number]:
        top = self.mapping(doc, "", TOP_KEYS, "a mapping with 'client' and 'numbers'")
        if top is None:
            self.problems[-1] = ("(document)", self.problems[-1][1])
            return {}
        if self.client_id not in self.directory.clients:
            self.problem("client", f"unknown client {self.client_id!r}")
        if "client" not in top:
            self.problem("client", f"missing (must be {self.client_id!r})")
        elif top["client"] != self.client_id:
            self.problem(
                "client",
                f"the document is for client {top['client']!r}, not {self.client_id!r}",
            )
        parsed: dict[str, Number] = {}
        numbers = top.get("numbers")
        if "numbers" not in top:
            self.problem("numbers", "missing (a mapping of the client's numbers to their rules)")
        elif numbers is not None and not isinstance(numbers, dict):
            self.problem("numbers", f"expected a mapping of numbers, got {_kind(numbers)}")
        elif numbers:
            seen: dict[str, str] = {}
            for key, value in numbers.items():
                path = f"numbers.{key}"
                e164 = self.number_key(key, path)
                if e164 is None:
                    continue
                if e164 in seen:
                    self.problem(path, f"{e164} is listed twice (also as {seen[e164]!r})")
                    continue
                seen[e164] = str(key)
                rules = self.number(value, path)
                parsed[e164] = Number(e164, self.client_id, rules)
        result = {
            e164: parsed.get(e164, Number(e164, self.client_id, ()))
            for e164, num in sorted(self.directory.numbers.items())
            if num.client == self.client_id
        }
        return result

    def number_key(self, key: object, path: str) -> str | None:
        if isinstance(key, int) and not isinstance(key, bool):
            self.problem(path, f'write the number as a quoted string, e.g. "+{key}"')
            return None
        if not isinstance(key, str):
            self.problem(path, f"expected an E.164 number as key, got {_kind(key)}")
            return None
        try:
            e164 = parse_number(key, self.directory.provider.country_code)
        except PhoneError as exc:
            self.problem(path, str(exc))
            return None
        num = self.directory.numbers.get(e164)
        if num is None or num.client != self.client_id:
            self.problem(path, f"number {e164} does not belong to client {self.client_id!r}")
            return None
        return e164

    def number(self, value: object, path: str) -> tuple[Rule, ...]:
        if value is None:
            return ()
        m = self.mapping(value, path, NUMBER_KEYS, "a mapping with 'rules'")
        if m is None:
            return ()
        raw = m.get("rules")
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.problem(_join(path, "rules"), f"expected a list of rules, got {_kind(raw)}")
            return ()
        rules: list[Rule] = []
        names: dict[str, int] = {}
        always_at: int | None = None
        earlier: list[tuple[int, When]] = []
        for i, item in enumerate(raw):
            rpath = f"{path}.rules[{i}]"
            rule = self.rule(item, rpath)
            if rule is None:
                continue
            rule_ok = self.when_ok  # reachability depends on the condition only
            folded = rule.name.casefold()
            if not folded:
                pass
            elif folded in names:
                self.problem(
                    f"{rpath}.name",
                    f"duplicate rule name {rule.name!r} (also rules[{names[folded]}])",
                )
            else:
                names[folded] = i
            if always_at is not None:
                self.problem(
                    rpath,
                    f"rule {rule.name!r} is unreachable: rules[{always_at}] has no condition "
                    "and always matches",
                )
            elif rule_ok:
                same = next((j for j, w in earlier if w == rule.when), None)
                if same is not None:
                    self.problem(
                        rpath,
                        f"rule {rule.name!r} is unreachable: rules[{same}] has the same "
                        "condition and comes first",
                    )
            if rule_ok and rule.when.always and always_at is None:
                always_at = i
            if rule_ok:
                earlier.append((i, rule.when))
            rules.append(rule)
        return tuple(rules)

    def rule(self, value: object, path: str) -> Rule | None:
        m = self.mapping(value, path, RULE_KEYS, "a rule (a mapping with name, when, steps)")
        if m is None:
            return None
        name = m.get("name")
        if name is None:
            self.problem(_join(path, "name"), "missing")
            name = ""
        elif not isinstance(name, str) or not name.strip():
            self.problem(_join(path, "name"), "expected a non-empty text")
            name = ""
        elif (bad := text_problem(name)) is not None:
            self.problem(_join(path, "name"), bad)  # rule names are shown and recorded
            name = ""
        before = len(self.problems)
        when = self.when(m.get("when"), _join(path, "when"))
        self.when_ok = len(self.problems) == before
        steps = self.steps(m.get("steps"), _join(path, "steps"))
        return Rule(name=str(name).strip(), steps=steps, when=when)

    # conditions ---------------------------------------------------------------------------

    def when(self, value: object, path: str) -> When:
        if value is None:
            return When()
        m = self.mapping(value, path, WHEN_KEYS, "a mapping of conditions")
        if m is None:
            return When()
        days = self.days(m["days"], _join(path, "days")) if "days" in m else None
        start = end = None
        if "time" in m:
            start, end = self.time(m["time"], _join(path, "time"))
        hol = self.calendar(m.get("holidays", "ignore"), _join(path, "holidays"))
        clo = self.calendar(m.get("closures", "ignore"), _join(path, "closures"))
        if hol == "only" and clo == "only":
            self.problem(
                path,
                "holidays: only together with closures: only can (almost) never match; "
                "use one of them",
            )
        presence = None
        if "presence" in m:
            presence = self.presence(m["presence"], _join(path, "presence"))
        caller = None
        if "caller" in m:
            caller = self.caller(m["caller"], _join(path, "caller"))
        override = None
        if "override" in m:
            override = m["override"]
            if override not in OVERRIDE_TARGETS:
                self.problem(
                    _join(path, "override"),
                    f"expected one of {', '.join(OVERRIDE_TARGETS)}, got {override!r}",
                )
                override = None
        return When(
            days=days,
            start=start,
            end=end,
            holidays=hol,
            closures=clo,
            presence=presence,
            override=override,
            caller=caller,
        )

    def days(self, value: object, path: str) -> tuple[str, ...] | None:
        if isinstance(value, str):
            self.problem(path, f"expected a list of days such as [mon, tue], got {value!r}")
            return None
        if not isinstance(value, list):
            self.problem(path, f"expected a list of days such as [mon, tue], got {_kind(value)}")
            return None
        if not value:
            self.problem(path, "no days: the rule can never match")
            return None
        found: set[str] = set()
        ok = True
        for i, day in enumerate(value):
            d = day.strip().lower() if isinstance(day, str) else None
            if d not in WEEKDAYS:
                self.problem(f"{path}[{i}]", f"{day!r} is not one of {', '.join(WEEKDAYS)}")
                ok = False
            else:
                found.add(d)
        if not ok:
            return None
        return tuple(d for d in WEEKDAYS if d in found)

    def time(self, value: object, path: str) -> tuple[str | None, str | None]:
        if not isinstance(value, str):
            self.problem(path, f'expected "HH:MM-HH:MM" as a quoted text, got {_kind(value)}')
            return None, None
        m = _TIME_RE.match(value)
        if not m:
            self.problem(path, f'{value!r} is not a window "HH:MM-HH:MM" (e.g. "07:00-16:00")')
            return None, None
        start_s, end_s = (s.rjust(5, "0") for s in m.group(1, 2))
        across = m.group(3) is not None
        try:
            start = parse_hhmm(start_s)
        except ValueError as exc:
            self.problem(path, f"start: {exc}")
            return None, None
        try:
            end = parse_hhmm(end_s, allow_24=True)
        except ValueError as exc:
            self.problem(path, f"end: {exc}")
            return None, None
        assert start is not None
        if across:
            if end is None or end >= start:
                self.problem(
                    path,
                    f"a window across midnight must end before it starts: end {end_s} is not "
                    f"before start {start_s}",
                )
                return None, None
        elif end is not None and end <= start:
            if end == start:
                hint = "empty window"
            else:
                hint = f'for a window across midnight write "{start_s}-{end_s}+1"'
            self.problem(path, f"end {end_s} is not after start {start_s} ({hint})")
            return None, None
        return start_s, end_s

    def calendar(self, value: object, path: str) -> str:
        if value not in CALENDAR_VALUES:
            self.problem(path, f"expected one of {', '.join(CALENDAR_VALUES)}, got {value!r}")
            return "ignore"
        assert isinstance(value, str)
        return value

    def presence(self, value: object, path: str) -> Presence | None:
        before = len(self.problems)
        m = self.mapping(value, path, PRESENCE_KEYS, "a mapping with user, registered, in_call")
        if m is None:
            return None
        user = m.get("user")
        ok = len(self.problems) == before
        if user is None:
            self.problem(_join(path, "user"), "missing")
            ok = False
        elif not isinstance(user, str) or not self.user_allowed(user):
            self.problem(_join(path, "user"), self.user_problem(user))
            ok = False
        flags: dict[str, bool | None] = {}
        for key in ("registered", "in_call"):
            v = m.get(key)
            if v is not None and not isinstance(v, bool):
                self.problem(_join(path, key), f"expected true or false, got {v!r}")
                ok = False
                v = None
            flags[key] = v
        if ok and flags["registered"] is None and flags["in_call"] is None:
            self.problem(path, "needs registered and/or in_call (otherwise it always holds)")
            ok = False
        if flags["registered"] is False and flags["in_call"] is True:
            self.problem(
                path,
                "registered: false with in_call: true can never match "
                "(a user without a registered device is in no call)",
            )
            ok = False
        if not ok:
            return None
        assert isinstance(user, str)
        return Presence(user=user, registered=flags["registered"], in_call=flags["in_call"])

    def caller(self, value: object, path: str) -> Caller | None:
        before = len(self.problems)
        m = self.mapping(value, path, CALLER_KEYS, "a mapping with vip, numbers, prefixes")
        if m is None:
            return None
        vip = m.get("vip")
        if vip is not None and not isinstance(vip, bool):
            self.problem(
                _join(path, "vip"),
                f"expected true (the caller is one of this client's VIP callers) or false, "
                f"got {_kind(vip)}",
            )
            vip = None
        numbers = self.caller_list(m.get("numbers"), _join(path, "numbers"), parse_number)
        prefixes = self.caller_list(m.get("prefixes"), _join(path, "prefixes"), parse_prefix)
        if len(self.problems) != before:
            return None
        if vip is None and not numbers and not prefixes:
            self.problem(path, "needs vip, numbers and/or prefixes (otherwise it always holds)")
            return None
        return Caller(vip=vip, numbers=numbers, prefixes=prefixes)

    def caller_list(self, value: object, path: str, read: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str | int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            self.problem(
                path, f'expected a list of numbers such as ["089 1234567"], got {_kind(value)}'
            )
            return ()
        if len(value) > MAX_CALLERS:
            self.problem(path, f"{len(value)} numbers: at most {MAX_CALLERS} callers per rule")
            return ()
        out: list[str] = []
        for i, item in enumerate(value):
            ipath = f"{path}[{i}]"
            if isinstance(item, int) and not isinstance(item, bool):
                self.problem(ipath, f'write the number as a quoted text, e.g. "0{item}"')
                continue
            if not isinstance(item, str):
                self.problem(ipath, f"expected a phone number as text, got {_kind(item)}")
                continue
            try:
                e164 = read(item, self.directory.provider.country_code)
            except PhoneError as exc:
                self.problem(ipath, str(exc))
                continue
            if e164 in out:
                self.problem(ipath, f"{e164} is listed twice")
                continue
            out.append(e164)
        return tuple(out)

    # steps --------------------------------------------------------------------------------

    def steps(self, value: object, path: str) -> tuple[Step, ...]:
        if value is None:
            self.problem(path, "missing: a rule needs at least one step with a target")
            return ()
        if not isinstance(value, list):
            self.problem(path, f"expected a list of steps, got {_kind(value)}")
            return ()
        if not value:
            self.problem(path, "no steps: a rule needs at least one step with a target")
            return ()
        out: list[Step] = []
        for i, item in enumerate(value):
            step = self.step(item, f"{path}[{i}]")
            if step is not None:
                out.append(step)
        return tuple(out)

    def step(self, value: object, path: str) -> Step | None:
        m = self.mapping(value, path, STEP_KEYS, "a step (a mapping with targets, timeout)")
        if m is None:
            return None
        timeout = m.get("timeout", TIMEOUT_DEFAULT)
        tpath = _join(path, "timeout")
        if isinstance(timeout, bool) or not isinstance(timeout, int):
            self.problem(tpath, f"expected whole seconds {TIMEOUT_MIN}..{TIMEOUT_MAX}")
            timeout = TIMEOUT_DEFAULT
        elif not TIMEOUT_MIN <= timeout <= TIMEOUT_MAX:
            self.problem(tpath, f"{timeout} is not within {TIMEOUT_MIN}..{TIMEOUT_MAX} seconds")
        targets = m.get("targets")
        gpath = _join(path, "targets")
        if targets is None:
            self.problem(gpath, "missing: a step needs at least one target")
            return None
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, list):
            self.problem(gpath, f"expected a list of targets, got {_kind(targets)}")
            return None
        if not targets:
            self.problem(gpath, "no targets: a step needs at least one target")
            return None
        good: list[RingTarget] = []
        externals = 0
        for i, t in enumerate(targets):
            ipath = f"{gpath}[{i}]"
            if isinstance(t, str) and t.strip() in {str(g) for g in good}:
                self.problem(ipath, f"{t!r} is listed twice in this step")
                continue
            if isinstance(t, str) and t.strip().startswith("external:"):
                externals += 1
                if externals > MAX_EXTERNAL_PER_STEP:
                    self.problem(
                        ipath,
                        f"a step may ring at most {MAX_EXTERNAL_PER_STEP} external numbers at once",
                    )
                    continue
            checked = self.target(t, ipath)
            if checked is not None:
                good.append(checked)
        return Step(targets=tuple(good), timeout=timeout)

    def target(self, value: object, path: str) -> RingTarget | None:
        if not isinstance(value, str):
            self.problem(path, f"expected a target text like 'user:NAME', got {_kind(value)}")
            return None
        value = value.strip()
        kind, sep, ident = value.partition(":")
        if kind == "announce" and sep:
            try:
                return parse_target(value)
            except ValueError as exc:
                self.problem(path, str(exc))
                return None
        if not sep or kind not in ("user", "group", "external", "voicemail"):
            self.problem(
                path,
                f"{value!r} is not a target: user:NAME, group:NAME, external:+E164 or voicemail:ID",
            )
            return None
        ident = ident.strip()
        d = self.directory
        if kind == "user":
            if not self.user_allowed(ident):
                self.problem(path, self.user_problem(ident))
                return None
        elif kind == "group":
            if ident not in d.groups:
                self.problem(path, f"unknown group {ident!r}")
                return None
        elif kind == "voicemail":
            if ident != self.client_id and not self.user_allowed(ident):
                self.problem(
                    path,
                    f"unknown voicemail {ident!r} (a user name or the client id "
                    f"{self.client_id!r})",
                )
                return None
        else:
            try:
                ident = parse_number(ident, d.provider.country_code)
            except PhoneError as exc:
                self.problem(path, str(exc))
                return None
            if not d.trunks:
                self.problem(path, f"no trunk is configured to call {ident}")
                return None
            trunk = next((t for t in d.trunks.values() if ident.startswith(t.prefixes)), None)
            if trunk is None:
                self.problem(path, f"no trunk allows calls to {ident} (check the trunk prefixes)")
                return None
            client = d.clients.get(self.client_id)
            policy = client.call_policy if client is not None else None
            refusal = destination_refusal(ident, policy, trunk.call_policy)
            if refusal is not None:
                self.problem(path, f"{ident}: {refusal.lower()} (ask the provider)")
                return None
            if policy is None or ident not in policy.approved_numbers:
                self.problem(
                    path,
                    f"{ident} is not approved for forwarding of client {self.client_id!r} "
                    f"(an admin approves it: heimbuero client approve-number "
                    f"{self.client_id} {ident})",
                )
                return None
        return parse_target(f"{kind}:{ident}")

    def user_allowed(self, name: str) -> bool:
        user = self.directory.users.get(name)
        return user is not None and (user.role in STAFF_ROLES or user.client == self.client_id)

    def user_problem(self, name: object) -> str:
        if not isinstance(name, str):
            return f"expected a user name, got {_kind(name)}"
        if name in self.directory.users:
            return f"user {name!r} is neither an agent nor a user of client {self.client_id!r}"
        return f"unknown user {name!r}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a yes/no value)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {value!r}"
    return type(value).__name__


MAX_DOCUMENT_BYTES = 256 * 1024  # a rules document's text (the HTTP body limit is alike)
MAX_RULES = 50  # rules of one number
MAX_RULES_TOTAL = 500  # rules of all numbers of the document
MAX_STEPS = 10  # steps of one rule
MAX_TARGETS = 20  # targets of one step
MAX_CALLERS = 50  # caller numbers and prefixes of one rule, together


def check_limits(doc: object) -> None:
    """Refuse a document with more numbers' rules, steps or targets than MAX_*, before the
    (quadratic) validation looks at it. Only counts; anything else is parse_rules_document's."""
    problems: list[tuple[str, str]] = []
    numbers = doc.get("numbers") if isinstance(doc, dict) else None
    total = 0
    for key, value in (numbers or {}).items() if isinstance(numbers, dict) else ():
        rules = value.get("rules") if isinstance(value, dict) else None
        if not isinstance(rules, list):
            continue
        path = f"numbers.{key}.rules"
        total += len(rules)
        if len(rules) > MAX_RULES:
            problems.append((path, f"{len(rules)} rules: at most {MAX_RULES} per number"))
        for i, rule in enumerate(rules[: MAX_RULES + 1]):
            when = rule.get("when") if isinstance(rule, dict) else None
            caller = when.get("caller") if isinstance(when, dict) else None
            if isinstance(caller, dict):
                count = sum(
                    len(v) for k in ("numbers", "prefixes") if isinstance(v := caller.get(k), list)
                )
                if count > MAX_CALLERS:
                    problems.append(
                        (
                            f"{path}[{i}].when.caller",
                            f"{count} numbers and prefixes: at most {MAX_CALLERS} callers per rule",
                        )
                    )
            steps = rule.get("steps") if isinstance(rule, dict) else None
            if not isinstance(steps, list):
                continue
            if len(steps) > MAX_STEPS:
                problems.append((f"{path}[{i}].steps", f"at most {MAX_STEPS} steps per rule"))
            for j, step in enumerate(steps[: MAX_STEPS + 1]):
                targets = step.get("targets") if isinstance(step, dict) else None
                if isinstance(targets, list) and len(targets) > MAX_TARGETS:
                    problems.append(
                        (f"{path}[{i}].steps[{j}].targets", f"at most {MAX_TARGETS} targets")
                    )
        if len(problems) > 20 or total > MAX_RULES_TOTAL:
            break
    if total > MAX_RULES_TOTAL:
        problems.append(("numbers", f"more than {MAX_RULES_TOTAL} rules in one document"))
    if problems:
        raise RulesError(problems)


def parse_rules_document(doc: object, client_id: str, directory: Directory) -> dict[str, Number]:
    """Validate a rules document (as loaded by yaml.safe_load / json.loads) for `client_id`.

    Returns every number of the client (key: E.164) with its new rules; numbers the document
    leaves out get no rules. Raises RulesError listing every problem when the document is invalid
    or larger than the MAX_* limits.
    """
    check_limits(doc)
    parser = _Parser(client_id, directory)
    result = parser.document(doc)
    if parser.problems:
        raise RulesError(parser.problems)
    return result


# ---------------------------------------------------------------------------------------- dump


def _dump_when(when: When) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if when.days is not None:
        out["days"] = list(when.days)
    if when.start is not None or when.end is not None:
        start = when.start or "00:00"
        end = when.end or "24:00"
        across = end != "24:00" and end < start
        out["time"] = f"{start}-{end}{'+1' if across else ''}"
    if when.holidays != "ignore":
        out["holidays"] = when.holidays
    if when.closures != "ignore":
        out["closures"] = when.closures
    if when.presence is not None:
        p: dict[str, Any] = {"user": when.presence.user}
        if when.presence.registered is not None:
            p["registered"] = when.presence.registered
        if when.presence.in_call is not None:
            p["in_call"] = when.presence.in_call
        out["presence"] = p
    if when.caller is not None:
        c: dict[str, Any] = {}
        if when.caller.vip is not None:
            c["vip"] = when.caller.vip
        if when.caller.numbers:
            c["numbers"] = list(when.caller.numbers)
        if when.caller.prefixes:
            c["prefixes"] = list(when.caller.prefixes)
        out["caller"] = c
    if when.override is not None:
        out["override"] = when.override
    return out


def dump_rules_document(client_id: str, directory: Directory) -> dict[str, Any]:
    """The rules document of `client_id` (every number of the client, sorted), JSON-ready.

    Raises ValueError for an unknown client."""
    if client_id not in directory.clients:
        raise ValueError(f"unknown client {client_id!r}")
    numbers: dict[str, Any] = {}
    for e164, num in sorted(directory.numbers.items()):
        if num.client != client_id:
            continue
        rules = []
        for rule in num.rules:
            r: dict[str, Any] = {"name": rule.name}
            when = _dump_when(rule.when)
            if when:
                r["when"] = when
            r["steps"] = [{"targets": s.target_texts(), "timeout": s.timeout} for s in rule.steps]
            rules.append(r)
        numbers[e164] = {"rules": rules}
    return {"client": client_id, "numbers": numbers}


def document_version(doc: object) -> str:
    """A short fingerprint of a rules document (as dump_rules_document gives it): an editor
    carries the version it showed, and a save against another version is refused instead of
    overwriting what somebody else saved in between."""
    text = json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


# ------------------------------------------------------------------------------------ YAML text


class _Dumper(yaml.SafeDumper):
    """Block style, indented lists, lists of plain values (days, targets) on one line."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(isinstance(x, str | int | float | bool) or x is None for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def _ordered(value: object) -> object:
    if isinstance(value, dict):

        def key(k: object) -> tuple[int, str]:
            s = str(k)
            return (_KEY_ORDER.index(s), "") if s in _KEY_ORDER else (len(_KEY_ORDER), s)

        return {k: _ordered(value[k]) for k in sorted(value, key=key)}
    if isinstance(value, list | tuple):
        return [_ordered(v) for v in value]
    return value


def to_yaml(doc: object) -> str:
    """A rules document as human-friendly YAML: stable key order, unicode kept."""
    return yaml.dump(
        _ordered(doc),
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )


class _Loader(yaml.SafeLoader):
    """safe_load that refuses duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"found the key {key!r} twice",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise RulesError([("(document)", f"found the key {k!r} twice")])
        out[k] = v
    return out


def from_text(text: str) -> object:
    """Load a rules document from YAML (or JSON) text. Syntax errors raise RulesError whose
    path is 'line L, column C'. A text over MAX_DOCUMENT_BYTES is refused unread."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_DOCUMENT_BYTES:
        raise RulesError(
            [
                (
                    "(document)",
                    f"{size} bytes: a rules document may have at most {MAX_DOCUMENT_BYTES}",
                )
            ]
        )
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text, object_pairs_hook=_no_duplicates)
        except json.JSONDecodeError as exc:
            raise RulesError([(f"line {exc.lineno}, column {exc.colno}", exc.msg)]) from None
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        msg = exc.problem or "invalid YAML"
        if exc.context:
            msg = f"{msg} ({exc.context})"
        path = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(document)"
        raise RulesError([(path, msg)]) from None
    except yaml.YAMLError as exc:
        raise RulesError([("(document)", f"invalid YAML: {exc}")]) from None
