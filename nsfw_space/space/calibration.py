"""The Calibrate tab's pieces that are not Gradio: labelled uploads (two boxes or a zip) read
within limits, and the curves, histogram and summary drawn from labelled scores."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from nsfw_space.errors import InvalidImageError
from nsfw_space.model.policy import Calibration, confusion

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
MAX_CURVE_POINTS = 200


@dataclass(frozen=True)
class Labelled:
    """One labelled input: a name for messages, the bytes or path to score, and its truth."""

    name: str
    source: str | bytes | InvalidImageError
    is_nsfw: bool


def zip_members(
    path: str | bytes, nsfw_folders: set[str], normal_folders: set[str], *, max_files: int, max_bytes: int
) -> list[Labelled]:
    """Images of a zip with one folder per label (``normal/``, ``nsfw/``, at any depth: the
    nearest folder named after a label decides). Checked before anything is unpacked: at most
    ``max_files`` images, none larger than ``max_bytes`` (read no further than that, whatever the
    header says), names used only as labels, never as paths. Raises InvalidImageError."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(path) if isinstance(path, bytes) else path)
    except (zipfile.BadZipFile, OSError) as err:
        raise InvalidImageError("This is not a zip file this tab can read.") from err
    members: list[Labelled] = []
    with archive:
        entries = [info for info in archive.infolist() if not info.is_dir()]
        images = [info for info in entries if PurePosixPath(info.filename).suffix.lower() in IMAGE_SUFFIXES]
        if len(images) > max_files:
            raise InvalidImageError(
                f"The zip holds {len(images)} images; at most {max_files} are scored at once."
            )
        for info in images:
            folders = [part.lower() for part in PurePosixPath(info.filename).parts[:-1]]
            label = next((part for part in reversed(folders) if part in nsfw_folders | normal_folders), None)
            if label is None:
                continue  # not under a label's folder: not part of the labelled set
            name = PurePosixPath(info.filename).name
            if info.file_size > max_bytes:
                source: str | bytes | InvalidImageError = InvalidImageError(
                    f"{name} is larger than the file limit."
                )
            else:
                with archive.open(info) as handle:
                    data = handle.read(max_bytes + 1)
                source = (
                    data
                    if len(data) <= max_bytes
                    else InvalidImageError(f"{name} is larger than the file limit.")
                )
            members.append(Labelled(name, source, label in nsfw_folders))
    return members


def _thin(values: np.ndarray) -> np.ndarray:
    """At most MAX_CURVE_POINTS evenly chosen indices of ``values`` (the ends kept)."""
    if len(values) <= MAX_CURVE_POINTS:
        return np.arange(len(values))
    return np.unique(np.linspace(0, len(values) - 1, MAX_CURVE_POINTS).round().astype(int))


def curves(scores: np.ndarray, truth: np.ndarray) -> tuple[dict[str, list], dict[str, list]]:
    """ROC points (false positive rate, true positive rate) and precision/recall against the
    threshold, as columns for a line plot."""
    thresholds = np.unique(scores)[::-1]
    positives, negatives = max(1, int(truth.sum())), max(1, int((~truth).sum()))
    roc = {"false positive rate": [0.0], "true positive rate": [0.0], "curve": ["ROC"]}
    by_threshold: dict[str, list] = {"threshold": [], "value": [], "measure": []}
    for index in _thin(thresholds):
        threshold = float(thresholds[index])
        counts = confusion(scores, truth, threshold)
        flagged = counts["true_positives"] + counts["false_positives"]
        recall = counts["true_positives"] / positives
        roc["false positive rate"].append(counts["false_positives"] / negatives)
        roc["true positive rate"].append(recall)
        roc["curve"].append("ROC")
        for measure, value in (
            ("precision", counts["true_positives"] / flagged if flagged else 1.0),
            ("recall", recall),
        ):
            by_threshold["threshold"].append(threshold)
            by_threshold["value"].append(value)
            by_threshold["measure"].append(measure)
    return roc, by_threshold


def histogram(scores: np.ndarray, truth: np.ndarray, bins: int = 20) -> dict[str, list]:
    """Counts of nsfw and normal images per score bin, as columns for a bar plot."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    columns: dict[str, list] = {"score": [], "images": [], "label": []}
    for name, mask in (("normal", ~truth), ("nsfw", truth)):
        counts, _ = np.histogram(scores[mask], bins=edges)
        for low, count in zip(edges[:-1], counts, strict=True):
            columns["score"].append(f"{low:.2f}")
            columns["images"].append(int(count))
            columns["label"].append(name)
    return columns


def summary_markdown(calibration: Calibration, scored: int, unreadable: int) -> str:
    """The two thresholds, what each does on this data, and the warnings."""
    policy, block, review = calibration.policy, calibration.block_counts, calibration.review_counts
    targets = policy.targets

    def rates(counts: dict[str, int]) -> str:
        flagged = counts["true_positives"] + counts["false_positives"]
        positives = counts["true_positives"] + counts["false_negatives"]
        precision = counts["true_positives"] / flagged if flagged else float("nan")
        recall = counts["true_positives"] / positives if positives else float("nan")
        return (
            f"{counts['true_positives']} nsfw caught, {counts['false_positives']} normal caught, "
            f"{counts['false_negatives']} nsfw missed, {counts['true_negatives']} normal passed "
            f"(precision {precision:.3f}, recall {recall:.3f})"
        )

    lines = [
        f"**Block at {policy.block:.4f}** (lowest threshold with precision ≥ {targets['block_precision']}): {rates(block)}.",
        "",
        f"**Review from {policy.review:.4f}** (highest threshold with recall ≥ {targets['review_recall']}): {rates(review)}.",
        "",
        f"{scored} images scored ({policy.data['nsfw']} nsfw, {policy.data['normal']} normal)"
        + (f"; {unreadable} could not be read and are left out." if unreadable else "."),
    ]
    lines += [f"\n⚠️ {warning}" for warning in calibration.warnings]
    return "\n".join(lines)


def as_frames(columns: dict[str, list]) -> Any:
    import pandas as pd

    return pd.DataFrame(columns)
