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
import time
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


def test_notify_on_registration_and_expiry(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    server = server_factory(sip_options={"min_expires": 5})
    with start_sipp(
        tmp_path,
        "watch-bob",
        scenario="presence_watch_register.xml",
        timeout=30,
        keys={"domain": DOMAIN, "user": "alice", "expires": "60"},
        **watcher_kw(server, "alice", "bob", USERS["alice"]),
    ) as watcher:
        wait_logged(watcher, "WATCHING")  # subscribed; bob is offline
        run_sipp(
            tmp_path,
            "register-bob",
            scenario="register.xml",
            remote=server.address,
            port=free_port(),
            timeout=10,
            service="bob",
            auth=("bob", USERS["bob"]),
            auth_uri=server.domain,
            keys={"domain": DOMAIN, "expires": "5"},
        ).check()
        registered_at = time.monotonic()
        wait_logged(watcher, "ONLINE", timeout=5)
        # nobody refreshes bob's binding: it expires after 5 s and the watcher hears of it then
        wait_logged(watcher, "OFFLINE", timeout=15)
        expired_after = time.monotonic() - registered_at
        res = watcher.wait().check()
    assert [ln.split()[0] for ln in sipp_log(res)] == ["WATCHING", "ONLINE", "OFFLINE", "ENDED"]
    assert 4.0 <= expired_after <= 8.0, f"offline NOTIFY {expired_after:.1f} s after REGISTER"


def test_notify_on_call_start_and_end(server: Server, tmp_path: Path) -> None:
    # bob's phone registers (and waits for one call) before alice subscribes to bob
    with (
        start_sipp_callee(tmp_path, server, user="bob", password=USERS["bob"]) as callee,
        start_sipp(
            tmp_path,
            "watch-bob",
            scenario="presence_watch_call.xml",
            timeout=30,
            keys={"domain": DOMAIN, "user": "alice", "expires": "60"},
            **watcher_kw(server, "alice", "bob", USERS["alice"]),
        ) as watcher,
    ):
        wait_logged(watcher, "WATCHING")  # bob registered, not on the phone
        caller = run_sipp_caller(
            tmp_path,
            server,
            user="alice",
            password=USERS["alice"],
            callee="bob",
            extra=["-d", "1000"],  # the call lasts 1 s
        ).check()
        assert caller.successful_calls == 1
        callee.wait().check()
        res = watcher.wait().check()
    assert [ln.split()[0] for ln in sipp_log(res)] == [
        "WATCHING", "ON-THE-PHONE", "CALL-ENDED", "ENDED",
    ]  # fmt: skip


def test_publish_etag_lifecycle(server: Server, tmp_path: Path) -> None:
    res = run_sipp(
        tmp_path,
        "publish-alice",
        scenario="presence_publish.xml",
        remote=server.address,
        port=free_port(),
        calls=1,
        timeout=20,
        service="alice",
        auth=("alice", USERS["alice"]),
        auth_uri=f"alice@{server.domain}",
        keys={"domain": DOMAIN, "expires": "600"},
    ).check()
    etag1, exp1 = logged(res, "PUBLISHED").split()
    etag2, exp2 = logged(res, "REFRESHED").split()
    etag3, exp3 = logged(res, "MODIFIED").split()
    assert (exp1, exp2, exp3) == ("600", "600", "600")
    assert len({etag1, etag2, etag3}) == 3, "every successful PUBLISH gets a new entity tag"
    assert logged(res, "STALE").startswith("SIP/2.0 412")
    assert logged(res, "REMOVED") == "0"
    assert logged(res, "GONE").startswith("SIP/2.0 412")


def test_forbidden_watcher_gets_403(server: Server, tmp_path: Path) -> None:
    # two client users without a business: neither may see the other (only staff and the users
    # of its own business); an unknown presentity gets the very same answer
    server.add_user("carol", "Tannen-Zapfen-55", role="client")
    server.add_user("dave", "Moos-Polster-66", role="client")
    refused = {}
    for presentity in ("carol", "nobody"):
        res = run_sipp(
            tmp_path,
            f"dave-watch-{presentity}",
            scenario="presence_forbidden.xml",
            timeout=15,
            keys={"domain": DOMAIN, "user": "dave", "expires": "60"},
            **watcher_kw(server, "dave", presentity, "Moos-Polster-66"),
        ).check()
        refused[presentity] = logged(res, "REFUSED")
    assert refused["carol"].startswith("SIP/2.0 403"), refused
    assert refused["carol"] == refused["nobody"], "forbidden and unknown must look the same"
