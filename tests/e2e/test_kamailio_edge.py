"""Kamailio as an edge proxy in front of heimbuero (RFC 3327 Path): two baresip phones use
Kamailio as their outbound proxy; Kamailio adds a Path to their REGISTERs (path module,
`add_path()`), record-routes and forwards everything for our domain to heimbuero, and sends what
heimbuero sends back (INVITE and MESSAGE with the Path as Route, in-dialog requests along the
Record-Route) on to the phones with loose_route(). Calls work both ways through the edge, and a
MESSAGE too; heimbuero stored the Path with each binding."""

from __future__ import annotations

import contextlib
import glob
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import DOMAIN, USERS
from .harness import (
    LOCALHOST,
    Baresip,
    HarnessError,
    Server,
    free_port,
    sip_ping,
    tail,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.peers("baresip", "kamailio")]

EDGE_CFG = """#!KAMAILIO
# The edge proxy of test_kamailio_edge.py: Path on REGISTER, Record-Route on dialogs, everything
# for {domain} to heimbuero, everything else (from heimbuero, with our Path as Route) on to the
# phones.
debug=2
log_stderror=yes
children=2
disable_tcp=yes
auto_aliases=no
dns=no
rev_dns=no

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "path.so"

request_route {{
	if (!mf_process_maxfwd_header("10")) {{
		sl_send_reply("483", "Too Many Hops");
		exit;
	}}
	if (is_method("OPTIONS") && $rU == $null && $rd == "{host}") {{
		sl_send_reply("200", "OK");  # readiness probe
		exit;
	}}
	if (is_method("CANCEL")) {{
		if (t_check_trans()) t_relay();
		exit;
	}}
	if (has_totag()) {{
		if (loose_route()) {{
			t_relay();
			exit;
		}}
		if (is_method("ACK")) {{
			if (t_check_trans()) t_relay();
			exit;
		}}
		sl_send_reply("404", "Not here");
		exit;
	}}
	loose_route();  # our own Route: a phone's outbound proxy entry, or the Path heimbuero used
	if (is_method("REGISTER")) {{
		add_path();
		$du = "sip:{server}";
		t_relay();
		exit;
	}}
	if (is_method("INVITE|SUBSCRIBE")) record_route();
	if ($rd == "{domain}") $du = "sip:{server}";  # a phone's request: to heimbuero
	t_relay();  # heimbuero's request: to the phone its Request-URI names
}}
"""


def _modules() -> str:
    for found in glob.glob("/usr/lib/*/kamailio/modules") + glob.glob("/usr/lib*/kamailio/modules"):
        if Path(found, "path.so").exists():
            return found
    raise HarnessError("Kamailio's path module (path.so) not found: apt-get install kamailio")


@contextlib.contextmanager
def kamailio_edge(tmp_path: Path, server: Server) -> Iterator[int]:
    """Kamailio on udp 127.0.0.1:<free port> in front of `server`; yields its port."""
    exe = shutil.which("kamailio") or "/usr/sbin/kamailio"
    port = free_port()
    rundir = tmp_path / "kamailio"
    rundir.mkdir()
    cfg = rundir / "kamailio.cfg"
    cfg.write_text(EDGE_CFG.format(domain=DOMAIN, server=server.address, host=LOCALHOST))
    log_path = rundir / "out.log"
    argv = [exe, "-f", str(cfg), "-L", _modules(), "-l", f"udp:{LOCALHOST}:{port}", "-DD", "-E",
            "-m", "64", "-M", "8", "-Y", str(rundir), "-w", str(rundir)]  # fmt: skip
    with log_path.open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(
            lambda: proc.poll() is not None or sip_ping(port, timeout=0.5) is not None,
            15, interval=0.2, what="kamailio to answer OPTIONS",
        )  # fmt: skip
        if proc.poll() is not None:
            raise HarnessError(f"kamailio exited at start\n{tail(log_path)}")
        yield port
    except BaseException:
        print(f"--- kamailio log ---\n{tail(log_path)}")
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class OutboundPhone(Baresip):
    """baresip with RFC 5626 outbound (`sipnat=outbound`): only then does baresip 1.0 say
    `Supported: path` in its REGISTER. Outbound needs the +sip.instance UUID, which the uuid
    module sets when it is loaded before the accounts."""

    def write_config(self) -> None:
        super().write_config()
        cfg = self.dir / "config"
        account = "module_tmp\t\taccount.so"
        cfg.write_text(cfg.read_text().replace(account, f"module_tmp\t\tuuid.so\n{account}"))


def _phone(tmp_path: Path, server: Server, user: str, edge: int, **kw: object) -> Baresip:
    return OutboundPhone(
        tmp_path, user=user, password=USERS[user], server=server,
        server_address=f"{LOCALHOST}:{edge}",
        account_params=";sipnat=outbound", **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_phones_behind_a_kamailio_edge_call_and_message_each_other(
    server: Server, tmp_path: Path
) -> None:
    with (
        kamailio_edge(tmp_path, server) as edge,
        _phone(tmp_path, server, "alice", edge, answermode="auto",
               contacts=[f'"Bob" <sip:bob@{DOMAIN}>']) as alice,
        _phone(tmp_path, server, "bob", edge, answermode="auto",
               contacts=[f'"Alice" <sip:alice@{DOMAIN}>']) as bob,
    ):  # fmt: skip
        alice.wait_registered()
        bob.wait_registered()
        # heimbuero stored each binding with the edge's Path.
        rows = server.sql("SELECT aor, path FROM bindings ORDER BY aor")
        assert [r[0] for r in rows] == ["alice", "bob"], rows
        assert all(f"127.0.0.1:{edge};lr" in (r[1] or "") for r in rows), rows

        for caller, callee in ((alice, bob), (bob, alice)):
            caller.command("dial", f"sip:{callee.user}@{DOMAIN}")
            caller.wait_for_event("CALL_ESTABLISHED", timeout=20)
            callee.wait_for_event("CALL_ESTABLISHED", timeout=20)
            callee.command("hangup")  # the BYE goes back along the Record-Route
            caller.wait_for_event("CALL_CLOSED", timeout=20)
            callee.wait_for_event("CALL_CLOSED", timeout=20)

        alice.command("message", "Gruss vom Rand")
        wait_until(
            lambda: "Gruss vom Rand" in bob.log_path.read_text(errors="replace"),
            20, interval=0.2, what="bob to receive alice's MESSAGE through the edge",
        )  # fmt: skip
