"""Upgrades: a database made by every earlier schema revision (the older migrations, then
rows inserted as that version of heimbuero stored them) upgrades to the current schema at
start, after a backup; everything stored is still there and read by the current code."""

from __future__ import annotations

import hashlib
import logging
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory

from heimbuero import cli, config
from heimbuero.ops.upgrade import current_revision, upgrade_with_backup
from heimbuero.store import Store
from heimbuero.store.db import MIGRATIONS_DIR

DOMAIN = "office.example"
NOW = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
MOBILE = "+491701234567"


def _alembic(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def _revisions() -> list[str]:
    script = ScriptDirectory.from_config(_alembic("sqlite://"))
    revs = [r.revision for r in script.walk_revisions()]  # newest first
    return list(reversed(revs))


HEAD = _revisions()[-1]
OLDER = _revisions()[:-1]


def _ha1(user: str, algorithm: str) -> str:
    text = f"{user}:{DOMAIN}:Kupfer-Kanne-38".encode()
    return (hashlib.md5 if algorithm == "md5" else hashlib.sha256)(text).hexdigest()  # noqa: S324


ROWS: dict[str, list[dict[str, Any]]] = {
    "users": [
        {"id": 1, "name": "alice", "role": "admin", "ha1_md5": _ha1("alice", "md5"),
         "ha1_sha256": _ha1("alice", "sha256"), "password_hash": "x", "created_at": NOW},
        {"id": 2, "name": "bob", "role": "agent", "ha1_md5": _ha1("bob", "md5"),
         "ha1_sha256": _ha1("bob", "sha256"), "password_hash": "x", "created_at": NOW,
         "display_name": "Bob B.", "mobile": MOBILE},
    ],
    "bindings": [
        {"aor": "bob", "contact": "sip:bob@192.0.2.5:5060", "received": "udp:192.0.2.5:5060",
         "expires_at": 4102444800.0, "call_id": "reg-1@x", "cseq": 7, "user_agent": "Phone 1"},
    ],
    "provider": [
        {"id": 1, "name": "Büro Sonnenschein", "address": "Hauptstr. 1", "vat_id": "",
         "iban": "", "bic": "", "default_steps": [{"targets": ["group:team"], "timeout": 20}]},
    ],
    "clients": [
        {"id": "acme", "name": "Acme GmbH", "trade": "Tischlerei", "contact_person": "Frau A",
         "greeting": "Acme, guten Tag", "notes": "", "timezone": "Europe/Berlin",
         "bundesland": "BY", "closure_days": []},
    ],
    "numbers": [{"e164": "+4930123456", "client": "acme"}],
    "groups": [{"name": "team", "strategy": "ring_all"}],
    "group_members": [{"group": "team", "user": "bob", "position": 0}],
    "trunks": [
        {"name": "carrier", "host": "sip.carrier.example", "port": 5060, "transport": "udp",
         "prefixes": ["+"], "username": "acc", "password": "pw", "register": False},
    ],
    "rule_documents": [
        {"client": "acme", "updated_at": NOW, "document": {"client": "acme", "numbers": {
            "+4930123456": {"rules": [
                {"name": "Tag", "steps": [{"targets": ["user:bob"], "timeout": 15},
                                          {"targets": [f"external:{MOBILE}"], "timeout": 20}]},
            ]}}}},
    ],
    "call_records": [
        {"call_id": "call-1@x", "client": "acme", "number": "+4930123456",
         "caller": "sip:+491511111111@carrier", "rule": "Tag", "step": 0, "answered_by": "bob",
         "started_at": NOW, "answered_at": NOW + timedelta(seconds=3),
         "ended_at": NOW + timedelta(seconds=63), "ring_seconds": 3.0, "talk_seconds": 60.0,
         "result": "answered"},
    ],
    "conversations": [
        {"id": 1, "user_a": "alice", "user_b": "bob", "created_at": NOW, "last_at": NOW},
    ],
    "messages": [
        {"id": "m-1", "conversation_id": 1, "sender": "alice", "recipient": "bob",
         "created_at": NOW, "content_type": "text/plain", "body": b"Diktat liegt bereit",
         "state": "delivered", "state_at": NOW, "origin": "http"},
    ],
    "files": [
        {"id": "F" * 43, "owner": "alice", "name": "brief.txt", "content_type": "text/plain",
         "size": 5, "sha256": hashlib.sha256(b"Brief").hexdigest(), "created_at": NOW,
         "expires_at": NOW + timedelta(days=3650)},
    ],
    "file_parties": [{"file_id": "F" * 43, "user": "bob"}],
}  # fmt: skip


def _old_database(data: Path, revision: str) -> set[str]:
    """The database of DATA made by the migrations up to `revision`, with the rows its schema
    can hold; returns the tables that were filled."""
    db = data / config.DB_FILE
    db.unlink()
    url = f"sqlite:///{db}"
    command.upgrade(_alembic(url), revision)
    engine = sa.create_engine(url)
    filled = set()
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.begin() as conn:
            for name, rows in ROWS.items():
                table = meta.tables.get(name)
                if table is None:
                    continue
                cols = set(table.c.keys())
                conn.execute(table.insert(), [{k: v for k, v in r.items() if k in cols}
                                              for r in rows])  # fmt: skip
                filled.add(name)
    finally:
        engine.dispose()
    (data / config.FILES_DIR / ("F" * 43)).write_bytes(b"Brief")
    return filled


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("upgrade") / "data"
    assert cli.main(["init", "--data", str(d), "--domain", DOMAIN]) == 0
    return d


def test_there_are_older_revisions_to_test() -> None:
    assert len(OLDER) >= 6 and OLDER[0] == "0001"


@pytest.mark.parametrize("revision", OLDER)
def test_a_database_of_every_earlier_revision_upgrades_with_a_backup_first(
    revision: str, template: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    data = Path(shutil.copytree(template, tmp_path / "data"))
    filled = _old_database(data, revision)
    cfg = config.load(data)
    store = Store(cfg.db_url)
    try:
        with caplog.at_level(logging.WARNING, logger="heimbuero.ops"):
            saved = upgrade_with_backup(cfg, store)
        assert current_revision(cfg.db_url) == HEAD
        # the backup holds the database as it was, at its old revision
        assert saved is not None and saved.parent == data / "backups"
        assert f"pre-upgrade-{revision}-" in saved.name
        assert any(str(saved) in r.getMessage() for r in caplog.records)
        with tarfile.open(saved) as tar:
            member = tar.extractfile("heimbuero-backup/heimbuero.db")
            assert member is not None
            (tmp_path / "old.db").write_bytes(member.read())
        assert current_revision(f"sqlite:///{tmp_path / 'old.db'}") == revision

        # the current code reads what the old version stored
        assert store.get_credentials("bob") is not None
        assert store.get_credentials("bob")[1] == _ha1("bob", "md5")  # type: ignore[index]
        [binding] = store.load_bindings(NOW.timestamp())
        assert (binding.aor, binding.cseq, binding.user_agent) == ("bob", 7, "Phone 1")
        if "clients" in filled:
            directory = store.load_directory()
            assert directory.clients["acme"].name == "Acme GmbH"
            assert directory.numbers["+4930123456"].client == "acme"
            assert directory.provider.name == "Büro Sonnenschein"
            assert [m for m in directory.groups["team"].members] == ["bob"]
            assert directory.trunks["carrier"].host == "sip.carrier.example"
            doc = store.get_rules_document("acme")
            assert doc is not None and doc["numbers"]["+4930123456"]["rules"][0]["name"] == "Tag"
            # 0007: forwarding that worked before the destination policy stays approved
            # (a database filled at 0007 or later never had forwarding without approval)
            # (a database already at 0007 or later had its numbers approved by an admin)
            if revision < "0007":
                assert MOBILE in directory.clients["acme"].call_policy.approved_numbers
            [call] = store.list_call_records("acme")
            assert (call.call_id, call.result, call.talk_seconds) == ("call-1@x", "answered", 60)
        if "messages" in filled:
            [msg] = store.conversation_messages("bob", "alice") or []
            assert msg.body == b"Diktat liegt bereit"
            [f] = store.list_files(None)
            assert (f.id, f.size, f.parties) == ("F" * 43, 5, ("bob",))
    finally:
        store.close()


def test_a_current_or_new_database_is_not_backed_up(template: Path, tmp_path: Path) -> None:
    import shutil

    data = Path(shutil.copytree(template, tmp_path / "data"))
    cfg = config.load(data)
    store = Store(cfg.db_url)
    try:
        assert upgrade_with_backup(cfg, store) is None
    finally:
        store.close()
    assert not (data / "backups").exists()
