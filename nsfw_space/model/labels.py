"""Which of a model's labels mean NSFW: found by name, or named by the caller."""

from __future__ import annotations

from collections.abc import Sequence

from nsfw_space.errors import ModelLoadError

NSFW_LABEL_NAMES = ("nsfw", "unsafe", "explicit", "porn", "sexy", "hentai", "nudity", "nude")

SAFE_LABEL_NAMES = ("normal", "safe", "sfw", "neutral", "drawings", "drawing")


def find_nsfw_indices(labels: list[str], wanted: Sequence[str] | None, model: str) -> list[int]:
    lowered = [label.lower() for label in labels]
    if wanted:
        missing = [name for name in wanted if name.lower() not in lowered]
        if missing:
            raise ModelLoadError(
                f"The model {model!r} has no label {', '.join(map(repr, missing))}; "
                f"its labels are {', '.join(labels)}. Pass the right names as nsfw_labels "
                "(NSFW_SPACE_NSFW_LABELS for the Space)."
            )
        return [lowered.index(name.lower()) for name in wanted]
    found = [i for i, label in enumerate(lowered) if label in NSFW_LABEL_NAMES]
    if found:
        return found
    if len(labels) == 2:
        safe = [i for i, label in enumerate(lowered) if label in SAFE_LABEL_NAMES]
        if len(safe) == 1:
            return [1 - safe[0]]
    raise ModelLoadError(
        f"Cannot tell which label of the model {model!r} means NSFW (its labels are "
        f"{', '.join(labels)}). Pass the label name(s) that do as nsfw_labels "
        "(NSFW_SPACE_NSFW_LABELS for the Space)."
    )
