"""NSFWClassifier: images in, label probabilities out, on the best device and precision available."""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from .budgets import DEFAULT_MAX_PIXELS, DecodeLimits, PixelBudget
from .config import DEFAULT_MODEL, Settings
from .device import resolve_device, resolve_precision
from .errors import InvalidImageError, ModelLoadError
from .images import ImageSource, describe, frame_time, load_frames
from .loading import load_model_and_processor
from .optimize import eager_forward

logger = logging.getLogger(__name__)

NSFW_LABEL_NAMES = ("nsfw", "unsafe", "explicit", "porn", "sexy", "hentai", "nudity", "nude")
SAFE_LABEL_NAMES = ("normal", "safe", "sfw", "neutral", "drawings", "drawing")


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
        """Whether the NSFW score reaches ``threshold``."""
        return self.nsfw_score >= threshold

    def to_dict(self, threshold: float = 0.5) -> dict[str, Any]:
        """JSON-ready form: label, scores, nsfw_score, is_nsfw, threshold (and frame_scores)."""
        result: dict[str, Any] = {
            "label": self.label,
            "scores": {name: round(value, 6) for name, value in self.scores.items()},
            "nsfw_score": round(self.nsfw_score, 6),
            "is_nsfw": self.is_nsfw(threshold),
            "threshold": threshold,
        }
        if self.frame_scores is not None:
            result["frame_scores"] = [round(value, 6) for value in self.frame_scores]
            result["frame_times"] = [round(value, 3) for value in self.frame_times or ()]
        return result


@dataclass(frozen=True)
class ForwardPlan:
    """How pixels become logits: one immutable object, swapped whole, so a reader never sees a
    single-image forward from one plan beside a batch forward (or padding) from another."""

    single: Callable[[torch.Tensor], torch.Tensor]
    batch: Callable[[torch.Tensor], torch.Tensor]
    pad_to: int = 0  # fixed-shape batch forward: chunks padded to this many rows (0: any shape)
    name: str = "none"


