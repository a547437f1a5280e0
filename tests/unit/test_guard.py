"""Flood limits, bans, scanners and password-guessing back-off (heimbuero.services.guard),
sans-IO with a stepped clock; and the same through the SIP core (stateless challenges,
foreign nonces, a registered phone under a password flood)."""

from __future__ import annotations

import gc
import logging
import re
import tracemalloc
from configparser import ConfigParser
from pathlib import Path

from test_core import DOMAIN, PASSWORDS, PROXY, Net, _account, authorize, req

from heimbuero.services.core import CoreSettings, SipCore
from heimbuero.services.credentials import UserDirectory
from heimbuero.services.guard import (
    Guard,
    GuardSettings,
    peer_text,
    security_log_line,
    source_key,
)
from heimbuero.services.location import LocationService
from heimbuero.sip.auth import DigestAuthenticator
from heimbuero.sip.message import Response

T0 = 1_000_000.0
ROOT = Path(__file__).resolve().parents[2]


# ---- flood limit and ban ------------------------------------------------------------------------


def test_a_busy_office_behind_one_address_is_never_banned() -> None:
    g = Guard()
    # 50 phones behind one router: registrations, keep-alives and calls, ~10 requests/s,
    # with bursts of 50 at once (the router came back), for ten minutes.
    now = T0
    for second in range(600):
        burst = 50 if second % 60 == 0 else 10
        for i in range(burst):
            assert g.admit("198.51.100.7", now + second + i / 100)
    assert g.stats["banned"] == 0


def test_a_flood_is_banned_then_dropped_until_the_ban_ends() -> None:
    g = Guard(GuardSettings(rate=10, burst=20, ban_time=60))
    admitted = sum(g.admit("203.0.113.5", T0 + i / 1000) for i in range(1000))
    assert admitted == 20  # the burst, then banned at once
    assert g.banned("203.0.113.5", T0 + 1)
    assert not g.admit("203.0.113.5", T0 + 59)
    assert g.admit("203.0.113.6", T0 + 1)  # others go on
    assert g.admit("203.0.113.5", T0 + 61)  # the ban ends
    assert not g.banned("203.0.113.5", T0 + 61)


def test_an_ipv6_flood_is_one_source_per_64_whatever_addresses_it_walks_through() -> None:
    g = Guard(GuardSettings(rate=10, burst=20, ban_time=60))
    # each request from another address of one /64: still one bucket, banned after the burst
    admitted = sum(g.admit(f"2001:db8:1:2::{i:x}", T0 + i / 1000) for i in range(1000))
    assert admitted == 20
    assert g.banned("2001:db8:1:2:ffff:ffff:ffff:ffff", T0 + 1)
    assert g.admit("2001:db8:1:3::1", T0 + 1)  # the next /64 is somebody else
    assert source_key("2001:DB8:1:2:0:0:0:7") == "2001:db8:1:2::/64"
    assert source_key("::ffff:192.0.2.9") == "192.0.2.9" and source_key("192.0.2.9") == "192.0.2.9"
    assert source_key("fe80::1%eth0") == "fe80::/64"
    assert source_key("not:an:address") == "not:an:address"
    # password guessing from one /64 counts together; the known phone there stays exempt
    g = Guard(GuardSettings(source_failures=3, account_failures=100))
    g.succeeded("2001:db8:9::10", "anna", T0)
    for i in range(3):
        g.failed(f"2001:db8:9::{i + 100:x}", f"user{i}", T0, "wrong password")
    assert g.refusal("2001:db8:9::abcd", "bob", T0 + 1) is not None
    assert g.refusal("2001:db8:9::10", "anna", T0 + 1) is None
    assert g.refusal("2001:db8:a::1", "bob", T0 + 1) is None


def test_an_exempt_peer_is_never_banned() -> None:
    g = Guard(GuardSettings(rate=10, burst=20, ban_time=60))
    assert all(g.admit("127.0.0.1", T0 + i / 1000, lambda: True) for i in range(1000))
    assert g.stats["banned"] == 0


