"""A typed text as a plain A4 PDF page (fpdf2), in the fonts the invoice PDF embeds too."""

from __future__ import annotations

from datetime import datetime

from heimbuero.fonts import NO_FONTS, font_file


def text_pdf(title: str, paragraphs: list[str], client: str, author: str, when: datetime) -> bytes:
    """The typed text as PDF: the title as heading, a line with business, author and date,
    then the paragraphs (a line break inside one stays a line break; long lines wrap).
    ValueError when the fonts are missing."""
    from fpdf import FPDF

    regular, bold = font_file(False), font_file(True)
    if regular is None or bold is None:  # the core fonts have no € and no full Unicode
        raise ValueError(NO_FONTS)
    pdf = FPDF(format="A4")
    pdf.add_font("Body", "", str(regular))
    pdf.add_font("Body", "B", str(bold))
    pdf.set_title(title)
    pdf.set_author(author)
    pdf.set_lang("de-DE")
    pdf.set_margins(25, 20, 20)
    pdf.add_page()
    pdf.set_font("Body", "B", 14)
    pdf.multi_cell(0, 7, title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Body", "", 8)
    pdf.cell(0, 5, f"{client} · {author} · {when:%d.%m.%Y}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("Body", "", 11)
    for paragraph in paragraphs:
        pdf.multi_cell(0, 5.5, paragraph, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2.5)
    return bytes(pdf.output())
