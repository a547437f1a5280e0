"""Group commit: many writers share one transaction and are answered only after it committed;
a failed commit answers 500, never 200 (the writer thread, and the sans-IO core holding its
answers until the commit token completes)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from test_core import BOB1, DOMAIN, Net, authorize, req

from heimbuero.sip.message import Response
from heimbuero.store.writer import GroupCommitWriter


def test_many_writers_one_commit_all_answered_after_it() -> None:
    events: list[str] = []
    first_started = threading.Event()
    release = threading.Event()
    groups: list[list[int]] = []

    def commit(writes: list[int]) -> None:
        events.append(f"commit {len(writes)}")
        groups.append(writes)
        if len(groups) == 1:
            first_started.set()
            release.wait(5)  # the first commit is slow: the others queue up meanwhile
        events.append("committed")

    answered: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def done_for(i: int) -> Callable[[bool], None]:
        def done(ok: bool) -> None:
            with lock:
                answered.append((i, ok))
                events.append(f"answer {i}")

        return done

    writer: GroupCommitWriter[int] = GroupCommitWriter(commit)
    try:
        writer.submit(0, done_for(0))
        assert first_started.wait(5)
        threads = [
            threading.Thread(target=writer.submit, args=(i, done_for(i))) for i in range(1, 41)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answered == []  # nobody answered before their commit
        release.set()
        writer.stop(5)
    finally:
        release.set()
        writer.stop(5)
    assert writer.commits == 2  # the first alone, the 40 that came while it ran together
    assert sorted(groups[1]) == list(range(1, 41))
    assert sorted(i for i, _ in answered) == list(range(41)) and all(ok for _, ok in answered)
    # every answer comes after the commit of its group
    second_commit_done = [i for i, e in enumerate(events) if e == "committed"][1]
    assert all(events.index(f"answer {i}") > second_commit_done for i in range(1, 41))


def test_failed_commit_answers_false() -> None:
    def commit(writes: list[str]) -> None:
        raise OSError("disk full")

    results: list[bool] = []
    writer: GroupCommitWriter[str] = GroupCommitWriter(commit)
    writer.submit("a", results.append)
    writer.submit("b", results.append)
    writer.stop(5)
    assert results and not any(results) and len(results) == 2
    assert writer.failures >= 1 and writer.commits == 0


def test_jobs_run_in_order_with_the_writes() -> None:
    order: list[str] = []
    writer: GroupCommitWriter[str] = GroupCommitWriter(lambda ws: order.extend(ws))
    writer.submit("w1")
    job = writer.call(lambda: order.append("job") or 7)
    writer.submit("w2")
    assert job.result(5) == 7
    writer.stop(5)
    assert order == ["w1", "job", "w2"]


class HeldCommits:
    """The core's `commit` hook as the server provides it, completed by hand."""

    def __init__(self) -> None:
        self.waiting: list[Callable[[bool, float], None]] = []

    def __call__(self, fn: Callable[[bool, float], None]) -> None:
        self.waiting.append(fn)

    def complete(self, ok: bool, now: float) -> None:
        waiting, self.waiting = self.waiting, []
        for fn in waiting:
            fn(ok, now)


def _register_held(ok: bool) -> tuple[Net, HeldCommits, list[Response]]:
    net = Net()
    held = HeldCommits()
    net.core.commit = held
    r = req("REGISTER", f"sip:{DOMAIN}", BOB1, "bob", f"sip:bob@{DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), BOB1)
    assert isinstance(challenge, Response) and challenge.status == 401
    authed = authorize(r, challenge, "bob").serialize()
    assert net.send(authed, BOB1) == []  # held until the commit
    assert net.send(authed, BOB1) == []  # a retransmission is absorbed meanwhile
    assert held.waiting
    held.complete(ok, net.now)
    net.core.pump(net.now)
    answers = [m for m, _ in net.drain() if isinstance(m, Response)]
    return net, held, answers


def test_register_answered_200_only_after_commit() -> None:
    net, _, [resp] = _register_held(True)
    assert resp.status == 200
    assert resp.get_all("contact") == ["<sip:bob@127.0.0.1:40002>;expires=3600"]
    # a retransmission now gets the same 200 again from the transaction
    assert net.core.location.lookup("bob", net.now)


def test_register_whose_commit_failed_gets_500() -> None:
    _, _, [resp] = _register_held(False)
    assert resp.status == 500
    assert "could not be stored" in resp.reason


def test_stored_message_202_waits_for_commit_and_a_failed_commit_answers_500() -> None:
    from test_messaging import ALICE, make_net, message, responses

    net, messenger, ops = make_net()
    held = HeldCommits()
    net.core.commit = held
    assert responses(message(net, "alice", "bob", ALICE, b"eins")) == []  # held
    assert any(op[0] == "add" for op in ops)  # handed to the writer before the answer
    held.complete(True, net.now)
    net.core.pump(net.now)
    assert [r.status for r in responses(net.drain())] == [202]
    assert messenger.waiting() == 1

    assert responses(message(net, "alice", "bob", ALICE, b"zwei")) == []
    held.complete(False, net.now)
    net.core.pump(net.now)
    [resp] = responses(net.drain())
    assert resp.status == 500 and "could not be stored" in resp.reason
    assert messenger.waiting() == 1  # the failed one is not kept: the sender sends it again


def test_unanswered_device_202_waits_for_commit() -> None:
    from test_core import register
    from test_messaging import ALICE, BOB1, make_net, message, responses

    net, messenger, _ = make_net(delivery_timeout=2.0)
    held = HeldCommits()
    register(net, "bob", BOB1)  # (no commit hook yet: answered at once)
    net.core.commit = held
    message(net, "alice", "bob", ALICE)
    assert responses(net.advance(2.5)) == []  # nobody accepted: stored, the 202 waits
    held.complete(True, net.now)
    net.core.pump(net.now)
    assert [r.status for r in responses(net.drain())] == [202]
    assert messenger.waiting() == 1
