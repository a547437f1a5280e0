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
import threading
import wave
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
