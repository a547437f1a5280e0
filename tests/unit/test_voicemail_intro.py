"""What the server says before each message on `*86` (office/voicemail.py, pure): the
caller digit by digit in national format (or "unterdrückt"/"unbekannt"), the day ("heute",
"gestern", else weekday and date) and the time in the box's zone; which boxes' message
waiting the server sends again after reading the store; the sweep of old intros."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from heimbuero.office.voicemail import intro_text, spoken_caller, spoken_time

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 12, 5, 10, 0, tzinfo=BERLIN)  # a Saturday


@pytest.mark.parametrize(
    ("caller", "spoken"),
    [
        ("+4917112345678", "0 1 7 1 1 2 3 4 5 6 7 8"),
        ("004989123", "0 8 9 1 2 3"),
        ("08912345", "0 8 9 1 2 3 4 5"),
        ("+43123", "plus 4 3 1 2 3"),
        ("0043123", "plus 4 3 1 2 3"),
        ("anonymous", "unterdrückt"),
        ("Anonymous", "unterdrückt"),
        ("", "unbekannt"),
        ("anna", "anna"),
        ("unknown", "unbekannt"),
        ("Anna Bell", "unbekannt"),
        ("+49 (0)89 / 1;x", "unbekannt"),
    ],
)
def test_the_caller_digit_by_digit(caller: str, spoken: str) -> None:
    assert spoken_caller(caller) == spoken


def test_today_yesterday_and_older_days() -> None:
    assert spoken_time(datetime(2026, 12, 5, 9, 7, tzinfo=BERLIN), NOW) == "heute um 9 Uhr 7"
    assert spoken_time(datetime(2026, 12, 4, 14, 0, tzinfo=BERLIN), NOW) == "gestern um 14 Uhr"
    assert (
        spoken_time(datetime(2026, 12, 3, 14, 5, tzinfo=BERLIN), NOW)
        == "am Donnerstag, 3. Dezember, um 14 Uhr 5"
    )
    assert (
        spoken_time(datetime(2026, 3, 1, 0, 30, tzinfo=BERLIN), NOW)
        == "am Sonntag, 1. März, um 0 Uhr 30"
    )


def test_the_day_is_the_boxs_not_utcs() -> None:
    """23:30 UTC on the 4th is 00:30 on the 5th in Berlin: "heute", not "gestern"."""
    at = datetime(2026, 12, 4, 23, 30, tzinfo=UTC).astimezone(BERLIN)
    assert spoken_time(at, datetime(2026, 12, 5, 9, 0, tzinfo=UTC)) == "heute um 0 Uhr 30"


def test_the_whole_intro() -> None:
    at = datetime(2026, 12, 3, 14, 5, tzinfo=BERLIN)
    assert intro_text(1, "+4917112345678", at, NOW) == (
        "Nachricht 1, von 0 1 7 1 1 2 3 4 5 6 7 8, am Donnerstag, 3. Dezember, um 14 Uhr 5."
    )
    assert intro_text(2, "anonymous", NOW, NOW) == "Nachricht 2, von unterdrückt, heute um 10 Uhr."


def test_changed_boxes() -> None:
    """The boxes whose message waiting is to be sent again after the store was read: counts
    that differ, boxes that appeared, boxes that emptied."""
    from heimbuero.office.voicemail import changed_boxes

    known = {"mueller": (1, 0), "anna": (0, 2), "schulz": (1, 1)}
    stored = {"mueller": (0, 1), "anna": (0, 2), "ben": (1, 0)}
    assert changed_boxes(known, stored) == ["ben", "mueller", "schulz"]
    assert changed_boxes({}, {}) == [] and changed_boxes({"a": (0, 0)}, {}) == []


def test_old_intros_are_swept(tmp_path: Path) -> None:
    """The intros (one per message and day) are removed after two days; other prompts stay."""
    import os

    from heimbuero.services.mediaapps import sweep_intros

    intros = tmp_path / "media-cache" / "intros"
    intros.mkdir(parents=True)
    old, new = intros / "tts-old.wav", intros / "tts-new.wav"
    other = tmp_path / "media-cache" / "tts-menu.wav"
    for p in (old, new, other):
        p.write_bytes(b"RIFF")
    now = 1_800_000_000.0
    for p in (old, other):
        os.utime(p, (now - 3 * 86400, now - 3 * 86400))
    os.utime(new, (now - 3600, now - 3600))
    assert sweep_intros(tmp_path, now) == 1
    assert not old.exists() and new.exists() and other.exists()
