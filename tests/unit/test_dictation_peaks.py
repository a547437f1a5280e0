"""The waveform of a dictation's audio part (office/dictation_files.audio_peaks): min/max
pairs per slice, from 16-bit WAV with the standard library and from other formats through
sox, read in chunks; what cannot be decoded is refused with a reason."""

from __future__ import annotations

import math
import shutil
import subprocess
import wave
from pathlib import Path

import pytest

from heimbuero.office import dictation_files as media


def write_wav(path: Path, samples: list[int], channels: int = 1, rate: int = 8000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(s.to_bytes(2, "little", signed=True) for s in samples))
    return path


def loud_then_silent(seconds: int, rate: int = 8000) -> list[int]:
    """A full-scale 400 Hz tone for the first half, silence for the second."""
    half = seconds * rate // 2
    tone = [round(32000 * math.sin(2 * math.pi * 400 * i / rate)) for i in range(half)]
    return tone + [0] * half


def test_wav_peaks_follow_the_sound(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav", loud_then_silent(4))
    peaks = media.audio_peaks(path, "a.wav", 4.0)
    assert len(peaks) == 2 * media.PEAK_BUCKETS
    lows, highs = peaks[0::2], peaks[1::2]
    half = media.PEAK_BUCKETS // 2
    assert all(
        lo <= -100 and hi >= 100 for lo, hi in zip(lows[: half - 1], highs[: half - 1], strict=True)
    )
    assert all(
        lo == 0 and hi == 0 for lo, hi in zip(lows[half + 1 :], highs[half + 1 :], strict=True)
    )
    assert all(-127 <= v <= 127 for v in peaks)


def test_short_part_has_fewer_slices_and_stereo_reads_the_first_channel(tmp_path: Path) -> None:
    left = [9000 if i % 2 else -9000 for i in range(100)]  # 100 frames; the right louder
    stereo = write_wav(tmp_path / "s.wav", [v for s in left for v in (s, 20000)], channels=2)
    peaks = media.audio_peaks(stereo, "s.wav", 0.0125)
    assert len(peaks) == 2 * 100  # one slice per frame, not 1600 made up
    assert max(peaks) == 9000 * 127 // 32767 and min(peaks) == -9000 * 127 // 32768


def test_long_wav_in_chunks(tmp_path: Path) -> None:
    """Longer than one read chunk: every slice filled, the loud half where it is."""
    seconds = 40  # 320,000 frames, five chunks
    path = write_wav(tmp_path / "long.wav", loud_then_silent(seconds))
    peaks = media.audio_peaks(path, "long.wav", float(seconds), buckets=100)
    assert len(peaks) == 200
    assert peaks[1::2][:49] == [max(peaks)] * 49 and peaks[1::2][51:] == [0] * 49


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
def test_other_formats_through_sox(tmp_path: Path) -> None:
    source = write_wav(tmp_path / "src.wav", loud_then_silent(10, 16000), rate=16000)
    ogg = tmp_path / "diktat.ogg"
    subprocess.run(["sox", str(source), str(ogg)], check=True, capture_output=True)
    peaks = media.audio_peaks(ogg, "diktat.ogg", media.measure_audio(ogg, "diktat.ogg"))
    n = len(peaks) // 2
    assert n > 1000
    highs = peaks[1::2]
    assert min(highs[: n // 2 - 20]) > 80 and max(highs[n // 2 + 20 :]) < 5


def test_not_audio_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "x.mp3"
    junk.write_bytes(b"no sound here" * 100)
    with pytest.raises(media.AudioRefused, match="no waveform"):
        media.audio_peaks(junk, "x.mp3", 3.0)
