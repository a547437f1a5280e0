"""The files of dictation: audio durations, resumable uploads on disk, the typed document
(DOCX from a client's letterhead template), and adopting finished bytes into the file
service. Every function here blocks (disk): callers run them in a worker thread.

Audio formats: WAV is measured with the standard library's `wave`; MP3, M4A/AAC and
OGG (Vorbis/Opus) with mutagen. DSS (Olympus/Grundig dictation machines) has no decoder
here and is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import wave
from array import array
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from heimbuero.office.dictation import AUDIO_FORMATS
from heimbuero.office.files import (
    MB,
    FileService,
    QuotaExceeded,
    _fsync_dir,
    audio_duration,
    new_file_id,
)
from heimbuero.store.files import FileRecord

log = logging.getLogger(__name__)

UPLOAD_DIR = "dictation"  # files/dictation/<upload id>: resumable uploads in progress
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
UPLOAD_ID_LEN = 43  # secrets.token_urlsafe(32)
UPLOAD_DAYS = 2  # an unfinished upload is dropped after this
_adopt_lock = threading.Lock()


class AudioRefused(ValueError):
    """Not an audio file we can take (the message says why)."""


def audio_type(name: str) -> str:
    """The content type of an audio part by its file name; AudioRefused otherwise."""
    suffix = Path(name).suffix.lower()
    if suffix == ".dss" or suffix == ".ds2":
        raise AudioRefused("DSS dictation files cannot be played here: no decoder; send WAV or MP3")
    if suffix not in AUDIO_FORMATS:
        raise AudioRefused(f"not a supported audio file: {name!r} (WAV, MP3, M4A/AAC, OGG/Opus)")
    return AUDIO_FORMATS[suffix]


def measure_audio(path: Path, name: str) -> float:
    """The playing time in seconds. AudioRefused when the file is not what its name says."""
    if Path(name).suffix.lower() == ".wav":
        try:
            with wave.open(str(path), "rb") as w:
                rate = w.getframerate()
                if rate <= 0:
                    raise AudioRefused(f"{name!r}: a WAV file without a sample rate")
                return round(w.getnframes() / rate, 3)
        except (wave.Error, EOFError) as exc:
            raise AudioRefused(f"{name!r} is not a readable WAV file: {exc}") from None
    seconds = audio_duration(path)
    if seconds is None:
        raise AudioRefused(f"{name!r} is not a readable audio file")
    return seconds


# -- the waveform of an audio part ---------------------------------------------------------------

PEAK_BUCKETS = 1600  # min/max pairs of a part's waveform (a wide screen's pixels, about)
PEAK_RATE = 8000  # what sox decodes to for the waveform: plenty for a picture of speech
_CHUNK_FRAMES = 1 << 16  # frames read at a time: the memory used does not grow with the length


class _Peaks:
    """Min/max per bucket, fed 16-bit samples in chunks (mono: one channel's samples)."""

    def __init__(self, frames: int, buckets: int) -> None:
        self.size = max(1, -(-max(frames, 1) // buckets))  # frames per bucket (ceiling)
        self.buckets = max(1, min(buckets, -(-max(frames, 1) // self.size)))
        self.lo = [0] * self.buckets
        self.hi = [0] * self.buckets
        self.seen = [False] * self.buckets
        self.at = 0  # frames fed so far

    def feed(self, samples: array[int]) -> None:
        i, n = 0, len(samples)
        while i < n:
            b = min(self.buckets - 1, (self.at + i) // self.size)
            end = n if b == self.buckets - 1 else min(n, (b + 1) * self.size - self.at)
            part = samples[i:end]
            lo, hi = min(part), max(part)
            if self.seen[b]:
                self.lo[b], self.hi[b] = min(self.lo[b], lo), max(self.hi[b], hi)
            else:
                self.lo[b], self.hi[b], self.seen[b] = lo, hi, True
            i = end
        self.at += n

    def result(self) -> list[int]:
        """min0, max0, min1, max1, … scaled to -127..127 (a byte each is detail enough)."""
        out: list[int] = []
        for lo, hi in zip(self.lo, self.hi, strict=True):
            out += (lo * 127 // 32768, hi * 127 // 32767)
        return out


def _samples(data: bytes, channels: int) -> array[int]:
    a = array("h")
    a.frombytes(data[: len(data) - len(data) % 2])
    if sys.byteorder == "big":
        a.byteswap()
    return a[::channels] if channels > 1 else a


def audio_peaks(
    path: Path, name: str, seconds: float | None, buckets: int = PEAK_BUCKETS
) -> list[int]:
    """The waveform of an audio part: `buckets` (fewer for a short part) pairs of the lowest
    and highest sample, as a flat list min0, max0, min1, max1, … in -127..127.

    Read in chunks, so a 60-minute dictation needs no more memory than a short one: 16-bit
    WAV with the standard library's `wave` (the first channel), anything else decoded by sox
    (as it does for the phone's prompts) to 8 kHz mono on a pipe. AudioRefused when the file
    cannot be decoded here (no sox, or a format sox lacks, e.g. M4A without its plugin)."""
    if Path(name).suffix.lower() == ".wav":
        try:
            with wave.open(str(path), "rb") as w:
                if w.getsampwidth() == 2 and w.getcomptype() == "NONE":
                    channels = w.getnchannels()
                    peaks = _Peaks(w.getnframes(), buckets)
                    while data := w.readframes(_CHUNK_FRAMES):
                        peaks.feed(_samples(data, channels))
                    return peaks.result()
        except (wave.Error, EOFError):
            pass  # (sox may still read it: 8-bit, 24-bit, A-law WAV)
    sox = shutil.which("sox")
    if sox is None:
        raise AudioRefused("no waveform: sox is not installed")
    frames = round((seconds or 0.0) * PEAK_RATE)
    peaks = _Peaks(frames, buckets)
    cmd = [sox, "-q", str(path), "-t", "raw", "-r", str(PEAK_RATE), "-c", "1", "-b", "16",
           "-e", "signed-integer", "-L", "-"]  # fmt: skip
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        try:
            while data := proc.stdout.read(_CHUNK_FRAMES * 2):
                a = array("h")
                a.frombytes(data[: len(data) - len(data) % 2])
                if sys.byteorder == "big":
                    a.byteswap()
                peaks.feed(a)
            code = proc.wait(timeout=60)
        except BaseException:
            proc.kill()
            raise
    if code != 0 or peaks.at == 0:
        raise AudioRefused(f"no waveform: sox could not decode {name!r}")
    return peaks.result()


# -- resumable uploads on disk ------------------------------------------------------------------


def upload_dir(files_dir: Path) -> Path:
    d = files_dir / UPLOAD_DIR
    d.mkdir(parents=True, exist_ok=True)
    return d


def new_upload_id() -> str:
    return secrets.token_urlsafe(32)


def valid_upload_id(upload_id: str) -> bool:
    return len(upload_id) == UPLOAD_ID_LEN and all(c.isalnum() or c in "-_" for c in upload_id)


def upload_path(files_dir: Path, upload_id: str) -> Path:
    return upload_dir(files_dir) / upload_id


def upload_offset(path: Path) -> int:
    """The bytes received so far: what is on disk is the truth (a broken-off PATCH keeps
    every byte it wrote)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class Appender:
    """Appends a PATCH body to an upload file; `write` takes pieces, `close` makes them
    durable. What reached `write` stays, also when the request breaks off."""

    def __init__(self, path: Path) -> None:
        self._out = path.open("ab")

    def write(self, data: bytes) -> None:
        self._out.write(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._out.flush()
            os.fsync(self._out.fileno())
        self._out.close()


def upload_expiry(now: datetime) -> datetime:
    return now + timedelta(days=UPLOAD_DAYS)


# -- adopting bytes into the file service --------------------------------------------------------


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MB):
            h.update(chunk)
    return h.hexdigest()


def adopt_file(
    service: FileService,
    path: Path,
    owner: str,
    name: str,
    content_type: str,
    now: datetime,
    duration_s: float | None = None,
) -> FileRecord:
    """Move finished bytes at `path` into the file service as `owner`'s file (quota of
    [files] checked); returns the record. The bytes are moved first, then the record is
    written, as the file service does (a crash between leaves bytes the next start removes)."""
    size = path.stat().st_size
    if size > service.max_bytes:
        raise QuotaExceeded(f"file too large: the limit is {service.settings.max_size_mb} MB")
    record = FileRecord(
        id=new_file_id(), owner=owner, name=name, content_type=content_type, size=size,
        sha256=sha256_of(path), duration_s=duration_s, created_at=now,
        expires_at=now + timedelta(days=service.settings.link_days),
    )  # fmt: skip
    final = service.files_dir / record.id
    with _adopt_lock:
        os.replace(path, final)
        _fsync_dir(service.files_dir)
        try:
            used = service.store.add_file_within_quota(record, service.quota_bytes)
        except BaseException:
            final.unlink(missing_ok=True)
            raise
        if used is not None:
            final.unlink(missing_ok=True)
            raise QuotaExceeded(
                f"quota exceeded: {owner} stores {used / MB:.1f} MB of "
                f"{(service.quota_bytes or 0) / MB:.1f} MB"
            )
    return record


def adopt_bytes(
    service: FileService, data: bytes, owner: str, name: str, content_type: str, now: datetime
) -> FileRecord:
    tmp = upload_dir(service.files_dir) / f"doc-{secrets.token_hex(8)}"
    tmp.write_bytes(data)
    try:
        return adopt_file(service, tmp, owner, name, content_type, now)
    finally:
        tmp.unlink(missing_ok=True)


# -- documents ------------------------------------------------------------------------------------


def check_template(data: bytes) -> None:
    """A letterhead template must be a DOCX that docxtpl can fill; ValueError otherwise."""
    from docxtpl import DocxTemplate  # type: ignore[import-not-found,import-untyped,unused-ignore]

    try:
        tpl = DocxTemplate(io.BytesIO(data))
        tpl.render(_context("Titel", ["Text"], "", ""), autoescape=True)
    except Exception as exc:  # noqa: BLE001 - any broken template: one clear refusal
        raise ValueError(f"not a usable DOCX template: {exc}") from None


def _context(title: str, paragraphs: list[str], client_name: str, author: str) -> dict[str, Any]:
    from docxtpl import Listing  # type: ignore[import-not-found,import-untyped,unused-ignore]

    return {
        "title": title,
        "paragraphs": paragraphs,
        # "\n" a line break, "\a" a new paragraph (docxtpl's Listing)
        "text": Listing("\a".join(paragraphs)),
        "client": client_name,
        "author": author,
        "date": datetime.now().strftime("%d.%m.%Y"),
    }


def render_docx(
    template: bytes | None, title: str, paragraphs: list[str], client_name: str, author: str
) -> bytes:
    """The typed text as DOCX: filled into the client's letterhead template with docxtpl
    (placeholders `{{ title }}`, `{{ client }}`, `{{ author }}`, `{{ date }}`, and the text
    as `{{ text }}` or paragraph by paragraph: three paragraphs `{%p for p in paragraphs %}`,
    `{{ p }}`, `{%p endfor %}`), or, without a
    template, a plain document made with python-docx: the title as heading, then the
    paragraphs (a line break inside a paragraph stays a line break)."""
    out = io.BytesIO()
    if template is not None:
        from docxtpl import DocxTemplate  # type: ignore[import-not-found,import-untyped,unused-ignore]

        tpl = DocxTemplate(io.BytesIO(template))
        # autoescape: typed "&" and "<" stay text (without it they break the document's XML)
        tpl.render(_context(title, paragraphs, client_name, author), autoescape=True)
        tpl.save(out)
        return out.getvalue()
    import docx  # type: ignore[import-not-found,import-untyped,unused-ignore]

    document = docx.Document()
    document.core_properties.title = title
    document.core_properties.author = author
    document.add_heading(title, level=1)
    for p in paragraphs:
        para = document.add_paragraph()
        lines = p.split("\n")
        for i, line in enumerate(lines):
            run = para.add_run(line)
            if i < len(lines) - 1:
                run.add_break()
    document.save(out)
    return out.getvalue()


def docx_paragraphs(data: bytes, skip_heading: str | None = None) -> list[str]:
    """The text of a DOCX as its paragraphs (a line break inside one is "\\n"), tables
    included; the heading equal to `skip_heading` (the title the default document adds) is
    left out. ValueError when it is no DOCX."""
    import docx  # type: ignore[import-not-found,import-untyped,unused-ignore]

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"not a DOCX document: {exc}") from None
    paras = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            for cell in row.cells:
                paras += [p.text for p in cell.paragraphs]
    if skip_heading is not None and paras and paras[0] == skip_heading:
        paras = paras[1:]
    return [p for p in paras if p.strip()]
