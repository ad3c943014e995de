"""Folder scanning: walk paths, score every image (and GIF/video), write CSV or JSON Lines rows."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from nsfw_space.bulk.writers import csv_cell, csv_text
from nsfw_space.errors import ConfigError, InvalidImageError
from nsfw_space.model.classifier import NSFWClassifier
from nsfw_space.model.prediction import Prediction

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ico", ".jfif"}
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"}


def walk(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files named directly, and images/videos found recursively in folders, in a stable order."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if Path(name).suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                        yield Path(root) / name
        else:
            yield path


@dataclass
class ScanSummary:
    files: int = 0
    flagged: int = 0
    review: int = 0
    errors: int = 0
    skipped: int = 0


class RowWriter:
    """Writes one row per file as CSV or JSON Lines (chosen from the output's suffix)."""

    def __init__(self, handle: IO[str], fmt: str, labels: list[str], write_header: bool) -> None:
        self.handle = handle
        self.fmt = fmt
        self.columns = ["path", "label", *labels, "nsfw_score", "is_nsfw", "decision", "segments", "error"]
        self._csv = csv.DictWriter(handle, fieldnames=self.columns) if fmt == "csv" else None
        if self._csv is not None and write_header:
            self._csv.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        if self._csv is not None:
            self._csv.writerow({key: _cell(row.get(key)) for key in self.columns})
        else:
            self.handle.write(json.dumps({key: row.get(key) for key in self.columns}) + "\n")
        self.handle.flush()


def output_format(output: str | None) -> str:
    if output is None or output == "-":
        return "csv"
    suffix = Path(output).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise ConfigError(f"--output must end in .csv or .jsonl, not {output!r}.")


def done_paths(output: str, fmt: str) -> set[str]:
    """Paths already written to ``output`` (for --resume)."""
    path = Path(output)
    if not path.is_file():
        return set()
    with path.open(newline="", encoding="utf-8") as handle:
        if fmt == "csv":
            return {csv_text(row["path"]) for row in csv.DictReader(handle) if row.get("path")}
        found = set()
        for line in handle:
            try:
                found.add(json.loads(line)["path"])
            except (ValueError, KeyError, TypeError):
                continue  # a half-written last line from an interrupted scan
        return found


@dataclass
class ScanPlan:
    """What a scan will do, worked out before any model is loaded."""

    files: list[str]
    fmt: str
    output: str | None
    skipped: int = 0
    appending: bool = False


def plan_scan(paths: Iterable[str | Path], output: str | None = None, resume: bool = False) -> ScanPlan:
    """Check the inputs and the output, list the files, drop those ``--resume`` finds done.

    Raises ConfigError naming the first input that does not exist, or an output it cannot write.
    """
    fmt = output_format(output)
    paths = [Path(path) for path in paths]
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise ConfigError(f"No such file or folder: {missing[0]}.")
    to_stdout = output is None or output == "-"
    if not to_stdout and not Path(output).resolve().parent.is_dir():
        raise ConfigError(f"The folder for the output {output!r} does not exist.")
    files = [str(path) for path in walk(paths)]
    plan = ScanPlan(files=files, fmt=fmt, output=output)
    if resume and not to_stdout:
        already = done_paths(output, fmt)
        plan.skipped = sum(1 for f in files if f in already)
        plan.files = [f for f in files if f not in already]
        plan.appending = Path(output).is_file() and Path(output).stat().st_size > 0
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
) -> ScanSummary:
    """Score every file under ``paths`` (or of a ``plan_scan`` plan) and write a row each;
    unreadable files get an error row. ``decision`` is block at or above ``threshold``, review at
    or above ``review_threshold`` (default: the threshold, so none), else allow; ``segments`` (for
    animations and videos) are the time ranges scoring at or above the review threshold."""
    review = threshold if review_threshold is None else min(review_threshold, threshold)
    plan = paths if isinstance(paths, ScanPlan) else plan_scan(paths, output, resume)
    summary = ScanSummary(skipped=plan.skipped)
    target = (
        contextlib.nullcontext(sys.stdout)
        if plan.output is None or plan.output == "-"
        else open(  # noqa: SIM115
            plan.output, "a" if plan.appending else "w", newline="", encoding="utf-8"
        )
    )
    with target as handle:
        writer = RowWriter(handle, plan.fmt, classifier.labels, write_header=not plan.appending)
        bar = _progress(len(plan.files), progress)
        for source, outcome in classifier.iter_predictions(plan.files, batch_size=batch_size, rule=rule, k=k):
            summary.files += 1
            row = _row(str(source), outcome, classifier.labels, threshold, review)
            summary.flagged += 1 if row["is_nsfw"] else 0
            summary.review += 1 if row["decision"] == "review" else 0
            summary.errors += 1 if row["error"] else 0
            writer.write(row)
            bar.update(1)
        bar.close()
    return summary


def _row(
    path: str, outcome: Prediction | InvalidImageError, labels: list[str], threshold: float, review: float
) -> dict:
    if isinstance(outcome, InvalidImageError):
        return {
            "path": path,
            "label": None,
            "is_nsfw": None,
            "nsfw_score": None,
            "decision": None,
            "error": str(outcome),
        }
    answer = outcome.to_dict(threshold, review)
    row: dict[str, Any] = {"path": path, "label": outcome.label, "error": ""}
    row.update({label: round(outcome.scores[label], 6) for label in labels})
    row.update({key: answer[key] for key in ("nsfw_score", "is_nsfw", "decision")})
    if "segments" in answer:  # JSON in both formats: one cell of the CSV, a list in JSON Lines
        row["segments"] = answer["segments"]
    return row


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return csv_cell(json.dumps(value))
    return csv_cell(value)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="file", file=sys.stderr, disable=not enabled, dynamic_ncols=True)
