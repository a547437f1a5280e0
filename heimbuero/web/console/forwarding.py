"""The client portal's forwarding page (/portal/forwarding): the override switch, the simulator,
the rules as a list and as a week grid, the Bundesland's holidays and the closures.

Every read and write is a handler call (heimbuero/app: overrides, forwarding, closures, rules)
as the session's Actor, the same functions as the JSON API and the command line: the business's
users read, the client owner and staff write; another business's client id is "not found".
The client owner and employees see their own business; agents and admins pick a client with
`?client=ID`. The simulator is recomputed by a small script through /portal/forwarding/simulate
(JSON); without the script the date field is a GET form that renders the page again."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from heimbuero.app import Actor, App, AppError, policy
from heimbuero.app.errors import Conflict, Invalid, NotFound
from heimbuero.domain.model import Client
from heimbuero.office.routing import RoutePlan
from heimbuero.office.rules_doc import TIMEOUT_MAX, TIMEOUT_MIN, document_version
from heimbuero.store.db import UserRecord
from heimbuero.store.websessions import WebSession
from heimbuero.web.console import Area, FormOf, _not_found, _page, _t, i18n, lang_of
from heimbuero.web.params import RowId

ROLES = ("client", "employee", "agent", "admin")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_LABELS = ("Mo", "Di", "Mi", "Do", "Fr", "Sa", "So")
HOLIDAY_MONTHS = 3
CHANGED = "Die Regeln wurden inzwischen geändert (in einem anderen Fenster oder von jemand anderem). Nichts wurde gespeichert; bitte neu laden und noch einmal ändern."  # noqa: E501


def _client_id(user: UserRecord, given: str | None) -> str | None:
    """The client of the page: one's own business, or for staff the one asked for."""
    if user.role in ("client", "employee"):
        return given if given else user.client
    return given or None


def opened(
    handlers: App, request: Request, user: UserRecord, given: str | None
) -> Client | Response:
    """The client (`given`, see _client_id) whose rules the user may change; else the 404 page
    (not visible) or the 403 page (policy.may_change_rules: the client owner and admins)."""
    actor = Actor.of(user)
    try:
        c = handlers.clients.visible(actor, _client_id(user, given) or "")
    except AppError:
        return _not_found(request)
    if not policy.may_change_rules(actor, c.id):
        return _page(
            request,
            "error.html",
            403,
            user=user,
            csrf="",
            message=_t(request, "Nur der Inhaber und die Verwaltung ändern die Regeln."),
        )
    return c


def _local(moment: datetime, tz: str) -> datetime:
    return moment.astimezone(ZoneInfo(tz))


