"""Checking a model on labelled folders: the model card's five Training Stats and more.

Writes ``metrics.json`` (eval_loss, eval_accuracy, eval_runtime, eval_samples_per_second,
eval_steps_per_second; precision, recall, F1 and ROC AUC for the NSFW label; the confusion
matrix; the threshold that reaches a target precision and the recall it keeps) and three PNG
plots: the ROC curve, precision and recall against the threshold, and score histograms per true
label. Unreadable files are skipped and counted.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nsfw_space.errors import ConfigError, InvalidImageError
from nsfw_space.model.policy import calibrate
from nsfw_space.model.prediction import Prediction
from nsfw_space.training.datasets import LabelledFiles, load_eval_set

if TYPE_CHECKING:  # the data folder is checked before torch is imported
    from nsfw_space.model.classifier import NSFWClassifier

logger = logging.getLogger(__name__)


def evaluate(
    classifier: NSFWClassifier,
    data_dir: str | Path,
    output_dir: str | Path,
    *,
    target_precision: float = 0.95,
    threshold: float = 0.5,
    batch_size: int = 16,
    progress: bool = True,
    block_precision: float = 0.99,
    review_recall: float = 0.95,
    revision: str | None = None,
) -> dict[str, Any]:
    """Score every labelled image under ``data_dir`` and write metrics, plots and ``policy.json``
    (block at ``block_precision``, review from ``review_recall``; see
    :func:`nsfw_space.model.policy.calibrate`) to ``output_dir``."""
    require_plotting()  # before anything is scored
    files = eval_set_for(data_dir, classifier.labels)
    by_name = {label.lower(): index for index, label in enumerate(classifier.labels)}
    nsfw_names = {classifier.labels[i] for i in classifier.nsfw_indices}
    truth, prob, scores, skipped, runtime = _score_all(classifier, files, by_name, batch_size, progress)
    positive = np.isin(truth, [by_name[name.lower()] for name in nsfw_names])
    count = len(truth)
    metrics: dict[str, Any] = {
        "eval_loss": float(-np.mean(np.log(np.clip(prob[np.arange(count), truth], 1e-12, 1.0)))),
        "eval_accuracy": float(np.mean(prob.argmax(axis=1) == truth)),
        "eval_runtime": round(runtime, 4),
        "eval_samples_per_second": round(count / runtime, 3),
        "eval_steps_per_second": round(math.ceil(count / batch_size) / runtime, 3),
    }
    predicted = scores >= threshold
    metrics.update(_binary(positive, predicted))
    metrics["nsfw_roc_auc"] = roc_auc(positive, scores)
    metrics["threshold"] = threshold
    metrics["nsfw_labels"] = sorted(nsfw_names)
    metrics["confusion_matrix"] = {
        "labels": classifier.labels,
        "rows_are": "true label",
        "columns_are": "predicted (top) label",
        "matrix": confusion(truth, prob.argmax(axis=1), len(classifier.labels)),
    }
    metrics["target_precision"] = target_precision
    metrics["threshold_for_target_precision"] = threshold_for_precision(positive, scores, target_precision)
    metrics["images"] = count
    metrics["skipped_unreadable"] = len(skipped)
    metrics["model"] = classifier.name
    for item in skipped:
        logger.warning("skipped unreadable file %s", item)

    calibration = calibrate(
        scores,
        positive,
        block_precision=block_precision,
        review_recall=review_recall,
        model=classifier.name,
        revision=revision,
    )
    metrics["policy"] = {
        "block": calibration.policy.block,
        "review": calibration.policy.review,
        "at_block": calibration.block_counts,
        "at_review": calibration.review_counts,
        "warnings": list(calibration.warnings),
    }
    for warning in calibration.warnings:
        logger.warning("policy: %s", warning)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    calibration.policy.save(output_dir / "policy.json")
    write_plots(output_dir, positive, scores, truth, classifier.labels)
    return metrics


def _score_all(
    classifier: NSFWClassifier, files: Any, by_name: dict[str, int], batch_size: int, progress: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], float]:
    """(true label indices, label probabilities, nsfw scores, unreadable files, seconds)."""
    from tqdm.auto import tqdm

    truth_of = dict(zip(map(str, files.paths), files.labels, strict=True))

    bar = tqdm(total=len(files), unit="image", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    truths: list[int] = []
    probs: list[list[float]] = []
    nsfw_scores: list[float] = []
    skipped: list[str] = []
    started = time.perf_counter()
    for source, outcome in classifier.iter_predictions(list(map(str, files.paths)), batch_size=batch_size):
        bar.update(1)
        if isinstance(outcome, InvalidImageError):
            skipped.append(f"{source}: {outcome}")
            continue
        assert isinstance(outcome, Prediction)
        truths.append(by_name[truth_of[str(source)].lower()])
        probs.append([outcome.scores[label] for label in classifier.labels])
        nsfw_scores.append(outcome.nsfw_score)
    runtime = time.perf_counter() - started
    bar.close()
    if not truths:
        raise ConfigError("None of the images could be read; nothing to evaluate.")
    return (
        np.asarray(truths),
        np.asarray(probs, dtype=np.float64),
        np.asarray(nsfw_scores, dtype=np.float64),
        skipped,
        runtime,
    )


def _binary(positive: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    tp = int(np.sum(positive & predicted))
    fp = int(np.sum(~positive & predicted))
    fn = int(np.sum(positive & ~predicted))
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"nsfw_precision": precision, "nsfw_recall": recall, "nsfw_f1": f1}


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half); None for one class."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def roc_curve(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    thresholds = np.concatenate([[np.inf], np.unique(scores)[::-1]])
    tpr = [(scores[positive] >= t).mean() if positive.any() else 0.0 for t in thresholds]
    fpr = [(scores[~positive] >= t).mean() if (~positive).any() else 0.0 for t in thresholds]
    return np.asarray(fpr), np.asarray(tpr)


def confusion(truth: np.ndarray, predicted: np.ndarray, labels: int) -> list[list[int]]:
    matrix = np.zeros((labels, labels), dtype=int)
    for true, guess in zip(truth, predicted, strict=True):
        matrix[true, guess] += 1
    return matrix.tolist()


def threshold_for_precision(positive: np.ndarray, scores: np.ndarray, target: float) -> dict[str, Any]:
    """The lowest threshold whose precision reaches ``target`` (so it keeps the most recall)."""
    best = None
    for candidate in np.unique(scores):
        flagged = scores >= candidate
        tp = int(np.sum(positive & flagged))
        if not flagged.any():
            continue
        precision = tp / int(flagged.sum())
        if precision >= target:
            recall = tp / int(positive.sum()) if positive.any() else 0.0
            best = {"threshold": float(candidate), "precision": precision, "recall": recall}
            break
    return best or {"threshold": None, "precision": None, "recall": None, "note": "no threshold reaches it"}


def eval_set_for(data_dir: str | Path, labels: list[str]) -> LabelledFiles:
    """The labelled files under ``data_dir``, or ConfigError when a label folder is not one of the
    model's ``labels`` (compared without case)."""
    files = load_eval_set(data_dir)
    known = {label.lower() for label in labels}
    unknown = sorted({label for label in files.labels if label.lower() not in known})
    if unknown:
        raise ConfigError(
            f"The folders {', '.join(unknown)} are not labels of the model (its labels are "
            f"{', '.join(labels)}); name the subfolders after the labels."
        )
    return files


