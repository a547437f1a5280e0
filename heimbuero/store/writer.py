"""Group commit: one thread writes to the store; what the server promised to someone waits here
until it is committed.

Callers `submit(write, done)` from any thread. The writer thread takes everything queued, writes
the waiting writes in ONE transaction (`commit(writes)`), and then hands `done(True)` of each
(or `done(False)` when the transaction failed) to `notify` — in the server that is
`loop.call_soon_threadsafe`, so the answers leave on the event loop only after the commit.
While one transaction commits, the next writes queue up and share the next one: many
registrations or messages cost one commit (one fsync) together.

`call(fn)` runs a job of its own (call records, presence) in the same thread, in order with the
writes, and returns a concurrent.futures.Future; jobs promise nothing to anyone.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

W = TypeVar("W")
R = TypeVar("R")

Done = Callable[[bool], None]


class _Job:
    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[], Any], future: Future[Any]) -> None:
        self.fn = fn
        self.future = future


_STOP = object()


class GroupCommitWriter(Generic[W]):
    """A dedicated writer thread that commits queued writes in groups."""

    def __init__(
        self,
        commit: Callable[[list[W]], None],
        notify: Callable[[Callable[[], None]], None] | None = None,
        *,
        window: float = 0.0,
        name: str = "store-writer",
    ) -> None:
        """`commit(writes)` writes a group in one transaction (raises when it failed);
        `notify(fn)` runs fn where the answers are sent (default: in the writer thread);
        `window`: at most one transaction per `window` seconds. A write after a quiet spell is
        committed at once; under load a transaction starts `window` after the last one began,
        with everything that arrived meanwhile (each costs fixed CPU: fewer, bigger ones keep
        the writer from taking the event loop's time)."""
        self._commit = commit
        self._notify = notify or (lambda fn: fn())
        self._window = window
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopped = False
        self._last_start = float("-inf")
        self.commits = 0  # transactions committed (for tests and status)
        self.failures = 0
        self._thread.start()

    # -- any thread ----------------------------------------------------------------------------

    def submit(self, write: W, done: Done | None = None) -> None:
        """Queue a write; `done(ok)` is notified once its transaction committed or failed."""
        if self._stopped:
            raise RuntimeError("the store writer is stopped")
        self._queue.put((write, done))

    def call(self, fn: Callable[[], R]) -> Future[R]:
        """Run `fn` alone in the writer thread, after everything queued before it."""
        if self._stopped:
            raise RuntimeError("the store writer is stopped")
        future: Future[R] = Future()
        self._queue.put(_Job(fn, future))
        return future

    def stop(self, timeout: float | None = None) -> None:
        """Write what is queued, then end the thread."""
        if not self._stopped:
            self._stopped = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        q = self._queue
        while True:
            item = q.get()
            if self._window > 0 and not isinstance(item, _Job) and item is not _STOP:
                wait = self._last_start + self._window - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            items = [item]
            while True:
                try:
                    items.append(q.get_nowait())
                except queue.Empty:
                    break
            group: list[tuple[W, Done | None]] = []
            stop = False
            for it in items:
                if it is _STOP:
                    stop = True
                elif isinstance(it, _Job):
                    self._write_group(group)  # jobs keep their place in the order
                    group = []
                    self._run_job(it)
                else:
                    group.append(it)
            self._write_group(group)
            if stop:
                return

    def _write_group(self, group: list[tuple[W, Done | None]]) -> None:
        if not group:
            return
        self._last_start = time.monotonic()
        try:
            self._commit([w for w, _ in group])
        except Exception:
            self.failures += 1
            log.exception("writing %d changes to the store failed", len(group))
            ok = False
        else:
            self.commits += 1
            ok = True
        waiting = [d for _, d in group if d is not None]
        if waiting:
            self._notify(lambda: _answer(waiting, ok))

    @staticmethod
    def _run_job(job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            result = job.fn()
        except BaseException as exc:  # handed to whoever waits on the future
            log.exception("a store job failed")
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)


def _answer(waiting: list[Done], ok: bool) -> None:
    for done in waiting:
        try:
            done(ok)
        except Exception:  # one broken waiter must not keep the others from their answer
            log.exception("answering after a commit failed")
