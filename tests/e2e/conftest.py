"""Fixtures for the end-to-end tests: a running `heimbuero serve` with a few users."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import Server

DOMAIN = "office.heimbuero.test"

# Passwords: at least 10 characters and not containing the user name (the server's policy).
# (Each `user add` takes about a second: keep the list short.)
USERS = {
    "alice": "Lavendel-Feld-71",
    "bob": "Kupfer-Kanne-38",
}


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """make_server(name="server", **Server kwargs) -> a started Server, stopped at teardown.

    Teardown sends SIGTERM and fails the test if the exit code is not 0.
    """
    with contextlib.ExitStack() as stack:

        def make(name: str = "server", **kw: Any) -> Server:
            kw.setdefault("domain", DOMAIN)
            kw.setdefault("users", USERS)
            return stack.enter_context(Server(tmp_path / name, **kw))

        yield make


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    """heimbuero serve on udp+tcp 127.0.0.1:<free port>, domain DOMAIN, users USERS."""
    return server_factory()
