"""Cells of the CSV files people download (history, the reviews' manifest): text that a
spreadsheet opens as text, never as a formula (CSV injection)."""

from __future__ import annotations

# What makes Excel, LibreOffice and Google Sheets read a cell as a formula (OWASP's list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(text: str) -> str:
    """``text`` as a CSV cell: prefixed with ``'`` when it starts like a formula
    (``=HYPERLINK(...)`` becomes ``'=HYPERLINK(...)``), otherwise unchanged."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text
