"""The one escaping rule for every CSV this project writes (the batch view's and ``scan``'s).

A spreadsheet runs a cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
as a formula (CSV injection). Following OWASP, such a text cell is written with a leading ``'``,
which spreadsheets show as text. A text cell that itself begins with ``'`` gets one more, so the
rule can be undone exactly (``scan --resume`` reads back the paths it wrote). Numbers and
booleans are never changed.
"""

from __future__ import annotations

from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ESCAPED_STARTS = (*FORMULA_STARTS, "'")


def csv_cell(value: Any) -> Any:
    """A value as it is safe to write into a CSV cell."""
    if isinstance(value, str) and value.startswith(ESCAPED_STARTS):
        return "'" + value
    return value


def csv_text(cell: str) -> str:
    """The text that :func:`csv_cell` wrote into ``cell``."""
    if len(cell) > 1 and cell[0] == "'" and cell[1:].startswith(ESCAPED_STARTS):
        return cell[1:]
    return cell


def csv_row(values: list[Any]) -> list[Any]:
    return [csv_cell(value) for value in values]
