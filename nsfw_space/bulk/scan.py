"""Scanning at scale: every input of files, folders, Parquet tables or WebDataset shards scored
and written as one row each (CSV, JSON Lines or Parquet), resumable by ``id``.

Items are read and scored in chunks, in input order; every row carries the input's ``id`` and the
sha256 of its bytes, so a resumed scan skips exactly the ids already written.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nsfw_space.bulk.locations import IMAGE_SUFFIXES, VIDEO_SUFFIXES, listing, walk
from nsfw_space.bulk.sources import Inputs, Item, Loaded, items_from, load, units_of
from nsfw_space.bulk.writers import csv_text, progress_bar, row_cell
from nsfw_space.errors import ConfigError, InvalidImageError

if TYPE_CHECKING:  # planning a scan (its inputs and output checked) imports neither torch nor a database
    from nsfw_space.bulk.explained import ExplanationFiles
    from nsfw_space.desk.desk import Desk
    from nsfw_space.model.classifier import NSFWClassifier
    from nsfw_space.model.prediction import Prediction

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "ScanPlan", "ScanSummary", "plan_scan", "scan", "walk"]
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
CHUNK = 64  # items read and scored together, so an error row keeps its place among the others


@dataclass
class ScanSummary:
    files: int = 0
    flagged: int = 0
    review: int = 0
    errors: int = 0
    skipped: int = 0

    def add(self, row: dict[str, Any]) -> None:
        self.files += 1
        self.flagged += 1 if row.get("is_nsfw") else 0
        self.review += 1 if row.get("decision") == "review" else 0
        self.errors += 1 if row.get("error") else 0


def columns_for(labels: list[str], match: bool = False) -> list[str]:
    """The output's columns; ``match`` (the desk's known-image match, JSON) last when lists are checked."""
    return [
        "id",
        "path",
        "sha256",
        "label",
        *labels,
        "nsfw_score",
        "is_nsfw",
        "decision",
        "segments",
        "error",
    ] + (["match"] if match else [])


class RowWriter:
    """Writes one row per input as CSV, JSON Lines or Parquet (from the output's suffix).

    CSV and JSON Lines are appended and flushed row by row. Parquet cannot be appended to: a
    resumed Parquet output is rewritten (the rows already there first) into ``NAME.partial`` and
    renamed over the old file when the scan ends, so an interrupted run leaves the old file whole.
    """

    def __init__(
        self, output: str | None, fmt: str, labels: list[str], appending: bool = False, match: bool = False
    ) -> None:
        self.fmt = fmt
        self.labels = labels
        self.columns = columns_for(labels, match)
        self.output = output
        self._rows: list[dict[str, Any]] = []
        self._parquet = None
        if fmt == "parquet":
            self._open_parquet(appending)
            self.handle = None
            return
        to_stdout = output is None or output == "-"
        mode = "a" if appending else "w"
        # kept open for the whole scan, closed in close()
        self.handle = sys.stdout if to_stdout else open(output, mode, newline="", encoding="utf-8")  # noqa: SIM115
        self._csv = csv.DictWriter(self.handle, fieldnames=self.columns) if fmt == "csv" else None
        if self._csv is not None and not appending:
            self._csv.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        if self.fmt == "parquet":
            self._rows.append(row)
            if len(self._rows) >= 256:
                self._flush_parquet()
            return
        if self._csv is not None:
            self._csv.writerow({key: row_cell(row.get(key)) for key in self.columns})
        else:
            self.handle.write(json.dumps({key: row.get(key) for key in self.columns}) + "\n")
        self.handle.flush()

    def close(self) -> None:
        if self.fmt == "parquet":
            self._flush_parquet()
            self._parquet.close()
            os.replace(self._partial, self.output)
        elif self.handle is not sys.stdout:
            self.handle.close()

    def _open_parquet(self, appending: bool) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.output is None or self.output == "-":
            raise ConfigError("Parquet output needs --output NAME.parquet.")
        fields = [pa.field(name, pa.string()) for name in ("id", "path", "sha256", "label")]
        fields += [pa.field(label, pa.float64()) for label in self.labels]
        fields += [pa.field("nsfw_score", pa.float64()), pa.field("is_nsfw", pa.bool_())]
        fields += [pa.field(name, pa.string()) for name in ("decision", "segments", "error")]
        fields += [pa.field("match", pa.string())] if "match" in self.columns else []
        self._schema = pa.schema(fields)
        self._partial = f"{self.output}.partial"
        self._parquet = pq.ParquetWriter(self._partial, self._schema)
        if appending:
            self._parquet.write_table(pq.read_table(self.output).select(self.columns).cast(self._schema))

    def _flush_parquet(self) -> None:
        import pyarrow as pa

        if not self._rows:
            return
        records = [
            {
                key: (
                    json.dumps(row[key])
                    if key in ("segments", "match") and row.get(key) is not None
                    else row.get(key)
                )
                for key in self.columns
            }
            for row in self._rows
        ]
        self._parquet.write_table(pa.Table.from_pylist(records, schema=self._schema))
        self._rows = []


def output_format(output: str | None) -> str:
    if output is None or output == "-":
        return "csv"
    fmt = OUTPUT_FORMATS.get(Path(output).suffix.lower())
    if fmt is None:
        raise ConfigError(f"--output must end in .csv, .jsonl or .parquet, not {output!r}.")
    return fmt


def done_ids(output: str, fmt: str) -> set[str]:
    """Ids already written to ``output`` (for --resume); outputs from before ids read by path."""
    path = Path(output)
    if not path.is_file() or path.stat().st_size == 0:
        return set()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return {str(value) for value in pq.read_table(path, columns=["id"]).column("id").to_pylist()}
    with path.open(newline="", encoding="utf-8") as handle:
        if fmt == "csv":
            return {
                csv_text(row.get("id") or row["path"]) for row in csv.DictReader(handle) if row.get("path")
            }
        found = set()
        for line in handle:
            try:
                row = json.loads(line)
                found.add(row.get("id") or row["path"])
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a half-written last line from an interrupted scan
        return found


done_paths = done_ids  # the name earlier releases used


@dataclass
class ScanPlan:
    """What a scan will do, worked out before any model is loaded: the inputs, their units (see
    :mod:`nsfw_space.bulk.sources`) and ``items``, a list for files (counted up front) and a lazy
    iterator for tables and shards."""

    items: Iterable[Item]
    fmt: str
    output: str | None
    skip: set[str] = field(default_factory=set)
    skipped: int = 0
    appending: bool = False
    total: int | None = None
    inputs: Inputs = field(default_factory=lambda: Inputs(()))
    units: list[dict[str, Any]] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        """The paths a files scan will read (empty for lazy inputs)."""
        return [item.path for item in self.items] if isinstance(self.items, list) else []


def plan_scan(
    paths: Iterable[str | Path] | Inputs,
    output: str | None = None,
    resume: bool = False,
    *,
    max_bytes: int | None = None,
    fetch: Callable[[str], bytes] | None = None,
) -> ScanPlan:
    """Check the inputs (``paths``: files and folders, or an :class:`Inputs`) and the output, list
    the units and items, drop those ``--resume`` finds done.

    Raises ConfigError naming the first input that does not exist, or an output it cannot write.
    """
    inputs = paths if isinstance(paths, Inputs) else Inputs(tuple(str(path) for path in paths))
    inputs = inputs.resolved()
    fmt = output_format(output)
    inputs.check(url_fetching=fetch is not None)
    to_stdout = output is None or output == "-"
    if not to_stdout and not Path(output).resolve().parent.is_dir():
        raise ConfigError(f"The folder for the output {output!r} does not exist.")
    plan = ScanPlan(items=[], fmt=fmt, output=output, inputs=inputs)
    if resume and not to_stdout:
        plan.skip = done_ids(output, fmt)
        plan.appending = Path(output).is_file() and Path(output).stat().st_size > 0
    if inputs.format == "files":  # listed up front: counted, and done ones dropped before reading
        names = list(listing(inputs.paths, IMAGE_SUFFIXES | VIDEO_SUFFIXES))
        plan.skipped = sum(1 for name in names if name in plan.skip)
        names = [name for name in names if name not in plan.skip]
        plan.units = list(units_of(inputs, names))
        plan.items = list(items_from(inputs, plan.units, max_bytes=max_bytes))
        plan.total = len(plan.items)
    else:  # footers and shard names only: the rows stream when the scan runs
        plan.units = list(units_of(inputs))
        plan.items = items_from(inputs, plan.units, max_bytes=max_bytes, fetch=fetch)
    return plan


def scan(
    classifier: NSFWClassifier,
    paths: Iterable[str | Path] | ScanPlan,
    *,
    threshold: float = 0.5,
    review_threshold: float | None = None,
    batch_size: int = 16,
    output: str | None = None,
    resume: bool = False,
    progress: bool = True,
    rule: str = "max",
    k: int = 1,
    explain_to: ExplanationFiles | None = None,
    desk: Desk | None = None,
) -> ScanSummary:
    """Score every input (of ``paths``, or of a ``plan_scan`` plan) and write a row each;
    unreadable inputs get an error row. ``decision`` is block at or above ``threshold``, review
    at or above ``review_threshold`` (default: the threshold, so none), else allow; ``segments``
    (for animations and videos) are the time ranges scoring at or above the review threshold.
    ``explain_to`` (``--explain-dir``) gets the explanation of every input not allowed. With a
    ``desk``, each row carries ``match`` and a known image's list decides (nothing is queued)."""
    review = threshold if review_threshold is None else min(review_threshold, threshold)
    plan = paths if isinstance(paths, ScanPlan) else plan_scan(paths, output, resume)
    summary = ScanSummary(skipped=plan.skipped)
    writer = RowWriter(
        plan.output, plan.fmt, classifier.labels, appending=plan.appending, match=desk is not None
    )
    bar = progress_bar(plan.total, progress)
    try:
        for chunk in chunks(pending(plan, summary), CHUNK):
            loaded = [load(item) for item in chunk]
            rows = score_rows(classifier, loaded, threshold, review, batch_size, rule, k)
            for entry, row in zip(loaded, rows, strict=True):
                if desk is not None and not row["error"]:
                    from nsfw_space.desk.lists import with_match

                    known, _ = desk.match(entry.data)
                    with_match(row, known.to_dict() if known is not None else None)
                summary.add(row)
                writer.write(row)
                if explain_to is not None and row.get("decision") in ("block", "review"):
                    explain_to.write(entry.item.id, classifier.explain(entry.data, rule=rule, k=k))
                bar.update(1)
    finally:
        bar.close()
        writer.close()
    return summary


def pending(plan: ScanPlan, summary: ScanSummary) -> Iterator[Item]:
    """The plan's items not already done (lazy inputs are filtered here, as they stream)."""
    for item in plan.items:
        if item.id in plan.skip and not isinstance(plan.items, list):
            summary.skipped += 1
            continue
        yield item


def chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def score_rows(
    classifier: NSFWClassifier,
    loaded: list[Loaded],
    threshold: float,
    review: float,
    batch_size: int,
    rule: str = "max",
    k: int = 1,
) -> list[dict[str, Any]]:
    """Rows for loaded inputs, in their order: the one row-making path of both engines."""
    readable = [entry for entry in loaded if not isinstance(entry.data, InvalidImageError)]
    outcomes = iter(
        outcome
        for _, outcome in classifier.iter_predictions(
            [entry.data for entry in readable], batch_size=batch_size, rule=rule, k=k
        )
    )
    rows = []
    for entry in loaded:
        outcome = entry.data if isinstance(entry.data, InvalidImageError) else next(outcomes)
        rows.append(make_row(entry, outcome, classifier.labels, threshold, review))
    return rows


def make_row(
    entry: Loaded, outcome: Prediction | InvalidImageError, labels: list[str], threshold: float, review: float
) -> dict[str, Any]:
    row: dict[str, Any] = {"id": entry.item.id, "path": entry.item.path, "sha256": entry.sha256}
    if isinstance(outcome, InvalidImageError):
        row.update(label=None, is_nsfw=None, nsfw_score=None, decision=None, error=str(outcome))
        return row
    answer = outcome.to_dict(threshold, review)
    row.update(label=outcome.label, error="")
    row.update({label: answer["scores"][label] for label in labels})
    row.update({key: answer[key] for key in ("nsfw_score", "is_nsfw", "decision")})
    if "segments" in answer:  # JSON in every format: one cell of the CSV, a list in JSON Lines
        row["segments"] = answer["segments"]
    return row
