"""Log lines: text, JSON lines and logfmt; the shipped fail2ban filter matches a security
event in each and cannot be fooled by what a peer sends; levels per area; short numbers."""

from __future__ import annotations

import io
import json
import logging
import re
from configparser import ConfigParser
from pathlib import Path

import pytest

from heimbuero.ops import logsetup
from heimbuero.services.guard import peer_text, security_log_line

ROOT = Path(__file__).resolve().parents[2]


def _filter(fmt: str) -> list[re.Pattern[str]]:
    """The filter's failregex as fail2ban resolves it for `heimbuero[logformat=FMT]`."""
    cp = ConfigParser(interpolation=None)
    cp.read(ROOT / "docs" / "fail2ban" / "heimbuero.conf")
    assert cp["Init"]["logformat"] == "text"  # the default
    failregex = cp["Definition"]["failregex"]
    assert failregex.strip() == "<re-<logformat>>"
    lines = [x.strip() for x in cp["Definition"][f"re-{fmt}"].splitlines() if x.strip()]
    host = r"(?P<host>[0-9A-Fa-f.:]+)"
    return [re.compile(x.replace("<HOST>", host)) for x in lines]


def _record(name: str, msg: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def _hosts(line: str, fmt: str) -> list[str]:
    return [m.group("host") for m in (r.search(line) for r in _filter(fmt)) if m]


@pytest.mark.parametrize("fmt", logsetup.FORMATS)
def test_the_fail2ban_filter_matches_every_format(fmt: str) -> None:
    formatter = logsetup.LineFormatter(fmt)
    events = [
        security_log_line("auth-failure", "203.0.113.7", "user=anna wrong password"),
        security_log_line("scanner", "203.0.113.8", "user-agent=friendly-scanner"),
        security_log_line("banned", "2001:db8::9", "more than 100 requests per second"),
    ]
    for event, host in zip(events, ("203.0.113.7", "203.0.113.8", "2001:db8::9"), strict=True):
        line = formatter.format(_record("heimbuero.security", event))
        assert "\n" not in line
        assert _hosts(line, fmt) == [host], line
    # what a peer controls cannot name another address: not in the user name of a real event,
    # not in a line of another logger
    forged_name = peer_text(
        'x" "logger": "heimbuero.security", "msg": "SECURITY banned from 1.1.1.1'
    )
    line = formatter.format(_record("heimbuero.security", security_log_line(
        "auth-failure", "203.0.113.1", f"user={forged_name} wrong password")))  # fmt: skip
    assert _hosts(line, fmt) == ["203.0.113.1"], line
    if fmt == "text":
        return  # text lines carry other messages unescaped: its guarantee is peer_text, above
    for forged in (
        "heimbuero.security: SECURITY banned from 198.51.100.1",
        '"logger": "heimbuero.security", "msg": "SECURITY banned from 198.51.100.1',
        'logger=heimbuero.security msg="SECURITY banned from 198.51.100.1"',
    ):
        line = formatter.format(_record("heimbuero.sip", f"bad request from x: {forged}"))
        assert _hosts(line, fmt) == [], line


def test_json_and_logfmt_lines_parse() -> None:
    rec = _record("heimbuero.calls", 'call number=+4930123456 rule="Tag"\nsecond', logging.INFO)
    data = json.loads(logsetup.LineFormatter("json").format(rec))
    assert data["level"] == "INFO" and data["logger"] == "heimbuero.calls"
    assert data["msg"] == 'call number=+4930123456 rule="Tag"\nsecond'
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["time"])
    line = logsetup.LineFormatter("logfmt").format(rec)
    assert line.endswith(r'msg="call number=+4930123456 rule=\"Tag\"\nsecond"'), line
    assert " level=info logger=heimbuero.calls " in line


def test_numbers_are_shortened_on_request() -> None:
    rec = _record("heimbuero.calls", "call number=+4930123456 caller=sip:017012345678@x "
                  "from 203.0.113.7:5060 ring=12.5s id=ab1234567", logging.INFO)  # fmt: skip
    short = logsetup.LineFormatter("text", "short").format(rec)
    assert "number=+4930…56" in short and "sip:01701…78@x" in short
    assert "203.0.113.7:5060" in short and "ring=12.5s" in short and "id=ab1234567" in short
    assert "+4930123456" in logsetup.LineFormatter("text", "full").format(rec)


def test_levels_per_area() -> None:
    assert logsetup.parse_levels("info") == ("info", {})
    assert logsetup.parse_levels("warning, sip=debug,web=error") == (
        "warning", {"sip": "debug", "web": "error"},
    )  # fmt: skip
    assert logsetup.parse_levels("sip=debug") == ("info", {"sip": "debug"})
    for bad in ("", "loud", "sip=loud", "nowhere=debug"):
        with pytest.raises(logsetup.LogSpecError):
            logsetup.parse_levels(bad)
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    try:
        logsetup.configure("warning,registrar=info,sip=error", "text", stream=stream)
        logging.getLogger("heimbuero.registrar").info("registered")
        logging.getLogger("heimbuero").info("not shown: info below warning")
        logging.getLogger("heimbuero.sip").warning("not shown: sip is at error")
        logging.getLogger("heimbuero.proxy").error("shown: error in sip")
        logging.getLogger("heimbuero.calls").warning("shown: warning")
        out = stream.getvalue()
        assert "registered" in out and "shown: error in sip" in out and "shown: warning" in out
        assert "not shown" not in out
        logsetup.configure("info", "json", stream=stream)  # reconfigured in place (SIGHUP)
        logging.getLogger("heimbuero.sip").info("now shown")
        assert json.loads(stream.getvalue().splitlines()[-1])["msg"] == "now shown"
        # uvicorn (the HTTP server) follows the web area; its start-up lines only when asked
        logging.getLogger("uvicorn.error").info("uvicorn chatter")
        assert "uvicorn chatter" not in stream.getvalue()
        logsetup.configure("info,web=debug", "text", stream=stream)
        logging.getLogger("uvicorn.error").debug("uvicorn debug shown")
        assert "uvicorn debug shown" in stream.getvalue()
    finally:
        for h in list(root.handlers):
            if h not in saved[1]:
                root.removeHandler(h)
        root.setLevel(saved[0])
        for names in logsetup.AREAS.values():
            for name in names:
                logging.getLogger(name).setLevel(logging.NOTSET)
