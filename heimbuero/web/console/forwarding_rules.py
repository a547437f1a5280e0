"""The portal's pages to add, change (name and conditions: days, time, holidays, closures,
override, presence of a user, the caller), move and remove a forwarding rule:
/portal/forwarding/rule (the form of one rule), /portal/forwarding/rules/move and
/portal/forwarding/rules/remove (with a confirmation page).

Plain forms, POST-redirect-GET. Each change builds the whole new rules document (rule_form)
and stores it through app/rules.Rules.replace, the validation of the API and of
`heimbuero rules import`: problems are shown next to their fields and nothing is stored. Every
form carries the version of the document it was made from; a document changed meanwhile (in
another tab, by somebody else) is not overwritten: 409 with the reason. Who may: the same as
the step editor (policy.may_change_rules: the client owner and admins)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from heimbuero.app import Actor, App, AppError
from heimbuero.app.errors import Conflict, Invalid
from heimbuero.domain.model import WEEKDAYS, Client
from heimbuero.office.rules_doc import TIMEOUT_MAX, TIMEOUT_MIN, document_version
from heimbuero.store.db import UserRecord
from heimbuero.store.websessions import WebSession
from heimbuero.web.console import Area, FormOf, _not_found, _page, _t
from heimbuero.web.console import rule_form as rf
from heimbuero.web.console.forwarding import (
    CHANGED,
    DAY_LABELS,
    ROLES,
    Texts,
    opened,
    target_options,
)


def said(request: Request, msg: str) -> str:
    """A problem of the validator in the reader's language."""
    text = rf.explain(msg)
    if "%(min)s" in text:
        return _t(request, text, min=str(TIMEOUT_MIN), max=str(TIMEOUT_MAX))
    return _t(request, text)


