"""Store: the office tables (migration 0002) against a real SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from heimbuero.domain.model import Client, Group, Override, Provider, Step, Trunk
from heimbuero.office.demo import seed_demo
from heimbuero.office.rules_doc import RulesError
from heimbuero.store import AlreadyExists, InUse, NoSuchUser, NotFound, Store, StoreError

REALM = "office.example"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    s.upgrade()
    yield s
    s.close()


def test_migration_0001_to_0002_keeps_users(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    s = Store(f"sqlite:///{db}")
    cfg = s._alembic_config()
    with s._engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO users (name, role, ha1_md5, ha1_sha256, password_hash, created_at) "
            "VALUES ('alice', 'admin', 'a', 'b', 'c', '2026-01-01 00:00:00')"
        )
    assert not s.schema_is_current()
    s.upgrade()
    assert s.schema_is_current()
    alice = s.get_user("alice")
    assert alice is not None and alice.role == "admin" and alice.password_hash == "c"
    assert alice.client is None and alice.mobile is None
    s.add_client(Client("mueller", "Tischlerei Müller"))
    assert s.user_update("alice", client="mueller", mobile="+491701111111").client == "mueller"
    s.close()


def test_provider_clients_numbers_round_trip(store: Store) -> None:
    assert store.get_provider().name == ""
    p = Provider("Büroservice", iban="DE00", default_steps=(Step(("group:team",), 30),))
    store.set_provider(p)
    assert store.get_provider() == p
    c = Client("mueller", "Tischlerei Müller", bundesland="BY",
               closure_days=(date(2026, 12, 24), date(2026, 12, 31)))  # fmt: skip
    store.add_client(c)
    assert store.get_client("mueller") == c
    with pytest.raises(AlreadyExists):
        store.add_client(c)
    assert store.update_client("mueller", trade="Tischlerei").trade == "Tischlerei"
    store.add_number("+49891234567", "mueller")
    with pytest.raises(AlreadyExists):
        store.add_number("+49891234567", "mueller")
    with pytest.raises(NotFound):
        store.add_number("+49301234567", "nobody")
    assert [n.e164 for n in store.list_numbers("mueller")] == ["+49891234567"]
    assert store.remove_client("mueller")
    assert store.list_numbers() == [] and store.get_client("mueller") is None


def test_groups_trunks_overrides(store: Store) -> None:
    for name in ("anna", "ben"):
        store.add_user(name, "agent", "0" * 32, "1" * 64, "x")
    with pytest.raises(NoSuchUser):
        store.add_group(Group("team", members=("anna", "carl")))
    assert store.get_group("team") is None
    assert store.add_group(Group("team", "round_robin", ("ben", "anna"))).members == ("ben", "anna")
    assert store.update_group("team", members=["anna"]).members == ("anna",)
    store.remove_user("anna")
    assert store.get_group("team").members == ()  # type: ignore[union-attr]
    t = Trunk("carrier", "127.0.0.1", 5090, prefixes=("+49", "+43"), username="u", password="p")
    store.add_trunk(t)
    assert store.get_trunk("carrier") == t
    assert store.update_trunk("carrier", host="192.0.2.7").host == "192.0.2.7"
    store.add_client(Client("mueller", "M"))
    now = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    store.set_override(Override("mueller", "office", now + timedelta(hours=2)))
    assert store.get_override("mueller").until == now + timedelta(hours=2)  # type: ignore[union-attr]
    assert store.list_overrides(now=now + timedelta(hours=2)) == []  # expired at `until`
    assert len(store.list_overrides(now=now)) == 1
    assert store.clear_override("mueller") and store.get_override("mueller") is None


def test_rules_documents_and_directory(store: Store) -> None:
    seed_demo(store, REALM)
    d = store.load_directory()
    assert [r.name for r in d.numbers["+49891234567"].rules] == [
        "Override", "Override Handy", "Werktag", "Sonst"]  # fmt: skip
    assert d.users["mueller"].client == "mueller" and d.groups["team"].members == ("anna", "ben")
    before = store.get_rules_document("mueller")
    bad = {"client": "mueller", "numbers": {"+49891234567": {"rules": [
        {"name": "x", "steps": [{"targets": ["user:ghost"], "timeout": 30}]}]}}}  # fmt: skip
    with pytest.raises(RulesError) as exc:
        store.save_rules("mueller", bad)
    assert exc.value.problems and "rules[0]" in exc.value.problems[0][0]
    assert store.get_rules_document("mueller") == before
    with pytest.raises(InUse):
        store.remove_group("team")
    # a removed user makes the stored document invalid: its numbers fall back to the default
    store.remove_user("mueller")
    d = store.load_directory()
    assert d.numbers["+49891234567"].rules == ()
    assert [p.client for p in store.directory_problems] == ["mueller"]
    assert d.numbers["+49301234567"].rules  # schulz unaffected


def test_call_records_and_tokens(store: Store) -> None:
    t0 = datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
    rid = store.add_call_record("abc", "+49891234567", "+4915112345", t0, client="mueller",
                                rule="Werktag", step=1)  # fmt: skip
    store.add_call_record("def", "+49301234567", "+4915112345", t0 + timedelta(1), client="x")
    r = store.update_call_record(rid, answered_by="anna", answered_at=t0 + timedelta(seconds=7),
                                 step=2)  # fmt: skip
    assert r.answered_by == "anna" and r.result is None
    assert store.close_open_call_records(t0 + timedelta(seconds=67)) == 2
    r = store.get_call_record(rid)
    assert r is not None and r.result == "answered" and r.talk_seconds == 60 and r.ring_seconds == 7
    assert r.end_reason == "server_stopped"  # (cut off by the stop; the other one too)
    assert [c.end_reason for c in store.list_call_records()] == ["server_stopped"] * 2
    assert [c.call_id for c in store.list_call_records()] == ["def", "abc"]
    assert [c.call_id for c in store.list_call_records(client="mueller")] == ["abc"]
    store.add_user("anna", "agent", "0" * 32, "1" * 64, "x")
    meta, token = store.create_token("anna", "ci")
    assert len(token) > 40 and meta.name == "ci"
    engine = create_engine(store.url)
    with engine.connect() as conn:
        (stored,) = conn.execute(text("SELECT token_hash FROM api_tokens")).one()
    engine.dispose()
    assert stored != token and len(stored) == 64
    assert store.verify_token(token).name == "anna"  # type: ignore[union-attr]
    assert store.verify_token(token + "x") is None
    assert store.revoke_token("anna", "ci") and store.verify_token(token) is None


def test_office_revision_moves_only_with_routing_changes(store: Store) -> None:
    """A running server reloads the office when this revision moves, and only then."""
    start = store.office_revision()
    store.add_client(Client("mueller", "Tischlerei Müller"))
    store.add_number("+49891234567", "mueller")
    assert store.office_revision() == start + 2
    store.add_call_record(
        "c1", "+49891234567", "sip:+4930555@carrier", datetime.now(UTC), "mueller"
    )
    store.get_client("mueller")
    assert store.office_revision() == start + 2
    with pytest.raises(AlreadyExists):
        store.add_client(Client("mueller", "again"))
    assert store.office_revision() == start + 2  # a refused change changes nothing


def test_call_log_batches_are_written_in_order_in_one_transaction(store: Store) -> None:
    now = datetime.now(UTC)
    ids: dict[int, int] = {}
    start = {"call_id": "c1", "number": "+49891234567", "caller": "sip:+4930555@carrier",
             "started_at": now, "client": "mueller", "rule": "Werktag"}  # fmt: skip
    store.apply_call_log(
        [("start", 1, start), ("update", 1, {"step": 2, "answered_by": "user:anna",
                                             "answered_at": now + timedelta(seconds=4)})],
        ids,
    )  # fmt: skip
    store.apply_call_log([("update", 1, {"result": "answered", "talk_seconds": 61.0})], ids)
    [record] = store.list_call_records(client="mueller")
    assert (record.rule, record.step, record.answered_by, record.result, record.talk_seconds) == (
        "Werktag",
        2,
        "user:anna",
        "answered",
        61.0,
    )
    with pytest.raises(StoreError):
        store.apply_call_log([("start", 2, {**start, "call_id": "c2"}),
                              ("update", 2, {"result": "exploded"})], ids)  # fmt: skip
    assert [r.call_id for r in store.list_call_records()] == ["c1"]  # the bad batch left nothing


def test_call_log_links_a_transferred_call_by_call_id(store: Store) -> None:
    """("transfer", 0, {call_id, from_call_id}): the new record names the original, which,
    ended `answered` already, becomes `transferred`; an unknown original links nothing."""
    now = datetime.now(UTC)
    ids: dict[int, int] = {}
    start = {"call_id": "c1", "number": "+49891234567", "caller": "sip:+4930555@carrier",
             "started_at": now, "client": "mueller", "rule": "Sonst"}  # fmt: skip
    store.apply_call_log([("start", 1, start), ("update", 1, {"result": "answered"})], ids)
    store.apply_call_log(
        [("start", 2, {**start, "call_id": "c2", "rule": "transfer"}),
         ("transfer", 0, {"call_id": "c2", "from_call_id": "c1"}),
         ("start", 3, {**start, "call_id": "c3"}),
         ("transfer", 0, {"call_id": "c3", "from_call_id": "nobody"})],
        ids,
    )  # fmt: skip
    by_call = {r.call_id: r for r in store.list_call_records()}
    assert by_call["c1"].result == "transferred" and by_call["c1"].transferred_from is None
    assert by_call["c2"].transferred_from == by_call["c1"].id
    assert by_call["c3"].transferred_from is None


def test_call_log_coalesces_a_busy_second(store: Store) -> None:
    """Many calls start, ring, end within one batch, others change from earlier batches: every
    record ends up with its last values."""
    now = datetime.now(UTC)
    ids: dict[int, int] = {}
    ops: list[tuple[str, int, dict]] = []
    for n in range(1, 51):
        ops.append(("start", n, {"call_id": f"c{n}", "number": "+49891234567",
                                 "caller": f"sip:{n}@carrier", "started_at": now}))  # fmt: skip
    store.apply_call_log(ops, ids)
    ops = [("update", n, {"answered_by": "user:anna", "answered_at": now}) for n in range(1, 26)]
    ops += [("update", n, {"result": "busy", "ended_at": now}) for n in range(26, 51)]
    ops += [
        (
            "start",
            51,
            {"call_id": "c51", "number": "+49891234567", "caller": "x", "started_at": now},
        ),
        ("update", 51, {"step": 2}),
        ("update", 51, {"step": 3, "result": "no_answer"}),
    ]
    ops += [("update", 1, {"result": "answered", "talk_seconds": 9.5, "ended_at": now})]
    store.apply_call_log(ops, ids)  # fmt: skip
    records = {r.call_id: r for r in store.list_call_records(limit=100)}
    assert len(records) == 51 and len(ids) == 51
    assert (records["c1"].answered_by, records["c1"].result, records["c1"].talk_seconds) == (
        "user:anna", "answered", 9.5,
    )  # fmt: skip
    assert records["c2"].answered_by == "user:anna" and records["c2"].result is None
    assert records["c30"].result == "busy" and records["c30"].answered_by is None
    assert (records["c51"].step, records["c51"].result) == (3, "no_answer")


def test_migration_0007_approves_forwarding_that_worked_before(tmp_path: Path) -> None:
    """An upgrade keeps existing forwarding to German numbers working (they become approved);
    a premium or foreign target stays unapproved until an admin allows it."""
    db = tmp_path / "old.db"
    s = Store(f"sqlite:///{db}")
    cfg = s._alembic_config()
    with s._engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0006")
    doc = (
        '{"numbers": {"+49891234567": {"rules": [{"name": "Sonst", "steps": ['
        '{"targets": ["external:+491701111111", "external:+499001234567"], "timeout": 20},'
        '{"targets": ["external:+4930123456", "external:+4312345678", "user:anna"],'
        ' "timeout": 20}]}]}}}'
    )
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO clients (id, name, trade, contact_person, greeting, notes, timezone,"
            " bundesland, closure_days) VALUES ('mueller', 'Tischlerei Müller', '', '', '', '',"
            " 'Europe/Berlin', 'BY', '[]')"
        )
        conn.execute(
            "INSERT INTO rule_documents (client, document, updated_at)"
            " VALUES ('mueller', ?, '2026-01-01 00:00:00')",
            (doc,),
        )
    s.upgrade()
    client = s.get_client("mueller")
    assert client is not None
    assert client.call_policy.approved_numbers == ("+491701111111", "+4930123456")
    s.close()


def test_a_dictation_number_is_kept_and_switched(store: Store) -> None:
    """A client's dictation number (migration 0025): stored, listed, in the directory even
    when the client's rules document names it, switched back to an ordinary number."""
    seed_demo(store, REALM)
    assert store.add_number("+49891239999", "mueller", dictation=True).dictation
    assert {n.e164: n.dictation for n in store.list_numbers("mueller")} == {
        "+49891234567": False, "+49891239999": True}  # fmt: skip
    doc = store.get_rules_document("mueller")
    assert doc is not None
    doc["numbers"]["+49891239999"] = doc["numbers"]["+49891234567"]
    store.save_rules("mueller", doc)
    d = store.load_directory()
    assert d.numbers["+49891239999"].dictation and d.numbers["+49891239999"].rules
    assert not d.numbers["+49891234567"].dictation
    switched = store.set_number_dictation("+49891239999", False)
    assert switched is not None and not switched.dictation
    assert not store.load_directory().numbers["+49891239999"].dictation
    assert store.set_number_dictation("+49890000000", True) is None


