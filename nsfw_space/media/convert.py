"""Any PIL mode or numpy array -> RGB, and shrinking a decoded frame without a full-size copy.

Transparency is composited on white, 16-bit and float images are scaled, CMYK is converted and the
EXIF orientation applied; a palette frame is converted and reduced a strip at a time.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image, ImageOps

from nsfw_space.errors import InvalidImageError
from nsfw_space.media.reasons import damaged_message

logger = logging.getLogger(__name__)

BACKGROUND = (255, 255, 255)
STRIP_PIXELS = 2_000_000  # pixels converted at once when a palette frame is shrunk


def to_rgb(image: Image.Image) -> Image.Image:
    """Normalise any PIL mode to RGB: transparency on white, high bit depths scaled, CMYK converted."""
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        image = scale_to_8bit(image)
        mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return image
    return image.convert("RGB")


def array_to_image(array: np.ndarray) -> Image.Image:
    """A numpy array (HxW, HxWx1, HxWx3 or HxWx4; uint8, uint16 or float) -> RGB image."""
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)) or arr.size == 0:
        raise InvalidImageError(
            f"An array of shape {tuple(arr.shape)} is not an image; pass height x width (x 3 or 4)."
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = (arr / 257.0).round()
    elif np.issubdtype(arr.dtype, np.floating):
        finite = np.nan_to_num(arr.astype(np.float64))
        arr = finite * 255.0 if finite.size and finite.max() <= 1.0 and finite.min() >= 0.0 else finite
    arr = np.clip(arr, 0, 255).astype(np.uint8)
    return to_rgb(Image.fromarray(arr))


def frame_to_rgb(frame: Image.Image) -> Image.Image:
    try:
        transposed = ImageOps.exif_transpose(frame)
        if transposed is not None:
            frame = transposed
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the picture
        logger.debug("ignored unreadable EXIF orientation")
    try:
        return to_rgb(frame)
    except (OSError, ValueError) as err:
        raise InvalidImageError(damaged_message(err)) from None


def scale_to_8bit(image: Image.Image) -> Image.Image:
    arr = np.asarray(image).astype(np.float64)
    arr = np.nan_to_num(arr)
    if image.mode == "F":
        if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0:
            arr = arr * 255.0
        elif arr.size and arr.max() > 255.0:
            arr = stretch(arr)
    elif arr.size and arr.max() > 255.0:
        arr = arr / 257.0 if arr.max() <= 65535 and arr.min() >= 0 else stretch(arr)
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))


def stretch(arr: np.ndarray) -> np.ndarray:
    low, high = float(arr.min()), float(arr.max())
    return (arr - low) * (255.0 / (high - low)) if high > low else np.zeros_like(arr)


def shrink(frame: Image.Image, draft_size: tuple[int, int] | None) -> Image.Image:
    """Reduce ``frame`` by a whole factor while both sides stay at least ``draft_size`` (the same
    frame when no reduction is needed)."""
    if draft_size is None:
        return frame
    factor = min(frame.width // max(1, draft_size[0]), frame.height // max(1, draft_size[1]))
    if factor < 2:
        return frame
    try:
        return frame.reduce(factor)
    except ValueError:  # palette, 1-bit and 16-bit modes cannot be box-reduced as they are
        return reduce_in_strips(frame, factor)


def reduce_in_strips(frame: Image.Image, factor: int) -> Image.Image:
    """``to_rgb(frame).reduce(factor)`` a strip at a time, so no full-size RGB copy is ever made
    (strips are whole multiples of ``factor`` high, so the boxes are the same as in one pass)."""
    width, height = frame.width // factor * factor, frame.height // factor * factor
    rows = max(factor, STRIP_PIXELS // max(1, width) // factor * factor)
    reduced = Image.new("RGB", (width // factor, height // factor))
    for top in range(0, height, rows):
        strip = to_rgb(frame.crop((0, top, width, min(height, top + rows))))
        reduced.paste(strip.reduce(factor), (0, top // factor))
    return reduced
