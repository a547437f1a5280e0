"""The provider admin's pages (/admin …): views of what the CLI and the JSON API change, and
one form.

- `/admin`: the provider, the clients (Bundesland, timezone, greeting, VIP callers, numbers)
  and the reset of a user's second factor;
- `/admin/clients/ID`: a client's fields in a form (Clients.update, like
  `PATCH /api/clients/ID`); an unknown id is the 404 page;
- `/admin/users`: users with their live SIP registrations, groups, trunks (with the state of
  their registration to the carrier), numbers and API tokens (never a token's secret: the
  store keeps only its hash);
- `/admin/calls`: call records by client and date range, newest first, 100 a page, and the same
  selection as CSV (`/admin/calls.csv`); a client that neither exists nor has records is the
  404 page, as `GET /api/calls?client=ID` is 404;
- `/admin/health`: registrations, calls now, event-stream clients, store size, uptime.

A thin adapter like the JSON API: each page calls the same handlers (heimbuero/app) as the
session's Actor. Other roles get the console's 404 page, the same as for a missing page (as
on every area of the console that is not theirs); without a session, the login page."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from heimbuero.app import Actor, AppError
from heimbuero.app.clients import MAX_PER_PAGE, MAX_SEARCH, PER_PAGE, ClientPage
from heimbuero.app.errors import Invalid, NotFound
from heimbuero.domain.model import BUNDESLAENDER, caller_number
from heimbuero.store import CallRecord
from heimbuero.store.db import UserRecord
from heimbuero.store.records import POOR_JITTER_MS, POOR_LOSS_PCT
from heimbuero.store.websessions import WebSession

if TYPE_CHECKING:
    from heimbuero.web.console import Area, Console, FormOf
    from heimbuero.web.console.feeds import Feeds

PAGE = 100  # call records per page
# what the client list says about a search it cannot run (German; the catalogue translates)
SEARCH_PROBLEMS = {
    "q": "Der Suchbegriff ist zu lang (höchstens %(n)s Zeichen) oder enthält Steuerzeichen.",
    "page": "Die Seite ist eine ganze Zahl ab 1.",
    "per_page": "Mandanten pro Seite: eine ganze Zahl von 1 bis %(n)s.",
}
LIMITS = {"q": MAX_SEARCH, "page": 1, "per_page": MAX_PER_PAGE}
CSV_MAX = 100_000  # call records in one export
ADMIN = ("admin",)
DEFAULT_ZONE = "Europe/Berlin"
# a spreadsheet reads a cell starting with these as a formula (OWASP "CSV injection")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

# what the client form changes (Clients.update; VIP callers and closures have their own tools)
CLIENT_FIELDS = ("name", "trade", "contact_person", "greeting", "notes", "timezone",
                 "bundesland", "email")  # fmt: skip

# what the pages call a group's strategy and a call's result (German; the catalogue translates)
STRATEGIES = {
    "ring_all": "alle gleichzeitig",
    "longest_idle": "am längsten frei zuerst",
    "round_robin": "reihum",
}
RESULTS = {
    "": "läuft",
    "answered": "angenommen",
    "busy": "besetzt",
    "no_answer": "nicht angenommen",
    "failed": "fehlgeschlagen",
    "cancelled": "aufgelegt",
    "voicemail": "Mailbox",
    "transferred": "weiterverbunden",
}
# why a call ended (CallEndReason), as the calls page says it
END_REASONS = {
    "hangup": "Teilnehmer legte auf",
    "session_expired": "Sitzung abgelaufen",
    "no_response": "keine Antwort im Gespräch",
    "dialog_gone": "Gespräch unbekannt",
    "no_audio": "kein Ton",
    "caller_cancelled": "Anrufer legte auf",
    "no_answer": "nicht abgenommen",
    "busy": "besetzt",
    "declined": "abgewiesen",
    "unavailable": "nicht erreichbar",
    "unreachable": "Telefon nicht erreichbar",
    "refused": "vom Server abgelehnt",
    "rejected": "von der Gegenstelle abgelehnt",
    "server_stopped": "Server beendet",
}

# (header, field) of the export; the header goes through the page language's catalogue
CSV_COLUMNS = (
    ("ID", "id"),
    ("Beginn (UTC)", "started_at"),
    ("Angenommen (UTC)", "answered_at"),
    ("Ende (UTC)", "ended_at"),
    ("Mandant", "client"),
    ("Nummer", "number"),
    ("Anrufer", "caller"),
    ("Rufnummer des Anrufers", "caller_number"),
    ("Regel", "rule"),
    ("Schritt", "step"),
    ("Angenommen von", "answered_by"),
    ("Klingeln (s)", "ring_seconds"),
    ("Gespräch (s)", "talk_seconds"),
    ("Ergebnis", "result"),
    ("Weitergegeben von", "transferred_from"),
    ("Audioverlust (%)", "audio_loss_pct"),
    ("Jitter (ms)", "audio_jitter_ms"),
    ("Grund des Endes", "end_reason"),
)
# fields a caller or a device chose (the SIP From header, names): guarded against formulas
UNTRUSTED = frozenset({"caller", "caller_number", "answered_by", "rule"})


def csv_safe(value: str) -> str:
    """A text cell a spreadsheet will not run: one that starts (after blanks) with `=`, `+`,
    `-`, `@`, or starts with a tab or carriage return, gets a leading `'`."""
    if value.startswith(FORMULA_START) or value.lstrip().startswith(FORMULA_START[:4]):
        return "'" + value
    return value


def _cell(record: CallRecord, field: str) -> str:
    value = caller_number(record.caller) if field == "caller_number" else getattr(record, field)
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, float):
        return f"{value:.1f}"
    text = str(value)
    return csv_safe(text) if field in UNTRUSTED else text


def calls_csv(records: Iterable[CallRecord], headers: Iterable[str]) -> str:
    """The records as CSV (comma separated, every cell quoted where needed by the csv module,
    CRLF line ends), one header line first."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(list(headers))
    for r in records:
        writer.writerow([_cell(r, field) for _, field in CSV_COLUMNS])
    return out.getvalue()


