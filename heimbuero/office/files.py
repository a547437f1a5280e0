"""The file-transfer service's rules: files streamed to disk with their SHA-256, size limits
and quotas, audio durations, who may download, link expiry, deletion.

Nothing here touches the network or the event loop: every method that reads the disk or the
store blocks, and the HTTP layer calls it from a worker thread. An upload is an `Upload`
fed with the raw multipart/form-data body in pieces; its bytes go to `files/tmp/` and reach
`files/<id>` only when the whole file arrived, matched the digest the client sent, and fit the
owner's quota. A file on disk without a record is never served and is removed at the next
start; a record is written only after its bytes are in place.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO
from xml.sax.saxutils import escape

try:  # python-multipart >= 0.0.13 is importable as python_multipart
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # pragma: no cover - older python-multipart
    from multipart.multipart import (  # type: ignore[no-redef,import-untyped,unused-ignore]
        MultipartParser,
        parse_options_header,
    )

from heimbuero.config import FileSettings
from heimbuero.office.roles import Role, is_staff
from heimbuero.store.db import Store
from heimbuero.store.files import DownloadRecord, FileRecord

log = logging.getLogger(__name__)

LINK_PATH = "/ft"  # uploads: POST /ft; downloads: GET /ft/<file id>
FILE_INFO_TYPE = "application/vnd.gsma.rcs-ft-http+xml"
MB = 1024 * 1024  # the settings' "mb" are mebibytes
# Multipart framing (boundaries, part headers) a body may carry on top of the file itself.
FORM_OVERHEAD = 64 * 1024
MAX_OTHER_PARTS = 64 * 1024  # bytes of form fields besides the file, all of them together
READ_CHUNK = 1024 * 1024
TMP_DIR = "tmp"

FILE_ID_RE = re.compile(r"[A-Za-z0-9_-]{32,64}\Z")
_CONTENT_TYPE_RE = re.compile(
    r"[A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,127}"
    r"(?:;[ \t]*[A-Za-z0-9!#$&^_.+-]+=(?:[A-Za-z0-9!#$&^_.+-]+|\"[^\"\\\r\n]*\"))*\Z"
)
# Characters XML 1.0 cannot carry, plus controls and bidi overrides a file name has no use for.
_NAME_JUNK_RE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]"
)
_XML_INVALID_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_AUDIO_SUFFIXES = frozenset(
    (".mp3", ".m4a", ".mp4", ".aac", ".wav", ".ogg", ".oga", ".opus", ".flac", ".wma", ".aiff")
    + (".aif", ".spx", ".mpc", ".ape", ".wv")
)


# -- errors ----------------------------------------------------------------------------------


class FileError(Exception):
    """An upload or download the service refuses; `status` is the HTTP status to answer."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadUpload(FileError):
    """The request is not one multipart/form-data body with exactly one file part."""


class UnsupportedUpload(FileError):
    status = 415


class FileTooLarge(FileError):
    status = 413


class QuotaExceeded(FileError):
    # 413 rather than 507: the limit is the user's, not a failing disk; a 5xx would make
    # clients retry the same upload and monitoring count it as a server fault.
    status = 413


class DigestMismatch(FileError):
    """The digest the client sent does not match what arrived."""


class FileUnavailable(FileError):
    """A file on record whose bytes are missing or damaged on disk."""

    status = 500


# -- pure rules ------------------------------------------------------------------------------


def new_file_id() -> str:
    """An unguessable, URL-safe file id (256 random bits)."""
    return secrets.token_urlsafe(32)


def may_read(owner: str, parties: Sequence[str], user: str, role: str) -> bool:
    """The owner, the parties and the provider's staff may download and see a file."""
    return user == owner or user in parties or is_staff(role)


def may_delete(owner: str, user: str, role: str) -> bool:
    """Only the owner and admins may delete a file."""
    return user == owner or role == Role.ADMIN


def megabytes(n: int) -> str:
    return f"{n / MB:.1f} MB"


def clean_file_name(raw: bytes) -> str:
    """A file name to store and show: the last path component, UTF-8 (Latin-1 when it is
    not UTF-8), without control characters, at most 255 characters; never empty."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = _NAME_JUNK_RE.sub("", text).strip().strip(".")
    return text[:255] or "file"


def clean_content_type(raw: str | None) -> str:
    """The part's media type when it is well-formed, else application/octet-stream."""
    value = (raw or "").strip()
    if not value or len(value) > 200 or not _CONTENT_TYPE_RE.match(value):
        return "application/octet-stream"
    return value