def test_scanner_user_agents() -> None:
    g = Guard()
    for ua in ("friendly-scanner", "sipvicious 0.3.4", "sipcli/v1.8", "VaxSIPUserAgent/3.1"):
        assert g.is_scanner(ua), ua
    for ua in ("Linphone/5.2", "baresip v3.10.1", "Yealink SIP-T46S", "", None):
        assert not g.is_scanner(ua), ua
    assert Guard(GuardSettings(scanner_user_agents=())).is_scanner("friendly-scanner") is False


# ---- password guessing --------------------------------------------------------------------------


def test_account_backoff_doubles_and_spares_the_known_phone() -> None:
    g = Guard(GuardSettings(account_failures=5, backoff_base=2, backoff_max=300))
    g.succeeded("198.51.100.7", "anna", T0)  # anna's phone registered from the office
    now = T0 + 10
    for i in range(5):
        assert g.refusal(f"203.0.113.{i}", "anna", now) is None
        g.failed(f"203.0.113.{i}", "anna", now, "wrong password")
    assert g.refusal("203.0.113.99", "anna", now) is not None  # a new source: refused
    assert g.refusal("198.51.100.7", "anna", now) is None  # the registered phone: goes on
    assert g.refusal("203.0.113.99", "anna", now + 2.1) is None  # first window: 2 s
    g.failed("203.0.113.99", "anna", now + 2.1, "wrong password")
    assert g.refusal("203.0.113.99", "anna", now + 5) is not None  # second window: 4 s
    assert g.refusal("203.0.113.99", "anna", now + 6.2) is None
    for k in range(20):
        g.failed("203.0.113.99", "anna", now + 7 + k, "wrong password")
    assert g.refusal("203.0.113.99", "anna", now + 7 + 19 + 299) is not None  # capped at 300 s
    assert g.refusal("203.0.113.99", "anna", now + 7 + 19 + 301) is None


def test_source_backoff_spares_the_office_phones_already_known() -> None:
    g = Guard(GuardSettings(source_failures=30))
    g.succeeded("198.51.100.7", "anna", T0)
    for k in range(30):  # someone in the office (or forging its address) guesses many accounts
        g.failed("198.51.100.7", f"user{k}", T0 + 1 + k / 10, "unknown user")
    assert g.refusal("198.51.100.7", "bert", T0 + 5) is not None  # a new account: waits
    assert g.refusal("198.51.100.7", "anna", T0 + 5) is None  # anna's phone: goes on
    assert g.refusal("203.0.113.1", "bert", T0 + 5) is None  # elsewhere: goes on


def test_guessing_rate_per_account_is_bounded() -> None:
    """200 addresses x 19 guesses in one second: a handful reach the password check."""
    g = Guard(GuardSettings(account_failures=5, source_failures=30))
    tried = 0
    for i in range(200):
        for k in range(19):
            now = T0 + (i * 19 + k) / 3800
            if g.refusal(f"10.{i // 250}.{i % 250}.1", "anna", now) is None:
                tried += 1
                g.failed(f"10.{i // 250}.{i % 250}.1", "anna", now, "wrong password")
    assert tried <= 6


def test_a_known_pair_that_keeps_failing_loses_its_exemption() -> None:
    g = Guard(GuardSettings(account_failures=5))
    g.succeeded("198.51.100.7", "anna", T0)
    for k in range(5):
        g.failed("198.51.100.7", "anna", T0 + k, "wrong password")
    assert g.refusal("198.51.100.7", "anna", T0 + 5) is not None


def test_tables_stay_bounded_under_100000_failing_sources() -> None:
    g = Guard(GuardSettings(max_entries=20_000))
    logging.getLogger("heimbuero.security").disabled = True
    try:
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(100_000):
            ip = f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"
            now = T0 + i / 10_000
            g.admit(ip, now)
            g.failed(ip, f"user{i}", now, "unknown user")
        grown = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
    finally:
        logging.getLogger("heimbuero.security").disabled = False
    sizes = g.sizes()
    assert max(sizes.values()) <= 20_000, sizes
    assert grown < 30_000_000, grown  # ~ 4 tables x 20,000 entries, not 100,000 x 4


