"""Explaining many inputs with one served pass and one map pass per chunk: what
:meth:`NSFWClassifier.explain_batch` does (the prediction is the one ``/moderate`` gives; the map
comes from the explainer's fp32 copy, at the frame that decided an animation's score)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np
from PIL import Image

from nsfw_space.errors import InvalidImageError
from nsfw_space.media.budgets import DecodeLimits, PixelBudget
from nsfw_space.media.images import ImageSource, describe, frame_time, load_image
from nsfw_space.model.explain import Explainer, Explanation
from nsfw_space.model.prediction import Prediction, source_name


class NSFWClassifier(Protocol):
    """What explaining in batches needs of a classifier (the real NSFWClassifier is one)."""

    nsfw_indices: list[int]
    limits: DecodeLimits

    def load(
        self, source: ImageSource, frames: int | None = None, budget: PixelBudget | None = None
    ) -> list: ...

    def preprocess(self, image: Image.Image) -> np.ndarray: ...

    def probabilities(self, pixels: np.ndarray) -> np.ndarray: ...

    def make_prediction(
        self, probs: np.ndarray, source: str | None, times: tuple[float, ...] | None, rule: str, k: int
    ) -> Prediction: ...


def explain_sources(
    classifier: NSFWClassifier,
    explainer: Explainer,
    sources: Iterable[ImageSource],
    batch_size: int = 8,
    *,
    budget: PixelBudget | None = None,
    rule: str = "max",
    k: int = 1,
    method: str | None = None,
) -> list[Explanation]:
    """Explanations of ``sources`` in order; raises InvalidImageError naming the first that
    cannot be read."""
    from nsfw_space.model.rules import summarise

    explanations: list[Explanation] = []
    pending: list[tuple[ImageSource, list[Image.Image], np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        # the model as served scores every frame of the chunk in one pass (the prediction
        # /moderate gives); the maps come from the fp32 copy, one frame per input
        probs = classifier.probabilities(np.concatenate([pixels for _, _, pixels in pending]))
        chosen = []
        offset = 0
        for source, frames, pixels in pending:
            part = probs[offset : offset + len(frames)]
            offset += len(frames)
            times = tuple(frame_time(frame) for frame in frames) if len(frames) > 1 else None
            prediction = classifier.make_prediction(part, source_name(source), times, rule, k)
            frame = (
                summarise(part[:, classifier.nsfw_indices].sum(axis=1), rule, k).frame
                if len(frames) > 1
                else 0
            )
            image = frames[frame]
            if len(frames) == 1 and not isinstance(source, (Image.Image, np.ndarray)):
                image = load_image(source, limits=classifier.limits)  # full size: the map and redaction
            chosen.append((prediction, image, pixels[frame], frame))
        maps = explainer.maps(np.stack([pixels for _, _, pixels, _ in chosen]), method)
        for (prediction, image, _, frame), grid in zip(chosen, maps, strict=True):
            explanations.append(Explanation(prediction, grid, image, method or explainer.method, frame))
        pending.clear()

    for source in sources:
        try:
            frames = classifier.load(source, budget=budget)
        except InvalidImageError as err:
            raise InvalidImageError(f"{describe(source)}: {err}") from err
        pending.append((source, frames, np.stack([classifier.preprocess(frame) for frame in frames])))
        if len(pending) >= batch_size:
            flush()
    flush()
    return explanations
