"""The application layer's handlers (heimbuero/app) against a real SQLite store with the demo
office: who may do what, one test per handler module, as the HTTP API and the command line
both rely on it. Another business's ids answer NotFound (HTTP 404) like missing ones; a role
that may not do something gets Forbidden (HTTP 403)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from heimbuero.app import Actor, App, Conflict, Forbidden, Invalid, NotFound, Role, Unavailable
from heimbuero.app.calls import MAX_OFFSET
from heimbuero.app.errors import http_status
from heimbuero.app.server import visible_registrations
from heimbuero.config import FileSettings
from heimbuero.office.demo import MUELLER_NUMBER, SCHULZ_NUMBER, seed_demo
from heimbuero.office.files import FileService
from heimbuero.store import Store
from heimbuero.store.files import FileRecord

REALM = "office.example"
ADMIN = Actor("admin", Role.ADMIN)
AGENT = Actor("anna", Role.AGENT)
OWNER = Actor("mueller", Role.CLIENT, "mueller")  # the owner of client mueller
EMPLOYEE = Actor("lena", Role.EMPLOYEE, "mueller")
OTHER = Actor("schulz", Role.CLIENT, "schulz")  # another business
EVERYONE = (ADMIN, AGENT, OWNER, EMPLOYEE, OTHER)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    seed_demo(store, REALM)
    files = FileService(store, tmp_path / "files", FileSettings(), "http://127.0.0.1:8080")
    handlers = App.build(store, lambda: REALM, files=files)
    handlers.users.create(ADMIN, "lena", "Kiefer-Moos-2026", "employee", "mueller")
    yield handlers
    store.close()


def _refused(fn: Any, *args: Any, **kwargs: Any) -> int:
    """The HTTP status a handler call is refused with (0: it was allowed)."""
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the status is what the test compares
        return http_status(exc)
    return 0


def test_users_and_tokens(app: App) -> None:
    assert [u.name for u in app.users.list(EMPLOYEE)] == ["lena", "mueller"]
    assert len(app.users.list(AGENT)) == 6
    for actor in (AGENT, OWNER, EMPLOYEE):
        assert _refused(app.users.create, actor, "x1", "Pappel-Ahorn-77") == 403
        assert _refused(app.users.update, actor, "lena", display_name="L") == 403
        assert _refused(app.users.remove, actor, "lena") == 403
        assert _refused(app.users.set_password, actor, "admin", "Pappel-Ahorn-77") == 403
    assert _refused(app.users.set_password, EMPLOYEE, "lena", "Pappel-Ahorn-77") == 0
    assert _refused(app.users.remove, ADMIN, "nobody") == 404
    rows = [{"user": "lena", "contact": "a"}, {"user": "anna", "contact": "b"}]
    assert visible_registrations(EMPLOYEE, rows) == rows[:1]
    assert visible_registrations(AGENT, rows) == rows
    # tokens: one's own; admins anyone's
    assert _refused(app.tokens.create, EMPLOYEE, "anna", "ci") == 403
    app.tokens.create(EMPLOYEE, "lena", "ci")
    app.tokens.create(ADMIN, "anna", "ci")
    assert [t.user for t in app.tokens.list(EMPLOYEE)] == ["lena"]
    assert {t.user for t in app.tokens.list(ADMIN)} == {"anna", "lena"}
    assert _refused(app.tokens.revoke, EMPLOYEE, "anna", "ci") == 403
    assert _refused(app.tokens.revoke, AGENT, "anna", "nope") == 404


def test_create_user_is_one_write_with_its_office_fields(app: App) -> None:
    """A user and its client, display name and mobile are written together: an unknown client
    leaves no user behind (before, the user was written first and the fields after)."""
    assert _refused(app.users.create, ADMIN, "otto", "Birke-Buche-2026", "employee", "meier") == 404
    assert app.users.store.get_user("otto") is None
    u = app.users.create(ADMIN, "otto", "Birke-Buche-2026", "employee", "schulz", "Otto",
                         "0049 170 2222222")  # fmt: skip
    assert (u.client, u.display_name, u.mobile) == ("schulz", "Otto", "+491702222222")
    with pytest.raises(Invalid) as bad:
        app.users.create(ADMIN, "paul", "Birke-Buche-2026", mobile="0170 22x")
    assert bad.value.problems[0].field == "mobile"


def test_clients_numbers_and_provider(app: App) -> None:
    assert [i.client.id for i in app.clients.list(EMPLOYEE)] == ["mueller"]
    assert [i.client.id for i in app.clients.list(AGENT)] == ["mueller", "schulz"]
    for actor in (OWNER, EMPLOYEE):
        # another business looks exactly like a missing one
        assert _refused(app.clients.get, actor, "schulz") == 404
        assert _refused(app.clients.call_policy, actor, "schulz") == 404
        assert _refused(app.numbers.list, actor, "schulz") == 404
        assert _refused(app.clients.get, actor, "mueller") == 0
        assert [n.e164 for n in app.numbers.list(actor)] == [MUELLER_NUMBER]
    for actor in (AGENT, OWNER, EMPLOYEE):
        assert _refused(app.clients.create, actor, "meier", "Meier") == 403
        assert _refused(app.clients.update, actor, "mueller", notes="x") == 403
        assert _refused(app.clients.remove, actor, "schulz") == 403
        assert _refused(app.numbers.add, actor, "+49301111111", "mueller") == 403
        assert _refused(app.numbers.remove, actor, SCHULZ_NUMBER) == 403
        assert _refused(app.clients.approve_number, actor, "mueller", "+491702222222") == 403
        assert _refused(app.clients.change_call_policy, actor, "mueller", lambda p: {}) == 403
        assert _refused(app.provider.set, actor, app.provider.get(AGENT)) == 403
    assert _refused(app.provider.get, OWNER) == 403
    assert _refused(app.clients.update, ADMIN, "meier", notes="x") == 404


def test_client_search_sees_what_the_actor_sees_and_refuses_bad_pages(app: App) -> None:
    """Clients.find: staff search every client, a business's users only their own (the
    search for another business finds nothing); a number as typed; bad input is Invalid."""
    found = app.clients.find(AGENT, "089 1234567")
    assert [i.client.id for i in found.items] == ["mueller"] and found.total == 1
    assert found.items[0].numbers == (MUELLER_NUMBER,) and found.pages == 1
    assert [i.client.id for i in app.clients.find(ADMIN).items] == ["mueller", "schulz"]
    for actor in (OWNER, EMPLOYEE):
        assert [i.client.id for i in app.clients.find(actor).items] == ["mueller"]
        assert app.clients.find(actor, "schulz").total == 0
    assert app.clients.find(Actor("nobody", Role.CLIENT)).total == 0
    page = app.clients.find(ADMIN, "", 5, 1)
    assert page.page == 2 and page.first == 2 and page.pages == 2  # past the last: the last
    for args in (("x" * 101,), ("a\x00",), ("", 0), ("", -1), ("", 1, 0), ("", 1, 201),
                 ("", True), ("", 1, 1.5)):  # fmt: skip
        assert _refused(app.clients.find, ADMIN, *args) == 422, args


def test_vip_callers_admins_set_everyone_of_the_business_reads(app: App) -> None:
    vips = app.clients.set_vip(ADMIN, "mueller", "0171 2345678", "Herr Meier", "durchstellen")
    assert [(v.number, v.name, v.remark) for v in vips] == [
        ("+491712345678", "Herr Meier", "durchstellen")
    ]
    # the same number again replaces the entry (typed another way)
    vips = app.clients.set_vip(ADMIN, "mueller", "+49 171 2345678", "Herr Meier (Architekt)")
    assert [(v.number, v.name) for v in vips] == [("+491712345678", "Herr Meier (Architekt)")]
    assert app.clients.get(OWNER, "mueller").client.vip_callers == vips
    for actor in (AGENT, OWNER, EMPLOYEE):
        assert _refused(app.clients.set_vip, actor, "mueller", "+4930123", "X") == 403
    assert _refused(app.clients.set_vip, ADMIN, "nobody", "+4930123", "X") == 404
    assert _refused(app.clients.get, OTHER, "mueller") == 404
    for number, name, remark in (
        ("hello", "X", ""),
        ("+4930123", "", ""),
        ("+4930123", "X\r\nVia: evil", ""),
        ("+4930123", "X", "r" * 201),
    ):
        assert _refused(app.clients.set_vip, ADMIN, "mueller", number, name, remark) == 422
    assert _refused(app.clients.remove_vip, ADMIN, "mueller", "+4930999") == 404
    assert app.clients.remove_vip(ADMIN, "mueller", "0171 2345678") == ()
    # the whole list at once (the API's PATCH): at most 100, one per number
    many = [{"number": f"+49301000{i:03d}", "name": f"K{i}"} for i in range(101)]
    assert _refused(app.clients.update, ADMIN, "mueller", vip_callers=many) == 422
    done = app.clients.update(ADMIN, "mueller", vip_callers=many[:100] + many[:1])
    assert len(done.client.vip_callers) == 100


def test_rules_and_overrides(app: App) -> None:
    doc = app.rules.document(EMPLOYEE, "mueller")
    assert _refused(app.rules.document, EMPLOYEE, "schulz") == 404
    assert _refused(app.rules.replace, EMPLOYEE, "mueller", doc) == 403
    assert _refused(app.rules.replace, AGENT, "mueller", doc) == 403
    assert _refused(app.rules.replace, OTHER, "mueller", doc) == 404
    assert _refused(app.rules.replace, OWNER, "mueller", doc) == 0
    with pytest.raises(Invalid) as bad:
        app.rules.replace(ADMIN, "mueller", {"client": "mueller", "numbers": {"x": {}}})
    assert bad.value.document and bad.value.problems
    until = datetime.now(UTC) + timedelta(hours=1)
    for actor in (ADMIN, AGENT, OWNER):
        assert app.overrides.set(actor, "mueller", "office", until).active
        app.overrides.clear(actor, "mueller")
    assert _refused(app.overrides.set, EMPLOYEE, "mueller", "office", until) == 403
    assert _refused(app.overrides.set, OTHER, "mueller", "office", until) == 404
    assert _refused(app.overrides.get, OWNER, "mueller") == 404  # none set
    past = datetime.now(UTC) - timedelta(minutes=1)
    assert _refused(app.overrides.set, OWNER, "mueller", "office", past) == 422
    # the simulator: staff any number, the others their own business's
    assert app.simulator.simulate(EMPLOYEE, "0049 89 1234567").client == "mueller"
    assert _refused(app.simulator.simulate, EMPLOYEE, SCHULZ_NUMBER) == 403
    assert _refused(app.simulator.simulate, AGENT, SCHULZ_NUMBER) == 0


def test_groups(app: App) -> None:
    assert _refused(app.groups.list, OWNER) == 403
    assert [g.name for g in app.groups.list(AGENT)] == ["team"]
    for actor in (AGENT, OWNER, EMPLOYEE):
        assert _refused(app.groups.create, actor, "spaet", members=["anna"]) == 403
        assert _refused(app.groups.update, actor, "team", members=[]) == 403
        assert _refused(app.groups.remove, actor, "team") == 403
    assert _refused(app.groups.remove, ADMIN, "team") == 409  # the rules ring it
    assert _refused(app.groups.remove, ADMIN, "nope") == 404


def test_a_callers_history_for_the_screen_pop(app: App) -> None:
    from heimbuero.store.notes import NoteStore

    store = app.calls.store
    t0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    caller = "+4930555_23"  # "_" is a LIKE wildcard: it must match only itself
    for i, (who, client) in enumerate([
        (f"sip:{caller}@carrier.example;user=phone", "mueller"),
        (f"sip:{caller}@carrier.example", "mueller"),
        ("sip:+4930555123@carrier.example", "mueller"),  # another caller
        (f"sip:{caller}@carrier.example", "schulz"),  # another client
        (f"sip:{caller}9@carrier.example", "mueller"),  # a longer number
    ]):  # fmt: skip
        rid = store.add_call_record(f"c{i}", MUELLER_NUMBER, who, t0 + timedelta(hours=i), client)
        store.update_call_record(rid, result="answered", answered_by="anna", talk_seconds=60.4)
    notes = NoteStore(store)
    notes.add(
        client="mueller",
        agent="anna",
        call_id=None,
        caller_name="Herr Meier",
        caller_number=caller,
        concern="Angebot",
        callback=True,
        urgent=False,
        text="x",
    )
    notes.add(client="schulz", agent="anna", call_id=None, caller_name="Herr Meier",
              caller_number=caller, concern="nicht für Müller", callback=False, urgent=False,
              text="")  # fmt: skip
    seen = app.calls.caller_history(AGENT, "mueller", f"sip:{caller}@carrier.example", "c1")
    assert seen["caller"] == caller
    assert [c["started_at"][:13] for c in seen["calls"]] == ["2026-12-01T09"]  # c1 is ringing
    assert seen["calls"][0]["talk_seconds"] == 60
    assert [n["concern"] for n in seen["notes"]] == ["Angebot"]
    assert app.calls.caller_history(OWNER, "mueller", caller)["calls"][0]["result"] == "answered"
    assert _refused(app.calls.caller_history, OTHER, "mueller", caller) == 404


def test_trunks(app: App) -> None:
    assert _refused(app.trunks.list, EMPLOYEE) == 403
    assert [t.name for t in app.trunks.list(AGENT)] == ["carrier"]
    for actor in (AGENT, OWNER, EMPLOYEE):
        assert _refused(app.trunks.create, actor, "b", host="192.0.2.1") == 403
        assert _refused(app.trunks.update, actor, "carrier", port=5070) == 403
        assert _refused(app.trunks.set_call_policy, actor, "carrier", {}) == 403
        assert _refused(app.trunks.remove, actor, "carrier") == 403


def test_a_registering_trunk_needs_credentials(app: App) -> None:
    """The same rule for the HTTP API and the command line (before, only the CLI checked;
    the trunk service then skipped such a trunk without a word)."""
    with pytest.raises(Invalid, match="needs a user name and a password") as bad:
        app.trunks.create(ADMIN, "b", host="192.0.2.1", register=True, username="u")
    assert bad.value.problems[0].field == "register"
    with pytest.raises(Invalid, match="needs a user name and a password"):
        app.trunks.update(ADMIN, "carrier", register=True)
    app.trunks.update(ADMIN, "carrier", register=True, username="u", password="Secret-123456")
    with pytest.raises(Invalid, match="needs a user name and a password"):
        app.trunks.update(ADMIN, "carrier", password="")
    assert app.trunks.store.get_trunk("carrier").password == "Secret-123456"  # type: ignore[union-attr]


def test_calls_and_warnings(app: App) -> None:
    with pytest.raises(NotFound):
        app.calls.list(ADMIN, "nobody")  # unknown client: said so, not an empty list
    assert app.calls.list(AGENT, "schulz") == []
    assert _refused(app.calls.list, OWNER, "schulz") == 404
    assert _refused(app.calls.list, EMPLOYEE, "nobody") == 404
    assert app.calls.list(EMPLOYEE) == []
    assert _refused(app.warnings.watch, OWNER, lambda w: None) == 403
    with pytest.raises(Unavailable):
        app.warnings.watch(AGENT, lambda w: None)


def test_call_records_by_date_range_and_page(app: App) -> None:
    day = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    app.calls.store.apply_call_log([
        ("start", i, {"call_id": f"c{i}", "number": MUELLER_NUMBER, "caller": f"sip:{i}@x",
                      "client": "mueller", "started_at": day + timedelta(days=i)})
        for i in range(5)
    ], {})  # fmt: skip

    def ids(**kw: Any) -> list[str]:
        return [r.call_id for r in app.calls.list(ADMIN, "mueller", **kw)]

    assert ids() == ["c4", "c3", "c2", "c1", "c0"]
    assert ids(since=day + timedelta(days=1), until=day + timedelta(days=3)) == ["c2", "c1"]
    assert ids(limit=2, offset=2) == ["c2", "c1"] and ids(offset=5) == []
    assert [r.call_id for r in app.calls.list(OWNER, since=day + timedelta(days=4))] == ["c4"]
    assert app.calls.list(OTHER, since=day) == []  # another business's stay hidden
    assert _refused(app.calls.list, ADMIN, limit=0) == 422
    assert _refused(app.calls.list, ADMIN, offset=-1) == 422
    assert _refused(app.calls.list, ADMIN, offset=MAX_OFFSET + 1) == 422
    east = timezone(timedelta(hours=5))
    assert _refused(app.calls.list, ADMIN, since=datetime(1, 1, 1, tzinfo=east)) == 422
    assert ids(since=datetime(2026, 12, 4, 9, 0)) == ["c4", "c3"]  # no offset: UTC


def test_server_state_without_a_server_and_with_one(app: App, tmp_path: Path) -> None:
    assert app.server.status(ADMIN) == {} and app.server.registrations(ADMIN) == []
    assert _refused(app.server.status, OWNER) == 403
    size = app.server.store_bytes(ADMIN)
    assert size is not None and size > 10_000  # the SQLite file with the demo office
    assert _refused(app.server.store_bytes, AGENT) == 403
    rows = [{"user": "mueller", "contact": "sip:m@h"}, {"user": "anna", "contact": "sip:a@h"}]
    live = App.build(app.calls.store, lambda: REALM, status=lambda: {"calls_active": 1},
                     registrations=lambda: rows)  # fmt: skip
    assert live.server.status(AGENT) == {"calls_active": 1}
    assert live.server.registrations(ADMIN) == rows
    assert live.server.registrations(OWNER) == rows[:1]


def test_messages_and_presence(app: App) -> None:
    assert _refused(app.messages.delete, EMPLOYEE, "anna") == 403
    assert _refused(app.messages.delete, AGENT, "lena") == 404  # no such conversation
    assert _refused(app.messages.history, EMPLOYEE, "anna") == 404
    with pytest.raises(Invalid):
        app.messages.content("hi", "file-id")
    with pytest.raises(Unavailable):
        asyncio.run(app.messages.send(EMPLOYEE, "anna", "text/plain", b"hi"))
    with pytest.raises(Unavailable):
        app.presence.visible(EMPLOYEE)


def test_files(app: App) -> None:
    files = app.files
    assert files is not None
    now = datetime.now(UTC)
    record = FileRecord("f" * 43, "lena", "a.pdf", "application/pdf", 3, "0" * 64, None, now,
                        now + timedelta(days=1))  # fmt: skip
    files.service.store.add_file_within_quota(record, None)
    files.service.store.add_file_party(record.id, "lena", "mueller", now)
    for actor in (EMPLOYEE, OWNER, AGENT, ADMIN):
        assert files.visible(actor, record.id).id == record.id
    assert _refused(files.visible, OTHER, record.id) == 404  # like a missing file
    assert _refused(files.downloads, OWNER, record.id) == 403  # a party, not the owner
    assert _refused(files.downloads, AGENT, record.id) == 0
    assert _refused(files.list, EMPLOYEE, "anna") == 403
    assert [f.id for f in files.list(AGENT, "lena")[1]] == [record.id]
    assert _refused(files.delete, AGENT, record.id) == 403
    assert _refused(files.delete, OWNER, record.id) == 403
    assert _refused(files.delete, ADMIN, record.id) == 0


def test_errors_map_to_one_status_each() -> None:
    errors = (NotFound("x", "y"), Forbidden("f"), Invalid("a", "b"), Conflict("c"),
              Unavailable("u"))  # fmt: skip
    assert [http_status(e) for e in errors] == [404, 403, 422, 409, 503]


def test_agent_status_own_only_staff_only_and_published(app: App) -> None:
    """An agent sets their own status, an admin anyone's; another agent is refused (403), a
    client's user learns nothing (404), a client's user has no status (403); a bad value is
    a 422. The routing directory reads it (team calls skip the agent)."""
    from heimbuero.events import AgentStatusChanged

    published: list[Any] = []
    app.agents.publish = published.append
    assert app.agents.set(AGENT, "anna", "break").status == "break"
    assert isinstance(published[-1], AgentStatusChanged) and published[-1].status == "break"
    assert app.agents.set(ADMIN, "anna", "off").status == "off"
    ben = Actor("ben", Role.AGENT)
    assert _refused(app.agents.set, ben, "anna", "available") == 403
    assert _refused(app.agents.set, OWNER, "anna", "available") == 404
    assert _refused(app.agents.set, ADMIN, "mueller", "break") == 403
    assert _refused(app.agents.set, AGENT, "anna", "asleep") == 422
    assert _refused(app.agents.set, ADMIN, "nobody", "break") == 404
    assert _refused(app.agents.list, OWNER) == 403
    assert {s.user: s.status for s in app.agents.list(AGENT)}["anna"] == "off"
    directory = app.agents.store.load_directory()
    assert directory.users["anna"].status == "off" and directory.users["ben"].status == "available"