class _Runner:
    """The model, its lock and its current plan: shared by a classifier and all its views."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.lock = threading.Lock()
        eager = eager_forward(model)
        self.plan = ForwardPlan(eager, eager)


@dataclass(frozen=True)
class Decoded:
    """One input, decoded and preprocessed: (frames, 3, H, W) pixels and frame times (seconds)."""

    pixels: np.ndarray
    times: tuple[float, ...] | None = None


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
        self._runner = _Runner(_prepared_model(model, self.device, dtype, copy_first=not _owned))
        self.processor = processor
        self.name = name or getattr(model.config, "_name_or_path", "") or "model"
        self.limits = limits or DecodeLimits(max_pixels=max_pixels, max_bytes=max_bytes)
        self.frames = frames
        id2label = model.config.id2label
        self.labels: list[str] = [str(id2label[i]) for i in range(len(id2label))]
        self.nsfw_indices = _find_nsfw_indices(self.labels, nsfw_labels, self.name)
        self._input_size, self._fast_preprocess = _preprocess_plan(processor)

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
    ) -> NSFWClassifier:
        """Load a hub id or a local directory; ``device``/``precision``/``optimize`` ``auto`` pick
        the fastest (see :meth:`optimize`)."""
        target = resolve_device(device)
        dtype = resolve_precision(precision, target)
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
        classifier.optimize(optimize)
        return classifier

    @classmethod
    def from_settings(cls, settings: Settings) -> NSFWClassifier:
        """Load the model the settings name, with their device, precision and limits."""
        return cls.from_pretrained(
            settings.model,
            revision=settings.revision,
            device=settings.device,
            precision=settings.precision,
            nsfw_labels=settings.nsfw_label_list or None,
            limits=settings.decode_limits,
            frames=settings.frames,
            optimize=settings.optimize,
        )

    def with_limits(
        self,
        *,
        max_pixels: int | None = None,
        max_bytes: int | None = None,
        frames: int | None = None,
        limits: DecodeLimits | None = None,
    ) -> NSFWClassifier:
        """A view of this classifier with other input limits: the same model, lock and forward
        plan (a plan built through any view serves them all), no copy of the weights."""
        view = copy.copy(self)
        base = limits or self.limits
        changes = {"max_pixels": max_pixels, "max_bytes": max_bytes}
        view.limits = replace(base, **{key: value for key, value in changes.items() if value is not None})
        view.frames = self.frames if frames is None else frames
        return view

    def optimize(self, mode: str = "auto", batch_size: int = 16) -> str:
        """Speed up the forward pass (see :mod:`nsfw_space.optimize`); returns the mode in use.

        With ``compile``, smaller batches are padded to ``batch_size`` so one compiled shape serves.
        """
        from .optimize import build_forward, resolve_mode

        wanted = resolve_mode(mode, self.device)
        probe = self._probe(1 if wanted == "jit" else batch_size)
        forward, used = build_forward(self.model, wanted, probe)
        eager = eager_forward(self.model)
        self._runner.plan = ForwardPlan(
            single=forward if used == "jit" else eager,
            batch=forward if used == "compile" else eager,
            pad_to=batch_size if used == "compile" else 0,
            name=used,
        )
        return used

    @property
    def precision(self) -> str:
        return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(
            self.dtype, str(self.dtype)
        )

    # -- the steps -------------------------------------------------------------------------
    def load(
        self, source: ImageSource, frames: int | None = None, budget: PixelBudget | None = None
    ) -> list[Image.Image]:
        """Decode ``source`` into RGB frames (one for a still image), within the decode limits and
        the request's pixel ``budget``; frames come back no larger than twice the model's input."""
        return load_frames(
            source,
            self.frames if frames is None else frames,
            limits=self.limits,
            budget=budget,
            draft_size=(2 * self._input_size[1], 2 * self._input_size[0]),
        )

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One RGB image -> the model's input, a float32 array of shape (3, H, W)."""
        if self._fast_preprocess is None:
            return self.processor(images=image, return_tensors="np")["pixel_values"][0].astype(np.float32)
        resample, scale, mean, std = self._fast_preprocess
        height, width = self._input_size
        if image.size != (width, height):
            image = image.resize((width, height), resample=resample)
        pixels = np.asarray(image, dtype=np.float32) * scale
        if mean is not None:
            pixels = (pixels - mean) / std
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """A batch of preprocessed images (N, 3, H, W) -> label probabilities (N, labels)."""
        plan = self._runner.plan  # read once: one consistent plan for the whole call
        if len(pixels) == 1 or not plan.pad_to:
            forward = plan.single if len(pixels) == 1 else plan.batch
            return self._run(forward, pixels)
        # A fixed-shape forward (JIT or compiled batches): whole chunks, the last one padded.
        chunks = []
        for start in range(0, len(pixels), plan.pad_to):
            chunk = pixels[start : start + plan.pad_to]
            count = len(chunk)
            if count < plan.pad_to:
                padding = np.zeros((plan.pad_to - count, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            chunks.append(self._run(plan.batch, chunk)[:count])
        return np.concatenate(chunks)

    def _run(self, forward: Callable[[torch.Tensor], torch.Tensor], pixels: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device, self.dtype)
        with self._runner.lock, torch.inference_mode():
            logits = forward(tensor)
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()

    def prepare_batches(self, batch_size: int) -> None:
        """With JIT optimisation, trace one fixed-shape batch forward for ``batch_size`` (batches
        are then padded to it). Measured 29 vs 22 images/s on ViT-B bf16, 2 cores, for about
        600 MB more memory; only one batch shape is kept at a time."""
        plan = self._runner.plan
        if plan.name != "jit" or batch_size < 2 or plan.pad_to == batch_size:
            return
        from .optimize import build_forward

        probe = self._probe(batch_size)
        with self._runner.lock:
            if self._runner.plan.pad_to == batch_size:  # another thread built it meanwhile
                return
            # drop the old shape first, so its kernels and buffers are freed before the new trace
            self._runner.plan = replace(self._runner.plan, batch=eager_forward(self.model), pad_to=0)
            forward, mode = build_forward(self.model, "jit", probe)
            if mode == "jit":
                self._runner.plan = replace(self._runner.plan, batch=forward, pad_to=batch_size)

    def _probe(self, rows: int) -> torch.Tensor:
        """A fixed random input of ``rows`` images, to build and check a faster forward with."""
        height, width = self._input_size
        probe = torch.randn(rows, 3, height, width, generator=torch.Generator().manual_seed(0))
        return probe.to(self.device, self.dtype)

    def make_prediction(
        self,
        probs: np.ndarray,
        source: str | None = None,
        times: tuple[float, ...] | None = None,
        rule: str = "max",
        k: int = 1,
    ) -> Prediction:
        """Label probabilities of one input's frames (frames, labels) -> Prediction.

        Several frames are summed up by ``rule`` (``max``, ``mean`` or ``k-of-n``, see
        :func:`nsfw_space.frames.summarise`); the scores are those of the deciding frame (the
        frame average for ``mean``).
        """
        from .frames import summarise

        nsfw = probs[:, self.nsfw_indices].sum(axis=1)
        summary = summarise(nsfw, rule, k)
        row = probs.mean(axis=0) if rule == "mean" else probs[summary.frame]
        scores = {label: float(row[i]) for i, label in enumerate(self.labels)}
        several = len(probs) > 1
        return Prediction(
            scores=scores,
            nsfw_score=summary.score,
            source=source,
            frame_scores=tuple(float(v) for v in nsfw) if several else None,
            frame_times=(times or tuple(0.0 for _ in nsfw)) if several else None,
        )

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
        frames = self.load(source, budget=budget)
        times = tuple(frame_time(frame) for frame in frames) if len(frames) > 1 else None
        return Decoded(np.stack([self.preprocess(frame) for frame in frames]), times)

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
        """Yield ``(source, Prediction or InvalidImageError)`` in input order, batching frames.

        Decoding and preprocessing run on ``workers`` threads (PIL releases the GIL). On a GPU they
        run a couple of batches ahead, overlapped with the model. On the CPU the two would fight
        for the same cores (the model's threads stall whenever a decoder preempts one of them), so
        there each batch is decoded on all cores, then scored on all cores: measured faster on
        2 cores (see ``python -m nsfw_space bench``). ``budget`` bounds the decoded pixels of the
        whole run: inputs past it come back as InvalidImageError.
        """
        batch_size = max(1, int(batch_size))
        self.prepare_batches(batch_size)
        overlap = self.device.type != "cpu"
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
                    pending.append((source, pool.submit(self._decode_or_error, source, budget)))
                if not pending and not ready:
                    return
                if pending:
                    source, future = pending.popleft()
                    decoded = future.result()
                    ready.append((source, decoded))
                    if isinstance(decoded, Decoded):
                        frames_ready += len(decoded.pixels)
                if frames_ready >= batch_size or (not pending and ready):
                    yield from self._score_ready(ready, rule, k)
                    ready, frames_ready = [], 0

    def _decode_or_error(
        self, source: ImageSource, budget: PixelBudget | None
    ) -> Decoded | InvalidImageError:
        try:
            return self.decode(source, budget)
        except InvalidImageError as err:
            return err

    def _score_ready(
        self, ready: list[tuple[ImageSource, Decoded | InvalidImageError]], rule: str, k: int
    ) -> Iterator[tuple[ImageSource, Prediction | InvalidImageError]]:
        arrays = [decoded.pixels for _, decoded in ready if isinstance(decoded, Decoded)]
        probs = self.probabilities(np.concatenate(arrays)) if arrays else np.empty((0, len(self.labels)))
        offset = 0
        for source, decoded in ready:
            if isinstance(decoded, InvalidImageError):
                yield source, decoded
                continue
            count = len(decoded.pixels)
            chunk = probs[offset : offset + count]
            yield source, self.make_prediction(chunk, source_name(source), decoded.times, rule, k)
            offset += count


class _Float32Head(torch.nn.Module):
    """A linear classifier head run in fp32 on half-precision features."""

    def __init__(self, head: torch.nn.Linear) -> None:
        super().__init__()
        self.head = head.float()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features.float())


def _prepared_model(
    model: torch.nn.Module, device: torch.device, dtype: torch.dtype, *, copy_first: bool
) -> torch.nn.Module:
    """``model`` on ``device`` in ``dtype`` with an fp32 head, in eval mode. A caller's model is
    never changed: it is copied first whenever anything about it has to change."""
    head = getattr(model, "classifier", None)
    wrap_head = dtype != torch.float32 and isinstance(head, torch.nn.Linear)
    first = next(model.parameters(), None)
    moves = first is not None and (first.device != device or first.dtype != dtype)
    if copy_first and (wrap_head or moves or model.training):
        model = copy.deepcopy(model)
    model = model.to(device=device, dtype=dtype).eval()
    if wrap_head:
        # The head is tiny: in fp32 the scores keep their resolution (bf16 logits have 8 bits,
        # which made different images share the exact same score).
        model.classifier = _Float32Head(model.classifier)
    return model


def _default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def source_name(source: object) -> str | None:
    """The path of a path-like source, else None."""
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else None


def _find_nsfw_indices(labels: list[str], wanted: Sequence[str] | None, model: str) -> list[int]:
    lowered = [label.lower() for label in labels]
    if wanted:
        missing = [name for name in wanted if name.lower() not in lowered]
        if missing:
            raise ModelLoadError(
                f"The model {model!r} has no label {', '.join(map(repr, missing))}; "
                f"its labels are {', '.join(labels)}. Fix NSFW_SPACE_NSFW_LABELS."
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
        f"{', '.join(labels)}). Set NSFW_SPACE_NSFW_LABELS to the label name(s) that do."
    )


def _preprocess_plan(processor: Any) -> tuple[tuple[int, int], tuple | None]:
    """The model's input size and, for ViT-style processors, the numbers of a fast preprocess."""
    size = getattr(processor, "size", None) or {}
    size = dict(size) if not isinstance(size, dict) else size
    crop = getattr(processor, "do_center_crop", False)
    if "height" in size and "width" in size and not crop and getattr(processor, "do_resize", True):
        height, width = int(size["height"]), int(size["width"])
        resample = Image.Resampling(int(getattr(processor, "resample", Image.Resampling.BILINEAR)))
        scale = (
            float(getattr(processor, "rescale_factor", 1 / 255))
            if getattr(processor, "do_rescale", True)
            else 1.0
        )
        mean = std = None
        if getattr(processor, "do_normalize", True):
            mean = np.asarray(processor.image_mean, dtype=np.float32)
            std = np.asarray(processor.image_std, dtype=np.float32)
        return (height, width), (resample, scale, mean, std)
    edge = size.get("shortest_edge") or size.get("height") or 224
    return (int(edge), int(edge)), None
