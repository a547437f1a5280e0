"""The console's languages: German (the source texts) first, English second.

Only the `.po` catalogues are in the repository: each is compiled in memory with Babel when
this module is imported (no `.mo` files to build or commit). The language comes from the
`hb_lang` cookie (set by the switch link) or else the browser's Accept-Language; German
when neither says otherwise. Dates and times are formatted with Babel in that language and
the client's timezone."""

from __future__ import annotations

import io
from datetime import datetime
from gettext import NullTranslations
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale, negotiate_locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import Translations

LANGUAGES = ("de", "en")
DEFAULT = "de"
HERE = Path(__file__).parent


def _compile(lang: str) -> NullTranslations:
    po = HERE / f"{lang}.po"
    if not po.exists():
        return NullTranslations()  # German: the texts are German
    with po.open("rb") as f:
        catalog = read_po(f, locale=lang)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(buf)


CATALOGUES = {lang: _compile(lang) for lang in LANGUAGES}


def choose(cookie: str | None, accept_language: str) -> str:
    if cookie in LANGUAGES:
        return cookie
    wanted = []
    for part in accept_language.split(",")[:20]:
        tag, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            weight = 0.0
        if tag and weight > 0:
            wanted.append((weight, tag.strip().replace("-", "_")))
    wanted.sort(key=lambda w: -w[0])
    return negotiate_locale([t for _, t in wanted], list(LANGUAGES)) or DEFAULT


def gettext(lang: str, text: str) -> str:
    return CATALOGUES.get(lang, CATALOGUES[DEFAULT]).gettext(text)


def when(lang: str, moment: datetime, tz: str) -> str:
    """`24.12.2026, 14:00` (de) / `12/24/26, 2:00 PM` (en) in the timezone `tz`."""
    try:
        zone = ZoneInfo(tz)
    except (KeyError, ValueError):
        zone = ZoneInfo("Europe/Berlin")
    return format_datetime(moment, "short", tzinfo=zone, locale=Locale.parse(lang))


def size(lang: str, n: int | None) -> str:
    """A file size to read: `12,3 kB` (de) / `12.3 kB` (en); in units of 1024 like the file
    service's own messages (`[files] max_size_mb = 500` reads 500,0 MB)."""
    if n is None:
        return "?"
    for unit, factor in (("MB", 1024 * 1024), ("kB", 1024)):
        if n >= factor:
            return f"{format_decimal(n / factor, '#,##0.0', locale=Locale.parse(lang))} {unit}"
    return f"{n} B"
