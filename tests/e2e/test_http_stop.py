"""A stop with event streams open: `heimbuero serve` with a console page and API clients
listening (Server-Sent Events, which never finish by themselves) still exits promptly on
SIGTERM with exit code 0, and each stream ends cleanly (the client sees the end of the
response, not a reset), so the browser reconnects to the next server."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import httpx
import pytest

from .harness import Server, wait_until

pytestmark = pytest.mark.e2e

STREAMS = ("/api/messages/stream", "/api/presence/stream", "/api/dictation/stream", "/api/events")


def _listen(url: str, auth: tuple[str, str] | None, cookies: httpx.Cookies | None,
            got: dict[str, str]) -> None:  # fmt: skip
    """Read the stream at `url` until the server ends it; `got[url]`: how it ended."""
    try:
        with (
            httpx.Client(auth=auth, cookies=cookies, timeout=httpx.Timeout(5, read=120)) as http,
            http.stream("GET", url) as r,
        ):
            got[url] = f"open {r.status_code}"
            for _ in r.iter_bytes():
                pass
        got[url] = f"ended {r.status_code}"
    except httpx.HTTPError as exc:
        got[url] = f"error {exc!r}"


def test_sigterm_ends_open_event_streams(tmp_path: Path) -> None:
    srv = Server(tmp_path / "server", demo=True, http=True)
    with srv:
        with httpx.Client(base_url=srv.http_url, timeout=10, follow_redirects=True) as page:
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.get("/").text)
            assert csrf, "login page without CSRF token"
            r = page.post("/login", data={"csrf": csrf.group(1), "name": "anna",
                                          "password": srv.users["anna"]})  # fmt: skip
            assert r.status_code == 200, r.text
            cookies = page.cookies
        got: dict[str, str] = {}
        threads = [
            threading.Thread(target=_listen, args=(srv.http_url + "/events", None, cookies, got))
        ] + [
            threading.Thread(
                target=_listen, args=(srv.http_url + path, ("admin", srv.users["admin"]), None, got)
            )
            for path in STREAMS
        ]
        for t in threads:
            t.start()
        wait_until(lambda: len(got) == len(threads), 10, what="all streams open")
        assert all(v == "open 200" for v in got.values()), got
        started = time.monotonic()
        assert srv.stop(timeout=10) == 0
        took = time.monotonic() - started
        for t in threads:
            t.join(10)
        assert all(v == "ended 200" for v in got.values()), got
    assert "heimbuero: stopped" in srv.log_text()
    # (a stop without any stream takes about 2 s here; before streams ended at the stop, the
    # server waited for the browsers to go away)
    assert took < 8, f"the stop took {took:.1f} s"