def rfc3339(moment: datetime) -> str:
    """UTC time as RFC 3339 with a Z, as the RCS file-info document carries it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _xml_text(text: str) -> str:
    return escape(_XML_INVALID_RE.sub("", text))


def file_info_document(record: FileRecord, link: str) -> bytes:
    """The RCS file-info document (GSMA RCC.07 FT over HTTP) announcing a stored file."""
    attr = escape(_XML_INVALID_RE.sub("", link), {'"': "&quot;"})
    doc = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<file xmlns="urn:gsma:params:xml:ns:rcs:rcs:fthttp">'
        '<file-info type="file">'
        f"<file-size>{record.size}</file-size>"
        f"<file-name>{_xml_text(record.name)}</file-name>"
        f"<content-type>{_xml_text(record.content_type)}</content-type>"
        f'<data url="{attr}" until="{rfc3339(record.expires_at)}"/>'
        "</file-info></file>"
    )
    return doc.encode("utf-8")


def repr_digest(sha256_hex: str) -> str:
    """The Repr-Digest field value (RFC 9530) of a SHA-256 given as hex."""
    return "sha-256=:" + base64.b64encode(bytes.fromhex(sha256_hex)).decode("ascii") + ":"


def expected_sha256(repr_digest_value: str | None, digest_value: str | None) -> list[bytes]:
    """The SHA-256 values a client announced in `Repr-Digest`/`Content-Digest` (RFC 9530,
    `sha-256=:BASE64:`) and `Digest` (RFC 3230, `SHA-256=BASE64`); other algorithms are
    ignored. Raises BadUpload for a sha-256 entry that is not valid base64 of 32 octets."""
    found: list[bytes] = []
    for value, rfc9530 in ((repr_digest_value, True), (digest_value, False)):
        if not value:
            continue
        for item in value.split(","):
            key, sep, raw = item.strip().partition("=")
            if not sep or key.strip().lower() != "sha-256":
                continue
            raw = raw.strip()
            if rfc9530:
                if len(raw) < 2 or raw[0] != ":" or raw[-1] != ":":
                    raise BadUpload("Repr-Digest: sha-256 must be written as sha-256=:BASE64:")
                raw = raw[1:-1]
            try:
                octets = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                octets = b""
            if len(octets) != 32:
                raise BadUpload("the sha-256 digest the request names is not 32 octets of base64")
            found.append(octets)
    return found


def is_audio(name: str, content_type: str) -> bool:
    return content_type.lower().startswith("audio/") or Path(name).suffix.lower() in (
        _AUDIO_SUFFIXES
    )


def audio_duration(path: Path) -> float | None:
    """The playing time in seconds of an audio file mutagen understands, else None."""
    try:
        import mutagen

        audio = mutagen.File(path)
    except Exception as exc:  # noqa: BLE001 - any damaged or unknown file: no duration
        log.info("no audio duration for %s: %s", path.name, exc)
        return None
    length = getattr(getattr(audio, "info", None), "length", None)
    if not isinstance(length, int | float) or length <= 0 or length != length:
        return None
    return round(float(length), 3)


# -- uploads ---------------------------------------------------------------------------------


class Upload:
    """One upload in progress: a streaming multipart/form-data parser writing the one part
    named `field` (with a filename) to a temporary file while hashing it.

    `feed()` takes the body in pieces of any size; it raises FileError as soon as the file
    grows beyond `max_bytes` or `allowance`. `finish()` checks the body was complete.
    `abort()` removes the temporary file; it is safe to call at any time, also twice.
    Not thread-safe: one thread at a time (one after the other is fine)."""

    def __init__(
        self,
        tmp_dir: Path,
        boundary: bytes,
        field: str,
        max_bytes: int,
        allowance: int | None,
        used: int = 0,
        quota: int | None = None,
        hash_body: bool = False,
    ) -> None:
        self.field = field.lower()
        self.max_bytes = max_bytes
        self.allowance = allowance
        self.used, self.quota = used, quota
        self.size = 0
        self.name = "file"
        self.content_type = "application/octet-stream"
        self.part_digests: list[bytes] = []  # digests named in the file part's own headers
        self._hash = hashlib.sha256()
        self._body_hash = hashlib.sha256() if hash_body else None
        self._other_bytes = 0
        self._fed = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._field_name = bytearray()
        self._field_value = bytearray()
        self._in_file = False
        self._file_parts = 0
        self._ended = False
        self._closed = False
        self.stored = False  # moved in place: nothing left to clean up
        fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
        self.path = Path(tmp)
        self._out: BinaryIO = os.fdopen(fd, "wb")
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    # -- parser callbacks --

    def _part_begin(self) -> None:
        self._headers = []
        self._in_file = False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._field_value += data[start:end]

    def _header_end(self) -> None:
        self._headers.append((bytes(self._field_name).strip().lower(), bytes(self._field_value)))
        self._field_name.clear()
        self._field_value.clear()

    def _headers_finished(self) -> None:
        headers = dict(self._headers)
        _, params = parse_options_header(headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("latin-1").lower()
        if name != self.field or b"filename" not in params:
            return
        self._file_parts += 1
        if self._file_parts > 1:
            raise BadUpload(f"expected exactly one file part named {self.field!r}, got more")
        self._in_file = True
        self.name = clean_file_name(params[b"filename"])
        self.content_type = clean_content_type(headers.get(b"content-type", b"").decode("latin-1"))
        self.part_digests = expected_sha256(
            (headers.get(b"repr-digest") or headers.get(b"content-digest") or b"").decode(
                "latin-1"
            ),
            headers.get(b"digest", b"").decode("latin-1"),
        )

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        n = end - start
        if not self._in_file:
            self._other_bytes += n
            if self._other_bytes > MAX_OTHER_PARTS:
                raise BadUpload("the form carries too much besides the file")
            return
        self.size += n
        if self.size > self.max_bytes:
            raise FileTooLarge(f"file too large: the limit is {megabytes(self.max_bytes)}")
        if self.allowance is not None and self.size > self.allowance:
            raise QuotaExceeded(self._quota_message())
        chunk = memoryview(data)[start:end]
        self._out.write(chunk)
        self._hash.update(chunk)

    def _part_end(self) -> None:
        self._in_file = False

    def _end(self) -> None:
        self._ended = True

    def _quota_message(self) -> str:
        quota = self.quota if self.quota is not None else 0
        return (
            f"quota exceeded: you store {megabytes(self.used)} of your {megabytes(quota)}; "
            "delete files or wait until their links expire"
        )

    # -- the caller's side --

    def feed(self, data: bytes) -> None:
        """Parse the next piece of the body (blocking: disk writes and hashing)."""
        if self._closed:
            raise BadUpload("upload already closed")
        self._fed += len(data)
        if self._fed > self.max_bytes + FORM_OVERHEAD + MAX_OTHER_PARTS:
            # the file part alone stays in its limit, but the body around it may not grow
            raise FileTooLarge(f"request too large: the file limit is {megabytes(self.max_bytes)}")
        if self._body_hash is not None:
            self._body_hash.update(data)
        try:
            self._parser.write(data)
        except FileError:
            raise
        except ValueError as exc:  # the parser's errors are ValueErrors
            raise BadUpload(f"malformed multipart/form-data: {exc}") from None

    def finish(self) -> None:
        """The body ended: check it held the whole form with the file, and make the bytes
        durable. Raises BadUpload otherwise."""
        if not self._ended:
            raise BadUpload("the multipart/form-data body ended before its closing boundary")
        if self._file_parts == 0:
            raise BadUpload(f"no file: expected a part named {self.field!r} with a filename")
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        self._closed = True

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def matches(self, digest: bytes) -> bool:
        """True when `digest` is the SHA-256 of the file or of the whole body."""
        if digest == self._hash.digest():
            return True
        return self._body_hash is not None and digest == self._body_hash.digest()

    def abort(self) -> None:
        """Drop the upload: close and delete the temporary file (nothing else exists yet)."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(OSError):
                self._out.close()
        if self.stored:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.error("cannot remove the partial upload %s: %s", self.path, exc)


