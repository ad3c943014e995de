"""The result for one input, in the one shape every door (API, CLI, CSV, JSON) starts from."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """The result for one image.

    ``scores`` maps every label of the model to its probability; ``nsfw_score`` is the summed
    probability of the NSFW label(s). For an animated image or a video, ``scores`` are those of
    the frame with the highest NSFW score and ``frame_scores`` holds each sampled frame's score.
    """

    scores: dict[str, float]
    nsfw_score: float
    source: str | None = None
    frame_scores: tuple[float, ...] | None = field(default=None)
    frame_times: tuple[float, ...] | None = field(default=None)

    @property
    def label(self) -> str:
        """The label with the highest probability."""
        return max(self.scores, key=self.scores.__getitem__)

    def is_nsfw(self, threshold: float = 0.5) -> bool:
        """Whether the NSFW score reaches ``threshold`` (both as reported: 6 digits)."""
        from nsfw_space.model.policy import reported

        return reported(self.nsfw_score) >= reported(threshold)

    def decision(self, threshold: float = 0.5, review_threshold: float | None = None) -> str:
        """``block`` at or above ``threshold``, ``review`` at or above ``review_threshold`` (default:
        the threshold, so nothing is sent to review), else ``allow``."""
        from nsfw_space.model.policy import Policy

        review = threshold if review_threshold is None else min(review_threshold, threshold)
        return Policy(block=threshold, review=review).decide(self.nsfw_score)

    def to_dict(self, threshold: float = 0.5, review_threshold: float | None = None) -> dict[str, Any]:
        """JSON-ready form: label, scores, nsfw_score, is_nsfw, threshold, decision,
        review_threshold (and frame_scores, frame_times and segments for animations and videos)."""
        from nsfw_space.model.policy import reported

        review = threshold if review_threshold is None else min(review_threshold, threshold)
        result: dict[str, Any] = {
            "label": self.label,
            "scores": {name: reported(value) for name, value in self.scores.items()},
            "nsfw_score": reported(self.nsfw_score),
            "is_nsfw": self.is_nsfw(threshold),
            "threshold": reported(threshold),
            "decision": self.decision(threshold, review),
            "review_threshold": reported(review),
        }
        if self.frame_scores is not None:
            from nsfw_space.model.rules import flagged_segments

            times = self.frame_times or tuple(0.0 for _ in self.frame_scores)
            result["frame_scores"] = [reported(value) for value in self.frame_scores]
            result["frame_times"] = [round(value, 3) for value in times]
            result["segments"] = [s.to_dict() for s in flagged_segments(self.frame_scores, times, review)]
        return result


def source_name(source: object) -> str | None:
    """The path of a path-like source, else None."""
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else None


def frames_prediction(
    probs: np.ndarray,
    labels: list[str],
    nsfw_indices: list[int],
    source: str | None = None,
    times: tuple[float, ...] | None = None,
    rule: str = "max",
    k: int = 1,
) -> Prediction:
    """Label probabilities of one input's frames (frames, labels) -> Prediction.

    Several frames are summed up by ``rule`` (``max``, ``mean`` or ``k-of-n``, see
    :func:`nsfw_space.model.rules.summarise`); the scores are those of the deciding frame (the frame average for ``mean``).
    """
    from nsfw_space.model.rules import summarise

    nsfw = probs[:, nsfw_indices].sum(axis=1)
    summary = summarise(nsfw, rule, k)
    row = probs.mean(axis=0) if rule == "mean" else probs[summary.frame]
    several = len(probs) > 1
    return Prediction(
        scores={label: float(row[i]) for i, label in enumerate(labels)},
        nsfw_score=summary.score,
        source=source,
        frame_scores=tuple(float(v) for v in nsfw) if several else None,
        frame_times=(times or tuple(0.0 for _ in nsfw)) if several else None,
    )