def test_keys_whose_time_is_over_are_dropped_as_new_ones_come() -> None:
    """Below the bound too: a quiet table empties as traffic goes on (before, an entry stayed
    until the table was full)."""
    s = GuardSettings(rate=10, burst=20, ban_time=60, max_entries=20_000, failure_window=900,
                      backoff_max=300, known_pair_time=3600)  # fmt: skip
    g = Guard(s)
    logging.getLogger("heimbuero.security").disabled = True
    try:
        for i in range(1_000):
            ip = f"10.0.{i >> 8}.{i & 255}"
            g.admit(ip, T0)
            g.failed(ip, f"user{i}", T0, "unknown user")
            g.succeeded(ip, "anna", T0)
        for _ in range(30):
            g.admit("192.0.2.1", T0)  # a flood: banned
        assert g.banned("192.0.2.1", T0)
        sizes = g.sizes()
        assert sizes["buckets"] == 1_000 and sizes["accounts"] == 1_000 and sizes["bans"] == 1
        later = T0 + 3_601  # past the window + back-off, the ban, the known-pair time
        g.admit("192.0.2.50", later)
        g.failed("192.0.2.50", "newcomer", later, "unknown user")
        g.succeeded("192.0.2.50", "anna", later)
        g.ban("192.0.2.51", later, "test")
    finally:
        logging.getLogger("heimbuero.security").disabled = False
    assert g.sizes() == {"buckets": 1, "bans": 1, "accounts": 1, "sources": 1, "pairs": 1,
                         "known": 1}  # fmt: skip
    # what still counts stays: a live back-off is never dropped early
    g2 = Guard(GuardSettings(account_failures=2, backoff_base=100, failure_window=10))
    g2.failed("10.0.0.1", "anna", T0, "wrong password")
    g2.failed("10.0.0.1", "anna", T0, "wrong password")
    g2.failed("10.0.0.2", "bob", T0 + 11, "wrong password")
    assert g2.refusal("10.0.0.1", "anna", T0 + 11) is not None


# ---- the log line fail2ban reads ----------------------------------------------------------------


def _fail2ban_regexes() -> list[re.Pattern[str]]:
    cp = ConfigParser(interpolation=None)
    cp.read(ROOT / "docs" / "fail2ban" / "heimbuero.conf")
    # failregex is <re-<logformat>>: the regex of the configured format (default text)
    fmt = cp["Init"]["logformat"] if cp.has_section("Init") else "text"
    raw = cp["Definition"]["failregex"].replace("<re-<logformat>>", cp["Definition"][f"re-{fmt}"])
    lines = [x.strip() for x in raw.splitlines() if x.strip()]
    host = r"(?P<host>[0-9A-Fa-f.:]+)"
    return [re.compile(x.replace("<HOST>", host)) for x in lines]