class Download:
    """A stored file being read out: `read()` gives the next chunk and hashes it; `intact`
    tells, once everything was read, whether the bytes still match the stored SHA-256."""

    def __init__(self, record: FileRecord, path: Path) -> None:
        self.record = record
        self.sent = 0
        self._hash = hashlib.sha256()
        try:
            self._in: BinaryIO = path.open("rb")
        except OSError as exc:
            log.error("file %s is on record but cannot be opened: %s", record.id, exc)
            raise FileUnavailable("the stored file is not available") from None
        size = os.fstat(self._in.fileno()).st_size
        if size != record.size:
            self._in.close()
            log.error(
                "file %s is damaged on disk: %d bytes, %d on record", record.id, size, record.size
            )
            raise FileUnavailable("the stored file is damaged")

    def read(self, n: int = READ_CHUNK) -> bytes:
        chunk = self._in.read(n)
        self._hash.update(chunk)
        self.sent += len(chunk)
        return chunk

    @property
    def intact(self) -> bool:
        ok = self.sent == self.record.size and self._hash.hexdigest() == self.record.sha256
        if not ok:
            log.error(
                "file %s is corrupt on disk: sha256 %s, %s on record",
                self.record.id,
                self._hash.hexdigest(),
                self.record.sha256,
            )
        return ok

    def close(self) -> None:
        self._in.close()