def day_bounds(
    since: str, until: str, zone: str
) -> tuple[datetime | None, datetime | None, list[str]]:
    """The moments of a date range typed as YYYY-MM-DD (both days included) in `zone`:
    (start, end exclusive, names of the fields that are no date)."""
    tz = ZoneInfo(zone)
    bad: list[str] = []

    def day(text: str, field: str) -> date | None:
        if not text:
            return None
        try:
            return date.fromisoformat(text)
        except ValueError:
            bad.append(field)
            return None

    def moment(first: date | None, days: int, field: str) -> datetime | None:
        if first is None:
            return None
        try:  # in UTC, so the year 1 and 9999 are bad here rather than in the query
            return datetime.combine(first + timedelta(days=days), time(), tz).astimezone(UTC)
        except OverflowError:
            bad.append(field)
            return None

    start = moment(day(since, "from"), 0, "from")
    end = moment(day(until, "to"), 1, "to")
    return start, end, bad


def _zone(zone: str) -> str:
    try:
        ZoneInfo(zone)
    except (KeyError, ValueError):
        return DEFAULT_ZONE
    return zone


def admin_pages(router: APIRouter, c: Console, area: Area, form_of: FormOf, feeds: Feeds) -> None:
    """Add the admin's pages to the console's router."""
    from heimbuero.web.console import _not_found, _page, _t, i18n, lang_of

    h = c.handlers

    def admin(request: Request) -> tuple[WebSession, UserRecord, Actor] | Response:
        found = area(request, ADMIN)
        if isinstance(found, Response):
            return found
        return found[0], found[1], Actor.of(found[1])

    @router.get("/admin")
    async def overview(request: Request) -> Response:
        found = admin(request)
        if isinstance(found, Response):
            return found
        s, user, actor = found
        q = request.query_params
        text = q.get("q", "")
        per_page = q.get("per_page", "")
        asked = {"q": text, "page": q.get("page", ""), "per_page": per_page}

        def page() -> Response:
            result, error = None, ""
            try:
                result = h.clients.find(actor, text, _whole(asked["page"], 1, "page"),
                                        _whole(per_page, PER_PAGE, "per_page"))  # fmt: skip
            except Invalid as exc:
                field = exc.problems[0].field
                error = _t(request, SEARCH_PROBLEMS[field], n=str(LIMITS[field]))
            saved = q.get("saved", "")
            try:  # a link cannot make the page announce a change to a missing client
                saved = h.clients.get(actor, saved).client.id if saved else ""
            except AppError:
                saved = ""
            return _page(
                request,
                "admin.html",
                400 if error else 200,
                user=user,
                csrf=s.csrf,
                provider=h.provider.get(actor),
                result=result,
                clients=result.items if result else (),
                search=text.strip()[:MAX_SEARCH],
                per_page=result.per_page if result else PER_PAGE,
                default_per_page=PER_PAGE,
                per_page_choices=sorted({25, PER_PAGE, 100, MAX_PER_PAGE}
                                        | ({result.per_page} if result else set())),
                page_url=lambda n: _client_list_url(text.strip(), result, n),
                page_links=_page_links(result.page, result.pages) if result else [],
                search_error=error,
                with_code=h.second_factor.users(actor),
                reset=q.get("reset", ""),
                saved=saved,
            )  # fmt: skip

        # Off the event loop (SIP shares it). The store cuts the page (COUNT, LIMIT/OFFSET) and
        # reads the numbers of its clients only (bench/console.py).
        return await run_in_threadpool(page)

    def client_form(
        request: Request, s: WebSession, user: UserRecord, client_id: str,
        values: dict[str, str], status: int = 200, problems: dict[str, str] | None = None,
    ) -> Response:  # fmt: skip
        actor = Actor.of(user)
        try:
            info = h.clients.get(actor, client_id)
            vips, numbers = info.client.vip_callers, info.numbers
        except AppError:
            vips, numbers = (), ()
        return _page(
            request, "admin_client.html", status, user=user, csrf=s.csrf, client_id=client_id,
            values=values, problems=problems or {}, bundeslaender=BUNDESLAENDER, vips=vips,
            numbers=numbers,
        )  # fmt: skip

    @router.get("/admin/clients/{client_id}")
    async def client_page(request: Request, client_id: str) -> Response:
        """A client's fields in a form (the same change as `PATCH /api/clients/ID`)."""
        found = admin(request)
        if isinstance(found, Response):
            return found
        s, user, actor = found
        try:
            client = h.clients.get(actor, client_id).client
        except AppError:
            return _not_found(request)
        values = {f: str(getattr(client, f)) for f in CLIENT_FIELDS}
        return client_form(request, s, user, client.id, values)

    @router.post("/admin/clients/{client_id}")
    async def client_save(request: Request, client_id: str) -> Response:
        got = await form_of(request, ADMIN)
        if isinstance(got, Response):
            return got
        s, user, form = got
        actor = Actor.of(user)
        values = {f: form.get(f, "").strip() for f in CLIENT_FIELDS}
        values["notes"] = form.get("notes", "").replace("\r\n", "\n").strip()
        try:
            h.clients.update(actor, client_id, **values)
        except NotFound:
            return _not_found(request)
        except Invalid as exc:
            problems = {p.field: p.msg for p in exc.problems}
            return client_form(request, s, user, client_id, values, 422, problems)
        except AppError as exc:
            return client_form(request, s, user, client_id, values, 422, {"": str(exc)})
        # back to the list searched for the client, so that its row shows on the first page
        return RedirectResponse(
            f"/admin?saved={quote(client_id)}&q={quote(client_id)}#clients-h", 303
        )

    @router.get("/admin/users")
    async def users(request: Request) -> Response:
        found = admin(request)
        if isinstance(found, Response):
            return found
        s, user, actor = found
        devices: dict[str, list[dict[str, Any]]] = {}
        for r in h.server.registrations(actor):
            transport, _, address = str(r.get("source", "")).partition(":")
            devices.setdefault(r["user"], []).append(
                {**r, "transport": transport.upper(), "address": address}
            )
        trunk_states = h.server.status(actor).get("trunks", {})
        return _page(
            request,
            "admin_users.html",
            user=user,
            csrf=s.csrf,
            users=h.users.list(actor),
            devices=devices,
            groups=h.groups.list(actor),
            trunks=h.trunks.list(actor),
            trunk_states=trunk_states,
            strategies=STRATEGIES,
            numbers=h.numbers.list(actor),
            tokens=h.tokens.list(actor),
        )

    def selection(request: Request, actor: Actor) -> dict[str, Any]:
        """The calls filter of the query: client, from, to, page; with the handler's
        arguments and the problems to show."""
        q = request.query_params
        client = q.get("client", "").strip()[:64]
        since, until = q.get("from", "").strip()[:10], q.get("to", "").strip()[:10]
        page = q.get("page", "1")
        number = int(page) if page.isdigit() and 0 < int(page) <= 100_000 else 1
        zone = DEFAULT_ZONE
        if client:
            with contextlib.suppress(AppError):  # a deleted client's records are still listed
                zone = _zone(h.clients.visible(actor, client).timezone or DEFAULT_ZONE)
        start, end, bad = day_bounds(since, until, zone)
        return {
            "client": client, "from": since, "to": until, "page": number, "zone": zone,
            "args": {"client_id": client or None, "since": start, "until": end}, "bad": bad,
        }  # fmt: skip

    @router.get("/admin/calls")
    async def calls(request: Request) -> Response:
        found = admin(request)
        if isinstance(found, Response):
            return found
        s, user, actor = found
        sel = selection(request, actor)
        error, records = "", []
        if sel["bad"]:
            error = _t(request, "Bitte ein Datum wie 2026-12-24 angeben.")
        else:
            try:
                records = await run_in_threadpool(
                    h.calls.list, actor, limit=PAGE + 1, offset=(sel["page"] - 1) * PAGE,
                    **sel["args"],
                )  # fmt: skip
            except AppError:  # a client that neither exists nor has records
                return _not_found(request)
        more = len(records) > PAGE
        return _page(
            request,
            "admin_calls.html",
            422 if error else 200,
            user=user,
            csrf=s.csrf,
            clients=h.clients.list(actor),
            sel=sel,
            error=error,
            records=records[:PAGE],
            more=more,
            query=_query,
            poor=(POOR_LOSS_PCT, POOR_JITTER_MS),
            results=RESULTS,
            end_reasons=END_REASONS,
        )

    @router.get("/admin/calls.csv")
    async def calls_export(request: Request) -> Response:
        found = admin(request)
        if isinstance(found, Response):
            return found
        _, _, actor = found
        sel = selection(request, actor)
        if sel["bad"]:
            return Response(_t(request, "Bitte ein Datum wie 2026-12-24 angeben.") + "\n", 422,
                            media_type="text/plain; charset=utf-8")  # fmt: skip
        try:
            records = await run_in_threadpool(h.calls.list, actor, limit=CSV_MAX, **sel["args"])
        except AppError:  # a client that neither exists nor has records
            return _not_found(request)
        headers = [_t(request, text) for text, _ in CSV_COLUMNS]
        body = await run_in_threadpool(calls_csv, records, headers)
        name = "anrufe" + (f"-{sel['client']}" if sel["client"] else "")
        name = "".join(ch for ch in name if ch.isascii() and (ch.isalnum() or ch in "-_"))
        return Response(
            # a byte order mark: spreadsheets then read the file as UTF-8 (umlauts)
            "\ufeff" + body,
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{name}.csv"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    @router.get("/admin/health")
    async def health(request: Request) -> Response:
        found = admin(request)
        if isinstance(found, Response):
            return found
        s, user, actor = found
        status = h.server.status(actor)
        registrations = h.server.registrations(actor)
        try:
            store_bytes = await run_in_threadpool(h.server.store_bytes, actor)
        except Exception:  # noqa: BLE001 - a database that does not answer is shown as unknown
            store_bytes = None
        uptime = status.get("uptime_s")
        lang = lang_of(request)
        return _page(
            request,
            "admin_health.html",
            user=user,
            csrf=s.csrf,
            server=status,
            registrations=len(registrations),
            calls_now=status.get("calls_active"),
            streams=feeds.listening(),
            store_size=None if store_bytes is None else i18n.size(lang, store_bytes),
            uptime=_duration(float(uptime)) if isinstance(uptime, int | float) else None,
            version=status.get("version"),
        )


def _query(sel: dict[str, Any], page: int | None = None) -> str:
    """The filter as a query string (for the paging links and the export)."""
    from urllib.parse import urlencode

    fields = {"client": sel["client"], "from": sel["from"], "to": sel["to"]}
    if page is not None:
        fields["page"] = str(page)
    return urlencode({k: v for k, v in fields.items() if v})


def _whole(text: str, default: int, field: str) -> int:
    """A query parameter as a whole number (empty: `default`); Invalid(field) otherwise."""
    if not text:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise Invalid(field, "not a whole number")
    return int(text)


def _client_list_url(text: str, result: ClientPage | None, page: int) -> str:
    """The admin's client list at `page`, with the search and page size it shows."""
    from urllib.parse import urlencode

    fields: dict[str, str | int] = {"q": text} if text else {}
    if result is not None and result.per_page != PER_PAGE:
        fields["per_page"] = result.per_page
    if page > 1:
        fields["page"] = page
    return "/admin" + (f"?{urlencode(fields)}" if fields else "") + "#clients-h"


def _page_links(page: int, pages: int) -> list[int | None]:
    """The page numbers the pager links: the first, the last, and two either side of `page`;
    None where numbers are left out (shown as …)."""
    shown = sorted({1, pages, *range(max(1, page - 2), min(pages, page + 2) + 1)})
    out: list[int | None] = []
    for n in shown:
        if out and out[-1] is not None and n > out[-1] + 1:
            out.append(None)
        out.append(n)
    return out


def _duration(seconds: float) -> str:
    """`3 d 04:05:06`-like: days, then hours, minutes, seconds."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days} d {clock}" if days else clock
