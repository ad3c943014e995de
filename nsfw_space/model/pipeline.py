"""Many inputs through one classifier: decoding on worker threads, frames batched into passes,
results yielded in input order with errors in place."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch

from nsfw_space.errors import InvalidImageError
from nsfw_space.media.budgets import PixelBudget
from nsfw_space.media.images import ImageSource
from nsfw_space.model.prediction import Prediction, source_name
from nsfw_space.model.preprocess import Decoded


class Scorer(Protocol):
    """What the pipeline needs of a classifier (NSFWClassifier is one)."""

    device: torch.device
    labels: list[str]

    def decode(self, source: ImageSource, budget: PixelBudget | None = None) -> Decoded: ...
    def probabilities(self, pixels: np.ndarray) -> np.ndarray: ...
    def make_prediction(
        self,
        probs: np.ndarray,
        source: str | None = None,
        times: tuple[float, ...] | None = None,
        rule: str = "max",
        k: int = 1,
    ) -> Prediction: ...


def iter_predictions(
    classifier: Scorer,
    sources: Iterable[ImageSource],
    batch_size: int = 16,
    workers: int | None = None,
    *,
    rule: str = "max",
    k: int = 1,
    budget: PixelBudget | None = None,
) -> Iterator[tuple[ImageSource, Prediction | InvalidImageError]]:
    """Yield ``(source, Prediction or InvalidImageError)`` in input order, batching frames.

    Decoding and preprocessing run on ``workers`` threads (PIL releases the GIL). On a GPU they
    run a couple of batches ahead, overlapped with the model. On the CPU the two would fight
    for the same cores (the model's threads stall whenever a decoder preempts one of them), so
    there each batch is decoded on all cores, then scored on all cores: measured faster on
    2 cores (see ``python -m nsfw_space bench``). ``budget`` bounds the decoded pixels of the
    whole run: inputs past it come back as InvalidImageError.
    """
    batch_size = max(1, int(batch_size))
    overlap = classifier.device.type != "cpu"
    workers = workers or (_default_workers() if overlap else (os.cpu_count() or 1))
    lookahead = 2 * batch_size if overlap else batch_size
    pending: deque[tuple[ImageSource, Future]] = deque()
    ready: list[tuple[ImageSource, Decoded | InvalidImageError]] = []
    frames_ready = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nsfw-decode") as pool:
        iterator = iter(sources)
        exhausted = False
        while True:
            refill = overlap or not pending  # on the CPU: the next batch only once this one is scored
            while refill and not exhausted and len(pending) < lookahead:
                try:
                    source = next(iterator)
                except StopIteration:
                    exhausted = True
                    break
                pending.append((source, pool.submit(_decode_or_error, classifier, source, budget)))
            if not pending and not ready:
                return
            if pending:
                source, future = pending.popleft()
                decoded = future.result()
                ready.append((source, decoded))
                if isinstance(decoded, Decoded):
                    frames_ready += len(decoded.pixels)
            if frames_ready >= batch_size or (not pending and ready):
                yield from _score_ready(classifier, ready, rule, k)
                ready, frames_ready = [], 0


def _decode_or_error(
    classifier: Scorer, source: ImageSource, budget: PixelBudget | None
) -> Decoded | InvalidImageError:
    try:
        return classifier.decode(source, budget)
    except InvalidImageError as err:
        return err


def _score_ready(
    classifier: Scorer,
    ready: list[tuple[ImageSource, Decoded | InvalidImageError]],
    rule: str,
    k: int,
) -> Iterator[tuple[ImageSource, Prediction | InvalidImageError]]:
    arrays = [decoded.pixels for _, decoded in ready if isinstance(decoded, Decoded)]
    probs = (
        classifier.probabilities(np.concatenate(arrays)) if arrays else np.empty((0, len(classifier.labels)))
    )
    offset = 0
    for source, decoded in ready:
        if isinstance(decoded, InvalidImageError):
            yield source, decoded
            continue
        count = len(decoded.pixels)
        chunk = probs[offset : offset + count]
        yield source, classifier.make_prediction(chunk, source_name(source), decoded.times, rule, k)
        offset += count


def _default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 2) // 2))
