"""Drawing a heat map: stretched from the model's patch grid to an image, laid in colour over a
blurred copy of it (with a colour scale), or used as a mask that blurs only the hot regions."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from nsfw_space.errors import ExplainError

# low -> high: dark blue, violet, red, orange, yellow (a perceptually ordered "hot" scale)
SCALE = np.array(
    [[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]], dtype=np.float32
)
PREVIEW_SIZE = 512
SCALE_CAPTION = "evidence for nsfw:  low  ->  high"


def check_level(level: Any) -> float:
    """A heat level in [0, 1]; anything else is an ExplainError (a ValueError) with one sentence."""
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise ExplainError(f"The heat level must be a number from 0 to 1, not {level!r}.") from None
    if not 0.0 <= value <= 1.0:
        raise ExplainError(f"The heat level must be from 0 to 1, not {value:g}.")
    return value


def stretch(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (rows, columns) grid -> a float32 (height, width) map for an image of ``size`` (width,
    height), bilinear between the patch centres. The model saw the whole image squeezed to its
    input (no crop), so the grid covers the whole image."""
    width, height = size
    cells = Image.fromarray(np.asarray(grid, dtype=np.float32), mode="F")
    stretched = np.asarray(cells.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    return np.clip(stretched, 0.0, 1.0)


def colours(heat: np.ndarray) -> np.ndarray:
    """Heat in [0, 1] -> uint8 RGB along :data:`SCALE`."""
    position = np.clip(heat, 0.0, 1.0) * (len(SCALE) - 1)
    low = np.floor(position).astype(int).clip(0, len(SCALE) - 2)
    part = (position - low)[..., None]
    return (SCALE[low] * (1 - part) + SCALE[low + 1] * part).astype(np.uint8)


def blurred(image: Image.Image, radius: float) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=radius))


def overlay(
    image: Image.Image,
    grid: np.ndarray,
    *,
    blur: bool = True,
    size: int = PREVIEW_SIZE,
    scale_bar: bool = True,
) -> Image.Image:
    """The heat over a preview of ``image`` no larger than ``size``: blurred beyond recognition
    unless ``blur`` is False, the heat in colour (more opaque where hotter), and a colour scale
    along the bottom."""
    preview = image.convert("RGB")
    preview.thumbnail((size, size))
    if blur:
        preview = blurred(preview, max(8, max(preview.size) // 20))
    heat = stretch(grid, preview.size)
    alpha = (0.25 + 0.6 * heat)[..., None]
    mixed = np.asarray(preview, dtype=np.float32) * (1 - alpha) + colours(heat) * alpha
    drawn = Image.fromarray(mixed.clip(0, 255).astype(np.uint8))
    return with_scale_bar(drawn) if scale_bar else drawn


def with_scale_bar(image: Image.Image, height: int = 22) -> Image.Image:
    """``image`` with the colour scale, low to high, and its caption under it."""
    width = image.width
    canvas = Image.new("RGB", (width, image.height + height), (255, 255, 255))
    canvas.paste(image, (0, 0))
    ramp = colours(np.tile(np.linspace(0, 1, width, dtype=np.float32), (height // 2, 1)))
    canvas.paste(Image.fromarray(ramp), (0, image.height))
    ImageDraw.Draw(canvas).text((4, image.height + height // 2), SCALE_CAPTION, fill=(0, 0, 0))
    return canvas


def default_strength(size: tuple[int, int]) -> float:
    """A blur radius that hides detail at any image size: 4% of the longer side, at least 6 px."""
    return max(6.0, 0.04 * max(size))


def grow(mask: np.ndarray, columns: int, rows: int) -> np.ndarray:
    """``mask`` made true within ``columns`` pixels sideways and ``rows`` pixels up or down of a
    true pixel (a dilation by a rectangle), in time linear in the pixels whatever the reach."""
    grown = mask.astype(bool)
    for axis, reach in ((0, rows), (1, columns)):
        if reach > 0 and grown.shape[axis]:
            grown = _within(grown, reach, axis)
    return grown


def _within(mask: np.ndarray, reach: int, axis: int) -> np.ndarray:
    counts = np.cumsum(mask, axis=axis, dtype=np.int64)
    length = mask.shape[axis]
    index = np.arange(length)
    upper = np.take(counts, np.minimum(index + reach, length - 1), axis=axis)
    below = np.take(counts, np.maximum(index - reach - 1, 0), axis=axis)
    starts = (index - reach - 1 >= 0).reshape([-1 if a == axis else 1 for a in range(mask.ndim)])
    return (upper - np.where(starts, below, 0)) > 0


def redact(image: Image.Image, mask: np.ndarray, strength: float | None = None) -> Image.Image:
    """``image`` with the pixels where ``mask`` is true replaced by a Gaussian blur of radius
    ``strength`` (default :func:`default_strength`); every other pixel is left as it was."""
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGB")
    radius = default_strength(image.size) if strength is None else float(strength)
    if not mask.any() or radius <= 0:
        return image.copy()
    stencil = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L")
    return Image.composite(blurred(image, radius), image, stencil)
