"""Logging of `heimbuero serve`: the line format (text, JSON lines, logfmt), the level per
area, and numbers shortened on request. Set up at start and again on SIGHUP.

Security events keep one fixed message in every format, `SECURITY EVENT from ADDRESS: …`
under the logger `heimbuero.security`; the shipped fail2ban filter (docs/fail2ban/) matches
all three formats."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import TextIO

# The level and format vocabulary is config's (config checks config.toml with it).
from heimbuero.config import (  # noqa: E402
    AREAS,
    FORMATS,
    LEVELS,
    NUMBER_MODES,
    LogSpecError,
    parse_levels,
)

__all__ = ["AREAS", "FORMATS", "LEVELS", "NUMBER_MODES", "LogSpecError", "parse_levels"]


# A phone number in a log message: an optional +, then at least 6 digits (ports have at most
# five, addresses have dots). Kept: the first 5 characters and the last 2.
_NUMBER = re.compile(r"(?<![\w.])(\+?\d{6,})(?![\w.])")


def shorten_numbers(text: str) -> str:
    return _NUMBER.sub(lambda m: m.group(1)[:5] + "…" + m.group(1)[-2:], text)


_LOGFMT_BARE = re.compile(r"^[A-Za-z0-9_.:/@+\-]+$")


def _logfmt_value(value: str) -> str:
    if value and _LOGFMT_BARE.match(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class LineFormatter(logging.Formatter):
    """One line per record in the chosen format.

    text:   `2026-12-04 20:14:00,123 WARNING heimbuero.security: SECURITY …`
    json:   `{"time": "2026-12-04T20:14:00.123Z", "level": "WARNING", "logger": …, "msg": …}`
    logfmt: `time=2026-12-04T20:14:00.123Z level=warning logger=heimbuero.security msg="…"`
    (the message is the last field in json and logfmt; `msg` always quoted in logfmt)."""

    def __init__(self, fmt: str = "text", numbers: str = "full") -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.kind = fmt
        self.short = numbers == "short"

    def _iso(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"
        if self.short:
            message = shorten_numbers(message)
        if self.kind == "json":
            return json.dumps(
                {
                    "time": self._iso(record),
                    "level": record.levelname,
                    "logger": record.name,
                    "msg": message,
                },  # fmt: skip
                ensure_ascii=False,
            )
        if self.kind == "logfmt":
            escaped = message.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            return (
                f"time={self._iso(record)} level={record.levelname.lower()} "
                f'logger={_logfmt_value(record.name)} msg="{escaped}"'
            )
        record.message = message
        return f"{self.formatTime(record)} {record.levelname} {record.name}: {message}"


_HANDLER_NAME = "heimbuero-stderr"


def configure(
    levels: str = "info", fmt: str = "text", numbers: str = "full", stream: TextIO | None = None
) -> None:
    """(Re)configure the root logger's stderr handler, and the level of each area. Called at
    start and on SIGHUP; raises LogSpecError for a bad level specification."""
    base, areas = parse_levels(levels)
    if fmt not in FORMATS:
        raise LogSpecError(f"log format must be one of {', '.join(FORMATS)}")
    root = logging.getLogger()
    handler = next((h for h in root.handlers if h.get_name() == _HANDLER_NAME), None)
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.set_name(_HANDLER_NAME)
        root.addHandler(handler)
    handler.setFormatter(LineFormatter(fmt, numbers))
    root.setLevel(base.upper())
    logging.getLogger("heimbuero").setLevel(logging.NOTSET)
    for names in AREAS.values():
        for name in names:
            logging.getLogger(name).setLevel(logging.NOTSET)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # uvicorn's own start-up chatter only when the web area asks for it ("web=info")
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for area, level in areas.items():
        for name in AREAS[area]:
            logging.getLogger(name).setLevel(level.upper())
