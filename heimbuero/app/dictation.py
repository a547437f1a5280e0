"""Dictation jobs: submission (upload, messenger, and the seam for phone dictation), the
typists' queue with its locks and drafts, delivery of the typed document, corrections.

Who may do what: a client's users (owner and employees) submit jobs as authors and see only
their own business's jobs (another business's job ids answer "no such dictation job", like
missing ones); the provider's staff (admins, agents) are the typists and see every job;
admins set a client's dictation profile (review, e-mail, letterhead template).

Methods block (store, disk): the HTTP layer calls them in a worker thread. What goes out
afterwards — the author's messages, the document in the messenger and by e-mail — is
`announce()`, async, after the commit; `DictationDelivered` is published after the commit.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from heimbuero.app.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from heimbuero.app.policy import Actor
from heimbuero.config import DictationSettings
from heimbuero.events import DictationChanged, DictationDelivered, EventBus, EventSink
from heimbuero.office import dictation as rules
from heimbuero.office import dictation_files as media
from heimbuero.office.dictation import Action, Priority, State, TransitionError, WorkType
from heimbuero.office.files import MB, FileError, FileService
from heimbuero.office.messaging import FILE_TRANSFER
from heimbuero.office.pdf import text_pdf
from heimbuero.office.roles import BUSINESS
from heimbuero.store import Store
from heimbuero.store.dictation import (
    DictationRepository,
    JobRecord,
    PartRecord,
    ProfileRecord,
    UploadRecord,
)
from heimbuero.store.uow import UnitOfWork

log = logging.getLogger(__name__)

Send = Callable[[str, str, str, bytes], Awaitable[dict[str, Any]]]
MAX_TITLE = 200
MAX_COMMENTS = 4000
MAX_DRAFT = 200_000  # characters of a draft (a long report is ~100,000)
MAX_PARTS = 20
MAX_TEMPLATE = 10 * 1024 * 1024  # a letterhead with its logo
# An open job's audio stays (the file service would delete it after [files] link_days);
# once delivered, its files expire link_days after the delivery.
OPEN_FILES_UNTIL = datetime(9999, 12, 31, tzinfo=UTC)
PEAKS_CACHED = 256  # waveforms kept in memory (a few kB each), the least recently used go
PEAKS_AT_ONCE = 2  # waveforms computed at the same time (each reads a whole part)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a change leaves to tell the author (after the commit): the job as it is now, the
    state to announce (None: nothing), and a delivered document's bytes for the e-mail."""

    job: JobRecord
    announce: State | None = None
    document: bytes | None = None
    document_name: str = ""


