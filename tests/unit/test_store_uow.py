"""The store's unit of work: repositories share one session and one transaction; the office
revision goes up in the same transaction as the change it counts, or not at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from heimbuero.domain.model import Client, Group
from heimbuero.office.demo import mueller_rules, seed_demo
from heimbuero.office.rules_doc import RulesError, parse_rules_document
from heimbuero.store import NoSuchUser, NotFound, Store, UserExists

HASHES = ("0" * 32, "1" * 64, "x")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    s.upgrade()
    yield s
    s.close()


def test_changes_of_several_repositories_commit_together_with_one_bump(store: Store) -> None:
    before = store.office_revision()
    with store.unit_of_work() as uow:
        uow.clients.add(Client("mueller", "Tischlerei Müller"))
        uow.users.add("anna", "agent", *HASHES)
        uow.groups.add(Group("team", members=("anna",)))
    assert store.office_revision() == before + 1
    assert store.get_group("team").members == ("anna",)  # type: ignore[union-attr]


def test_a_failure_rolls_back_the_change_and_the_revision_bump(store: Store) -> None:
    store.add_user("anna", "agent", *HASHES)
    before = store.office_revision()
    with pytest.raises(NoSuchUser), store.unit_of_work() as uow:
        uow.clients.add(Client("mueller", "Tischlerei Müller"))
        uow.users.update("anna", client="mueller")
        uow.groups.add(Group("team", members=("anna", "ghost")))  # fails: no user ghost
    assert store.get_client("mueller") is None
    assert store.get_user("anna").client is None  # type: ignore[union-attr]
    assert store.get_group("team") is None
    assert store.office_revision() == before


def test_an_exception_of_the_caller_rolls_back_too(store: Store) -> None:
    before = store.office_revision()
    with pytest.raises(RuntimeError), store.unit_of_work() as uow:
        uow.clients.add(Client("mueller", "M"))
        raise RuntimeError("the caller changed its mind")
    assert store.list_clients() == [] and store.office_revision() == before


def test_the_revision_counts_only_changes(store: Store) -> None:
    before = store.office_revision()
    assert store.remove_user("nobody") is False
    assert store.remove_group("nothing") is False
    with store.unit_of_work(write=False) as uow:
        uow.users.all()
    assert store.office_revision() == before
    store.add_client(Client("mueller", "M"))
    store.add_number("+49891234567", "mueller")
    assert store.office_revision() == before + 2


def test_create_user_with_office_fields_is_one_transaction(store: Store) -> None:
    store.add_client(Client("mueller", "M"))
    before = store.office_revision()
    u = store.add_user("mueller", "client", *HASHES, client="mueller", mobile="+491701111111")
    assert (u.client, u.mobile) == ("mueller", "+491701111111")
    assert store.office_revision() == before + 1
    # an unknown client: neither the user nor a bump is stored
    with pytest.raises(NotFound):
        store.add_user("ben", "employee", *HASHES, client="nobody")
    assert store.get_user("ben") is None and store.office_revision() == before + 1
    with pytest.raises(UserExists):
        store.add_user("mueller", "client", *HASHES)


def test_save_rules_validates_and_writes_in_one_unit_of_work(store: Store) -> None:
    seed_demo(store, "office.example")
    before = store.office_revision()
    bad = {"client": "mueller", "numbers": {"+49891234567": {"rules": [
        {"name": "x", "steps": [{"targets": ["user:ghost"], "timeout": 30}]}]}}}  # fmt: skip
    with pytest.raises(RulesError):
        store.save_rules("mueller", bad)
    assert store.office_revision() == before
    # the parser sees the directory of the same unit of work: a user added in it counts
    doc = mueller_rules()
    with store.unit_of_work() as uow:
        uow.users.add("ghost", "agent", *HASHES)
        uow.rules.save("mueller", bad, parse_rules_document)
    assert store.get_rules_document("mueller") == bad
    assert store.office_revision() == before + 1
    store.save_rules("mueller", doc)
    assert store.office_revision() == before + 2


def test_call_log_ids_are_noted_only_after_the_commit(store: Store) -> None:
    from datetime import UTC, datetime

    ids: dict[int, int] = {}
    start = {"call_id": "a", "number": "+49891234567", "caller": "x",
             "started_at": datetime(2026, 3, 3, tzinfo=UTC)}  # fmt: skip
    with pytest.raises(ValueError), store.unit_of_work() as uow:
        uow.calls.apply_log([("start", 0, start)], ids)
        raise ValueError("the batch fails after the insert")
    assert ids == {} and store.list_call_records() == []
    store.apply_call_log([("start", 0, start), ("update", 0, {"result": "busy"})], ids)
    assert store.get_call_record(ids[0]).result == "busy"  # type: ignore[union-attr]


def test_a_file_and_the_message_announcing_it_commit_together_or_not_at_all(store: Store) -> None:
    from datetime import UTC, datetime, timedelta

    from heimbuero.store.files import FileRecord

    t0 = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    record = FileRecord("f1", "kai", "a.wav", "audio/wav", 3, "0" * 64, None, t0,
                        t0 + timedelta(days=1))  # fmt: skip
    message = ("add", {
        "id": "m1", "sender": "kai", "recipient": "anna", "created_at": t0,
        "content_type": "text/plain", "body": b"a.wav", "state": "queued", "state_at": None,
        "expires_at": t0 + timedelta(days=7), "imdn_id": None, "imdn_state": None,
        "file_id": "f1", "origin": "http",
    })  # fmt: skip
    with pytest.raises(ValueError), store.unit_of_work() as uow:
        assert uow.files.add_file_within_quota(record, None) is None
        uow.messages.apply_message_log([message, ("state", "m1", "bogus", t0)])
    assert store.get_file("f1") is None and store.load_queued_messages() == []
    with store.unit_of_work() as uow:
        uow.files.add_file_within_quota(record, None)
        uow.messages.apply_message_log([message])
    assert store.get_file("f1") is not None
    assert [m.file_id for m in store.load_queued_messages()] == ["f1"]


def test_the_store_imports_no_office_and_takes_the_rules_parser_it_is_given(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'h.db'}"
    script = f"""
