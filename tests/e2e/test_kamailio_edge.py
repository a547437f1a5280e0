"""Kamailio as an edge proxy in front of heimbuero (RFC 3327 Path): two baresip phones use
Kamailio as their outbound proxy; Kamailio adds a Path to their REGISTERs (path module,
`add_path()`), record-routes and forwards everything for our domain to heimbuero, and sends what
heimbuero sends back (INVITE and MESSAGE with the Path as Route, in-dialog requests along the
Record-Route) on to the phones with loose_route(). Calls work both ways through the edge, and a
MESSAGE too; heimbuero stored the Path with each binding. alice's phone says `Supported: path`
(RFC 5626 outbound mode: its REGISTER has reg-id and `Supported: outbound`, so the edge's Path
carries `ob`, else heimbuero refuses it with 439), bob's does not (as most desk phones): both
work. The calls work with TCP between edge and heimbuero as well (the phones stay on UDP), also
after the edge closed its idle connection.

NOTIFYs cross the edge as well: a watcher behind it subscribes to a colleague's presence and
gets the NOTIFY when the colleague's phone registers (in the subscription's dialog, along the
edge's Record-Route), and the owner's desk phone behind it gets the message-summary NOTIFY when
a caller leaves a voicemail (unsolicited, with the binding's Path as Route): each arrives with
the edge's Via on top of heimbuero's."""

from __future__ import annotations

import contextlib
import glob
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import test_voicemail_phone as vm
from .conftest import DOMAIN, USERS
from .harness import (
    LOCALHOST,
    Baresip,
    HarnessError,
    Server,
    SipClient,
    SipMessage,
    free_port,
    reply,
    sip_ping,
    tail,
    wait_until,
)
from .test_presence import next_notify, subscribe

pytestmark = [pytest.mark.e2e, pytest.mark.peers("baresip", "kamailio")]

EDGE_CFG = """#!KAMAILIO
# The edge proxy of test_kamailio_edge.py: Path on REGISTER, Record-Route on dialogs, everything
# for {domain} to heimbuero (over {transport}), everything else (from heimbuero, with our Path as
# Route) on to the phones (over UDP).
debug=2
log_stderror=yes
children=2
{tcp}
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
		add_path("edge", "ob");  # "ob" (RFC 5626 §5.1): it routes back to the phone itself
		$du = "sip:{server}{hop}";
		t_relay();
		exit;
	}}
	if (is_method("INVITE|SUBSCRIBE")) record_route();
	if ($rd == "{domain}") $du = "sip:{server}{hop}";  # a phone's request: to heimbuero
	t_relay();  # heimbuero's request: to the phone its Request-URI names
}}
"""


def _modules() -> str:
    for found in glob.glob("/usr/lib/*/kamailio/modules") + glob.glob("/usr/lib*/kamailio/modules"):
        if Path(found, "path.so").exists():
            return found
    raise HarnessError("Kamailio's path module (path.so) not found: apt-get install kamailio")


@contextlib.contextmanager
def kamailio_edge(tmp_path: Path, server: Server, upstream: str = "udp") -> Iterator[int]:
    """Kamailio on udp 127.0.0.1:<free port> in front of `server`; yields its port.
    `upstream` "tcp": it also listens on tcp at that port and talks to heimbuero over TCP only,
    closing a connection after 2 s without traffic (tcp_connection_lifetime)."""
    exe = shutil.which("kamailio") or "/usr/sbin/kamailio"
    port = free_port()
    rundir = tmp_path / "kamailio"
    rundir.mkdir()
    cfg = rundir / "kamailio.cfg"
    tcp = upstream == "tcp"
    cfg.write_text(EDGE_CFG.format(
        domain=server.domain, server=server.address, host=LOCALHOST, transport=upstream.upper(),
        tcp="tcp_connection_lifetime=2" if tcp else "disable_tcp=yes",
        hop=";transport=tcp" if tcp else "",
    ))  # fmt: skip
    log_path = rundir / "out.log"
    listen = [f"udp:{LOCALHOST}:{port}", *([f"tcp:{LOCALHOST}:{port}"] if tcp else [])]
    argv = [exe, "-f", str(cfg), "-L", _modules(), *(a for li in listen for a in ("-l", li)),
            "-DD", "-E", "-m", "64", "-M", "8", "-Y", str(rundir), "-w", str(rundir)]  # fmt: skip
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


