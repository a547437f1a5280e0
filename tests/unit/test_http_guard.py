"""web/guard.py: bounded login checks and failure tables; rules-document limits; [http] keys."""

from __future__ import annotations

import asyncio
import base64
import threading
import tracemalloc
from pathlib import Path

import pytest

from heimbuero.config import ConfigError, load
from heimbuero.office.rules_doc import MAX_DOCUMENT_BYTES, RulesError, check_limits, from_text
from heimbuero.store.db import UserRecord
from heimbuero.web.guard import FailureTable, LoginGate, LoginRefused

USER = UserRecord(1, "alice", "agent", "", "", "hash", None)  # type: ignore[arg-type]


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def test_failure_table_stays_bounded_under_100000_addresses() -> None:
    table = FailureTable(limit=10, max_keys=10_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(100_000):
            table.add(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1000.0)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(table) == 10_000
    assert grown < 8 * 1024 * 1024, grown  # ~10,000 keys, not 100,000


def test_failure_table_limits_and_forgets() -> None:
    table = FailureTable(limit=3, window=60)
    for t in (0.0, 1.0, 2.0):
        assert not table.blocked("a", t)
        table.add("a", t)
    assert table.blocked("a", 3.0)
    assert not table.blocked("b", 3.0)
    assert not table.blocked("a", 61.0)  # the first failure left the window


def test_failure_table_drops_keys_whose_failures_left_the_window() -> None:
    table = FailureTable(limit=3, window=60, max_keys=10_000)
    for i in range(1_000):
        table.add(f"10.0.{i >> 8}.{i & 255}", 1000.0)
    assert len(table) == 1_000
    table.add("192.0.2.1", 1030.0)  # within the window: the others still count
    assert len(table) == 1_001
    table.add("192.0.2.2", 1061.0)  # the first thousand left the window: forgotten
    assert len(table) == 2
    assert not table.blocked("10.0.0.1", 1061.0)


def gate(check_password: object, **kw: int) -> LoginGate:
    return LoginGate(check_password, lambda token: None, **kw)  # type: ignore[arg-type]


def test_busy_pool_answers_503_at_once_and_remembers_good_logins() -> None:
    release = threading.Event()
    calls: list[str] = []

    def slow_check(name: str, password: str) -> UserRecord | None:
        calls.append(name)
        release.wait(5)
        return USER if password == "right-password" else None

    g = gate(slow_check, workers=1, queue=1)

    async def run() -> list[object]:
        tasks = [
            asyncio.ensure_future(g.authenticate(basic(f"u{i}", "wrong"), f"10.0.0.{i}"))
            for i in range(2)
        ]
        await asyncio.sleep(0.05)
        with pytest.raises(LoginRefused) as busy:
            await g.authenticate(basic("u9", "wrong"), "10.0.0.9")
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        ok = await g.authenticate(basic("alice", "right-password"), "10.0.0.1")
        again = await g.authenticate(basic("alice", "right-password"), "10.0.0.1")
        return [busy.value.status, *[getattr(r, "status", r) for r in results], ok, again]

    busy, first, second, ok, again = asyncio.run(run())
    assert busy == 503
    assert (first, second) == (401, 401)
    assert ok is USER and again is USER
    assert calls.count("alice") == 1  # the second login came from the cache


def test_per_address_and_per_account_limits() -> None:
    g = gate(lambda name, password: None)

    async def codes(header: str, address: str, n: int) -> list[int]:
        out = []
        for _ in range(n):
            try:
                await g.authenticate(header, address)
            except LoginRefused as exc:
                out.append(exc.status)
        return out

    assert asyncio.run(codes(basic("x", "y"), "10.0.0.1", 11))[-1] == 429
    # one account from many addresses: blocked for that account after 30 failures
    results = [asyncio.run(codes(basic("alice", "y"), f"10.1.0.{i}", 1))[0] for i in range(31)]
    assert results[:30] == [401] * 30 and results[30] == 429


def test_an_ipv6_guesser_walking_through_its_64_is_one_address() -> None:
    g = gate(lambda name, password: None)

    async def one(user: str, address: str) -> int:
        try:
            await g.authenticate(basic(user, "y"), address)
        except LoginRefused as exc:
            return exc.status
        return 200

    # every attempt from another address of one /64, each for another account
    statuses = [asyncio.run(one(f"u{i}", f"2001:db8:5:6::{i + 1:x}")) for i in range(11)]
    assert statuses[:10] == [401] * 10 and statuses[10] == 429
    assert asyncio.run(one("u99", "2001:db8:5:7::1")) == 401  # the next /64: somebody else


def test_rules_document_limits() -> None:
    step = {"targets": ["user:a"], "timeout": 20}
    with pytest.raises(RulesError) as exc:
        check_limits({"numbers": {"+4989": {"rules": [{"steps": [step]}] * 51}}})
    assert "at most 50" in str(exc.value)
    with pytest.raises(RulesError) as exc:
        check_limits({"numbers": {"+4989": {"rules": [{"steps": [step] * 11}]}}})
    assert "at most 10 steps" in str(exc.value)
    with pytest.raises(RulesError) as exc:
        from_text("a" * (MAX_DOCUMENT_BYTES + 1))
    assert "at most" in str(exc.value)
    check_limits({"numbers": {"+4989": {"rules": [{"steps": [step]}] * 50}}})


def test_http_settings_parse(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[server]\ndomain = "x.test"\n[http]\ntrusted_proxies = ["10.0.0.0/8", "192.0.2.1"]\n'
        "header_timeout = 3\nmax_connections = 50\nmax_body_kb = 64\n"
    )
    http = load(tmp_path).http
    assert http.trusted_proxies == ("10.0.0.0/8", "192.0.2.1")
    assert (http.header_timeout, http.max_connections, http.max_body_kb) == (3, 50, 64)
    (tmp_path / "config.toml").write_text(
        '[server]\ndomain = "x.test"\n[http]\ntrusted_proxies = ["nah"]\n'
    )
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load(tmp_path)


def test_connection_caps_stay_below_the_open_files_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    from heimbuero.config import HttpSettings
    from heimbuero.server import FD_HEADROOM, connection_caps

    limits = {"now": (1024, 4096)}
    monkeypatch.setattr(resource, "getrlimit", lambda which: limits["now"])
    monkeypatch.setattr(resource, "setrlimit", lambda which, v: limits.update(now=v))
    sip, http = connection_caps(HttpSettings(listen="127.0.0.1:8080"))
    assert limits["now"] == (4096, 4096)  # the soft limit was raised to the hard one
    assert sip + http == 4096 - FD_HEADROOM and http == (4096 - FD_HEADROOM) // 4
    sip, http = connection_caps(HttpSettings(listen="127.0.0.1:8080", max_connections=100))
    assert (sip, http) == (4096 - FD_HEADROOM - 100, 100)
    assert connection_caps(HttpSettings())[1] == 0  # no HTTP: everything for SIP


def test_a_changed_password_is_not_remembered() -> None:
    from fastapi.testclient import TestClient
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from heimbuero.web.guard import BodyGuard

    g = gate(lambda name, password: USER if password == "right-password" else None)

    async def ok(request: object) -> Response:
        return Response(status_code=204)

    app = BodyGuard(
        Starlette(routes=[Route("/api/users/{n}/password", ok, methods=["PUT"])]),
        g, max_body=1024, upload_max=1024,
    )  # fmt: skip
    asyncio.run(g.authenticate(basic("alice", "right-password"), "10.0.0.1"))
    assert len(g.cache) == 1
    with TestClient(app) as http:
        refused = http.put("/api/users/alice/password", content=b"{}")
        assert refused.status_code == 401  # no login, body unread
        assert len(g.cache) == 1
        done = http.put(
            "/api/users/alice/password", content=b"{}", auth=("alice", "right-password")
        )
        assert done.status_code == 204
    assert len(g.cache) == 0
