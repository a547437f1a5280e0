"""The keys of a dictation machine, for dictation by phone.

`*` pauses and resumes, `1` plays back the last seconds and goes on recording at the end,
`0` discards everything and starts again, `#` (or hanging up) finishes. Other keys are
ignored. Sans-IO: the recorded audio and the keys come in, what to play comes out; the media
application (services/mediaapps.py) does the sockets and the clock.

Bounds: at most `max_seconds` of dictation are kept; recording time spent (discarded takes
included) is bounded to twice that, so a phone that sends no audio while the author stays on
the line cannot hold the call open for ever.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

BYTES_PER_SECOND = 16000  # 8 kHz, 16-bit mono
KEYS = "*#01"


class Action(enum.Enum):
    RECORD = "record"  # (go on) recording: play the resume beep
    PAUSED = "paused"  # recording paused: play the pause cue, wait for a key
    PLAYBACK = "playback"  # play `Step.audio`, then record on at the end
    DISCARDED = "discarded"  # everything recorded is gone: say so, record anew
    FINISH = "finish"  # the dictation is complete
    IGNORED = "ignored"  # not a dictation key: nothing changes


@dataclass(frozen=True)
class Step:
    action: Action
    audio: bytes = b""


class Dictaphone:
    def __init__(self, max_seconds: float, review_seconds: float = 10.0) -> None:
        if max_seconds <= 0 or review_seconds <= 0:
            raise ValueError("max_seconds and review_seconds must be positive")
        self.max_bytes = int(max_seconds * BYTES_PER_SECOND) & ~1
        self.review_bytes = int(review_seconds * BYTES_PER_SECOND) & ~1
        self.max_spent = 2 * max_seconds
        self.audio = bytearray()
        self.spent = 0.0  # seconds spent recording, discarded takes included
        self.paused = False

    @property
    def seconds(self) -> float:
        return len(self.audio) / BYTES_PER_SECOND

    @property
    def remaining(self) -> float:
        """Seconds the next recording may last (0: the dictation is at its limit)."""
        by_audio = (self.max_bytes - len(self.audio)) / BYTES_PER_SECOND
        return max(0.0, min(by_audio, self.max_spent - self.spent))

    def recorded(self, pcm: bytes, spent: float) -> None:
        """Audio recorded in one stretch that took `spent` seconds; kept up to the limit."""
        room = self.max_bytes - len(self.audio)
        self.audio += pcm[: max(0, room) & ~1]
        self.spent += max(0.0, spent)

    def key(self, digit: str) -> Step:
        if digit == "#":
            return Step(Action.FINISH)
        if digit == "*":
            self.paused = not self.paused
            return Step(Action.PAUSED if self.paused else Action.RECORD)
        if digit == "1":
            self.paused = False
            return Step(Action.PLAYBACK, bytes(self.audio[-self.review_bytes :]))
        if digit == "0":
            self.audio.clear()
            self.paused = False
            return Step(Action.DISCARDED)
        return Step(Action.IGNORED)
