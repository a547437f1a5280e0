"""NAT detection at registration: a REGISTER whose Via names its source but whose Contact names
another reachable address is a third-party registration (RFC 3261 §10.2) and is honoured as
written; calls go to the Contact, not to the registering socket."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import USERS
from .harness import (
    LOCALHOST,
    Server,
    free_port,
    run_sipp_caller,
    start_sipp_callee,
    start_sipp_uas,
)

pytestmark = [pytest.mark.e2e, pytest.mark.peers("sipp")]


def test_third_party_registration_reaches_the_registered_uas(
    server: Server, tmp_path: Path
) -> None:
    """A SIPp 'registrar client' on one port registers bob's contact as a SIPp UAS
    (uas_answer.xml) listening on another port (Via = its own socket, so no NAT); a call to
    bob is answered by that UAS. Before NAT detection the INVITE went to the registering socket
    and the call ended in 408."""
    uas_port, client_port = free_port(), free_port()
    uas = start_sipp_uas(
        tmp_path, "uas", port=uas_port, scenario="uas_answer.xml", calls=1, timeout=30,
        service="bob", keys={"contact_host": f"{LOCALHOST}:{uas_port}"},
    )  # fmt: skip
    with uas:
        registrar_client = start_sipp_callee(
            tmp_path, server, user="bob", password=USERS["bob"], calls=0, port=client_port,
            contact_host=f"{LOCALHOST}:{uas_port}", via_host=f"{LOCALHOST}:{client_port}",
            name="registrar-client", timeout=15,
        )  # fmt: skip
        registrar_client.wait(15).check()  # registered, and gone: nobody answers on its port
        caller = run_sipp_caller(
            tmp_path, server, user="alice", password=USERS["alice"], callee="bob", timeout=20
        )
        assert caller.returncode == 0, caller.report()
        result = uas.wait(20)
        assert result.successful_calls == 1, result.report()
