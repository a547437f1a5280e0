"""Phone numbers as Germans type them (heimbuero.domain.phone), and every entry point that
takes a number: the HTTP API's number fields and the rules document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from heimbuero.domain.phone import (
    PhoneError,
    format_number,
    parse_number,
    search_parts,
    valid_country,
)
from heimbuero.office.demo import seed_demo
from heimbuero.store import Store
from heimbuero.web.app import WebContext, create_app

MUENCHEN = "+49891234567"


@pytest.mark.parametrize(
    "written",
    ["089 1234567", "089/1234567", "0891234567", "(0 89) 12 34 56-7", "+49 89 1234567",
     "0049 89 1234567", "+49 (89) 1234567", " 089-123 45 67 "],
)  # fmt: skip
def test_german_ways_of_writing_a_number(written: str) -> None:
    assert parse_number(written, 49) == MUENCHEN


def test_mobile_and_country_code() -> None:
    assert parse_number("0170/1111111", 49) == "+491701111111"
    assert parse_number("01 58858", 43) == "+43158858"  # Vienna, read in Austria
    assert parse_number("+49 89 1234567", 43) == MUENCHEN  # international stays itself


@pytest.mark.parametrize(
    ("junk", "says"),
    [("", "empty"), ("abc", "not a phone number"), ("089 12x", "not a phone number"),
     ("12", r"not a valid number in \+49"), ("+4319", "wrong length"), ("0" * 70, "not a phone"),
     ("+49 89 1234567; DROP", "not a phone number")],
)  # fmt: skip
def test_junk_is_refused_with_a_reason(junk: str, says: str) -> None:
    with pytest.raises(PhoneError, match=says):
        parse_number(junk, 49)


def test_country_codes() -> None:
    assert valid_country(49) == 49
    for bad in (999, 0, True):
        with pytest.raises(PhoneError):
            valid_country(bad)  # type: ignore[arg-type]


def test_format_number() -> None:
    assert format_number(MUENCHEN) == "089 1234567"
    assert format_number("+491701111111") == "0170 1111111"
    assert format_number(MUENCHEN, "international") == "+49 89 1234567"
    assert format_number("+43158858") == "+43 1 58858"  # another country's: international
    assert format_number(MUENCHEN, "e164") == MUENCHEN


@pytest.fixture
def office(tmp_path: Path) -> Any:
    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    passwords = seed_demo(store, "office.example")
    ctx = WebContext(store, lambda: {"domain": "office.example", "registrations": 0}, lambda: [])
    with TestClient(create_app(ctx)) as client:
        yield client, passwords, store
    store.close()


def test_api_number_fields_take_german_input(office: Any) -> None:
    http, pw, store = office
    admin = ("admin", pw["admin"])
    r = http.post("/api/numbers", json={"number": "030/7654321", "client": "schulz"}, auth=admin)
    assert r.status_code == 201 and r.json()["number"] == "+49307654321"
    assert http.delete("/api/numbers/030 7654321", auth=admin).status_code == 204
    r = http.post("/api/clients/mueller/approved-numbers", json={"number": "0170/2222222"},
                  auth=admin)  # fmt: skip
    assert r.status_code == 201 and "+491702222222" in r.json()["approved_numbers"]
    r = http.patch("/api/users/mueller", json={"mobile": "0170 3333333"}, auth=admin)
    assert r.status_code == 200 and r.json()["mobile"] == "+491703333333"
    r = http.get("/api/route/simulate", params={"number": "089/1234567"},
                 auth=("mueller", pw["mueller"]))  # fmt: skip
    assert r.status_code == 200 and r.json()["number"] == MUENCHEN
    # junk: a 422 naming the field, nothing stored
    for method, url, body, field in [
        ("post", "/api/numbers", {"number": "089 12x", "client": "schulz"}, "body.number"),
        ("post", "/api/clients/mueller/approved-numbers", {"number": "0170"}, "body.number"),
        ("patch", "/api/users/mueller", {"mobile": "mobil"}, "body.mobile"),
    ]:
        r = http.request(method.upper(), url, json=body, auth=admin)
        assert r.status_code == 422, (url, r.text)
        assert r.json()["detail"][0]["field"] == field, r.json()
        assert "phone number" in r.json()["detail"][0]["msg"] or "valid" in r.text
    assert [n.e164 for n in store.list_numbers("schulz")] == ["+49301234567"]


def test_provider_country_code_reads_national_numbers(office: Any) -> None:
    http, pw, store = office
    admin = ("admin", pw["admin"])
    provider = http.get("/api/provider", auth=admin).json()
    assert provider["country_code"] == 49
    provider["country_code"] = 999
    r = http.put("/api/provider", json=provider, auth=admin)
    assert r.status_code == 422 and "999" in r.text
    provider["country_code"] = 43
    assert http.put("/api/provider", json=provider, auth=admin).status_code == 200
    assert store.get_provider().country_code == 43
    r = http.post("/api/numbers", json={"number": "01 58858", "client": "schulz"}, auth=admin)
    assert r.status_code == 201 and r.json()["number"] == "+43158858"


def test_api_sets_a_clients_dictation_number(office: Any) -> None:
    http, pw, store = office
    admin = ("admin", pw["admin"])
    body = {"number": "030 7654321", "client": "schulz", "dictation": True}
    r = http.post("/api/numbers", json=body, auth=admin)
    assert r.status_code == 201 and r.json()["dictation"] is True
    listed = http.get("/api/numbers", params={"client": "schulz"}, auth=admin).json()
    assert {n["number"]: n["dictation"] for n in listed} == {
        "+49301234567": False, "+49307654321": True}  # fmt: skip
    r = http.patch("/api/numbers/030 7654321", json={"dictation": False}, auth=admin)
    assert r.status_code == 200 and r.json()["dictation"] is False
    assert not [n for n in store.list_numbers("schulz") if n.dictation]
    # the client itself may not, an unknown number is 404, junk a 422
    schulz = ("schulz", pw["schulz"])
    r = http.patch("/api/numbers/030 1234567", json={"dictation": True}, auth=schulz)
    assert r.status_code in (403, 404) and not store.list_numbers("schulz")[0].dictation
    r = http.patch("/api/numbers/030 9999999", json={"dictation": True}, auth=admin)
    assert r.status_code == 404
    r = http.patch("/api/numbers/030 1234567", json={"dictation": "yes please"}, auth=admin)
    assert r.status_code == 422


def test_rules_document_takes_german_numbers(office: Any) -> None:
    http, pw, _store = office
    admin = ("admin", pw["admin"])
    http.post("/api/clients/mueller/approved-numbers", json={"number": "0170 1111111"},
              auth=admin)  # fmt: skip
    mueller = ("mueller", pw["mueller"])
    doc = {
        "client": "mueller",
        "numbers": {
            "089/1234567": {
                "rules": [
                    {
                        "name": "Handy",
                        "steps": [{"targets": ["external:0170/1111111"], "timeout": 20}],
                    }
                ]
            }
        },
    }
    r = http.put("/api/clients/mueller/rules", json=doc, auth=mueller)
    assert r.status_code == 200, r.text
    r = http.get("/api/route/simulate", params={"number": "089 1234567"}, auth=mueller)
    assert r.json()["steps"] == [{"targets": ["external:+491701111111"], "timeout": 20}]
    doc["numbers"]["089/1234567"]["rules"][0]["steps"][0]["targets"] = ["external:0170 1x"]
    r = http.put("/api/clients/mueller/rules", json=doc, auth=mueller)
    assert r.status_code == 422
    [problem] = r.json()["detail"]
    assert (
        problem["field"].endswith("steps[0].targets[0]") and "not a phone number" in problem["msg"]
    )


@pytest.mark.parametrize(
    ("typed", "parts"),
    [("089 1234567", ("0891234567", "+49891234567")), ("+49 89 12", ("+498912",)),
     ("0049 89/12", ("00498912", "+498912")), (" 1234 ", ("1234",)), ("0", ("0",)),
     ("Müller", ()), ("c0001", ()), ("+", ()), ("12+3", ()), ("1" * 70, ())],
)  # fmt: skip
def test_search_parts_of_a_number_as_typed(typed: str, parts: tuple[str, ...]) -> None:
    assert search_parts(typed, 49) == parts
