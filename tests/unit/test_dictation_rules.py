"""The dictation job's rules (office/dictation.py): the state table, the queue order, and
the Normzeilen count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from heimbuero.office.dictation import (
    Action,
    Priority,
    State,
    TransitionError,
    count_normzeilen,
    is_overdue,
    lock_expired,
    next_state,
    paragraphs_of_text,
    queue_key,
    status_text,
)

NOW = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)


def test_the_jobs_life() -> None:
    assert next_state(State.NEW, Action.TAKE) is State.IN_PROGRESS
    assert next_state(State.IN_PROGRESS, Action.SUBMIT) is State.DELIVERED
    assert next_state(State.IN_PROGRESS, Action.SUBMIT, review=True) is State.REVIEW
    assert next_state(State.REVIEW, Action.APPROVE) is State.DELIVERED
    assert next_state(State.DELIVERED, Action.CORRECT) is State.CORRECTIONS_REQUESTED
    assert next_state(State.CORRECTIONS_REQUESTED, Action.TAKE) is State.IN_PROGRESS
    # an expired or released lock returns to where the job was taken from
    assert next_state(State.IN_PROGRESS, Action.EXPIRE) is State.NEW
    pool = State.CORRECTIONS_REQUESTED
    assert next_state(State.IN_PROGRESS, Action.RELEASE, pool=pool) is pool


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (State.IN_PROGRESS, Action.TAKE),  # taken already: the second typist loses
        (State.NEW, Action.SUBMIT),
        (State.DELIVERED, Action.TAKE),
        (State.NEW, Action.CORRECT),
        (State.REVIEW, Action.CORRECT),
    ],
)
def test_moves_the_table_does_not_have(state: State, action: Action) -> None:
    with pytest.raises(TransitionError):
        next_state(state, action)


def test_lock_and_overdue() -> None:
    assert lock_expired(State.IN_PROGRESS, NOW, NOW)
    assert not lock_expired(State.IN_PROGRESS, NOW + timedelta(seconds=1), NOW)
    assert not lock_expired(State.NEW, None, NOW)
    assert is_overdue(State.NEW, NOW - timedelta(minutes=1), NOW)
    assert not is_overdue(State.DELIVERED, NOW - timedelta(minutes=1), NOW)
    assert not is_overdue(State.NEW, None, NOW)


def test_queue_order_urgent_then_due_then_age() -> None:
    early, late = NOW, NOW + timedelta(hours=1)
    jobs = [
        ("normal-none", Priority.NORMAL, None, NOW),
        ("normal-late", Priority.NORMAL, late, NOW),
        ("urgent-late", Priority.URGENT, late, NOW),
        ("normal-early", Priority.NORMAL, early, NOW),
        ("urgent-none", Priority.URGENT, None, NOW),
    ]
    ordered = [j[0] for j in sorted(jobs, key=lambda j: queue_key(j[1], j[2], j[3]))]
    assert ordered == ["urgent-late", "urgent-none", "normal-early", "normal-late", "normal-none"]


def test_normzeilen() -> None:
    assert count_normzeilen([]).lines == 0
    assert count_normzeilen(["x" * 55]).lines == 1
    assert count_normzeilen(["x" * 56]).lines == 2
    # paragraph marks count nothing: 55 + 55 in two paragraphs = 110 in one = 2 lines
    assert count_normzeilen(["x" * 55, "y" * 55]).lines == 2
    assert count_normzeilen(["x" * 110]).lines == 2
    # spaces count; a line break inside a paragraph counts as one character
    assert count_normzeilen(["a b\nc"]).characters == 5
    assert count_normzeilen(["x" * 100], 50).lines == 2
    with pytest.raises(ValueError):
        count_normzeilen(["x"], 61)


def test_paragraphs_of_a_draft() -> None:
    text = "Sehr geehrte Damen und Herren,\r\n\r\nwir bieten an:\nTisch\n\n\n\nGruß"
    assert paragraphs_of_text(text) == [
        "Sehr geehrte Damen und Herren,",
        "wir bieten an:\nTisch",
        "Gruß",
    ]


def test_status_text() -> None:
    assert (
        status_text("Angebot Meier", State.IN_PROGRESS)
        == "Ihr Diktat 'Angebot Meier' ist in Arbeit"
    )


def test_audio_formats_and_durations(tmp_path: Path) -> None:
    import wave

    from heimbuero.office.dictation_files import AudioRefused, audio_type, measure_audio

    wav = tmp_path / "a.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 12000)
    assert measure_audio(wav, "a.wav") == 1.5
    # 100 MPEG-1 Layer III frames, 128 kbit/s, 44.1 kHz: 100 * 1152 samples
    mp3 = tmp_path / "b.mp3"
    mp3.write_bytes((b"\xff\xfb\x90\x00" + bytes(413)) * 100)
    assert measure_audio(mp3, "b.mp3") == pytest.approx(100 * 1152 / 44100, abs=0.05)
    assert audio_type("x.M4A") == "audio/mp4" and audio_type("x.opus") == "audio/ogg"
    for bad in ("diktat.dss", "diktat.DS2", "brief.pdf"):
        with pytest.raises(AudioRefused):
            audio_type(bad)
    junk = tmp_path / "c.wav"
    junk.write_bytes(b"not a wave file at all")
    with pytest.raises(AudioRefused):
        measure_audio(junk, "c.wav")


def test_who_may_dictate_on_a_clients_dictation_number() -> None:
    from heimbuero.office.dictation import NOT_A_USER_PHONE, UNKNOWN_CALLER, dictation_caller

    roles = {
        "mueller": ("client", "mueller", "+491701111111"),
        "geselle": ("employee", "mueller", "+491702222222"),
        "schulz": ("client", "schulz", "+491703333333"),
        "anna": ("agent", None, "+491704444444"),
        "twin1": ("employee", "twins", "+491705555555"),
        "twin2": ("employee", "twins", "+491705555555"),
    }
    # a phone of ours: a user of this client, nobody else (whatever number he claims)
    assert dictation_caller("mueller", roles, "geselle", None) == ("geselle", "")
    assert dictation_caller("mueller", roles, "schulz", "+491701111111") == (None, NOT_A_USER_PHONE)
    assert dictation_caller("mueller", roles, "anna", None) == (None, NOT_A_USER_PHONE)
    assert dictation_caller("mueller", roles, "ghost", None) == (None, NOT_A_USER_PHONE)
    # from the carrier: the client's user with that mobile; strangers, others' users, staff no
    assert dictation_caller("mueller", roles, None, "+491701111111") == ("mueller", "")
    assert dictation_caller("mueller", roles, None, "+491702222222") == ("geselle", "")
    for caller in ("+4930555123", "+491703333333", "+491704444444", None, ""):
        assert dictation_caller("mueller", roles, None, caller) == (None, UNKNOWN_CALLER)
    # two users with one mobile: not whose it is, so no one's
    assert dictation_caller("twins", roles, None, "+491705555555") == (None, UNKNOWN_CALLER)
