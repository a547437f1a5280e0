"""The fonts PDF documents embed (invoices, typed dictations): DejaVu Sans from Debian's
fonts-dejavu-core, which the setup scripts install."""

from __future__ import annotations

from pathlib import Path

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
NO_FONTS = "PDF documents need the DejaVu Sans fonts (Debian: apt-get install fonts-dejavu-core)"


def font_file(bold: bool) -> Path | None:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for d in FONT_DIRS:
        if (d / name).is_file():
            return d / name
    return None
