"""The store's hot paths for the SIP server: the credentials reader of the event loop and the
group commit's multi-row binding upsert (SQLite)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from heimbuero.store import BindingRecord, Store
from heimbuero.store.db import WriteBatch

HA1_MD5 = "0" * 32
HA1_SHA256 = "1" * 64


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    s.upgrade()
    yield s
    s.close()


def _binding(aor: str, n: int, expires_at: float) -> BindingRecord:
    return BindingRecord(
        aor=aor,
        contact=f"<sip:{aor}@192.0.2.1:{5000 + n}>",
        received=f"udp:192.0.2.1:{5000 + n}",
        expires_at=expires_at,
        call_id=f"call-{aor}-{n}",
        cseq=n,
    )


def test_credentials_reader_answers_like_get_credentials(store: Store) -> None:
    store.add_user("anna", "agent", HA1_MD5, HA1_SHA256, "h")
    store.add_user("oldphone", "employee", "2" * 32, "3" * 64, "h")
    read = store.credentials_reader()
    assert read("anna") == store.get_credentials("anna") == ("agent", HA1_MD5, HA1_SHA256, False)
    assert read("nobody") is None
    store.user_update("oldphone", allow_rfc2069=True)
    assert read("oldphone") == ("employee", "2" * 32, "3" * 64, True)
    # a change by another connection (`heimbuero user passwd` on a running server) is seen
    store.set_password("anna", "4" * 32, "5" * 64, "h2")
    assert read("anna") == ("agent", "4" * 32, "5" * 64, False)


def test_credentials_reader_from_another_thread_takes_the_pooled_path(store: Store) -> None:
    store.add_user("anna", "agent", HA1_MD5, HA1_SHA256, "h")
    read = store.credentials_reader()
    assert read("anna") is not None  # the connection now belongs to this thread
    found: list[object] = []
    t = threading.Thread(target=lambda: found.append(read("anna")))
    t.start()
    t.join(10)
    assert found == [("agent", HA1_MD5, HA1_SHA256, False)]


def test_write_batch_upserts_more_rows_than_one_statement_holds(store: Store) -> None:
    for name in ("anna", "bob"):
        store.add_user(name, "agent", HA1_MD5, HA1_SHA256, "h")
    now = time.time()
    first = [_binding("anna", n, now + 100) for n in range(2500)]
    store.write_batch([WriteBatch(binding_upserts=first)])
    refreshed = [replace(b, cseq=b.cseq + 7, expires_at=now + 900, q=0.5) for b in first[:1200]]
    gone = [(b.aor, b.contact) for b in first[2400:]]
    extra = _binding("bob", 1, now + 50)
    store.write_batch([WriteBatch(binding_upserts=[*refreshed, extra], binding_deletes=gone)])
    loaded = {(b.aor, b.contact): b for b in store.load_bindings(now)}
    assert len(loaded) == 2400 + 1
    assert loaded[(extra.aor, extra.contact)] == extra
    for b in refreshed:
        assert loaded[(b.aor, b.contact)] == b
    for b in first[1200:2400]:
        assert loaded[(b.aor, b.contact)] == b