# -- the service -----------------------------------------------------------------------------


class FileService:
    """Files of the HTTP file-transfer service (Linphone's scheme) and of the HTTP API.

    Blocking methods (disk, store): call them from a worker thread, not the event loop."""

    def __init__(
        self, store: Store, files_dir: Path, settings: FileSettings, public_url: str
    ) -> None:
        self.store = store
        self.files_dir = files_dir
        self.settings = settings
        self.public_url = public_url.rstrip("/")
        self.tmp_dir = files_dir / TMP_DIR
        # Quota check and record insert of one process happen one upload at a time.
        self._commit_lock = threading.Lock()
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._clean_start()

    def _clean_start(self) -> None:
        """Remove what a crash or kill left behind: partial uploads and bytes without a record."""
        for leftover in self.tmp_dir.iterdir():
            try:
                leftover.unlink()
            except OSError as exc:
                log.error("cannot remove the partial upload %s: %s", leftover, exc)
        known = self.store.all_file_ids()
        for path in self.files_dir.iterdir():
            if path.is_file() and FILE_ID_RE.match(path.name) and path.name not in known:
                log.warning("removing %s: a file without a record (an interrupted upload)", path)
                path.unlink(missing_ok=True)

    # -- limits --

    @property
    def max_bytes(self) -> int:
        return self.settings.max_size_mb * MB

    @property
    def quota_bytes(self) -> int | None:
        """Bytes one user may store at one time; None: no quota (quota_mb = 0)."""
        return self.settings.quota_mb * MB if self.settings.quota_mb > 0 else None

    def used_bytes(self, owner: str, now: datetime) -> int:
        return self.store.file_bytes_used(owner, now)

    # -- uploads --

    def start_upload(
        self,
        owner: str,
        content_type: str,
        content_length: int | None,
        now: datetime,
        field: str = "file",
        hash_body: bool = False,
    ) -> Upload:
        """Check what is known before the body arrives (form type, declared size, quota) and
        return the Upload to feed. Raises FileError."""
        ctype, params = parse_options_header(content_type.encode("latin-1", "replace"))
        if ctype != b"multipart/form-data":
            raise UnsupportedUpload(
                f"send the file as multipart/form-data with a part named {field!r}"
            )
        boundary = params.get(b"boundary", b"")
        if not boundary or len(boundary) > 70:
            raise BadUpload("multipart/form-data without a valid boundary parameter")
        if content_length is not None and content_length > self.max_bytes + FORM_OVERHEAD:
            raise FileTooLarge(f"file too large: the limit is {megabytes(self.max_bytes)}")
        quota = self.quota_bytes
        used = self.used_bytes(owner, now)
        allowance = None if quota is None else quota - used
        if allowance is not None and (
            allowance <= 0
            or (content_length is not None and content_length - FORM_OVERHEAD > allowance)
        ):
            raise QuotaExceeded(
                f"quota exceeded: you store {megabytes(used)} of your {megabytes(quota or 0)}; "
                "delete files or wait until their links expire"
            )
        return Upload(
            self.tmp_dir, boundary, field, self.max_bytes, allowance, used, quota, hash_body
        )

    def complete_upload(
        self, upload: Upload, owner: str, expected: Iterable[bytes], now: datetime
    ) -> FileRecord:
        """Store a finished upload: check the digests the client announced (request headers:
        of the file or of the whole body; the file part's headers: of the file), read an audio
        file's duration, check the quota again and move the bytes in place. Raises FileError;
        the caller aborts the upload then."""
        for digest in expected:
            if not upload.matches(digest):
                raise DigestMismatch(
                    "the request's sha-256 digest does not match the received data "
                    f"(received file: sha-256 {upload.sha256})"
                )
        for digest in upload.part_digests:
            if digest != bytes.fromhex(upload.sha256):
                raise DigestMismatch(
                    "the file part's sha-256 digest does not match the received file "
                    f"(received: sha-256 {upload.sha256})"
                )
        duration = (
            audio_duration(upload.path) if is_audio(upload.name, upload.content_type) else None
        )
        record = FileRecord(
            id=new_file_id(),
            owner=owner,
            name=upload.name,
            content_type=upload.content_type,
            size=upload.size,
            sha256=upload.sha256,
            duration_s=duration,
            created_at=now,
            expires_at=now + timedelta(days=self.settings.link_days),
        )
        final = self.files_dir / record.id
        with self._commit_lock:
            # Bytes first, then the record: a crash in between leaves an unlisted file that
            # the next start removes, never a record without bytes.
            os.replace(upload.path, final)
            upload.stored = True
            _fsync_dir(self.files_dir)
            try:
                used = self.store.add_file_within_quota(record, self.quota_bytes)
            except BaseException:
                final.unlink(missing_ok=True)
                raise
            if used is not None:
                final.unlink(missing_ok=True)
                upload.used = used
                raise QuotaExceeded(upload._quota_message())
        log.info(
            "stored file %s for %s: %r, %d bytes, sha256 %s",
            record.id,
            owner,
            record.name,
            record.size,
            record.sha256,
        )
        return record

    # -- reading --

    def get(self, file_id: str) -> FileRecord | None:
        """The record of a file, or None (ids that cannot be ours never reach the store)."""
        if not FILE_ID_RE.match(file_id):
            return None
        return self.store.get_file(file_id)

    def readable(self, file_id: str, user: str, role: str, now: datetime) -> FileRecord | None:
        """The file when `user` may download it now; None when it does not exist, expired or
        is not theirs to see (the caller answers all three alike)."""
        record = self.get(file_id)
        if (
            record is None
            or record.expires_at <= now
            or not may_read(record.owner, record.parties, user, role)
        ):
            return None
        return record

    def list_files(self, owner: str | None) -> list[FileRecord]:
        return self.store.list_files(owner)

    def open_download(self, record: FileRecord) -> Download:
        """Open a file's bytes for reading. Raises FileUnavailable when they are missing or
        their size differs from the record."""
        return Download(record, self.files_dir / record.id)

    def log_download(
        self, file_id: str, user: str | None, remote: str, status: int, bytes_sent: int = 0
    ) -> None:
        self.store.log_download(file_id, user, datetime.now(UTC), remote, status, bytes_sent)

    def downloads(self, file_id: str) -> list[DownloadRecord]:
        return self.store.list_downloads(file_id)

    # -- links and messages --

    def link(self, file_id: str) -> str:
        """The download URL of a file."""
        return f"{self.public_url}{LINK_PATH}/{file_id}"

    def file_id_of(self, url: str) -> str | None:
        """The file a download URL of ours names; None for anything else."""
        prefix = f"{self.public_url}{LINK_PATH}/"
        if not url.startswith(prefix):
            return None
        rest = url[len(prefix) :]
        return rest if rest and "/" not in rest and "?" not in rest else None

    def grant(self, file_id: str, sender: str, recipient: str) -> bool:
        """`sender` passed the file's link to `recipient` in a message: the recipient may
        download it from now on. False (nothing granted) unless the sender is the file's
        owner or a party to it (and the link has not expired). Blocking (store)."""
        if not FILE_ID_RE.match(file_id):
            return False
        return self.store.add_file_party(file_id, sender, recipient, datetime.now(UTC))

    def file_info_xml(self, file_id: str) -> bytes | None:
        """The RCS file-info document (application/vnd.gsma.rcs-ft-http+xml) of a stored file."""
        record = self.get(file_id)
        return None if record is None else file_info_document(record, self.link(record.id))

    def delete(self, file_ids: Iterable[str]) -> int:
        """Delete files (bytes and records); returns how many existed."""
        ids = [i for i in file_ids if FILE_ID_RE.match(i)]
        # Records first: from then on nobody is served the file; bytes left by a crash
        # in between are removed at the next start.
        gone = self.store.delete_file_records(ids)
        for file_id in gone:
            try:
                (self.files_dir / file_id).unlink(missing_ok=True)
            except OSError as exc:
                log.error("cannot remove the bytes of deleted file %s: %s", file_id, exc)
        if gone:
            log.info("deleted %d file(s)", len(gone))
        return len(gone)

    def sweep(self, now: datetime) -> int:
        """Delete the files whose links expired; returns how many."""
        return self.delete(self.store.expired_file_ids(now))


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
