"""The rules API and the simulators with caller conditions and the document version:
ETag on GET, If-Match on PUT (412 when stale), `caller` in the simulators (FastAPI
TestClient against a real SQLite store with the demo office)."""

from __future__ import annotations

import copy
from typing import Any

from tests.unit.test_api import _auth, office  # noqa: F401  (the fixture)

NO = "+49891234567"
MOBILE = "+491701111111"
VIP = "+491712222222"
AT = "2026-03-03T10:00:00+01:00"  # a Tuesday, in office hours


def vip_rule() -> dict[str, Any]:
    return {
        "name": "VIP",
        "when": {"caller": {"vip": True}},
        "steps": [{"targets": [f"external:{MOBILE}"], "timeout": 20}],
    }


def test_get_gives_the_version_as_etag_and_put_with_it_saves(office: Any) -> None:  # noqa: F811
    http, pw, store = office
    mueller = _auth(pw, "mueller")
    r = http.get("/api/clients/mueller/rules", auth=mueller)
    etag = r.headers["etag"]
    assert etag.startswith('"') and len(etag) == 22
    doc = r.json()
    doc["numbers"][NO]["rules"].insert(0, vip_rule())
    r = http.put("/api/clients/mueller/rules", json=doc, auth=mueller, headers={"If-Match": etag})
    assert r.status_code == 200, r.text
    assert r.headers["etag"] != etag
    assert r.headers["etag"] == http.get("/api/clients/mueller/rules", auth=mueller).headers["etag"]
    assert r.json()["numbers"][NO]["rules"][0] == vip_rule()
    # the same If-Match again is stale now: 412 and nothing changes
    stale = copy.deepcopy(doc)
    stale["numbers"][NO]["rules"] = stale["numbers"][NO]["rules"][1:]
    r = http.put("/api/clients/mueller/rules", json=stale, auth=mueller,
                 headers={"If-Match": etag})  # fmt: skip
    assert r.status_code == 412
    assert "changed meanwhile" in r.json()["detail"]
    assert store.get_rules_document("mueller")["numbers"][NO]["rules"][0]["name"] == "VIP"


def test_put_without_if_match_or_with_star_replaces(office: Any) -> None:  # noqa: F811
    http, pw, _ = office
    mueller = _auth(pw, "mueller")
    doc = http.get("/api/clients/mueller/rules", auth=mueller).json()
    assert http.put("/api/clients/mueller/rules", json=doc, auth=mueller).status_code == 200
    r = http.put("/api/clients/mueller/rules", json=doc, auth=mueller, headers={"If-Match": "*"})
    assert r.status_code == 200


def test_forged_and_weak_if_match_are_412(office: Any) -> None:  # noqa: F811
    http, pw, _ = office
    mueller = _auth(pw, "mueller")
    r = http.get("/api/clients/mueller/rules", auth=mueller)
    doc, etag = r.json(), r.headers["etag"]
    for tag in ('"0000"', f"W/{etag}", f'{etag}, "x"', "nonsense"):
        r = http.put("/api/clients/mueller/rules", json=doc, auth=mueller,
                     headers={"If-Match": tag})  # fmt: skip
        assert r.status_code == 412, tag
    # schulz's version does not open mueller's document
    schulz_tag = http.get("/api/clients/schulz/rules", auth=_auth(pw, "admin")).headers["etag"]
    r = http.put("/api/clients/mueller/rules", json=doc, auth=mueller,
                 headers={"If-Match": schulz_tag})  # fmt: skip
    assert r.status_code == 412
    # an oversize header is refused before anything else
    r = http.put("/api/clients/mueller/rules", json=doc, auth=mueller,
                 headers={"If-Match": '"' + "a" * 300 + '"'})  # fmt: skip
    assert r.status_code == 422


def test_invalid_and_oversize_caller_conditions_are_422(office: Any) -> None:  # noqa: F811
    http, pw, store = office
    mueller = _auth(pw, "mueller")
    doc = http.get("/api/clients/mueller/rules", auth=mueller).json()
    rules = doc["numbers"][NO]["rules"]
    for caller, words in [
        ({"vip": "schulz"}, "expected true"),
        ({"vip_of": "schulz"}, "unknown key"),
        ({"numbers": ["0171 22x"]}, "not a phone number"),
        ({"numbers": [f"+4930555{i:04d}" for i in range(51)]}, "at most 50 callers per rule"),
        ({"prefixes": ["171"]}, "with its 0"),
    ]:
        bad = copy.deepcopy(doc)
        bad["numbers"][NO]["rules"] = [dict(vip_rule(), when={"caller": caller}), *rules]
        r = http.put("/api/clients/mueller/rules", json=bad, auth=mueller)
        assert r.status_code == 422, caller
        detail = r.json()["detail"]
        assert any("rules[0].when.caller" in p["loc"] and words in p["msg"] for p in detail), detail
    assert store.get_rules_document("mueller")["numbers"][NO]["rules"][0]["name"] == "Override"


def test_simulators_take_the_caller(office: Any) -> None:  # noqa: F811
    http, pw, _ = office
    admin, mueller = _auth(pw, "admin"), _auth(pw, "mueller")
    vips = {"vip_callers": [{"number": "0171 2222222", "name": "Herr Meier"}]}
    r = http.patch("/api/clients/mueller", auth=admin, json=vips)
    assert r.status_code == 200, r.text
    doc = http.get("/api/clients/mueller/rules", auth=mueller).json()
    doc["numbers"][NO]["rules"].insert(2, vip_rule())  # after the overrides
    assert http.put("/api/clients/mueller/rules", json=doc, auth=mueller).status_code == 200
    sim = "/api/route/simulate"
    plan = http.get(sim, params={"number": NO, "at": AT, "caller": "0171 2222222"},
                    auth=mueller).json()  # fmt: skip
    assert plan["rule"] == "VIP" and plan["steps"][0]["targets"] == [f"external:{MOBILE}"]
    plan = http.get(sim, params={"number": NO, "at": AT, "caller": "030 1234567"},
                    auth=mueller).json()  # fmt: skip
    assert plan["rule"] == "Werktag" and "not a VIP caller" in plan["reason"]
    assert http.get(sim, params={"number": NO, "at": AT}, auth=mueller).json()["rule"] == "Werktag"
    r = http.get(sim, params={"number": NO, "caller": "0171 22x"}, auth=mueller)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "query.caller"
    # the portal's simulator, with the stored rules and with a draft
    body = {"number": NO, "at": AT, "caller": "+49 171 2222222"}
    plan = http.post("/api/clients/mueller/simulate", json=body, auth=mueller).json()
    assert plan["rule"] == "VIP"
    draft = copy.deepcopy(doc)
    draft["numbers"][NO]["rules"][2]["when"] = {"caller": {"prefixes": ["030"]}}
    body = {"number": NO, "at": AT, "caller": "030 1234567", "draft": draft}
    assert (
        http.post("/api/clients/mueller/simulate", json=body, auth=mueller).json()["rule"] == "VIP"
    )
    r = http.post("/api/clients/mueller/simulate", json={"caller": "hallo"}, auth=mueller)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body.caller"
    r = http.post("/api/clients/mueller/simulate", json={"caller": "0" * 65}, auth=mueller)
    assert r.status_code == 422
