"""RGB image -> model input. For ViT-style processors (resize, rescale, normalise, no crop) the same
arithmetic is done here with PIL and numpy, several times faster than the processor; any other
processor is called as it is. Results agree with the processor's (tested against the card)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from nsfw_space.media.budgets import DecodeLimits, PixelBudget
from nsfw_space.media.images import ImageSource, frame_time, load_frames


@dataclass(frozen=True)
class Decoded:
    """One input, decoded and preprocessed: (frames, 3, H, W) pixels and frame times (seconds)."""

    pixels: np.ndarray
    times: tuple[float, ...] | None = None


class Preprocessor:
    """Callable: one RGB image -> a float32 array of shape (3, height, width)."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.input_size, self._fast = _preprocess_plan(processor)

    def __call__(self, image: Image.Image) -> np.ndarray:
        if self._fast is None:
            return self.processor(images=image, return_tensors="np")["pixel_values"][0].astype(np.float32)
        resample, scale, mean, std = self._fast
        height, width = self.input_size
        if image.size != (width, height):
            image = image.resize((width, height), resample=resample)
        pixels = np.asarray(image, dtype=np.float32) * scale
        if mean is not None:
            pixels = (pixels - mean) / std
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))


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


@dataclass(frozen=True)
class Decoder:
    """What a classifier does before its model: ``source`` -> frames sampled and decoded within
    ``limits`` (``frames`` evenly spaced, or about one every ``every`` seconds), each preprocessed.
    Needs no weights, so it can run where no model is (the Ray engine's decode stage)."""

    preprocessor: Preprocessor
    limits: DecodeLimits
    frames: int = 8
    every: float | None = None

    def load(
        self, source: ImageSource, frames: int | None = None, budget: PixelBudget | None = None
    ) -> list[Image.Image]:
        """RGB frames of ``source`` (one for a still image), no larger than twice the model's input."""
        height, width = self.preprocessor.input_size
        return load_frames(
            source,
            self.frames if frames is None else frames,
            limits=self.limits,
            budget=budget,
            draft_size=(2 * width, 2 * height),
            every=self.every,
        )

    def decode(self, source: ImageSource, budget: PixelBudget | None = None) -> Decoded:
        """Decode and preprocess ``source`` (all its sampled frames). Raises InvalidImageError."""
        frames = self.load(source, budget=budget)
        times = tuple(frame_time(frame) for frame in frames) if len(frames) > 1 else None
        return Decoded(np.stack([self.preprocessor(frame) for frame in frames]), times)