class Texts:
    """German texts of the page (translated by the catalogue) for targets and conditions."""

    def __init__(self, request: Request) -> None:
        self.request = request

    def t(self, text: str, **values: str) -> str:
        return _t(self.request, text, **values)

    def target(self, text: str) -> str:
        kind, _, rest = text.partition(":")
        labels = {
            "user": "Benutzer %(name)s",
            "group": "Gruppe %(name)s",
            "external": "externe Nummer %(name)s",
            "voicemail": "Mailbox von %(name)s",
            "announce": "Ansage %(name)s",
        }
        if kind == "announce" and rest.endswith(";end"):
            return self.t("Ansage %(name)s, dann Ende", name=rest[: -len(";end")])
        return self.t(labels[kind], name=rest) if kind in labels else text

    def steps(self, steps: list[dict[str, Any]]) -> list[str]:
        out = []
        for s in steps:
            targets = ", ".join(self.target(t) for t in s.get("targets", []))
            out.append(self.t("%(targets)s, %(seconds)s s", targets=targets,
                              seconds=str(s.get("timeout", ""))))  # fmt: skip
        return out

    def when(self, when: dict[str, Any]) -> list[str]:
        parts: list[str] = []
        days = when.get("days")
        if days:
            labels = [self.t(DAY_LABELS[DAYS.index(d)]) for d in days if d in DAYS]
            parts.append(", ".join(labels))
        if "time" in when:
            span = str(when["time"])
            nxt = span.endswith("+1")
            span = span.removesuffix("+1").replace("-", "–")
            parts.append(self.t("%(span)s Uhr", span=span)
                         + (" " + self.t("(bis in den nächsten Tag)") if nxt else ""))  # fmt: skip
        calendar = {
            ("holidays", "exclude"): "nicht an Feiertagen",
            ("holidays", "only"): "nur an Feiertagen",
            ("closures", "exclude"): "nicht im Betriebsurlaub",
            ("closures", "only"): "nur im Betriebsurlaub",
        }
        for key in ("holidays", "closures"):
            text = calendar.get((key, str(when.get(key, "ignore"))))
            if text:
                parts.append(self.t(text))
        presence = when.get("presence")
        if isinstance(presence, dict):
            user = str(presence.get("user", ""))
            if presence.get("registered") is True:
                parts.append(self.t("wenn %(user)s angemeldet ist", user=user))
            elif presence.get("registered") is False:
                parts.append(self.t("wenn %(user)s nicht angemeldet ist", user=user))
            if presence.get("in_call") is False:
                parts.append(self.t("wenn %(user)s nicht telefoniert", user=user))
            elif presence.get("in_call") is True:
                parts.append(self.t("wenn %(user)s telefoniert", user=user))
        caller = when.get("caller")
        if isinstance(caller, dict):
            if caller.get("vip") is True:
                parts.append(self.t("nur VIP-Anrufer"))
            elif caller.get("vip") is False:
                parts.append(self.t("keine VIP-Anrufer"))
            callers = [str(n) for n in caller.get("numbers") or []]
            callers += [f"{p}…" for p in caller.get("prefixes") or []]
            if callers:
                parts.append(self.t("Anrufer %(numbers)s", numbers=", ".join(callers)))
        override = when.get("override")
        if override == "office":
            parts.append(self.t("während „Alles ins Büro“ an ist"))
        elif override == "mobile":
            parts.append(self.t("während „Alles auf mein Handy“ an ist"))
        return parts or [self.t("immer")]

    def rule(self, name: str | None) -> str:
        return name if name is not None else self.t("Standardplan des Büros")


def _when(request: Request, at: str, c: Client) -> str:
    """The simulated moment (`2026-12-24T14:00`, the client's local time) as the reader writes
    it: `24.12.26, 14:00` (de) / `12/24/26, 2:00 PM` (en); "" for now."""
    if not at:
        return ""
    local = datetime.fromisoformat(at).replace(tzinfo=ZoneInfo(c.timezone))
    return i18n.when(lang_of(request), local, c.timezone)


def simulation(texts: Texts, plan: RoutePlan) -> dict[str, Any]:
    """The plan as the page and the script show it."""
    j = plan.to_json()
    if plan.dictation:
        return {
            "rule": texts.t("Diktatnummer"),
            "steps": [texts.t("Der Anruf startet ein Diktat per Telefon; Regeln gelten nicht.")],
            "reason": plan.reason,
        }
    return {
        "rule": texts.rule(plan.rule),
        "steps": texts.steps(j["steps"]) or [texts.t("Der Anruf wird abgewiesen.")],
        "reason": plan.reason,
    }


