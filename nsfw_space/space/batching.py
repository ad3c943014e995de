"""Dynamic batching for the Space: concurrent requests share forward passes, each keeps its own result.

Gradio's own ``batch=True`` hands a whole batch to one function call, so one user's unreadable
file fails every request in that batch. Here each request decodes its own image in its own
worker thread (so decoding runs in parallel and a bad file fails only its own request), then
queues the pixels; a single model thread takes everything queued at that moment (up to
``max_batch_size`` images) into one forward pass. Under no load that is a batch of one with no
added wait; under load, batches fill while the previous pass runs.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future

import numpy as np

from nsfw_space.media.budgets import PixelBudget
from nsfw_space.media.images import ImageSource
from nsfw_space.model.classifier import NSFWClassifier
from nsfw_space.model.prediction import Prediction, source_name

logger = logging.getLogger(__name__)


class DynamicBatcher:
    """Thread-safe ``predict(source)`` that pools concurrent calls into shared forward passes."""

    def __init__(self, classifier: NSFWClassifier, max_batch_size: int = 8) -> None:
        self.classifier = classifier
        self.max_batch_size = max(1, int(max_batch_size))
        self._queue: queue.SimpleQueue[tuple[np.ndarray, Future]] = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self.batch_sizes: list[int] = []  # recent pass sizes, for tests and the load report

    def predict(
        self, source: ImageSource, *, rule: str = "max", k: int = 1, budget: PixelBudget | None = None
    ) -> Prediction:
        """Decode ``source`` here (raising InvalidImageError for this caller only), score it shared."""
        decoded = self.classifier.decode(source, budget)
        future: Future = Future()
        self._ensure_worker()
        self._queue.put((decoded.pixels, future))
        return self.classifier.make_prediction(future.result(), source_name(source), decoded.times, rule, k)

    def _ensure_worker(self) -> None:
        if self._worker is not None and self._worker.is_alive():
            return
        with self._start_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="nsfw-batcher", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        while True:
            jobs = [self._queue.get()]
            frames = len(jobs[0][0])
            while frames < self.max_batch_size:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                jobs.append(job)
                frames += len(job[0])
            self._score(jobs)

    def _score(self, jobs: list[tuple[np.ndarray, Future]]) -> None:
        try:
            probs = self.classifier.probabilities(np.concatenate([pixels for pixels, _ in jobs]))
        except BaseException as err:
            logger.exception("forward pass failed")
            for _, future in jobs:
                future.set_exception(err)
            return
        self.batch_sizes = [*self.batch_sizes[-999:], len(probs)]
        offset = 0
        for pixels, future in jobs:
            future.set_result(probs[offset : offset + len(pixels)])
            offset += len(pixels)
