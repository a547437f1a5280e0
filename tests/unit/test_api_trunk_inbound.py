"""The trunk API's inbound authentication fields (the same as `heimbuero trunk set`)."""

from __future__ import annotations

from typing import Any

from test_api import _auth, office  # noqa: F401  (the fixture of the API tests, same folder)


def test_trunk_inbound_auth_over_http(office: Any) -> None:  # noqa: F811
    http, pw, store = office
    admin = _auth(pw, "admin")
    assert http.get("/api/trunks", auth=admin).json()[0]["inbound_auth"] == "address"
    body = {"inbound_auth": "digest", "inbound_username": "sbc1",
            "inbound_password": "Carrier-Secret-2026"}  # fmt: skip
    r = http.patch("/api/trunks/carrier", json=body, auth=admin)
    assert r.status_code == 200, r.text
    assert r.json()["inbound_auth"] == "digest" and r.json()["inbound_username"] == "sbc1"
    assert "Carrier-Secret-2026" not in http.get("/api/trunks", auth=admin).text
    assert store.get_trunk("carrier").inbound.ha1_md5
    r = http.patch("/api/trunks/carrier", json={"inbound_auth": "digest"}, auth=admin)
    assert r.status_code == 422 and "user name" in r.text
    r = http.patch("/api/trunks/carrier", json={"inbound_auth": "address-tcp"}, auth=admin)
    assert r.status_code == 200 and r.json()["inbound_auth"] == "address-tcp"
    assert store.get_trunk("carrier").inbound.ha1_md5 is None
