"""The trunk API's transport "auto" (DNS NAPTR chooses UDP or TCP, RFC 3263 §4.1): only for a
host name, and then without a port; the same checks as `heimbuero trunk set --transport auto`."""

from __future__ import annotations

from typing import Any

from test_api import _auth, office  # noqa: F401  (the fixture of the API tests, same folder)


def test_trunk_transport_auto_over_http(office: Any) -> None:  # noqa: F811
    http, pw, store = office
    admin = _auth(pw, "admin")
    body = {"host": "sip.carrier.example", "transport": "auto"}
    r = http.patch("/api/trunks/carrier", json=body, auth=admin)
    assert r.status_code == 200, r.text
    assert (r.json()["transport"], r.json()["port"]) == ("auto", 0)  # the port: by SRV
    trunk = store.get_trunk("carrier")
    assert (trunk.host, trunk.port, trunk.transport) == ("sip.carrier.example", 0, "auto")
    # an address, or a port, leaves nothing for NAPTR to choose: refused, nothing changed
    for bad in ({"host": "192.0.2.7", "transport": "auto"},
                {"host": "sip.carrier.example", "port": 5080, "transport": "auto"}):  # fmt: skip
        r = http.patch("/api/trunks/carrier", json=bad, auth=admin)
        assert r.status_code == 422 and "auto" in r.text, r.text
    assert store.get_trunk("carrier") == trunk
    r = http.patch("/api/trunks/carrier", json={"transport": "naptr"}, auth=admin)
    assert r.status_code == 422 and "auto" in r.text, r.text  # the choices are named
    r = http.post("/api/trunks", json={"name": "second", "host": "b.example", "transport": "AUTO"},
                  auth=admin)  # fmt: skip
    assert r.status_code == 201 and (r.json()["transport"], r.json()["port"]) == ("auto", 0), r.text