def _phone(
    tmp_path: Path, server: Server, user: str, edge: int, outbound: bool, **kw: object
) -> Baresip:
    """A phone whose outbound proxy is the edge; `outbound`: it says `Supported: path` (RFC
    5626 mode), else a plain one that does not, as most desk phones."""
    kind = OutboundPhone if outbound else Baresip
    return kind(
        tmp_path, user=user, password=USERS[user], server=server,
        server_address=f"{LOCALHOST}:{edge}",
        account_params=";sipnat=outbound" if outbound else "", **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_phones_behind_a_kamailio_edge_call_and_message_each_other(
    server: Server, tmp_path: Path
) -> None:
    with (
        kamailio_edge(tmp_path, server) as edge,
        _phone(tmp_path, server, "alice", edge, True, answermode="auto",
               contacts=[f'"Bob" <sip:bob@{DOMAIN}>']) as alice,
        _phone(tmp_path, server, "bob", edge, False, answermode="auto",
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


def _tcp_links(*ports: int) -> list[str]:
    """The established TCP connections from or to any of these local ports (`ss`)."""
    match = " or ".join(f"sport = :{p} or dport = :{p}" for p in ports)
    argv = ["ss", "-Htn", "state", "established", f"( {match} )"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()


def test_the_edge_talks_to_heimbuero_over_tcp(server: Server, tmp_path: Path) -> None:
    """The phones reach the edge over UDP, the edge reaches heimbuero over TCP: the Path names
    the edge's TCP side, the edge record-routes twice (UDP towards the phones, TCP towards
    heimbuero), the BYE crosses the TCP hop from either end, and once the edge has closed its
    idle connection a call to a phone opens a new one to the Path's address."""
    with (
        kamailio_edge(tmp_path, server, "tcp") as edge,
        _phone(tmp_path, server, "alice", edge, True, answermode="auto") as alice,
        _phone(tmp_path, server, "bob", edge, False, answermode="auto") as bob,
    ):
        alice.wait_registered()
        bob.wait_registered()
        rows = server.sql("SELECT aor, path FROM bindings ORDER BY aor")
        assert [r[0] for r in rows] == ["alice", "bob"], rows
        assert all(f"{LOCALHOST}:{edge};transport=tcp;lr" in (r[1] or "") for r in rows), rows
        log = server.log_text()  # (its registration lines name where each REGISTER came from)
        assert "registered user=bob" in log and "source=udp:" not in log, log

        def call(caller: Baresip, callee: Baresip, hangs_up: Baresip) -> None:
            caller.command("dial", f"sip:{callee.user}@{DOMAIN}")
            caller.wait_for_event("CALL_ESTABLISHED", timeout=20)
            callee.wait_for_event("CALL_ESTABLISHED", timeout=20)
            hangs_up.command("hangup")
            caller.wait_for_event("CALL_CLOSED", timeout=20)
            callee.wait_for_event("CALL_CLOSED", timeout=20)

        call(alice, bob, alice)  # the caller's BYE
        wait_until(
            lambda: not _tcp_links(server.port, edge), 15, interval=0.2,
            what="the edge to close its idle TCP connections",
        )  # fmt: skip
        # to bob through a new connection to the edge's Path address (the binding's own is
        # gone); the callee's BYE (to alice's GRUU, her Contact)
        call(alice, bob, bob)


def _came_through(msg: SipMessage, edge: int, server: Server) -> None:
    """`msg` was sent by heimbuero to the edge, which relayed it: the edge's Via on top."""
    vias = msg.header_values("Via")
    assert len(vias) == 2, vias
    assert f"{LOCALHOST}:{edge};" in vias[0], vias
    assert f"{LOCALHOST}:{server.port};" in vias[1], vias
    assert not msg.header_values("Route"), msg.header_values("Route")  # the edge took its own


def test_presence_notify_reaches_a_watcher_behind_the_edge(server: Server, tmp_path: Path) -> None:
    with kamailio_edge(tmp_path, server) as edge, SipClient(edge) as watcher:
        ok = subscribe(watcher, "bob", "alice", USERS["bob"])  # bob's SUBSCRIBE, via the edge
        assert ok.status in (200, 202), ok.summary()
        assert any(f"{LOCALHOST}:{edge}" in rr for rr in ok.header_values("Record-Route")), ok.raw
        first = next_notify(watcher)  # the subscription's state now: alice is not there
        _came_through(first, edge, server)
        assert "<basic>closed</basic>" in first.body.decode(), first.body
        with _phone(tmp_path, server, "alice", edge, False) as alice:
            alice.wait_registered()
            online = next_notify(watcher, 15, lambda m: b"<basic>open</basic>" in m.body)
        _came_through(online, edge, server)
        assert online.header("Call-ID") == first.header("Call-ID")  # the same dialog
        assert "presence" in (online.header("Event") or ""), online.raw


@pytest.fixture
def mailbox_office(tmp_path: Path) -> Iterator[tuple[Server, int]]:
    """The demo office whose number goes to mueller's mailbox (as in test_voicemail_phone);
    (server, the carrier's trusted port)."""
    inbound = free_port()
    server = Server(
        tmp_path / "server", domain=vm.DOMAIN, demo=True, http=True,
        sip_options={"trusted_peers": [f"{LOCALHOST}:{inbound}"]},
    )  # fmt: skip
    server.prepare()
    rules = tmp_path / "rules.json"
    steps = [{"targets": ["voicemail:mueller"], "timeout": 10}]
    numbers = {vm.NUMBER: {"rules": [{"name": "Mailbox", "steps": steps}]}}
    rules.write_text(json.dumps({"client": "mueller", "numbers": numbers}), encoding="utf-8")
    server.cli("rules", "import", "mueller", str(rules), "--data", str(server.data_dir))
    with server:
        yield server, inbound


@pytest.mark.peers("espeak-ng")
def test_message_waiting_notify_reaches_the_owner_behind_the_edge(
    mailbox_office: tuple[Server, int], tmp_path: Path
) -> None:
    server, inbound = mailbox_office
    with kamailio_edge(tmp_path, server) as edge, SipClient(edge) as phone:
        vm.register(server, phone)  # mueller's desk phone, through the edge
        [(path,)] = server.sql("SELECT path FROM bindings WHERE aor = 'mueller'")
        assert f"{LOCALHOST}:{edge};lr" in (path or ""), path
        vm.leave(server, inbound, vm.LOW)  # a carrier's caller leaves a message

        def summary() -> SipMessage | None:
            msg = phone.recv(0.2)
            if msg is not None and msg.method == "NOTIFY":
                reply(phone, msg, "200 OK")
                if b"Voice-Message: 1/0" in msg.body:
                    return msg
            return None

        notify = wait_until(summary, 20, interval=0.0, what="message-summary 1/0 via the edge")
        _came_through(notify, edge, server)
        assert notify.header("Event") == "message-summary", notify.raw
        assert b"Messages-Waiting: yes" in notify.body, notify.body
