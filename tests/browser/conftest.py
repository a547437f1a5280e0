"""Browser tests: Playwright (from PyPI) driving Debian's chromium (`/usr/bin/chromium`, never
`playwright install`) against the real `heimbuero serve` with the demo office."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Server

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Server]:
    with Server(tmp_path / "server", demo=True, http=True) as srv:
        yield srv


def login(page: Any, srv: Server, name: str) -> None:
    page.goto(srv.http_url + "/")
    page.get_by_label(re.compile("Benutzername|User name")).fill(name)
    page.get_by_label(re.compile("^(Passwort|Password)$")).fill(srv.users[name])
    page.get_by_role("button", name=re.compile("Anmelden|Log in")).click()
    page.wait_for_load_state()
