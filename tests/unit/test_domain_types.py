"""Typed domain values: plan targets parsed once into a small union, rule time windows parsed
once when a rule is built (not on every route()), and what the adapters do with bad ones."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from heimbuero.domain.model import (
    ExternalTarget,
    GroupTarget,
    Step,
    UserTarget,
    VoicemailTarget,
    When,
    parse_target,
)
from heimbuero.office.demo import seed_demo
from heimbuero.store import Store
from heimbuero.web.app import WebContext, create_app


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("user:anna", UserTarget("anna")),
        ("group:team", GroupTarget("team")),
        ("external:+491701111111", ExternalTarget("+491701111111")),
        ("voicemail:mueller", VoicemailTarget("mueller")),
        ("  user: anna ", UserTarget("anna")),
    ],
)
def test_targets_parse_once_and_print_their_document_form(text: str, value: object) -> None:
    assert parse_target(text) == value
    assert str(value) == text.replace(" ", "")
    assert parse_target(str(value)) == value


@pytest.mark.parametrize("bad", ["anna", "phone:anna", "user:", ":anna", "", "external"])
def test_a_target_of_no_known_kind_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a target"):
        parse_target(bad)


def test_steps_hold_typed_targets_even_when_given_text() -> None:
    step = Step(("user:anna", GroupTarget("team")), 20)  # type: ignore[arg-type]
    assert step.targets == (UserTarget("anna"), GroupTarget("team"))
    assert step.target_texts() == ["user:anna", "group:team"]
    assert step == Step((UserTarget("anna"), GroupTarget("team")), 20)


def test_a_rule_window_is_parsed_when_the_rule_is_built() -> None:
    assert When().window is None
    assert When(start="08:00", end="17:30").window == (time(8, 0), time(17, 30))
    assert When(start="22:00", end="24:00").window == (time(22, 0), None)
    assert When(end="12:00").window == (time(0, 0), time(12, 0))
    # the parsed window is no part of a rule's identity
    assert When(start="08:00") == When(start="08:00")
    with pytest.raises(ValueError, match="not a time"):
        When(start="8 Uhr")


@pytest.fixture
def office(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Store]]:
    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    passwords = seed_demo(store, "office.example")
    ctx = WebContext(store, lambda: {"domain": "office.example", "registrations": 0}, lambda: [])
    with TestClient(create_app(ctx)) as client:
        yield client, passwords, store
    store.close()


def test_provider_default_steps_with_a_bad_target_are_refused(office: Any) -> None:
    """Before, any text was stored as a default target; now it is parsed and a bad one is a
    422 naming the step, and the stored plan stays as it was."""
    http, pw, store = office
    admin = ("admin", pw["admin"])
    body = http.get("/api/provider", auth=admin).json()
    before = store.get_provider()
    bad = dict(body, default_steps=[{"targets": ["group:team", "phone:anna"], "timeout": 30}])
    r = http.put("/api/provider", json=bad, auth=admin)
    assert r.status_code == 422, r.text
    assert "default_steps[0].targets" in r.text and "phone:anna" in r.text
    assert store.get_provider() == before
    good = dict(body, default_steps=[{"targets": ["group:team", "user:anna"], "timeout": 25}])
    assert http.put("/api/provider", json=good, auth=admin).status_code == 200
    steps = store.get_provider().default_steps
    assert steps == (Step((GroupTarget("team"), UserTarget("anna")), 25),)
    assert http.get("/api/provider", auth=admin).json()["default_steps"] == [
        {"targets": ["group:team", "user:anna"], "timeout": 25}
    ]