def rule_pages(router: APIRouter, handlers: App, area: Area, form_of: FormOf) -> None:
    """Add the routes of adding, changing, moving and removing rules to the console's router."""

    def failed(request: Request, s: WebSession, user: UserRecord, status: int, msg: str,
               c: Client | None = None) -> Response:  # fmt: skip
        back = f"/portal/forwarding?client={quote(c.id)}" if c else "/portal/forwarding"
        return _page(request, "error.html", status, user=user, csrf=s.csrf, message=msg,
                     back=back)  # fmt: skip

    def done(c: Client) -> Response:
        return RedirectResponse(f"/portal/forwarding?client={quote(c.id)}&saved=1", 303)

    def form_page(
        request: Request,
        s: WebSession,
        user: UserRecord,
        c: Client,
        number: str,
        index: str,
        fields: rf.RuleFields,
        version: str,
        status: int = 200,
        errors: dict[str, str] | None = None,
        general: list[str] | None = None,
    ) -> Response:
        actor, texts = Actor.of(user), Texts(request)
        stored = handlers.rules.document(actor, c.id)
        old = rf.rule_at(stored, number, index) if index else None
        options = target_options(texts, handlers, actor, c, stored)
        people = [v.removeprefix("user:") for v, _ in options if v.startswith("user:")]
        if fields.presence_user and fields.presence_user not in people:
            people.append(fields.presence_user)  # (the validator judges it)
        return _page(
            request,
            "forwarding_rule.html",
            status,
            user=user,
            csrf=s.csrf,
            client=c,
            number=number,
            index=index,
            new=not index,
            f=fields,
            version=version,
            days=[(d, texts.t(DAY_LABELS[i])) for i, d in enumerate(WEEKDAYS)],
            options=options,
            people=people,
            steps=texts.steps((old or {}).get("steps", [])),
            errors=errors or {},
            general=general or [],
            max_name=rf.MAX_NAME,
        )

    def located(
        request: Request, user: UserRecord, values: Any
    ) -> tuple[Client, str, str] | Response:
        c = opened(handlers, request, user, values.get("client"))
        if isinstance(c, Response):
            return c
        number, index = str(values.get("number", "")), str(values.get("index", "")).strip()
        stored = handlers.rules.document(Actor.of(user), c.id)
        try:
            rf.rules_of(stored, number)
            if index:
                rf.rule_at(stored, number, index)
        except rf.NoSuchRule:
            return _not_found(request)
        return c, number, index

    def rule_query(request: Request) -> tuple[WebSession, UserRecord, Client, str, str] | Response:
        """The session, user, client, number and rule index (empty: a new rule) a page's query
        names; the login, 404 or 403 page instead when any of it is not the user's."""
        found = area(request, ROLES)
        if isinstance(found, Response):
            return found
        where = located(request, found[1], request.query_params)
        return where if isinstance(where, Response) else (*found, *where)

    async def rule_form(
        request: Request,
    ) -> tuple[WebSession, UserRecord, dict[str, str], Client, str, str] | Response:
        """As rule_query for a posted form (its token checked), with the form."""
        got = await form_of(request, ROLES)
        if isinstance(got, Response):
            return got
        where = located(request, got[1], got[2])
        return where if isinstance(where, Response) else (*got, *where)

    @router.get("/portal/forwarding/rule")
    async def rule_page(request: Request) -> Response:
        """The form of rule `index` of `number`; without `index` the form of a new rule."""
        got = rule_query(request)
        if isinstance(got, Response):
            return got
        s, user, c, number, index = got
        stored = handlers.rules.document(Actor.of(user), c.id)
        fields = rf.fields_of_rule(rf.rule_at(stored, number, index)) if index else rf.RuleFields()
        return form_page(request, s, user, c, number, index, fields, document_version(stored))

    @router.post("/portal/forwarding/rule")
    async def save_rule(request: Request) -> Response:
        got = await rule_form(request)
        if isinstance(got, Response):
            return got
        s, user, form, c, number, index = got
        actor, version = Actor.of(user), form.get("version", "")
        stored = handlers.rules.document(actor, c.id)
        fields = rf.fields_of_form(form)
        old = rf.rule_at(stored, number, index) if index else None
        rule, errors = rf.rule_from_fields(fields, old)
        general: list[str] = []
        errors = {k: _t(request, v) for k, v in errors.items()}
        if not errors:
            doc, at = rf.with_rule(stored, number, index or None, rule)
            try:
                handlers.rules.replace(actor, c.id, doc, expected=version)
                return done(c)
            except Conflict:
                return form_page(request, s, user, c, number, index, fields, version, 409,
                                 general=[_t(request, CHANGED)])  # fmt: skip
            except Invalid as exc:
                for p in exc.problems:
                    name = rf.field_of(p.field, number, at)
                    msg = said(request, p.msg)
                    if name is None:
                        general.append(msg)
                    else:
                        errors[name] = "; ".join(filter(None, (errors.get(name), msg)))
            except AppError as exc:
                return failed(request, s, user, getattr(exc, "status", 400), str(exc), c)
        return form_page(request, s, user, c, number, index, fields, version, 422,
                         errors, general)  # fmt: skip

    def stored_change(
        request: Request, s: WebSession, user: UserRecord, c: Client, doc: dict[str, Any],
        version: str,
    ) -> Response:  # fmt: skip
        try:
            handlers.rules.replace(Actor.of(user), c.id, doc, expected=version)
        except Conflict:
            return failed(request, s, user, 409, _t(request, CHANGED), c)
        except Invalid as exc:
            msgs = sorted({said(request, p.msg) for p in exc.problems})
            return failed(request, s, user, 422, " ".join(msgs), c)
        except AppError as exc:
            return failed(request, s, user, getattr(exc, "status", 400), str(exc), c)
        return done(c)

    @router.post("/portal/forwarding/rules/move")
    async def move_rule(request: Request) -> Response:
        got = await rule_form(request)
        if isinstance(got, Response):
            return got
        s, user, form, c, number, index = got
        stored = handlers.rules.document(Actor.of(user), c.id)
        try:
            doc = rf.moved(stored, number, index, form.get("direction", ""))
        except rf.NoSuchRule:
            return _not_found(request)
        return stored_change(request, s, user, c, doc, form.get("version", ""))

    @router.get("/portal/forwarding/rules/remove")
    async def remove_page(request: Request) -> Response:
        """Asks before removing: a removed rule changes where calls go."""
        got = rule_query(request)
        if isinstance(got, Response):
            return got
        s, user, c, number, index = got
        if not index:
            return _not_found(request)
        texts = Texts(request)
        stored = handlers.rules.document(Actor.of(user), c.id)
        rule = rf.rule_at(stored, number, index)
        return _page(request, "forwarding_remove.html", 200, user=user, csrf=s.csrf, client=c,
                     number=number, index=index, version=document_version(stored),
                     rule_name=rule.get("name", ""), rule_when=texts.when(rule.get("when") or {}),
                     steps=texts.steps(rule.get("steps", [])),
                     cancel="/portal/forwarding?" + urlencode({"client": c.id}))  # fmt: skip

    @router.post("/portal/forwarding/rules/remove")
    async def remove_rule(request: Request) -> Response:
        got = await rule_form(request)
        if isinstance(got, Response):
            return got
        s, user, form, c, number, index = got
        if not index:
            return _not_found(request)
        if form.get("confirm") != "yes":
            return failed(request, s, user, 400, _t(request, "Bitte das Entfernen bestätigen."), c)
        doc = rf.removed(handlers.rules.document(Actor.of(user), c.id), number, index)
        return stored_change(request, s, user, c, doc, form.get("version", ""))
