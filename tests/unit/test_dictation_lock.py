"""A typist's lock on a dictation job ends `lock_minutes` after the last sign of life and the
job returns to the queue (app/dictation.py over a real SQLite store, the clock moved)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import heimbuero.app.dictation as dictation_app
from heimbuero.app.dictation import Dictation
from heimbuero.app.errors import Conflict
from heimbuero.app.policy import Actor, Role
from heimbuero.config import DictationSettings, FileSettings
from heimbuero.office.demo import seed_demo
from heimbuero.office.files import FileService
from heimbuero.store import Store

ANNA, BEN = Actor("anna", Role.AGENT), Actor("ben", Role.AGENT)


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Dictation]:
    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    seed_demo(store, "office.example")
    files = FileService(store, tmp_path / "files", FileSettings(), "http://127.0.0.1")
    yield Dictation(store, files, DictationSettings(lock_minutes=30))
    store.close()


def test_lock_expires_back_to_the_queue(
    desk: Dictation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wave

    audio = tmp_path / "a.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 8000)
    job = desk.create_from_audio(audio, "a.wav", "mueller", "mueller", "Angebot Meier")
    assert job.audio_seconds == 1.0 and job.source == "phone"
    now = datetime.now(UTC)
    monkeypatch.setattr(dictation_app, "_now", lambda: now)
    desk.take(ANNA, job.id)
    with pytest.raises(Conflict):
        desk.take(BEN, job.id)
    now += timedelta(minutes=29)
    desk.heartbeat(ANNA, job.id)  # extends to 29 + 30 minutes
    now += timedelta(minutes=29)
    with pytest.raises(Conflict):
        desk.take(BEN, job.id)
    now += timedelta(minutes=2)
    assert [j.id for j, _ in desk.queue(BEN) if j.state == "new"] == [job.id]
    taken = desk.take(BEN, job.id).job
    assert taken.typist == "ben"
    with pytest.raises(Conflict):
        desk.save_draft(ANNA, job.id, "alter Tab", 0)  # anna lost the lock
    actions = [h.action for h in desk.get(BEN, job.id).history]
    assert actions == ["created", "take", "lock expired", "take"]


def test_delivery_publishes_after_the_commit(desk: Dictation, tmp_path: Path) -> None:
    import wave

    from heimbuero.events import DictationDelivered, EventBus

    bus = EventBus()
    seen: list[tuple[DictationDelivered, str]] = []
    store = desk.store

    def on_delivered(event: DictationDelivered) -> None:
        job = store.unit_of_work(write=False)
        from heimbuero.store.dictation import DictationRepository

        with job:
            state = DictationRepository(job).get_job(event.job_id)
        assert state is not None
        seen.append((event, state.state))

    bus.subscribe(DictationDelivered, on_delivered)
    desk.events = bus
    audio = tmp_path / "b.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 8000 * 90)
    job = desk.create_from_audio(audio, "b.wav", "mueller", "mueller", "Bericht")
    part = store.get_file(job.parts[0].file_id)
    assert part is not None and part.expires_at.year == 9999  # kept while the job is open
    desk.take(ANNA, job.id)
    desk.save_draft(ANNA, job.id, "a" * 60 + "\n\n" + "b" * 50, 0)
    outcome = desk.deliver(ANNA, job.id)
    assert outcome.job.state == "delivered" and outcome.document is not None
    assert len(seen) == 1
    event, state_seen = seen[0]
    assert state_seen == "delivered"  # the subscriber reads what was committed
    assert (event.client, event.job_id, event.normzeilen) == ("mueller", job.id, 2)
    assert event.audio_seconds == 90.0
    part = store.get_file(job.parts[0].file_id)
    assert part is not None and part.expires_at < datetime.now(UTC) + timedelta(days=31)