def test_migration_0025_makes_existing_numbers_ordinary(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    s = Store(f"sqlite:///{db}")
    cfg = s._alembic_config()
    with s._engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0024")
    s.add_client(Client("mueller", "Tischlerei Müller"))
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO numbers (e164, client) VALUES ('+49891234567', 'mueller')")
    s.upgrade()
    assert [(n.e164, n.dictation) for n in s.list_numbers()] == [("+49891234567", False)]
    s.close()


def test_find_clients_counts_and_cuts_in_the_database(store: Store) -> None:
    """A page of clients by id with the count of all that match (both databases): the text in
    id or name whatever its case (Ü too), a piece of a number, LIKE's wildcards as letters, a
    page after the last is the last, numbers only of the page's clients."""
    for k in range(120):
        store.add_client(Client(f"c{k:04d}", f"Betrieb {k} GmbH"))
        store.add_number(f"+4930555{k:05d}", f"c{k:04d}")
    store.add_client(Client("mueller", "Tischlerei Müller"))
    store.add_client(Client("bau_1", "100% Bau"))
    store.add_number("+49891234567", "mueller")
    store.add_number("+49891234568", "mueller")

    first = store.find_clients(per_page=50)
    assert first.total == 122 and first.page == 1
    assert [c.id for c in first.clients] == ["bau_1"] + [f"c{k:04d}" for k in range(49)]
    assert set(first.numbers) == {f"c{k:04d}" for k in range(49)}  # only the page's
    last = store.find_clients(page=3, per_page=50)
    assert [c.id for c in last.clients] == [f"c{k:04d}" for k in range(99, 120)] + ["mueller"]
    assert last.numbers["mueller"] == ("+49891234567", "+49891234568")
    assert store.find_clients(page=10**8, per_page=50).page == 3

    assert [c.id for c in store.find_clients("tischlerei MÜLLER").clients] == ["mueller"]
    assert [c.id for c in store.find_clients("C011").clients] == [
        f"c{k:04d}" for k in range(110, 120)
    ]
    ones = store.find_clients("betrieb 1", per_page=5)
    assert ones.total == 1 + 10 + 20 and len(ones.clients) == 5  # 1, 10-19, 100-119
    assert [c.id for c in store.find_clients("%").clients] == ["bau_1"]
    assert [c.id for c in store.find_clients("_").clients] == ["bau_1"]
    assert store.find_clients("\\").total == 0
    by_number = store.find_clients("", ["+4989123"])
    assert [c.id for c in by_number.clients] == ["mueller"]
    assert store.find_clients("x", ["5550011"]).total == 10  # c0110..c0119: either matches
    assert store.find_clients("nichts", ["999999"]).total == 0
    assert [c.id for c in store.find_clients("", (), only="mueller").clients] == ["mueller"]
    assert store.find_clients("betrieb", (), only="mueller").total == 0
    assert store.find_clients("", (), only="").clients == []
