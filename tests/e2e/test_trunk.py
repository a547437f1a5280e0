"""Registration to a carrier through the real server: a SIPp registrar plays the carrier,
challenges heimbuero's REGISTER and verifies its digest answer with SIPp's own verifyauth."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .harness import Server, free_port, scenario_path, start_sipp_uas

pytestmark = [pytest.mark.e2e, pytest.mark.peers("sipp")]

TRUNK_USER = "hb4711"
TRUNK_PASS = "Carrier-Secret-9"


def test_trunk_registers_at_the_carrier_with_digest(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    text = scenario_path("trunk_carrier_registrar.xml").read_text(encoding="utf-8")
    scenario = tmp_path / "carrier_registrar.xml"
    scenario.write_text(text.replace("TRUNK_USER", TRUNK_USER).replace("TRUNK_PASS", TRUNK_PASS))
    carrier_port = free_port()
    with start_sipp_uas(
        tmp_path, "carrier", port=carrier_port, scenario=scenario, timeout=30
    ) as carrier:
        srv = server_factory()
        # Added while the server runs: it picks the trunk up at its next office reload.
        srv.cli(
            "trunk", "add", "carrier", "--address", f"127.0.0.1:{carrier_port}",
            "--username", TRUNK_USER, "--password", TRUNK_PASS, "--register",
            "--data", str(srv.data_dir),
        )  # fmt: skip
        result = carrier.wait(timeout=30)
    result.check()
    log = (result.rundir / "actions.log").read_text(encoding="utf-8", errors="replace")
    assert "TRUNK AUTH OK" in log and "TRUNK AUTH INVALID" not in log
