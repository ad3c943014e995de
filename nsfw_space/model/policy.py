"""A moderation policy: two thresholds that turn a score into what to do with the image.

- at or above ``block``: ``block`` (act without a person);
- at or above ``review`` (and below ``block``): ``review`` (send it to a person);
- below ``review``: ``allow``.

Without a policy file the policy is the single threshold (``review == block``), so callers that
only know ``is_nsfw`` see no change. :func:`calibrate` picks the two thresholds from labelled scores
for a target precision (block) and recall (review); a policy is a small JSON file that records
what it was chosen for, on which model, and on how much data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from nsfw_space.errors import ConfigError

ALLOW, REVIEW, BLOCK = "allow", "review", "block"
DECISIONS = (ALLOW, REVIEW, BLOCK)
POLICY_SETTING = "NSFW_SPACE_POLICY"
# The rule of three: with n cases and no error among them, the 95% upper bound on the error rate
# is about 3/n. So a claim "precision >= p" needs at least 3/(1-p) images flagged at the block
# threshold, and "recall >= r" at least 3/(1-r) nsfw images; fewer, and the data cannot show it.
RULE_OF_THREE = 3.0
SCORE_DIGITS = 6  # the one rounding rule: scores are reported, and thresholds kept, to 6 digits


def reported(value: float) -> float:
    """A score or threshold as every answer reports it (and as every decision compares it)."""
    return round(float(value), SCORE_DIGITS)


class PolicyError(ConfigError):
    """A policy file that cannot be used; the message says why."""


@dataclass(frozen=True)
class Policy:
    """Two thresholds and where they came from. ``review <= block``, both in [0, 1]."""

    block: float
    review: float
    model: str | None = None
    revision: str | None = None
    targets: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("block", "review"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise PolicyError(
                    f"The policy's {name} threshold must be a number from 0 to 1, got {value!r}."
                )
            object.__setattr__(self, name, reported(value))  # kept, written and read to 6 digits
        if self.review > self.block:
            raise PolicyError(
                f"The policy's review threshold ({self.review}) must not be above its block threshold ({self.block})."
            )

    @classmethod
    def single(cls, threshold: float) -> Policy:
        """The plain threshold as a policy: block at it, nothing sent to review."""
        return cls(block=threshold, review=threshold)

    def at(self, threshold: float | None) -> Policy:
        """This policy with a caller's own ``threshold`` as the block threshold; ``None`` keeps it as
        it is. A single-threshold policy stays single (no review band appears); otherwise the review
        threshold follows the block one down when that is lower."""
        if threshold is None or threshold == self.block:
            return self
        review = threshold if self.review == self.block else min(self.review, threshold)
        return Policy(block=threshold, review=review, model=self.model, revision=self.revision)

    def decide(self, nsfw_score: float) -> str:
        """The decision for a score, made on the score as reported (6 digits), so an answer's
        ``decision`` always follows from its own ``nsfw_score`` and thresholds."""
        score = reported(nsfw_score)
        if score >= self.block:
            return BLOCK
        return REVIEW if score >= self.review else ALLOW

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def save(self, path: str | Path) -> Path:
        target = Path(path)
        target.write_text(self.to_json() + "\n", encoding="utf-8")
        return target

    @classmethod
    def from_dict(cls, values: Any) -> Policy:
        if not isinstance(values, dict) or "block" not in values or "review" not in values:
            raise PolicyError("A policy is a JSON object with at least 'block' and 'review' thresholds.")
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        for name in ("targets", "data"):
            if not isinstance(known.get(name, {}), dict):
                raise PolicyError(f"The policy's {name!r} must be an object.")
        return cls(**known)

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read a policy file; raises PolicyError naming the file and what is wrong."""
        source = Path(path)
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as err:
            raise PolicyError(f"Could not read the policy file {source}: {err.strerror or err}.") from err
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as err:
            raise PolicyError(
                f"The policy file {source} is not JSON: {err.msg} (line {err.lineno})."
            ) from err
        except PolicyError as err:
            raise PolicyError(f"{source}: {err}") from err