class Dictation:
    def __init__(
        self,
        store: Store,
        files: FileService | None,
        settings: DictationSettings | None = None,
        events: EventSink | None = None,
        send: Send | None = None,
        mailer: Any = None,
        bus: EventBus | None = None,
    ) -> None:
        """`events` is where DictationChanged and DictationDelivered are published (after the
        commit, from the committing thread: the server passes a sink that hands them to its
        event loop); `bus` is what `watch` subscribes to (default: `events` if a bus)."""
        self.store, self.files = store, files
        self.settings = settings or DictationSettings()
        self.events, self.send_fn, self.mailer = events, send, mailer
        self.bus = bus if bus is not None else events if isinstance(events, EventBus) else None
        self._peaks: OrderedDict[str, list[int]] = OrderedDict()  # by the part's file id
        self._peaks_lock = threading.Lock()
        self._peaks_busy = threading.BoundedSemaphore(PEAKS_AT_ONCE)

    # -- helpers --

    def _uow(self) -> tuple[UnitOfWork, DictationRepository]:
        uow = self.store.unit_of_work()
        return uow, DictationRepository(uow)

    def _service(self) -> FileService:
        if self.files is None:
            raise Invalid("body", "files are not available (no data directory)")
        return self.files

    @staticmethod
    def _visible(actor: Actor, job: JobRecord | None, job_id: int) -> JobRecord:
        if job is None or not (actor.staff or (actor.client and actor.client == job.client_id)):
            raise NotFound("", "", f"no such dictation job: {job_id}")
        return job

    def _changed(self, uow: UnitOfWork, job: JobRecord, now: datetime) -> None:
        """Publish DictationChanged once the unit of work commits."""
        if self.events is None:
            return
        event = DictationChanged(now.timestamp(), job.client_id, job.id, job.state, job.author,
                                 job.typist)  # fmt: skip
        events = self.events
        uow.after_commit(lambda: events.publish(event))

    def _expire(self, uow: UnitOfWork, repo: DictationRepository, now: datetime) -> None:
        for job_id, typist, state in repo.expire_locks(now):
            repo.add_history(job_id, now, typist or "", "lock expired", state)
            job = repo.get_job(job_id, full=False)
            if job is not None:
                self._changed(uow, job, now)

    @staticmethod
    def _typist(actor: Actor) -> None:
        if not actor.staff:
            raise Forbidden("only the provider's typists (admins and agents) may do this")

    # -- submission --

    def _check_meta(
        self, title: str, work_type: str, priority: str, comments: str
    ) -> tuple[str, WorkType, Priority]:
        title = " ".join(title.split())
        if not title or len(title) > MAX_TITLE:
            raise Invalid("title", f"a title of 1-{MAX_TITLE} characters is needed")
        if any(ord(c) < 32 for c in title):
            raise Invalid("title", "no control characters in the title")
        try:
            wt = WorkType(work_type)
        except ValueError:
            kinds = ", ".join(w.value for w in WorkType)
            raise Invalid("work_type", f"work type is one of {kinds}") from None
        try:
            pr = Priority(priority)
        except ValueError:
            raise Invalid("priority", "priority is normal or urgent") from None
        if len(comments) > MAX_COMMENTS:
            raise Invalid("comments", f"at most {MAX_COMMENTS} characters of comments")
        return title, wt, pr

    def _author_of(self, actor: Actor, author: str | None) -> tuple[str, str]:
        """(author, client): a business user submits for themselves; staff for an author."""
        if not actor.staff:
            if actor.client is None:
                raise Forbidden("only a client's users submit dictations")
            if author not in (None, actor.name):
                raise Forbidden("you submit dictations for yourself only")
            return actor.name, actor.client
        if not author:
            raise Invalid("author", "name the author (a client's user)")
        user = self.store.get_user(author.lower())
        if user is None or user.role not in BUSINESS or not user.client:
            raise Invalid("author", f"no client user {author!r}")
        return user.name, user.client

    def _insert(
        self,
        author: str,
        client: str,
        title: str,
        wt: WorkType,
        pr: Priority,
        due: datetime | None,
        comments: str,
        source: str,
        parts: list[PartRecord],
        who: str,
        now: datetime,
    ) -> JobRecord:
        uow, repo = self._uow()
        with uow:
            job_id = repo.add_job(
                {
                    "client_id": client, "author": author, "title": title,
                    "work_type": wt.value, "priority": pr.value, "due_at": due,
                    "comments": comments, "source": source, "state": State.NEW.value,
                    "pool_state": State.NEW.value, "draft": "", "draft_version": 0,
                    "audio_seconds": round(sum(p.duration_s or 0.0 for p in parts), 3),
                    "created_at": now, "updated_at": now,
                },
                parts,
            )  # fmt: skip
            repo.add_history(job_id, now, who or author, "created", State.NEW.value, source)
            repo.keep_files([p.file_id for p in parts], OPEN_FILES_UNTIL)
            job = repo.get_job(job_id)
            assert job is not None
            self._changed(uow, job, now)
        assert job is not None
        log.info("dictation job %d for %s (%s) from %s: %r", job_id, author, client, source, title)
        return job

    def create(
        self,
        actor: Actor,
        *,
        title: str,
        work_type: str = "letter",
        priority: str = "normal",
        due: datetime | None = None,
        comments: str = "",
        uploads: list[str],
        author: str | None = None,
    ) -> JobRecord:
        """A job from finished resumable uploads (their owner is the actor)."""
        title, wt, pr = self._check_meta(title, work_type, priority, comments)
        author, client = self._author_of(actor, author)
        if not uploads or len(uploads) > MAX_PARTS:
            raise Invalid("uploads", f"give 1-{MAX_PARTS} finished uploads")
        if len(set(uploads)) != len(uploads):
            raise Invalid("uploads", "an upload is named twice")
        service = self._service()
        now = _now()
        found: list[tuple[UploadRecord, Path]] = []
        for upload_id in uploads:
            record = self.upload(actor, upload_id)
            path = media.upload_path(service.files_dir, record.id)
            if media.upload_offset(path) != record.length:
                raise Conflict(f"upload {upload_id} is not complete yet")
            try:
                media.audio_type(record.name)
            except media.AudioRefused as exc:
                raise Invalid("uploads", str(exc)) from None
            found.append((record, path))
        parts: list[PartRecord] = []
        for i, (record, path) in enumerate(found):
            try:
                seconds = media.measure_audio(path, record.name)
            except media.AudioRefused as exc:
                raise Invalid("uploads", str(exc)) from None
            parts.append(
                PartRecord(i, "", record.name, media.audio_type(record.name), record.length,
                           seconds)
            )  # fmt: skip
        adopted: list[PartRecord] = []
        try:
            for part, (record, path) in zip(parts, found, strict=True):
                stored = media.adopt_file(
                    service, path, author, record.name, part.content_type, now, part.duration_s
                )
                adopted.append(replace(part, file_id=stored.id))
        except FileError as exc:
            service.delete(p.file_id for p in adopted)
            raise Conflict(exc.message) from None
        except FileNotFoundError:  # another request made a job of the same upload first
            service.delete(p.file_id for p in adopted)
            raise Conflict("the upload was used for a job already") from None
        with self.store.unit_of_work() as uow:
            repo = DictationRepository(uow)
            for record, _ in found:
                repo.delete_upload(record.id)
        return self._insert(
            author, client, title, wt, pr, due, comments, "upload", adopted, actor.name, now
        )

    def create_from_audio(
        self,
        path: Path,
        name: str,
        author: str,
        client: str,
        title: str,
        source: str = "phone",
        work_type: str = "other",
        priority: str = "normal",
    ) -> JobRecord:
        """The seam for dictation by phone: a recorded audio file (moved into the file
        service, owned by the author) becomes a new job of `author` in `client`. Blocking
        (disk, store): call it in a worker thread; then `await announce(Outcome(job,
        State.NEW))` tells the author it arrived."""
        title, wt, pr = self._check_meta(title, work_type, priority, "")
        seconds = media.measure_audio(path, name)
        service = self._service()
        now = _now()
        stored = media.adopt_file(service, path, author, name, media.audio_type(name), now, seconds)
        part = PartRecord(0, stored.id, name, stored.content_type, stored.size, seconds)
        return self._insert(author, client, title, wt, pr, None, "", source, [part], author, now)

    def from_file(
        self,
        actor: Actor,
        file_id: str,
        *,
        title: str | None = None,
        author: str | None = None,
        work_type: str = "other",
        priority: str = "normal",
        due: datetime | None = None,
        comments: str = "",
    ) -> JobRecord:
        """A job from an audio file already sent in the messenger (staff, for the file's
        owner or a named author; or the dictation address receiving it: `actor` is then
        the sender)."""
        service = self._service()
        record = service.get(file_id)
        now = _now()
        if (
            record is None
            or record.expires_at <= now
            or not (actor.staff or actor.name == record.owner)
        ):
            raise NotFound("", "", "no such file (or its link expired)")
        author, client = self._author_of(actor, author or (record.owner if actor.staff else None))
        try:
            media.audio_type(record.name)
        except media.AudioRefused as exc:
            raise Invalid("file", str(exc)) from None
        seconds = record.duration_s
        if seconds is None:
            try:
                seconds = media.measure_audio(service.files_dir / record.id, record.name)
            except media.AudioRefused as exc:
                raise Invalid("file", str(exc)) from None
        title, wt, pr = self._check_meta(
            title or f"Diktat {record.name}", work_type, priority, comments
        )
        part = PartRecord(0, record.id, record.name, record.content_type, record.size, seconds)
        return self._insert(
            author, client, title, wt, pr, due, comments, "messenger", [part], actor.name, now
        )

    def job_from_message(self, sender: str, file_id: str) -> JobRecord:
        """A file `sender` sent to the dictation address ([dictation] address) becomes a job
        of theirs (they must be a client's user; the file must be audio)."""
        user = self.store.get_user(sender)
        if user is None:
            raise NotFound("user", sender)
        return self.from_file(Actor.of(user), file_id)

    # -- resumable uploads (the tus routes use these) --

    def start_upload(self, actor: Actor, length: int, name: str) -> UploadRecord:
        """Announce an upload of `length` bytes: checked against [files] max_size_mb and the
        owner's quota (stored files + unfinished uploads)."""
        if not actor.staff and actor.client is None:
            raise Forbidden("only a client's users and staff upload dictations")
        service = self._service()
        try:
            ctype = media.DOCX_TYPE if name.lower().endswith(".docx") else media.audio_type(name)
        except media.AudioRefused as exc:
            raise Invalid("filename", str(exc) + "; or a DOCX document") from None
        if length > service.max_bytes:
            err = Conflict(f"file too large: the limit is {service.settings.max_size_mb} MB")
            err.status = 413
            raise err
        now = _now()
        uow, repo = self._uow()
        with uow:
            quota = service.quota_bytes
            if quota is not None:
                used = uow.files.file_bytes_used(actor.name, now) + repo.pending_upload_bytes(
                    actor.name, now
                )
                if used + length > quota:
                    err = Conflict(
                        f"quota exceeded: {used / MB:.1f} MB of your {quota / MB:.1f} MB are in use"
                    )
                    err.status = 413
                    raise err
            record = UploadRecord(
                media.new_upload_id(), actor.name, length, name, ctype, now,
                media.upload_expiry(now),
            )  # fmt: skip
            repo.add_upload(record)
        media.upload_path(service.files_dir, record.id).touch()
        return record

    def upload(self, actor: Actor, upload_id: str) -> UploadRecord:
        """The actor's own unfinished upload; another's, expired or unknown: NotFound."""
        if not media.valid_upload_id(upload_id):
            raise NotFound("", "", "no such upload")
        uow = self.store.unit_of_work(write=False)
        with uow:
            record = DictationRepository(uow).get_upload(upload_id)
        if record is None or record.owner != actor.name or record.expires_at <= _now():
            raise NotFound("", "", "no such upload")
        return record

    def sweep_uploads(self, now: datetime) -> int:
        """Drop expired unfinished uploads (records and bytes)."""
        service = self._service()
        uow, repo = self._uow()
        with uow:
            gone = repo.expired_uploads(now)
            for upload_id in gone:
                repo.delete_upload(upload_id)
        for upload_id in gone:
            media.upload_path(service.files_dir, upload_id).unlink(missing_ok=True)
        return len(gone)

    # -- reading --

    def get(self, actor: Actor, job_id: int) -> JobRecord:
        uow, repo = self._uow()
        with uow:
            self._expire(uow, repo, _now())
            return self._visible(actor, repo.get_job(job_id), job_id)

    def jobs(
        self,
        actor: Actor,
        client: str | None = None,
        work_type: str | None = None,
        state: str | None = None,
    ) -> list[JobRecord]:
        """Jobs newest first: staff every client's (or `client`'s), others their business's."""
        if not actor.staff:
            if actor.client is None:
                return []
            if client is not None and client != actor.client:
                raise NotFound("client", client)
            client = actor.client
        states = None
        if state is not None:
            try:
                states = (State(state).value,)
            except ValueError:
                raise Invalid("state", f"no such state: {state!r}") from None
        uow, repo = self._uow()
        with uow:
            self._expire(uow, repo, _now())
            return repo.list_jobs(client, states, work_type)

    def queue(
        self, actor: Actor, client: str | None = None, work_type: str | None = None
    ) -> list[tuple[JobRecord, bool]]:
        """The typists' queue: jobs waiting or in progress, urgent first, then by due time;
        each with whether it is overdue."""
        self._typist(actor)
        if work_type is not None and work_type not in {w.value for w in WorkType}:
            raise Invalid("work_type", f"no such work type: {work_type!r}")
        now = _now()
        uow, repo = self._uow()
        waiting = (State.NEW, State.CORRECTIONS_REQUESTED, State.IN_PROGRESS)
        with uow:
            self._expire(uow, repo, now)
            jobs = repo.list_jobs(client, tuple(s.value for s in waiting), work_type, 5000)
        jobs.sort(key=lambda j: rules.queue_key(Priority(j.priority), j.due_at, j.created_at))
        return [(j, rules.is_overdue(State(j.state), j.due_at, now)) for j in jobs]

    # -- the typist's work --

    def _move(
        self,
        actor: Actor,
        job_id: int,
        action: Action,
        note: str = "",
        **extra: Any,
    ) -> JobRecord:
        """Apply one transition of office/dictation.py as one compare-and-set."""
        now = _now()
        uow, repo = self._uow()
        with uow:
            self._expire(uow, repo, now)
            job = self._visible(actor, repo.get_job(job_id, full=False), job_id)
            state = State(job.state)
            review = False
            if action is Action.SUBMIT:
                review = repo.get_profile(job.client_id).review
            try:
                target = rules.next_state(state, action, pool=State(job.pool_state), review=review)
            except TransitionError as exc:
                raise Conflict(str(exc)) from None
            values: dict[str, Any] = {"state": target.value, "updated_at": now, **extra}
            if action is Action.TAKE:
                values |= {
                    "typist": actor.name,
                    "locked_until": rules.lock_until(now, self.settings.lock_minutes),
                    "pool_state": rules.pool_of(state).value,
                }
            elif target is not State.IN_PROGRESS:
                values |= {"typist": None, "locked_until": None}
            if not repo.update_job(job_id, {"state": job.state, "typist": job.typist}, **values):
                raise Conflict("the job changed meanwhile: load it again")
            repo.add_history(job_id, now, actor.name, action.value, target.value, note)
            moved = repo.get_job(job_id)
            assert moved is not None
            files = [p.file_id for p in moved.parts] + [moved.document_file or ""]
            if target is State.DELIVERED and self.files is not None:
                repo.keep_files(files, now + timedelta(days=self.files.settings.link_days))
            elif target is State.CORRECTIONS_REQUESTED:
                repo.keep_files(files, OPEN_FILES_UNTIL)
            self._changed(uow, moved, now)
            if target is State.DELIVERED and self.events is not None:
                event = DictationDelivered(
                    at=now.timestamp(),
                    client=moved.client_id, job_id=moved.id, normzeilen=moved.normzeilen or 0,
                    audio_seconds=moved.audio_seconds,
                )  # fmt: skip
                events = self.events
                uow.after_commit(lambda: events.publish(event))
        return moved

    def _holder(self, actor: Actor, job: JobRecord) -> None:
        if job.state != State.IN_PROGRESS.value or job.typist != actor.name:
            raise Conflict("you do not hold this job: take it first")

    def take(self, actor: Actor, job_id: int) -> Outcome:
        """Check a job out to the actor (atomic: of two typists taking it, one wins, the
        other gets Conflict)."""
        self._typist(actor)
        job = self._move(actor, job_id, Action.TAKE)
        return Outcome(job, State.IN_PROGRESS)

    def release(self, actor: Actor, job_id: int) -> JobRecord:
        self._typist(actor)
        job = self.get(actor, job_id)
        if not actor.admin:
            self._holder(actor, job)
        return self._move(actor, job_id, Action.RELEASE)

    def heartbeat(self, actor: Actor, job_id: int) -> JobRecord:
        """Extend the actor's lock on a job by lock_minutes from now."""
        self._typist(actor)
        now = _now()
        uow, repo = self._uow()
        with uow:
            self._expire(uow, repo, now)
            job = self._visible(actor, repo.get_job(job_id, full=False), job_id)
            self._holder(actor, job)
            repo.update_job(job_id, locked_until=rules.lock_until(now, self.settings.lock_minutes))
            out = repo.get_job(job_id, full=False)
        assert out is not None
        return out

    def save_draft(self, actor: Actor, job_id: int, text: str, version: int) -> JobRecord:
        """Store the typed text when `version` is the stored one (a stale tab gets Conflict
        and never overwrites newer text); the version goes up by one; the lock is extended."""
        self._typist(actor)
        if len(text) > MAX_DRAFT:
            raise Invalid("text", f"at most {MAX_DRAFT} characters")
        now = _now()
        uow, repo = self._uow()
        with uow:
            self._expire(uow, repo, now)
            job = self._visible(actor, repo.get_job(job_id, full=False), job_id)
            self._holder(actor, job)
            if not repo.update_job(
                job_id,
                {"draft_version": version, "typist": actor.name},
                draft=text,
                draft_version=version + 1,
                updated_at=now,
                locked_until=rules.lock_until(now, self.settings.lock_minutes),
            ):
                raise Conflict(
                    f"the draft is at version {job.draft_version}, not {version}: "
                    "newer text was saved (another tab?); load it first"
                )
            out = repo.get_job(job_id, full=False)
        assert out is not None
        return out

    def audio(self, actor: Actor, job_id: int, position: int) -> tuple[PartRecord, Path]:
        job = self.get(actor, job_id)
        for part in job.parts:
            if part.position == position:
                path = self._service().files_dir / part.file_id
                if not path.is_file():
                    raise NotFound("", "", "the audio of this part is gone (its link expired)")
                return part, path
        raise NotFound("", "", f"no audio part {position} in job {job_id}")

    def peaks(self, actor: Actor, job_id: int, position: int) -> tuple[PartRecord, list[int]]:
        """The waveform of an audio part (min/max pairs, see `audio_peaks`), for whoever may
        fetch its audio. Computed once per part (its file never changes) and kept in a bounded
        cache; Invalid when the part's format cannot be decoded here."""
        part, path = self.audio(actor, job_id, position)
        with self._peaks_lock:
            hit = self._peaks.get(part.file_id)
            if hit is not None:
                self._peaks.move_to_end(part.file_id)
                return part, hit
        with self._peaks_busy:
            try:
                peaks = media.audio_peaks(path, part.name, part.duration_s)
            except media.AudioRefused as exc:
                raise Invalid("position", str(exc)) from None
        with self._peaks_lock:
            self._peaks[part.file_id] = peaks
            while len(self._peaks) > PEAKS_CACHED:
                self._peaks.popitem(last=False)
        return part, peaks

    # -- delivery --

    def deliver(self, actor: Actor, job_id: int, upload: str | None = None) -> Outcome:
        """Deliver the typist's draft as DOCX (the client's letterhead template, or the
        default document), or a finished DOCX uploaded instead (`upload`, a finished
        resumable upload of the actor). Normzeilen are counted from the document's text."""
        self._typist(actor)
        job = self.get(actor, job_id)
        self._holder(actor, job)
        service = self._service()
        client = self.store.get_client(job.client_id)
        client_name = client.name if client else job.client_id
        line_chars = self.settings.line_chars
        if upload is not None:
            record = self.upload(actor, upload)
            path = media.upload_path(service.files_dir, record.id)
            if media.upload_offset(path) != record.length:
                raise Conflict("the upload is not complete yet")
            if not record.name.lower().endswith(".docx"):
                raise Invalid("upload", "a finished document must be a DOCX file")
            data = path.read_bytes()
            try:
                paragraphs = media.docx_paragraphs(data)
            except ValueError as exc:
                raise Invalid("upload", str(exc)) from None
            name = record.name
        else:
            paragraphs = rules.paragraphs_of_text(job.draft)
            if not paragraphs:
                raise Conflict("the draft is empty: type the text or upload a finished document")
            uow = self.store.unit_of_work(write=False)
            with uow:
                template = DictationRepository(uow).get_template(job.client_id)
            data = media.render_docx(template, job.title, paragraphs, client_name, job.author)
            name = f"{job.title}.docx"
        count = rules.count_normzeilen(paragraphs, line_chars)
        owner = self.settings.address or actor.name or job.author
        stored = media.adopt_bytes(service, data, owner, _file_name(name), media.DOCX_TYPE, _now())
        if upload is not None:
            with self.store.unit_of_work() as uow:
                DictationRepository(uow).delete_upload(upload)
            media.upload_path(service.files_dir, upload).unlink(missing_ok=True)
        try:
            moved = self._move(
                actor, job_id, Action.SUBMIT, f"{count.lines} Normzeilen",
                document_file=stored.id, characters=count.characters, normzeilen=count.lines,
                line_chars=count.line_chars, delivered_at=_now(),
            )  # fmt: skip
        except Exception:
            service.delete([stored.id])
            raise
        if moved.state == State.REVIEW.value:
            return Outcome(moved, None)
        return Outcome(moved, State.DELIVERED, data, stored.name)

    def approve(self, actor: Actor, job_id: int) -> Outcome:
        """A reviewed job goes to its author (staff)."""
        self._typist(actor)
        moved = self._move(actor, job_id, Action.APPROVE, delivered_at=_now())
        data, name = self._document_bytes(moved)
        return Outcome(moved, State.DELIVERED, data, name)

    def _document_bytes(self, job: JobRecord) -> tuple[bytes | None, str]:
        if job.document_file is None or self.files is None:
            return None, ""
        record = self.files.get(job.document_file)
        if record is None:
            return None, ""
        try:
            return (self.files.files_dir / record.id).read_bytes(), record.name
        except OSError:
            return None, ""

    def request_corrections(self, actor: Actor, job_id: int, remark: str) -> Outcome:
        """The author (or their business, or staff reviewing) asks for corrections: the job
        reopens with the remark."""
        remark = remark.strip()
        if not remark or len(remark) > MAX_COMMENTS:
            raise Invalid("remark", f"say what to correct (1-{MAX_COMMENTS} characters)")
        job = self.get(actor, job_id)
        action = Action.REOPEN if job.state == State.REVIEW.value else Action.CORRECT
        if action is Action.CORRECT and actor.staff and not actor.admin:
            raise Forbidden("the author asks for corrections of a delivered job")
        moved = self._move(actor, job_id, action, remark, remark=remark)
        return Outcome(moved, State.CORRECTIONS_REQUESTED)

    def document(self, actor: Actor, job_id: int) -> tuple[str, Path]:
        """(file name, path) of the job's delivered document."""
        job = self.get(actor, job_id)
        if job.document_file is None:
            raise NotFound("", "", "this job has no document yet")
        if not actor.staff and job.state not in (
            State.DELIVERED.value,
            State.CORRECTIONS_REQUESTED.value,
        ):
            raise NotFound("", "", "this job has no document yet")
        record = self._service().get(job.document_file)
        if record is None:
            raise NotFound("", "", "the document is gone (its link expired)")
        return record.name, self._service().files_dir / record.id

    def document_pdf(self, actor: Actor, job_id: int) -> tuple[str, bytes]:
        """(file name, bytes) of the delivered document's text as PDF: the title, business,
        author and delivery date, then the document's paragraphs (tables included; a
        letterhead's layout is not kept, its text is)."""
        job = self.get(actor, job_id)
        name, path = self.document(actor, job_id)
        try:
            paragraphs = media.docx_paragraphs(path.read_bytes(), skip_heading=job.title)
        except (OSError, ValueError) as exc:
            raise NotFound("", "", f"the document cannot be read ({exc})") from None
        client = self.store.get_client(job.client_id)
        try:
            data = text_pdf(job.title, paragraphs, client.name if client else job.client_id,
                            job.author, job.delivered_at or _now())  # fmt: skip
        except ValueError as exc:
            raise Unavailable(str(exc)) from None
        return f"{Path(name).stem}.pdf", data

    def watch(
        self, actor: Actor, on_change: Callable[[DictationChanged], None]
    ) -> Callable[[], None]:
        """Call `on_change` for every job change the actor may see (staff: all; a client's
        users: their business's); returns the function that ends the watch."""
        if self.bus is None:
            raise Unavailable("live changes are not available")
        if not actor.staff and actor.client is None:
            raise Forbidden("only staff and a client's users follow dictation jobs")

        def listener(event: DictationChanged) -> None:
            if actor.staff or event.client == actor.client:
                on_change(event)

        return self.bus.subscribe(DictationChanged, listener)

    # -- client profiles --

    def profile(self, actor: Actor, client_id: str) -> ProfileRecord:
        if not actor.staff and actor.client != client_id:
            raise NotFound("client", client_id)
        if self.store.get_client(client_id) is None:
            raise NotFound("client", client_id)
        uow = self.store.unit_of_work(write=False)
        with uow:
            return DictationRepository(uow).get_profile(client_id)

    def set_profile(
        self, actor: Actor, client_id: str, *, review: bool | None = None,
        email: str | None = None,
    ) -> ProfileRecord:  # fmt: skip
        if not actor.admin:
            raise Forbidden("only admins set a client's dictation profile")
        current = self.profile(actor, client_id)
        if email is not None and email and ("@" not in email or any(c in email for c in " \r\n,")):
            raise Invalid("email", "not an e-mail address")
        new = replace(
            current,
            review=current.review if review is None else review,
            email=current.email if email is None else (email or None),
        )
        with self.store.unit_of_work() as uow:
            DictationRepository(uow).put_profile(new)
        return new

    def template_from_upload(self, actor: Actor, client_id: str, upload: str) -> ProfileRecord:
        """Set the letterhead from a finished resumable upload (a .docx) of the actor."""
        record = self.upload(actor, upload)
        path = media.upload_path(self._service().files_dir, record.id)
        if media.upload_offset(path) != record.length or not record.name.lower().endswith(".docx"):
            raise Invalid("upload", "give a finished upload of a .docx file")
        out = self.set_template(actor, client_id, path.read_bytes())
        with self.store.unit_of_work() as uow:
            DictationRepository(uow).delete_upload(record.id)
        path.unlink(missing_ok=True)
        return out

    def set_template(self, actor: Actor, client_id: str, data: bytes | None) -> ProfileRecord:
        """The client's letterhead (a DOCX docxtpl fills, kept in the database so backups
        carry it); None removes it (the default document is used again)."""
        if not actor.admin:
            raise Forbidden("only admins set a client's letterhead template")
        current = self.profile(actor, client_id)
        if data is not None:
            if len(data) > MAX_TEMPLATE:
                raise Invalid("template", f"a template of at most {MAX_TEMPLATE // MB} MB")
            try:
                media.check_template(data)
            except ValueError as exc:
                raise Invalid("template", str(exc)) from None
        new = replace(
            current, template_sha256=None if data is None else hashlib.sha256(data).hexdigest()
        )
        with self.store.unit_of_work() as uow:
            repo = DictationRepository(uow)
            repo.put_profile(new)
            repo.set_template(client_id, data)
        return new

    # -- telling the author (async, after the commit) --

    async def announce(self, outcome: Outcome) -> None:
        """Send the author the news of their job from the dictation address: a message
        ("Ihr Diktat 'Angebot Meier' ist in Arbeit"), the document as a file message, and
        the document by e-mail when the client's profile names an address. Failures are
        logged: the job's state is committed already."""
        if outcome.announce is None:
            return
        job = outcome.job
        sender = self.settings.address
        text = rules.status_text(job.title, outcome.announce)
        if outcome.announce is State.CORRECTIONS_REQUESTED:
            text = f"Ihr Diktat '{job.title}' wird korrigiert"
        if self.send_fn is not None and sender:
            try:
                await self.send_fn(sender, job.author, "text/plain;charset=UTF-8", text.encode())
                if outcome.announce is State.DELIVERED and job.document_file and self.files:
                    info = self.files.file_info_xml(job.document_file)
                    if info is not None:
                        await self.send_fn(sender, job.author, FILE_TRANSFER, info)
            except Exception as exc:  # noqa: BLE001 - the author's phone may refuse; logged
                log.warning("dictation job %d: message to %s failed: %s", job.id, job.author, exc)
        if (
            outcome.announce is State.DELIVERED
            and outcome.document is not None
            and self.mailer is not None
            and getattr(self.mailer, "enabled", False)
        ):
            uow = self.store.unit_of_work(write=False)
            with uow:
                profile = DictationRepository(uow).get_profile(job.client_id)
            if profile.email:
                from heimbuero.net.mail import Attachment

                try:
                    await self.mailer.send(
                        profile.email,
                        text,
                        f"{text}.\n\nDas Dokument ist angehängt ({job.normzeilen} Normzeilen, "
                        f"{job.audio_seconds / 60:.1f} Minuten Diktat).\n",
                        (Attachment(outcome.document_name, outcome.document, media.DOCX_TYPE),),
                    )
                except Exception as exc:  # noqa: BLE001
                    log.warning("dictation job %d: e-mail to %s failed: %s", job.id,
                                profile.email, exc)  # fmt: skip


def _file_name(name: str) -> str:
    clean = "".join(c for c in name if c.isprintable() and c not in '/\\:*?"<>|').strip()
    return clean[:200] or "Diktat.docx"
