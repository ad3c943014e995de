"""The one escaping rule for every CSV this project writes (the batch view's and ``scan``'s).

A spreadsheet runs a cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
as a formula (CSV injection). Following OWASP, such a text cell is written with a leading ``'``,
which spreadsheets show as text. A text cell that itself begins with ``'`` gets one more, so the
rule can be undone exactly (``scan --resume`` reads back the paths it wrote). Numbers and
booleans are never changed.
"""

from __future__ import annotations

import csv
import json
import sys
import uuid
from pathlib import Path
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


BATCH_COLUMNS_BEFORE_SCORES = ["file", "label"]
BATCH_COLUMNS_AFTER_SCORES = ["nsfw_score", "is_nsfw", "threshold", "decision", "review_threshold", "error"]


def write_batch_csv(rows: list[dict[str, Any]], labels: list[str], folder: Path) -> Path:
    """The batch view's rows (``/moderate_batch`` dicts) as a CSV file in ``folder``: one column a
    label's probability, every text cell escaped by :func:`csv_cell`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"moderation-{uuid.uuid4().hex[:12]}.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(csv_row([*BATCH_COLUMNS_BEFORE_SCORES, *labels, *BATCH_COLUMNS_AFTER_SCORES]))
        for row in rows:
            scores = row.get("scores") or {}
            writer.writerow(
                csv_row(
                    [
                        row["file"],
                        row["label"] or "",
                        *[scores.get(label, "") for label in labels],
                        *("" if row[key] is None else row[key] for key in BATCH_COLUMNS_AFTER_SCORES),
                    ]
                )
            )
    return path


def row_cell(value: Any) -> Any:
    """A scan row's value as a CSV cell: empty for None, JSON for lists and dicts, then escaped."""
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return csv_cell(json.dumps(value))
    return csv_cell(value)


def progress_bar(total: int | None, enabled: bool) -> Any:
    """tqdm on stderr (off when not ``enabled``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="file", file=sys.stderr, disable=not enabled, dynamic_ncols=True)
