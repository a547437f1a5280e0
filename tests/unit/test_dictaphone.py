"""The keys of a dictation machine (media/dictaphone.py): pause, play back, discard, finish,
and the bounds of length and time."""

import pytest

from heimbuero.media.dictaphone import BYTES_PER_SECOND, Action, Dictaphone


def seconds(n: float, fill: int = 1) -> bytes:
    return bytes([fill]) * int(n * BYTES_PER_SECOND)


def test_record_pause_resume_and_finish():
    d = Dictaphone(max_seconds=60)
    d.recorded(seconds(2), 2.0)
    assert d.key("*").action is Action.PAUSED and d.paused
    assert d.key("*").action is Action.RECORD and not d.paused
    d.recorded(seconds(1, 2), 1.0)
    assert d.key("#").action is Action.FINISH
    assert d.audio == seconds(2) + seconds(1, 2) and d.seconds == 3.0


def test_one_plays_back_the_last_seconds_and_recording_goes_on_at_the_end():
    d = Dictaphone(max_seconds=60, review_seconds=1.5)
    d.recorded(seconds(2, 1) + seconds(1, 2), 3.0)
    d.key("*")
    step = d.key("1")
    assert step.action is Action.PLAYBACK and not d.paused
    assert step.audio == seconds(0.5, 1) + seconds(1, 2)
    d.recorded(seconds(1, 3), 1.0)
    assert bytes(d.audio[-BYTES_PER_SECOND:]) == seconds(1, 3) and d.seconds == 4.0
    # with less recorded than the review length, all of it
    assert Dictaphone(60).key("1").audio == b""


def test_zero_discards_everything_and_starts_again():
    d = Dictaphone(max_seconds=60)
    d.recorded(seconds(5), 5.0)
    d.key("*")
    assert d.key("0").action is Action.DISCARDED
    assert d.audio == b"" and not d.paused
    d.recorded(seconds(1, 9), 1.0)
    assert d.audio == seconds(1, 9)


def test_other_keys_change_nothing():
    d = Dictaphone(max_seconds=60)
    d.recorded(seconds(1), 1.0)
    for key in "23456789AD":
        assert d.key(key).action is Action.IGNORED
    assert d.audio == seconds(1) and not d.paused


def test_the_length_is_bounded_and_so_is_the_time_spent_recording():
    d = Dictaphone(max_seconds=10)
    d.recorded(seconds(8), 8.0)
    assert d.remaining == pytest.approx(2.0)
    d.recorded(seconds(5), 5.0)  # more than fits: cut at the limit
    assert d.seconds == 10.0 and d.remaining == 0.0
    # a phone that sends nothing: the wall time spent bounds the call (twice the length)
    quiet = Dictaphone(max_seconds=10)
    for _ in range(3):
        quiet.recorded(b"", 6.0)
        quiet.key("0")
    assert quiet.seconds == 0.0 and quiet.remaining == 2.0
    quiet.recorded(b"", 2.0)
    assert quiet.remaining == 0.0
    with pytest.raises(ValueError):
        Dictaphone(max_seconds=0)


def test_odd_byte_counts_never_split_a_sample():
    d = Dictaphone(max_seconds=1)
    d.recorded(b"\x01" * (BYTES_PER_SECOND + 3), 1.0)
    assert len(d.audio) == BYTES_PER_SECOND