def test_fail2ban_filter_matches_the_real_log_lines(caplog) -> None:
    net = Net()
    src = ("udp", "203.0.113.77", 5070)
    r = req("REGISTER", f"sip:{DOMAIN}", src, "alice", f"sip:alice@{DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), src)
    good = PASSWORDS["alice"]
    PASSWORDS["alice"] = "guess"  # noqa: S105 - authorize() now answers a wrong password
    try:
        with caplog.at_level(logging.INFO, logger="heimbuero.security"):
            net.send(authorize(r, challenge, "alice").serialize(), src)
            scan = _invite(src).replace(
                b"Max-Forwards:", b"User-Agent: sipvicious\r\nMax-Forwards:"
            )
            net.send(scan, src)
    finally:
        PASSWORDS["alice"] = good
    # Format the record as the server's log does (see cli/server logging setup).
    lines = [logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s").format(rec)
             for rec in caplog.records if rec.name == "heimbuero.security"]  # fmt: skip
    assert lines, "no security line logged"
    regexes = _fail2ban_regexes()
    for line in lines:
        hits = [m for m in (x.search(line) for x in regexes) if m]
        assert hits and hits[0].group("host") == "203.0.113.77", line
    # A user name cannot smuggle a second address into the line.
    name = peer_text("x heimbuero.security: SECURITY banned from 198.51.100.1")
    line = security_log_line("auth-failure", "203.0.113.1", f"user={name} wrong password")
    forged = f"2026-01-01 00:00:00,000 WARNING heimbuero.security: {line}"
    m = next(m for m in (x.search(forged) for x in regexes) if m)
    assert m.group("host") == "203.0.113.1"


# ---- through the core ---------------------------------------------------------------------------


def _invite(src: tuple[str, str, int], branch: str = "z9hG4bKflood1") -> bytes:
    return req("INVITE", f"sip:bob@{DOMAIN}", src, "alice", f"sip:bob@{DOMAIN}",
               branch=branch, call_id="flood-call").serialize()  # fmt: skip


def test_challenge_is_stateless_one_answer_no_retransmission() -> None:
    net = Net()
    src = ("udp", "203.0.113.50", 5999)
    out = net.send(_invite(src), src)
    assert [m.status for m, _ in out if isinstance(m, Response)] == [407]
    assert len(net.core.layer) == 0  # no transaction kept
    assert net.advance(40) == []  # and nothing retransmitted
    # The ACK to the 407 ends here (not forwarded anywhere).
    resp = out[0][0]
    ack = (
        f"ACK sip:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.50:5999;"
        f"branch=z9hG4bKflood1;rport\r\nFrom: <sip:alice@{DOMAIN}>;tag=falice\r\n"
        f"To: {resp.get('to')}\r\nCall-ID: flood-call\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    assert net.send(ack, src) == []
    # A retransmitted INVITE gets a fresh 407: that is what stateless means.
    again = net.send(_invite(src), src)
    assert [m.status for m, _ in again if isinstance(m, Response)] == [407]


def test_garbage_nonces_do_not_lock_out_the_office() -> None:
    net = Net()
    office = ("udp", "198.51.100.7", 5060)
    for _ in range(50):
        r = req("REGISTER", f"sip:{DOMAIN}", office, "alice", f"sip:alice@{DOMAIN}")
        garbage = (
            f'Digest username="alice", realm="{DOMAIN}", nonce="{"A" * 48}", '
            f'uri="sip:{DOMAIN}", response="{"0" * 32}", qop=auth, nc=00000001, cnonce="x"'
        )
        r.add("Authorization", garbage)
        [(resp, _)] = net.send(r.serialize(), office)
        assert resp.status == 401  # a fresh challenge, no 403
    bob = ("udp", "198.51.100.7", 5062)
    r = req("REGISTER", f"sip:{DOMAIN}", bob, "bob", f"sip:bob@{DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), bob)
    [(ok, _)] = net.send(authorize(r, challenge, "bob").serialize(), bob)
    assert ok.status == 200


def test_password_flood_does_not_stop_a_registered_phone() -> None:
    net = Net()
    phone = ("udp", "198.51.100.7", 5060)
    r = req("REGISTER", f"sip:{DOMAIN}", phone, "alice", f"sip:alice@{DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), phone)
    [(ok, _)] = net.send(authorize(r, challenge, "alice").serialize(), phone)
    assert ok.status == 200
    good = PASSWORDS["alice"]
    PASSWORDS["alice"] = "guess"  # noqa: S105 - authorize() now answers a wrong password
    refused = 0
    try:
        for i in range(300):
            src = ("udp", f"203.0.113.{i % 200}", 6000 + i)
            r = req("REGISTER", f"sip:{DOMAIN}", src, "alice", f"sip:alice@{DOMAIN}")
            [(ch, _)] = net.send(r.serialize(), src)
            [(resp, _)] = net.send(authorize(r, ch, "alice").serialize(), src)
            refused += resp.status == 403
            net.now += 0.01
    finally:
        PASSWORDS["alice"] = good
    assert refused > 250
    # The registered phone refreshes from its address: works.
    r = req("REGISTER", f"sip:{DOMAIN}", phone, "alice", f"sip:alice@{DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), phone)
    [(ok, _)] = net.send(authorize(r, challenge, "alice").serialize(), phone)
    assert ok.status == 200
    # A new device with the right password elsewhere waits out the back-off.
    other = ("udp", "192.0.2.10", 5060)
    r = req("REGISTER", f"sip:{DOMAIN}", other, "alice", f"sip:alice@{DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), other)
    [(resp, _)] = net.send(authorize(r, challenge, "alice").serialize(), other)
    assert resp.status == 403 and "Too many" in resp.reason


def test_digest_uri_mismatch_and_rfc2069_through_the_core() -> None:
    net = Net()
    src = ("udp", "198.51.100.8", 5060)
    r = req("REGISTER", f"sip:{DOMAIN}", src, "alice", f"sip:alice@{DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), src)
    a = authorize(r, challenge, "alice").serialize()
    bad = a.replace(f'uri="sip:{DOMAIN}"'.encode(), b'uri="sip:evil.example"')
    [(resp, _)] = net.send(bad, src)
    assert resp.status == 400 and "uri" in resp.reason
    # RFC 2069 (no qop): refused unless the account allows it.
    import hashlib

    from heimbuero.sip.auth import parse_credentials

    nonce = parse_credentials(challenge.get_all("www-authenticate")[0])["nonce"]  # type: ignore[index]
    a1 = hashlib.md5(f"alice:{DOMAIN}:{PASSWORDS['alice']}".encode()).hexdigest()
    a2 = hashlib.md5(f"REGISTER:sip:{DOMAIN}".encode()).hexdigest()
    digest = hashlib.md5(f"{a1}:{nonce}:{a2}".encode()).hexdigest()
    old = r.copy()
    old.add("Authorization", f'Digest username="alice", realm="{DOMAIN}", nonce="{nonce}", '
            f'uri="sip:{DOMAIN}", response="{digest}"')  # fmt: skip
    [(resp, _)] = net.send(old.serialize(), src)
    assert resp.status == 403 and "qop" in resp.reason


def test_flood_before_parsing_through_the_core() -> None:
    net = Net()
    net.core.guard = Guard(GuardSettings(rate=10, burst=20, ban_time=60))
    src = ("udp", "203.0.113.60", 5070)
    answers = 0
    for i in range(200):
        answers += len(net.send(_invite(src, branch=f"z9hG4bKf{i}"), src))
    assert answers == 20
    # Junk from a banned source costs nothing and gets nothing.
    assert net.send(b"\x00" * 100, src) == []
    # Scanners get nothing either.
    scan = ("udp", "203.0.113.61", 5070)
    msg = _invite(scan).replace(
        b"Max-Forwards: 70", b"User-Agent: friendly-scanner\r\nMax-Forwards: 70"
    )
    assert net.send(msg, scan) == []


def test_core_builds_with_default_settings() -> None:
    core = SipCore(CoreSettings(domain=DOMAIN, local={"udp": PROXY}), UserDirectory(_account),
                   LocationService(), DigestAuthenticator(DOMAIN, b"k" * 32))  # fmt: skip
    assert core.settings.flood_exempt == ("127.0.0.1", "::1")


# ---- the per-user RFC 2069 switch, from the CLI to the SIP lookup -------------------------------


def test_user_set_allow_rfc2069_reaches_the_credentials(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from heimbuero import config
    from heimbuero.store import Store

    env = {k: v for k, v in os.environ.items() if k != "HEIMBUERO_DATA"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "heimbuero", *args, "--data", str(data)],
                              capture_output=True, text=True, env=env, timeout=60)  # fmt: skip

    data = tmp_path / "data"
    assert run("init", "--domain", "office.example").returncode == 0
    assert run("user", "add", "oldphone", "--password", "Kachel-Ofen-91").returncode == 0
    on = run("user", "set", "oldphone", "--allow-rfc2069")
    assert on.returncode == 0, on.stderr
    assert "RFC 2069" in on.stdout and "allowed" in on.stdout
    url = config.load(data).db_url
    assert Store(url).get_credentials("oldphone")[3] is True  # type: ignore[index]
    assert run("user", "set", "oldphone", "--no-allow-rfc2069").returncode == 0
    assert Store(url).get_credentials("oldphone")[3] is False  # type: ignore[index]