def forwarding_pages(router: APIRouter, handlers: App, area: Area, form_of: FormOf) -> None:
    """Add the forwarding page's routes to the console's router."""

    def page(
        request: Request,
        s: WebSession,
        user: UserRecord,
        client_id: str | None,
        status: int = 200,
        errors: dict[str, str] | None = None,
        values: dict[str, str] | None = None,
    ) -> Response:
        actor = Actor.of(user)
        if client_id is None:  # staff without a client: pick one
            clients = handlers.clients.list(actor)
            return _page(request, "forwarding.html", status, user=user, csrf=s.csrf,
                         client=None, clients=clients)  # fmt: skip
        try:
            c = handlers.clients.visible(actor, client_id)
        except AppError:
            return _not_found(request)
        texts = Texts(request)
        document = handlers.rules.document(actor, c.id)
        at = _at(request, c)
        caller = _caller(request)
        try:
            plan = simulation(
                texts, handlers.forwarding.simulate(actor, c.id, None, at or None, None, caller)
            )
            sim_error = ""
        except Invalid as exc:
            plan, sim_error = None, str(exc)
        except AppError as exc:  # no number yet
            plan, sim_error = None, str(exc)
        return _page(
            request,
            "forwarding.html",
            status,
            user=user,
            csrf=s.csrf,
            client=c,
            writable=policy.may_change_forwarding(actor, c.id),
            editable=policy.may_change_rules(actor, c.id),
            saved=request.query_params.get("saved") == "1",
            override=override_state(request, actor, c),
            plan=plan,
            sim_error=sim_error,
            at=at,
            at_text=_when(request, at, c),
            at_date=at[:10] if len(at) >= 10 else "",
            at_time=at[11:16] if len(at) >= 16 else "",
            sim_caller=caller or "",
            rules=rules_list(texts, document),
            version=document_version(document),
            week=week_grid(texts, actor, c, caller),
            holidays=handlers.forwarding.holidays(actor, c.id, HOLIDAY_MONTHS),
            closures=handlers.closures.list(actor, c.id),
            errors=errors or {},
            values=values or {},
            today=datetime.now(ZoneInfo(c.timezone)).date().isoformat(),
            query=f"?client={quote(c.id)}",
        )

    def override_state(request: Request, actor: Actor, c: Client) -> dict[str, str]:
        try:
            state = handlers.overrides.get(actor, c.id)
        except NotFound:
            return {"target": "off", "text": _t(request, "Keine Rufumleitung aktiv.")}
        if not state.active:
            return {"target": "off", "text": _t(request, "Keine Rufumleitung aktiv.")}
        o = state.override
        what = {"office": "Rufumleitung Büroservice", "mobile": "Rufumleitung aufs Handy"}
        label = _t(request, what.get(o.target, o.target))
        if o.until is None:
            text = _t(request, "%(what)s aktiv, ohne Ende.", what=label)
        else:
            local = _local(o.until, c.timezone)
            today = datetime.now(ZoneInfo(c.timezone)).date()
            shown = (
                local.strftime("%H:%M")
                if local.date() == today
                else i18n.when(lang_of(request), o.until, c.timezone)
            )
            text = _t(request, "%(what)s aktiv bis %(until)s.", what=label, until=shown)
        return {"target": o.target, "text": text}

    def rules_list(texts: Texts, document: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for number, entry in document.get("numbers", {}).items():
            rules = []
            for r in entry.get("rules", []):
                rules.append({
                    "name": r.get("name", ""),
                    "when": texts.when(r.get("when") or {}),
                    "steps": texts.steps(r.get("steps", [])),
                })  # fmt: skip
            out.append({"number": number, "rules": rules})
        return out

    def week_grid(
        texts: Texts, actor: Actor, c: Client, caller: str | None = None
    ) -> dict[str, Any] | None:
        """Hours × days of this week, each cell the rule that decides then for a call from
        the simulator's `caller` (routing itself, through the week handler; a number it
        refuses: an unknown caller, the simulator says why); rules get a letter, explained
        below the grid."""
        try:
            week = handlers.forwarding.week(actor, c.id, caller=caller)
        except Invalid:
            caller = None
            try:
                week = handlers.forwarding.week(actor, c.id)
            except AppError:
                return None
        except AppError:
            return None
        legend: dict[str | None, dict[str, Any]] = {}
        cells: list[list[dict[str, str]]] = [[] for _ in range(24)]
        for day in week["days"]:
            for span in day["spans"]:
                rule = span["rule"]
                if rule not in legend:
                    legend[rule] = {
                        "key": chr(ord("A") + len(legend)),
                        "name": texts.rule(rule),
                        "steps": texts.steps(span["steps"]),
                        "n": len(legend) % 6,
                    }
                first, last = int(span["start"][:2]), int(span["end"][:2]) or 24
                for hour in range(first, last):
                    cells[hour].append({"key": legend[rule]["key"], "name": legend[rule]["name"],
                                        "n": str(legend[rule]["n"])})  # fmt: skip
        days = [
            {"label": texts.t(DAY_LABELS[i]), "date": d["date"], "holiday": d["holiday"],
             "closed": d["closed"]}
            for i, d in enumerate(week["days"])
        ]  # fmt: skip
        return {"days": days, "hours": cells, "legend": list(legend.values()),
                "caller": week["caller"]}  # fmt: skip

    def client_of(request: Request, user: UserRecord, form: dict[str, str] | None = None) -> str:
        given = (form or {}).get("client") or request.query_params.get("client")
        return _client_id(user, given) or ""

    def back(client_id: str) -> Response:
        return RedirectResponse(f"/portal/forwarding?client={quote(client_id)}", 303)

    def refused(request: Request, s: WebSession, user: UserRecord, exc: AppError) -> Response:
        if isinstance(exc, NotFound) and exc.kind == "client":
            return _not_found(request)
        return _page(request, "error.html", getattr(exc, "status", 400), user=user,
                     csrf=s.csrf, message=str(exc))  # fmt: skip

    @router.get("/portal/forwarding")
    async def forwarding_page(request: Request) -> Response:
        found = area(request, ROLES)
        if isinstance(found, Response):
            return found
        s, user = found
        cid = _client_id(user, request.query_params.get("client"))
        return page(request, s, user, cid)

    @router.get("/portal/forwarding/simulate")
    async def simulate(request: Request) -> Response:
        """Where a call from `sim_caller` (empty: an unknown caller) goes at `sim_date`
        `sim_time` (the client's local time; both empty: now), as JSON for the page's
        script."""
        found = area(request, ROLES)
        if isinstance(found, Response):
            return JSONResponse({"error": "not found"}, 404)
        _, user = found
        cid, actor = client_of(request, user), Actor.of(user)
        try:
            c = handlers.clients.visible(actor, cid)
            at = _at(request, c)
            plan = handlers.forwarding.simulate(
                actor, c.id, None, at or None, None, _caller(request)
            )
        except NotFound:
            return JSONResponse({"error": _t(request, "Nicht gefunden")}, 404)
        except AppError as exc:
            return JSONResponse({"error": str(exc)}, getattr(exc, "status", 400))
        answer = {**simulation(Texts(request), plan), "at": at, "when": _when(request, at, c)}
        return JSONResponse(answer, headers={"Cache-Control": "no-store"})

    @router.post("/portal/forwarding/override")
    async def set_override(request: Request) -> Response:
        got = await form_of(request, ROLES)
        if isinstance(got, Response):
            return got
        s, user, form = got
        cid, actor = client_of(request, user, form), Actor.of(user)
        target = form.get("target", "")
        try:
            c = handlers.clients.visible(actor, cid)
            if target == "off":
                try:
                    handlers.overrides.clear(actor, c.id)
                except NotFound as exc:
                    if exc.kind == "client":
                        raise
                return back(c.id)
            until = _until(form.get("until_date", ""), form.get("until_time", ""), c)
            handlers.overrides.set(actor, c.id, target, until)
        except Invalid as exc:
            problem = exc.problems[0]
            field = problem.field if problem.field in ("target", "until") else "until"
            msg = _explain(request, problem.field, problem.msg)
            return page(request, s, user, cid, 422, errors={field: msg}, values=form)
        except AppError as exc:
            return refused(request, s, user, exc)
        return back(c.id)

    @router.post("/portal/forwarding/closures")
    async def add_closure(request: Request) -> Response:
        got = await form_of(request, ROLES)
        if isinstance(got, Response):
            return got
        s, user, form = got
        cid, actor = client_of(request, user, form), Actor.of(user)
        first, last = form.get("first", "").strip(), form.get("last", "").strip()
        try:
            handlers.closures.add(actor, cid, first, last or None, form.get("note", ""))
        except Invalid as exc:
            errors = {
                p.field if p.field in ("first", "last", "note") else "first":
                _explain(request, p.field, p.msg)
                for p in exc.problems
            }  # fmt: skip
            return page(request, s, user, cid, 422, errors=errors, values=form)
        except AppError as exc:
            return refused(request, s, user, exc)
        return back(cid)

    @router.post("/portal/forwarding/closures/{closure_id}/remove")
    async def remove_closure(request: Request, closure_id: RowId) -> Response:
        got = await form_of(request, ROLES)
        if isinstance(got, Response):
            return got
        s, user, form = got
        cid = client_of(request, user, form)
        try:
            handlers.closures.remove(Actor.of(user), cid, closure_id)
        except NotFound:
            return _not_found(request)
        except AppError as exc:
            return refused(request, s, user, exc)
        return back(cid)


def _caller(request: Request) -> str | None:
    """The simulator's calling number as typed (`sim_caller`; empty: an unknown caller)."""
    return request.query_params.get("sim_caller", "").strip()[:64] or None


def _at(request: Request, c: Client) -> str:
    """The simulator's moment from the page's GET form (`sim_date`, `sim_time`) or `at`;
    "" for now."""
    q = request.query_params
    day, hhmm = q.get("sim_date", "").strip()[:10], q.get("sim_time", "").strip()[:5]
    if day or hhmm:
        day = day or datetime.now(ZoneInfo(c.timezone)).date().isoformat()
        return f"{day}T{hhmm or '00:00'}"
    return q.get("at", "").strip()[:32]


def _until(day: str, at: str, c: Client) -> datetime | None:
    """The end of an override from the form: a time (today) or a date and a time, in the
    client's timezone; nothing: no end."""
    day, at = day.strip(), at.strip()
    if not day and not at:
        return None
    if not at:
        raise Invalid("until", "a date needs a time")
    try:
        t = time.fromisoformat(at)
    except ValueError:
        raise Invalid("until", f"invalid time {at!r}: expected HH:MM") from None
    try:
        d = date.fromisoformat(day) if day else datetime.now(ZoneInfo(c.timezone)).date()
    except ValueError:
        raise Invalid("until", f"invalid date {day!r}: expected YYYY-MM-DD") from None
    return datetime.combine(d, t)


def _explain(request: Request, field: str, msg: str) -> str:
    """The handler's problem in the page's words (the handler's text for anything else)."""
    if msg == "lies in the past":
        return _t(request, "Das Ende liegt in der Vergangenheit.")
    if msg == "a date needs a time":
        return _t(request, "Zum Datum fehlt die Uhrzeit.")
    if msg.startswith("invalid time"):
        return _t(request, "Die Uhrzeit ist ungültig (SS:MM).")
    if msg.startswith("invalid date"):
        return _t(request, "Das Datum ist ungültig (TT.MM.JJJJ).")
    if msg == "the last day lies before the first":
        return _t(request, "Der letzte Tag liegt vor dem ersten.")
    if msg.startswith("a closure may last at most"):
        return _t(request, "Ein Betriebsurlaub dauert höchstens 366 Tage.")
    if field == "target":
        return _t(request, "Bitte eine Umleitung wählen.")
    return msg


# -- the plan-step editor ---------------------------------------------------------------------

_PROBLEM = re.compile(
    r"^numbers\.(?P<number>[^.]+)\.rules\[(?P<rule>\d+)\]"
    r"(?:\.steps(?:\[(?P<step>\d+)\](?:\.(?P<what>timeout|targets)(?:\[(?P<target>\d+)\])?)?)?)?"
)


@dataclass
class Draft:
    """A rules document built from the editor's form (the stored document with the steps
    replaced), and where each of its steps and targets came from in the form."""

    document: dict[str, Any]
    numbers: list[str]
    steps: dict[tuple[int, int, int], int] = field(default_factory=dict)  # doc step -> form's
    targets: dict[tuple[int, int, int, int], int] = field(default_factory=dict)

    def field_of(self, path: str) -> str | None:
        """The form field a problem's path names (None: no field of the form)."""
        m = _PROBLEM.match(path)
        if m is None or m["number"] not in self.numbers:
            return None
        n, r = self.numbers.index(m["number"]), int(m["rule"])
        if m["step"] is None:
            return f"n{n}.r{r}"
        s = self.steps.get((n, r, int(m["step"])), int(m["step"]))
        if m["what"] == "timeout":
            return f"n{n}.r{r}.s{s}.timeout"
        if m["target"] is not None:
            t = self.targets.get((n, r, int(m["step"]), int(m["target"])), int(m["target"]))
            return f"n{n}.r{r}.s{s}.t{t}"
        return f"n{n}.r{r}.s{s}"


def draft_from_form(stored: dict[str, Any], form: dict[str, str]) -> Draft:
    """The stored document with every rule's steps as the form gives them: a step whose
    targets are all empty is left out; a ring time that is no whole number is passed on as
    text for the validator to name."""
    doc = copy.deepcopy(stored)
    numbers = list(doc.get("numbers", {}))
    draft = Draft(doc, numbers)
    for n, number in enumerate(numbers):
        for r, rule in enumerate(doc["numbers"][number].get("rules", [])):
            steps: list[dict[str, Any]] = []
            for s in range(MAX_STEPS):
                key = f"n{n}.r{r}.s{s}"
                picked = [(t, form.get(f"{key}.t{t}", "").strip()) for t in range(MAX_TARGETS)]
                picked = [(t, v) for t, v in picked if v]
                if not picked:
                    continue
                raw = form.get(f"{key}.timeout", "").strip()
                timeout: int | str = int(raw) if raw.isdigit() else raw
                draft.steps[(n, r, len(steps))] = s
                for i, (t, _) in enumerate(picked):
                    draft.targets[(n, r, len(steps), i)] = t
                steps.append({"targets": [v for _, v in picked], "timeout": timeout})
            rule["steps"] = steps
    return draft


MAX_STEPS = 6  # step rows of a rule in the form (its steps and empty rows to add one)
MAX_TARGETS = 3  # targets of a step rung at once


def target_options(
    texts: Texts, handlers: App, actor: Actor, c: Client, document: dict[str, Any]
) -> list[tuple[str, str]]:
    """What a step may ring, as (target, label): the business's users, the office's groups,
    the approved external numbers, the voicemails; and whatever the rules ring already."""
    values: list[str] = []
    users = [u.name for u in handlers.users.list(actor) if u.client == c.id]
    values += [f"user:{u}" for u in users]
    try:  # staff: every group; a client: the office's (the default plan's) and its rules'
        values += [f"group:{g.name}" for g in handlers.groups.list(actor)]
    except AppError:
        values += [f"group:{g}" for g in handlers.forwarding.office_groups(actor, c.id)]
    values += [f"external:{n}" for n in sorted(c.call_policy.approved_numbers)]
    values += [f"voicemail:{c.id}"] + [f"voicemail:{u}" for u in users]
    for entry in document.get("numbers", {}).values():
        for rule in entry.get("rules", []):
            for step in rule.get("steps", []):
                values += [t for t in step.get("targets", []) if isinstance(t, str)]
    seen: dict[str, str] = {}
    for v in values:
        seen.setdefault(v, texts.target(v))
    return list(seen.items())


def editor_pages(router: APIRouter, handlers: App, area: Area, form_of: FormOf) -> None:
    """/portal/forwarding/edit: the steps of every rule (targets from a list, ring times),
    previewed in the simulator as a draft and saved through the same validation as
    `heimbuero rules import` (problems next to their fields, nothing stored on error)."""

    def editor(
        request: Request,
        s: WebSession,
        user: UserRecord,
        c: Client,
        form: dict[str, str] | None = None,
        status: int = 200,
        errors: dict[str, str] | None = None,
        general: list[str] | None = None,
        plan: dict[str, Any] | None = None,
    ) -> Response:
        actor, texts = Actor.of(user), Texts(request)
        stored = handlers.rules.document(actor, c.id)
        numbers = []
        for n, (number, entry) in enumerate(stored.get("numbers", {}).items()):
            rules = []
            for r, rule in enumerate(entry.get("rules", [])):
                shown = rule.get("steps", [])
                rows = []
                for i in range(MAX_STEPS):
                    key = f"n{n}.r{r}.s{i}"
                    if form is not None:
                        targets = [form.get(f"{key}.t{t}", "") for t in range(MAX_TARGETS)]
                        timeout = form.get(f"{key}.timeout", "")
                    elif i < len(shown):
                        targets = list(shown[i].get("targets", []))
                        timeout = str(shown[i].get("timeout", 30))
                    else:
                        targets, timeout = [], ""
                    targets += [""] * (MAX_TARGETS - len(targets))
                    rows.append({"key": key, "targets": targets[:MAX_TARGETS], "timeout": timeout})
                rules.append(
                    {
                        "key": f"n{n}.r{r}",
                        "name": rule.get("name", ""),
                        "when": texts.when(rule.get("when") or {}),
                        "rows": rows,
                    }
                )
            numbers.append({"number": number, "rules": rules})
        return _page(
            request,
            "forwarding_edit.html",
            status,
            user=user,
            csrf=s.csrf,
            client=c,
            numbers=numbers,
            options=target_options(texts, handlers, actor, c, stored),
            errors=errors or {},
            general=general or [],
            plan=plan,
            sim_date=(form or {}).get("sim_date", ""),
            sim_time=(form or {}).get("sim_time", ""),
            sim_caller=(form or {}).get("sim_caller", ""),
            version=(form or {}).get("version") or document_version(stored),
        )

    @router.get("/portal/forwarding/edit")
    async def edit_page(request: Request) -> Response:
        found = area(request, ROLES)
        if isinstance(found, Response):
            return found
        s, user = found
        c = opened(handlers, request, user, request.query_params.get("client"))
        if isinstance(c, Response):
            return c
        return editor(request, s, user, c)

    @router.post("/portal/forwarding/edit")
    async def edit(request: Request) -> Response:
        got = await form_of(request, ROLES)
        if isinstance(got, Response):
            return got
        s, user, form = got
        c = opened(handlers, request, user, form.get("client"))
        if isinstance(c, Response):
            return c
        actor, texts = Actor.of(user), Texts(request)
        draft = draft_from_form(handlers.rules.document(actor, c.id), form)
        want_json = form.get("format") == "json"
        try:
            if form.get("action") == "save":
                handlers.rules.replace(actor, c.id, draft.document, form.get("version", ""))
                return RedirectResponse(f"/portal/forwarding?client={quote(c.id)}&saved=1", 303)
            day, hhmm = form.get("sim_date", "").strip(), form.get("sim_time", "").strip()
            at = (
                f"{day or datetime.now(ZoneInfo(c.timezone)).date().isoformat()}T{hhmm or '00:00'}"
                if day or hhmm
                else None
            )
            caller = form.get("sim_caller", "").strip()[:64] or None
            plan = simulation(
                texts, handlers.forwarding.simulate(actor, c.id, None, at, draft.document, caller)
            )
            plan["at"] = at or ""
        except Invalid as exc:
            errors: dict[str, str] = {}
            general: list[str] = []
            for p in exc.problems:
                name = draft.field_of(p.field) if exc.document else None
                if not exc.document and p.field == "caller":
                    name = "draft-caller"
                msg = _explain_step(request, p.msg)
                if name is None:
                    general.append(f"{p.field}: {msg}" if p.field else msg)
                else:
                    errors[name] = "; ".join(filter(None, (errors.get(name), msg)))
            if want_json:
                return JSONResponse({"errors": errors, "general": general}, 422)
            return editor(request, s, user, c, form, 422, errors, general)
        except Conflict:
            return _page(request, "error.html", 409, user=user, csrf=s.csrf,
                         message=_t(request, CHANGED), back=f"/portal/forwarding/edit?client={quote(c.id)}")  # fmt: skip  # noqa: E501
        except AppError as exc:
            return _page(
                request,
                "error.html",
                getattr(exc, "status", 400),
                user=user,
                csrf=s.csrf,
                message=str(exc),
            )
        if want_json:
            return JSONResponse({**plan, "errors": {}, "general": []})
        return editor(request, s, user, c, form, plan=plan)


def _explain_step(request: Request, msg: str) -> str:
    """A problem of the rules validation in the editor's words (its own text otherwise)."""
    if msg.startswith("expected whole seconds") or " is not within " in msg:
        return _t(request, "Die Klingeldauer muss %(min)s bis %(max)s ganze Sekunden sein.",
                  min=str(TIMEOUT_MIN), max=str(TIMEOUT_MAX))  # fmt: skip
    if msg.startswith("no steps"):
        return _t(request, "Eine Regel braucht mindestens einen Schritt mit einem Ziel.")
    if " is not approved for forwarding" in msg:
        return _t(request, "Diese Nummer ist nicht für die Weiterleitung freigegeben.")
    if msg.endswith("is listed twice in this step"):
        return _t(request, "Dieses Ziel steht zweimal im Schritt.")
    if msg.startswith(("unknown ", "user ")):
        return _t(request, "Dieses Ziel gibt es nicht oder es gehört nicht zum Betrieb.")
    return msg
