"""Who may read /metrics, and the pull collector's reading of a server's objects."""

from __future__ import annotations

import ipaddress

from heimbuero.config import MetricsSettings
from heimbuero.web.ops import allowed

LOOPBACK = MetricsSettings().networks()
TOKEN = "metrics-token-0123456789abcdef"


def test_loopback_by_default_token_from_elsewhere() -> None:
    assert allowed("127.0.0.1", "", LOOPBACK, None)
    assert allowed("::1", "", LOOPBACK, None)
    assert allowed("::ffff:127.0.0.1", "", LOOPBACK, None)  # a dual-stack socket's view
    assert not allowed("192.0.2.7", "", LOOPBACK, None)
    assert not allowed("192.0.2.7", f"Bearer {TOKEN}", LOOPBACK, None)  # no token configured
    assert allowed("192.0.2.7", f"Bearer {TOKEN}", LOOPBACK, TOKEN)
    assert allowed("192.0.2.7", f"bearer  {TOKEN} ", LOOPBACK, TOKEN)
    assert not allowed("192.0.2.7", f"Bearer {TOKEN}x", LOOPBACK, TOKEN)
    assert not allowed("192.0.2.7", f"Basic {TOKEN}", LOOPBACK, TOKEN)
    assert not allowed(None, "", LOOPBACK, TOKEN)
    assert not allowed("not-an-address", "", LOOPBACK, None)
    nets = (ipaddress.ip_network("10.0.0.0/8"),)
    assert allowed("10.1.2.3", "", nets, None) and not allowed("127.0.0.1", "", nets, None)
