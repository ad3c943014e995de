"""NSFWClassifier: images in, label probabilities out, on the best device and precision available."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from nsfw_space.config import DEFAULT_MODEL, Settings
from nsfw_space.errors import InvalidImageError
from nsfw_space.media.budgets import DEFAULT_MAX_PIXELS, DecodeLimits, PixelBudget
from nsfw_space.media.images import ImageSource, describe
from nsfw_space.model.device import int8_choice, resolve_device, resolve_precision
from nsfw_space.model.explain import Explainer, Explanation
from nsfw_space.model.labels import find_nsfw_indices
from nsfw_space.model.loading import load_model_and_processor
from nsfw_space.model.pipeline import iter_predictions
from nsfw_space.model.prediction import Prediction, source_name
from nsfw_space.model.preprocess import Decoded, Decoder, Preprocessor
from nsfw_space.model.runner import Runner, prepared_model
from nsfw_space.model.torch_thread import for_device

logger = logging.getLogger(__name__)


class NSFWClassifier:
    """A transformers image-classification model wrapped for moderation.

    Build it with :meth:`from_pretrained`; it is safe to share between threads.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        nsfw_labels: Sequence[str] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int | None = None,
        frames: int = 8,
        name: str = "",
        limits: DecodeLimits | None = None,
        _owned: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        # copies and conversions in the one OpenMP pool (torch_thread)
        prepared = for_device(
            self.device, lambda: prepared_model(model, self.device, dtype, copy_first=not _owned)
        )
        self._runner = Runner(prepared)
        self.processor = processor
        self.name = name or getattr(model.config, "_name_or_path", "") or "model"
        self.limits = limits or DecodeLimits(max_pixels=max_pixels, max_bytes=max_bytes)
        self.frames = frames
        self.every: float | None = None  # sample animations about every this many seconds instead
        id2label = model.config.id2label
        self.labels: list[str] = [str(id2label[i]) for i in range(len(id2label))]
        self.nsfw_indices = find_nsfw_indices(self.labels, nsfw_labels, self.name)
        self._preprocessor = Preprocessor(processor)
        self._input_size = self._preprocessor.input_size
        self._int8_key: str | None = None
        self._explainer = Explainer(self._runner.model, self.nsfw_indices)  # shared by every view

    @property
    def model(self) -> torch.nn.Module:
        """The network this classifier runs (its own copy when it had to change the caller's)."""
        return self._runner.model

    @property
    def optimization(self) -> str:
        return self._runner.plan.name

    @property
    def max_pixels(self) -> int:
        return self.limits.max_pixels

    @property
    def max_bytes(self) -> int | None:
        return self.limits.max_bytes

    @classmethod
    def from_pretrained(
        cls,
        model: str = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        device: str = "auto",
        precision: str = "auto",
        nsfw_labels: Sequence[str] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int | None = None,
        frames: int = 8,
        optimize: str = "auto",
        limits: DecodeLimits | None = None,
        cache_dir: str | None = None,
        int8_build: str = "aside",
        int8_retry: bool = False,
    ) -> NSFWClassifier:
        """Load a hub id or a local directory; ``device``/``precision``/``optimize`` ``auto`` pick
        the fastest (see :meth:`optimize` and :meth:`use_int8`). int8 packages are cached in
        ``cache_dir`` (default: :func:`nsfw_space.model.quantize.default_cache_dir`); with no
        package cached yet, ``int8_build`` says whether one is built ``aside`` (in a child process
        while this classifier serves), ``now`` (before returning) or ``never``."""
        target = resolve_device(device)

        def load() -> NSFWClassifier:
            dtype = resolve_precision(precision, target)
            int8 = int8_choice(precision, target, optimize)
            network, processor = load_model_and_processor(model, revision=revision, dtype=dtype)
            logger.info("loaded %s on %s in %s", model, target, str(dtype).replace("torch.", ""))
            classifier = cls(
                network,
                processor,
                device=target,
                dtype=dtype,
                nsfw_labels=nsfw_labels,
                max_pixels=max_pixels,
                max_bytes=max_bytes,
                frames=frames,
                name=model,
                limits=limits,
                _owned=True,
            )
            if not int8:
                classifier.optimize(optimize)
                return classifier
            # A package cached for this model and CPU is used at once; else the plain forward is
            # optimised as usual and serves while the int8 one is built in a child process.
            cached = classifier.use_int8(int8, cache_dir=cache_dir, build="never", retry=int8_retry)
            if cached != "int8":
                classifier.optimize(optimize)
            if cached == "not built" and int8_build == "never":
                logger.info("no int8 package cached for this model and CPU: serving %s", classifier.precision)
            elif cached == "not built":
                classifier.use_int8(
                    int8, cache_dir=cache_dir, source=(model, revision), build=int8_build, retry=int8_retry
                )
            return classifier

        # loading, optimising and checking a cached int8 package all use the one OpenMP pool
        return for_device(target, load)

    @classmethod
    def from_settings(cls, settings: Settings, *, job: bool = False) -> NSFWClassifier:
        """Load the model the settings name, with their device, precision and limits. A ``job``
        (a command that ends: scan, eval, explain) uses a cached int8 package but starts no
        build for ``auto``; with ``precision=int8`` it builds one first (once per model and CPU)."""
        build = "aside"
        if job:
            build = "now" if settings.precision == "int8" else "never"
        return cls.from_pretrained(
            settings.model,
            revision=settings.revision,
            device=settings.device,
            precision=settings.precision,
            nsfw_labels=settings.nsfw_label_list or None,
            limits=settings.decode_limits,
            frames=settings.frames,
            optimize=settings.optimize,
            cache_dir=settings.cache_dir or None,
            int8_build=build,
            int8_retry=settings.int8_retry,
        )

    def with_limits(
        self,
        *,
        max_pixels: int | None = None,
        max_bytes: int | None = None,
        frames: int | None = None,
        limits: DecodeLimits | None = None,
        every: float | None = None,
    ) -> NSFWClassifier:
        """A view of this classifier with other input limits (``every``: sample animations and
        videos about every that many seconds instead of ``frames`` evenly spaced ones): the same
        model, lock and forward plan (a plan built through any view serves them all), no copy of
        the weights."""
        view = copy.copy(self)
        base = limits or self.limits
        changes = {"max_pixels": max_pixels, "max_bytes": max_bytes}
        view.limits = replace(base, **{key: value for key, value in changes.items() if value is not None})
        view.frames = self.frames if frames is None else frames
        view.every = self.every if every is None else every
        return view

    def optimize(self, mode: str = "auto", batch_size: int = 16) -> str:
        """Speed up the forward pass (see :mod:`nsfw_space.model.optimize`); returns the mode in use.

        With ``compile``, smaller batches are padded to ``batch_size`` so one compiled shape serves.
        """
        return self._runner.optimize(mode, self.device, self.dtype, self._input_size, batch_size)

    def use_int8(
        self,
        when: str = "always",
        *,
        cache_dir: str | Path | None = None,
        source: tuple[str, str | None] | None = None,
        build: str = "aside",
        retry: bool = False,
    ) -> str:
        """Serve through an int8 forward (see :mod:`nsfw_space.model.quantize`). Returns ``"int8"``
        when it is in use now, ``"building"`` while it is built aside, ``"slower here"`` when it
        was measured slower (``when="if-faster"``), ``"not built"`` (``build="never"``), or why
        int8 cannot be used here (a refusal remembered from an earlier build included, unless
        ``retry``).

        A package cached for this model, torch and CPU is loaded at once (about a second with
        ViT-B). Otherwise it is built in a child process at low priority (``build="aside"``: this
        classifier serves meanwhile; ``"now"``: before returning) from ``source`` (hub id or
        directory, and revision; default: this classifier's fp32 weights) and swapped in when it
        has passed its check against fp32. ``when="if-faster"`` uses it only if it was measured
        faster than the current forward on this CPU.
        """
        from nsfw_space.model.int8 import use_int8

        return use_int8(self, when, cache_dir=cache_dir, source=source, build=build, retry=retry)

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Wait until speed-ups being built aside are done; True when none is still building."""
        return self._runner.wait_for_builds(timeout)

    @property
    def precision(self) -> str:
        if self._runner.plan.name == "int8":
            return "int8"
        return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(
            self.dtype, str(self.dtype)
        )

    # -- the steps -------------------------------------------------------------------------
    def load(
        self, source: ImageSource, frames: int | None = None, budget: PixelBudget | None = None
    ) -> list[Image.Image]:
        """Decode ``source`` into RGB frames (one for a still image), within the decode limits and
        the request's pixel ``budget``; frames come back no larger than twice the model's input."""
        return self.decoder.load(source, frames, budget)

    @property
    def decoder(self) -> Decoder:
        """This classifier's decoding (its limits, frame sampling and preprocessing), model-free."""
        return Decoder(self._preprocessor, self.limits, self.frames, self.every)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One RGB image -> the model's input, a float32 array of shape (3, H, W)."""
        return self._preprocessor(image)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """A batch of preprocessed images (N, 3, H, W) -> label probabilities (N, labels)."""
        return self._runner.probabilities(pixels, self.device, self.dtype)

    def make_prediction(
        self,
        probs: np.ndarray,
        source: str | None = None,
        times: tuple[float, ...] | None = None,
        rule: str = "max",
        k: int = 1,
    ) -> Prediction:
        """Label probabilities of one input's frames (frames, labels) -> Prediction, several frames
        summed up by ``rule`` (see :func:`nsfw_space.model.prediction.frames_prediction`)."""
        from nsfw_space.model.prediction import frames_prediction

        return frames_prediction(probs, self.labels, self.nsfw_indices, source, times, rule, k)

    def prediction_from_scores(self, scores: dict[str, float]) -> Prediction:
        """A Prediction from label probabilities already computed (e.g. the bars on the page)."""
        nsfw = sum(scores.get(self.labels[i], 0.0) for i in self.nsfw_indices)
        return Prediction(scores={label: scores.get(label, 0.0) for label in self.labels}, nsfw_score=nsfw)

    # -- the public doors ---------------------------------------------------------------------
    def predict(
        self, source: ImageSource, *, rule: str = "max", k: int = 1, budget: PixelBudget | None = None
    ) -> Prediction:
        """Classify one image (a path, bytes, PIL image or numpy array), animation or video.

        An animation or video is judged on up to ``frames`` evenly spaced frames, summed up by
        ``rule`` (default: the worst frame). ``budget`` caps the pixels decoded for it.
        Raises InvalidImageError.
        """
        decoded = self.decode(source, budget)
        probs = self.probabilities(decoded.pixels)
        return self.make_prediction(probs, source_name(source), decoded.times, rule, k)

    def decode(self, source: ImageSource, budget: PixelBudget | None = None) -> Decoded:
        """Decode and preprocess ``source`` (all its sampled frames). Raises InvalidImageError."""
        return self.decoder.decode(source, budget)

    def predict_batch(
        self, sources: Iterable[ImageSource], batch_size: int = 16, *, rule: str = "max", k: int = 1
    ) -> list[Prediction]:
        """Classify many images (animations and videos summed up by ``rule``), pipelined.

        Raises InvalidImageError (naming the file) for the first input that cannot be read; use
        :meth:`iter_predictions` to get errors in place instead.
        """
        results = []
        for source, outcome in self.iter_predictions(sources, batch_size=batch_size, rule=rule, k=k):
            if isinstance(outcome, InvalidImageError):
                raise InvalidImageError(f"{describe(source)}: {outcome}") from outcome
            results.append(outcome)
        return results

    def explain(
        self,
        source: ImageSource,
        *,
        budget: PixelBudget | None = None,
        rule: str = "max",
        k: int = 1,
        method: str | None = None,
    ) -> Explanation:
        """Where in ``source`` the model found its evidence for the NSFW label: an
        :class:`~nsfw_space.model.explain.Explanation` with the usual prediction, the heat map at
        the patch grid and at the image's size, and :meth:`~Explanation.redact`. For an animation
        or a video, the frame that decided the score (by ``rule``) is explained.
        Raises InvalidImageError, or ExplainError for a model with no transformer blocks."""
        return self.explain_batch([source], budget=budget, rule=rule, k=k, method=method)[0]

    def explain_batch(
        self,
        sources: Iterable[ImageSource],
        batch_size: int = 8,
        *,
        budget: PixelBudget | None = None,
        rule: str = "max",
        k: int = 1,
        method: str | None = None,
    ) -> list[Explanation]:
        """:meth:`explain` for many inputs, ``batch_size`` maps at a time. Raises InvalidImageError
        naming the first input that cannot be read."""
        from nsfw_space.model.explaining import explain_sources

        return explain_sources(
            self, self._explainer, sources, batch_size, budget=budget, rule=rule, k=k, method=method
        )

    def iter_predictions(
        self,
        sources: Iterable[ImageSource],
        batch_size: int = 16,
        workers: int | None = None,
        *,
        rule: str = "max",
        k: int = 1,
        budget: PixelBudget | None = None,
    ) -> Iterator[tuple[ImageSource, Prediction | InvalidImageError]]:
        """Yield ``(source, Prediction or InvalidImageError)`` in input order, batching frames
        (how decoding and scoring share the cores: :func:`nsfw_space.model.pipeline.iter_predictions`)."""
        return iter_predictions(self, sources, batch_size, workers, rule=rule, k=k, budget=budget)