import sys
from heimbuero.store import Store, StoreError
from heimbuero.domain.model import Client
assert not any(m.startswith("heimbuero.office") for m in sys.modules), "store imported office"
s = Store({url!r})
s.upgrade()
try:
    s.load_directory()
except StoreError as exc:
    print("refused:", exc)
calls = []
def parse(doc, client_id, directory):
    calls.append(client_id)
    return {{}}
s = Store({url!r}, rules_parser=parse)
s.add_client(Client("m", "M"))
s.save_rules("m", {{"client": "m"}})
s.load_directory()
print("parsed:", calls)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True).stdout  # fmt: skip
    assert "refused: no rules parser" in out
    assert "parsed: ['m', 'm']" in out


def test_what_a_writing_unit_of_work_reads_cannot_change_under_it(store: Store) -> None:
    """A unit of work that may write holds the write lock from its start: another writer
    waits for its commit (SQLite: BEGIN IMMEDIATE; PostgreSQL: the advisory lock; without it
    PostgreSQL's READ COMMITTED shows the other's commit between two reads)."""
    import threading
    import time

    store.add_client(Client("mueller", "Tischlerei Müller"))
    reading = threading.Event()
    renamed_at: list[float] = []

    def rename() -> None:
        reading.wait(5)
        with store.unit_of_work() as uow:
            uow.clients.update("mueller", name="Müller & Söhne")
        renamed_at.append(time.monotonic())

    other = threading.Thread(target=rename)
    other.start()
    with store.unit_of_work() as uow:
        first = uow.clients.get("mueller")
        reading.set()
        time.sleep(0.5)  # the other writer tries meanwhile
        second = uow.clients.get("mueller")
        uow.groups.add(Group("team", members=()))
        done_at = time.monotonic()
    other.join(10)
    assert first is not None and second is not None
    assert first.name == second.name == "Tischlerei Müller"
    assert renamed_at and renamed_at[0] >= done_at  # it waited for the commit
    assert store.get_client("mueller").name == "Müller & Söhne"  # type: ignore[union-attr]
