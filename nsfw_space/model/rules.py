"""The rules that turn per-frame scores into one verdict: ``max``, ``mean``, or at least ``k`` of
``n`` frames."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from nsfw_space.errors import ConfigError
from nsfw_space.model.policy import reported
from nsfw_space.modes import FrameRule

RULES = tuple(rule.value for rule in FrameRule)


@dataclass(frozen=True)
class Summary:
    """Per-frame NSFW scores summed up by a rule; ``score >= threshold`` is the verdict."""

    score: float
    frame: int  # the frame whose label scores represent the whole
    rule: str
    k: int = 1  # for k-of-n: the k actually applied (at most the number of frames)


def summarise(frame_scores: list[float] | tuple[float, ...], rule: str = "max", k: int = 1) -> Summary:
    """``max``: the worst frame. ``mean``: the average. ``k-of-n``: the k-th highest score, so the
    verdict is NSFW exactly when at least ``k`` frames reach the threshold.

    With fewer frames than ``k`` (a still image, a short GIF), k-of-n asks for all of them:
    ``k`` becomes the number of frames, so a still image is judged on its one frame rather than
    never flagged.
    """
    scores = np.asarray(frame_scores, dtype=np.float64)
    if scores.size == 0:
        raise ConfigError("There are no frame scores to sum up.")
    if rule == "max":
        index = int(np.argmax(scores))
        return Summary(float(scores[index]), index, rule)
    if rule == "mean":
        index = int(np.argmin(np.abs(scores - scores.mean())))
        return Summary(float(scores.mean()), index, rule)
    if rule == "k-of-n":
        if k < 1:
            raise ConfigError("k must be at least 1.")
        applied = min(k, int(scores.size))
        order = np.argsort(-scores, kind="stable")
        index = int(order[applied - 1])
        return Summary(float(scores[index]), index, rule, applied)
    raise ConfigError(f"Unknown frame rule {rule!r}; use {', '.join(RULES)}.")


@dataclass(frozen=True)
class Segment:
    """A time range of an animation or video whose frames score at or above a threshold."""

    start: float
    end: float
    peak: float  # the highest frame score inside

    def to_dict(self) -> dict[str, float]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "peak": round(self.peak, 6)}


def flagged_segments(
    frame_scores: list[float] | tuple[float, ...],
    frame_times: list[float] | tuple[float, ...],
    threshold: float,
) -> list[Segment]:
    """The time ranges where sampled frames score at or above ``threshold``.

    Each flagged frame stands for the time until the next sampled frame (the sampling step), so a
    range runs from its first flagged frame to the next sample after its last one (the clip's
    last frame ends at its own time plus one step). Flagged frames closer than one sampling step
    apart (neighbours) merge into one range; an unflagged sample between them splits it.
    """
    scores, times = [reported(score) for score in frame_scores], list(frame_times)  # as reported
    threshold = reported(threshold)
    if len(scores) != len(times):
        raise ConfigError("Each frame score needs its time.")
    steps = [later - earlier for earlier, later in pairwise(times)]
    step = float(np.median(steps)) if steps else 0.0
    segments: list[Segment] = []
    for index, (score, time) in enumerate(zip(scores, times, strict=True)):
        if score < threshold:
            continue
        end = times[index + 1] if index + 1 < len(times) else time + step
        last = segments[-1] if segments else None
        if last is not None and index > 0 and scores[index - 1] >= threshold:
            segments[-1] = Segment(last.start, end, max(last.peak, score))
        else:
            segments.append(Segment(time, end, score))
    return segments
