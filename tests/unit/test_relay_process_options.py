"""The relay process's real-time option when the system refuses it: one line on stderr, and
the relay goes on at normal priority (tests/e2e/test_media_nat.py: granted, with a server)."""

from __future__ import annotations

import os

import pytest

from heimbuero.media import relay


def test_a_refused_realtime_priority_is_said_once_and_the_relay_goes_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[tuple[int, int, int]] = []

    def refuse(pid: int, policy: int, param: os.sched_param) -> None:
        asked.append((pid, policy, param.sched_priority))
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    relay.realtime(10)
    assert asked == [(0, os.SCHED_FIFO, 10)]
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "real-time priority 10 refused" in err and "CAP_SYS_NICE" in err
    assert "runs at normal priority" in err
