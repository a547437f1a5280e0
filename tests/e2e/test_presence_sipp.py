"""End-to-end presence with SIPp: the real `heimbuero serve` against SIPp watchers, publishers
and phones (scenarios/presence_*.xml).

- subscribe, refresh and unsubscribe (Subscription-State active ... terminated);
- NOTIFY when the watched user registers and when its registration expires;
- NOTIFY when the watched user's call starts (RPID on-the-phone) and ends;
- PUBLISH with the entity-tag lifecycle: create, refresh, modify, remove, 412 for unknown tags;
- a forbidden (and an unknown) presentity is 403 after authentication.

The scenarios check what they receive with regexp actions (`check_it="true"`: a mismatch fails
the SIPp run) and write what they saw to their log (-trace_logs), which the tests read back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import DOMAIN, USERS
from .harness import (
    HarnessError,
    Server,
    SippProcess,
    SippResult,
    free_port,
    run_sipp,
    run_sipp_caller,
    start_sipp,
    start_sipp_callee,
    tail,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.peers("sipp")]


def sipp_log(result: SippResult | SippProcess) -> list[str]:
    """The lines the scenario's <log> actions wrote (-trace_logs)."""
    rundir = result.rundir
    return [ln.strip() for ln in tail(rundir / "actions.log", 100_000).splitlines() if ln.strip()]


def logged(result: SippResult | SippProcess, prefix: str) -> str:
    """The first log line starting with `prefix` (without it); HarnessError when there is none."""
    for line in sipp_log(result):
        if line.startswith(prefix + " ") or line == prefix:
            return line[len(prefix) :].strip()
    report = result.result().report() if isinstance(result, SippProcess) else result.report()
    raise HarnessError(f"no log line {prefix!r} from SIPp {result.name}\n{report}")


def wait_logged(proc: SippProcess, prefix: str, timeout: float = 10) -> str:
    """Wait until the running scenario has logged a line starting with `prefix`."""

    def found() -> str | None:
        for line in sipp_log(proc):
            if line.startswith(prefix):
                return line
        if proc.poll() is not None:
            raise HarnessError(
                f"SIPp {proc.name} ended before logging {prefix!r}\n{proc.result().report()}"
            )
        return None

    try:
        return wait_until(found, timeout, what=f"SIPp {proc.name} to log {prefix!r}")
    except HarnessError as exc:
        if "timed out" in str(exc):
            proc.stop()
            raise HarnessError(f"{exc}\n{proc.result().report()}") from None
        raise


def watcher_kw(server: Server, watcher: str, presentity: str, password: str) -> dict[str, object]:
    """SIPp options for a presence_*.xml watcher: `watcher` subscribes to `presentity`."""
    return {
        "remote": server.address,
        "port": free_port(),
        "calls": 1,
        "service": presentity,
        "auth": (watcher, password),
        "auth_uri": f"{presentity}@{server.domain}",
    }


def test_subscribe_refresh_unsubscribe(server: Server, tmp_path: Path) -> None:
    res = run_sipp(
        tmp_path,
        "watch-bob",
        scenario="presence_subscribe.xml",
        timeout=20,
        keys={"domain": DOMAIN, "user": "alice", "expires": "600", "refresh": "300"},
        **watcher_kw(server, "alice", "bob", USERS["alice"]),
    ).check()
    assert logged(res, "SUB200") == "600"
    assert re.fullmatch(r"active;expires=(600|599) closed", logged(res, "NOTIFY1")), sipp_log(res)
    assert logged(res, "REFRESH200") == "300"
    assert re.fullmatch(r"active;expires=(300|299) closed", logged(res, "NOTIFY2")), sipp_log(res)
    assert logged(res, "UNSUB200") == "0"
    assert logged(res, "NOTIFY3").startswith("terminated"), sipp_log(res)