@dataclass(frozen=True)
class Calibration:
    """Two thresholds chosen on labelled scores, what they do on that data, and warnings."""

    policy: Policy
    block_counts: dict[str, int]
    review_counts: dict[str, int]
    warnings: tuple[str, ...]


def confusion(scores: np.ndarray, truth: np.ndarray, threshold: float) -> dict[str, int]:
    """Counts at ``threshold``: true/false positives (flagged nsfw / flagged normal) and negatives."""
    flagged = scores >= threshold
    return {
        "true_positives": int(np.sum(flagged & truth)),
        "false_positives": int(np.sum(flagged & ~truth)),
        "false_negatives": int(np.sum(~flagged & truth)),
        "true_negatives": int(np.sum(~flagged & ~truth)),
    }


def calibrate(
    scores: Sequence[float],
    is_nsfw: Sequence[bool],
    *,
    block_precision: float = 0.99,
    review_recall: float = 0.95,
    model: str | None = None,
    revision: str | None = None,
) -> Calibration:
    """Choose ``block`` as the lowest threshold whose precision on this data is at least
    ``block_precision`` (the most nsfw images blocked without a person at that precision), and
    ``review`` as the highest threshold whose recall is at least ``review_recall`` (never above
    ``block``). When no threshold reaches the precision, ``block`` is 1.0 (never block without a
    person) and a warning says so. Warns when the data is too small for a target (rule of three).
    """
    values = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(is_nsfw, dtype=bool)
    if values.shape != truth.shape or values.ndim != 1:
        raise ValueError("scores and labels must be two lists of the same length")
    if not truth.any() or truth.all():
        raise ValueError("calibration needs images of both kinds: some nsfw and some normal")
    for name, target in (("block precision", block_precision), ("review recall", review_recall)):
        if not 0 < target < 1:
            raise ValueError(f"the {name} target must be between 0 and 1 (exclusive), got {target}")
    warnings = []
    candidates = np.unique(values)  # every distinct score is a threshold worth trying
    block = 1.0
    for threshold in candidates:  # ascending: the first that reaches the precision flags the most
        counts = confusion(values, truth, threshold)
        flagged = counts["true_positives"] + counts["false_positives"]
        if flagged and counts["true_positives"] / flagged >= block_precision:
            block = float(threshold)
            break
    else:
        warnings.append(
            f"No threshold reaches precision {block_precision} on this data, so block is 1.0: "
            "nothing is blocked without a person."
        )
    review = 0.0
    positives = int(truth.sum())
    for threshold in candidates[::-1]:  # descending: the first that reaches the recall sends fewest
        if np.sum((values >= threshold) & truth) / positives >= review_recall:
            review = float(threshold)
            break
    review = min(review, block)
    block_counts, review_counts = confusion(values, truth, block), confusion(values, truth, review)
    flagged_at_block = block_counts["true_positives"] + block_counts["false_positives"]
    need_flagged = math.ceil(RULE_OF_THREE / (1 - block_precision))
    if flagged_at_block < need_flagged:
        warnings.append(
            f"Too little data for precision {block_precision}: {flagged_at_block} images are blocked at "
            f"{block:.4f}, and at least {need_flagged} are needed to show it (rule of three: 3 / (1 - "
            "precision)). Add more labelled images, especially nsfw ones."
        )
    need_positives = math.ceil(RULE_OF_THREE / (1 - review_recall))
    if positives < need_positives:
        warnings.append(
            f"Too little data for recall {review_recall}: {positives} nsfw images, and at least "
            f"{need_positives} are needed to show it (rule of three: 3 / (1 - recall))."
        )
    policy = Policy(
        block=block,
        review=review,
        model=model,
        revision=revision,
        targets={"block_precision": block_precision, "review_recall": review_recall},
        data={
            "images": len(values),
            "nsfw": positives,
            "normal": len(values) - positives,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        },
    )
    return Calibration(policy, block_counts, review_counts, tuple(warnings))