def require_plotting() -> None:
    """Raise ConfigError saying how to install matplotlib when it is missing (checked first)."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(
            'eval draws its plots with matplotlib: pip install "nsfw-space[eval]" (or matplotlib).'
        )


def write_plots(
    output_dir: Path, positive: np.ndarray, scores: np.ndarray, truth: np.ndarray, labels: list[str]
) -> None:
    require_plotting()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr = roc_curve(positive, scores)
    auc = roc_auc(positive, scores)
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot(fpr, tpr, label=f"ROC (AUC {auc:.3f})" if auc is not None else "ROC")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set(xlabel="false positive rate", ylabel="true positive rate (recall)", title="nsfw: ROC curve")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(output_dir / "roc.png", dpi=100)
    plt.close(figure)

    grid = np.linspace(0, 1, 101)
    precision, recall = [], []
    for t in grid:
        flagged = scores >= t
        tp = np.sum(positive & flagged)
        precision.append(tp / flagged.sum() if flagged.any() else np.nan)
        recall.append(tp / positive.sum() if positive.any() else np.nan)
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(grid, precision, label="precision")
    axes.plot(grid, recall, label="recall")
    axes.set(
        xlabel="threshold on the nsfw score", ylabel="value", ylim=(0, 1.02), title="Precision and recall"
    )
    axes.legend()
    figure.tight_layout()
    figure.savefig(output_dir / "precision_recall_threshold.png", dpi=100)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 26)
    for index, label in enumerate(labels):
        chosen = scores[truth == index]
        if chosen.size:
            axes.hist(chosen, bins=bins, alpha=0.6, label=f"true {label} ({chosen.size})")
    axes.set(xlabel="nsfw score", ylabel="images", title="nsfw score by true label")
    axes.legend()
    figure.tight_layout()
    figure.savefig(output_dir / "score_histogram.png", dpi=100)
    plt.close(figure)


def summary_text(metrics: dict[str, Any]) -> str:
    """The card's Training Stats form, then the moderation numbers."""
    from nsfw_space.training.train import training_stats_text

    target = metrics["threshold_for_target_precision"]

    def show(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    lines = [
        "Training Stats (the model card's form):",
        training_stats_text(metrics),
        "",
        f"nsfw at threshold {metrics['threshold']}: precision {show(metrics['nsfw_precision'])}, "
        f"recall {show(metrics['nsfw_recall'])}, F1 {show(metrics['nsfw_f1'])}; ROC AUC {show(metrics['nsfw_roc_auc'])}",
        f"threshold for precision >= {metrics['target_precision']}: "
        + (
            f"{target['threshold']:.4f} (precision {target['precision']:.4f}, recall {target['recall']:.4f})"
            if target["threshold"] is not None
            else "none reaches it"
        ),
        f"{metrics['images']} images scored, {metrics['skipped_unreadable']} unreadable skipped",
    ]
    policy = metrics.get("policy")
    if policy:
        lines.append(
            f"policy.json: block at {policy['block']:.4f}, review from {policy['review']:.4f}"
            + "".join(f"\nwarning: {text}" for text in policy["warnings"])
        )
    return "\n".join(lines)
