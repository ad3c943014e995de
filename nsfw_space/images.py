"""The one place that turns any input into RGB PIL images, or refuses it with a clear reason.

Accepted sources: a path (``str`` / ``os.PathLike``), raw ``bytes``, a binary file object, a
``PIL.Image.Image`` or a ``numpy`` array. Every mode PIL can read is normalised to RGB
(transparency composited on white, 16-bit and float scaled, CMYK converted, EXIF rotation applied).
"""

from __future__ import annotations

import io
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .budgets import DEFAULT_MAX_PIXELS, GATE, DecodeLimits, PixelBudget
from .errors import InvalidImageError
from .frames import looks_like_video, sample_indices, video_frames

logger = logging.getLogger(__name__)

ImageSource = Union[  # noqa: UP007 - a runtime alias, must work on Python 3.10
    str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], Image.Image, np.ndarray
]

SUPPORTED_FORMATS = "JPEG, PNG, WebP, GIF, BMP, TIFF or ICO"
FRAME_TIME = "nsfw_space_frame_time"
BACKGROUND = (255, 255, 255)

STRIP_PIXELS = 2_000_000  # pixels converted at once when a palette frame is shrunk
_truncated_lock = threading.Lock()


def describe(source: object) -> str:
    """A short, log-safe name for a source (a file name, never image content)."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, Image.Image):
        return f"<PIL image {source.width}x{source.height}>"
    if isinstance(source, np.ndarray):
        return f"<array {tuple(source.shape)}>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
    draft_size: tuple[int, int] | None = None,
    limits: DecodeLimits | None = None,
    budget: PixelBudget | None = None,
) -> Image.Image:
    """Return ``source`` as an RGB image (the first frame of an animation).

    ``draft_size`` lets decoding skip detail finer than that size (PIL's draft mode for JPEG,
    a whole-factor box reduction for the rest), so no frame is kept at full size.
    Raises InvalidImageError with a sentence a person understands.
    """
    return load_frames(
        source,
        1,
        max_pixels=max_pixels,
        max_bytes=max_bytes,
        draft_size=draft_size,
        limits=limits,
        budget=budget,
    )[0]


def load_frames(
    source: ImageSource,
    max_frames: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
    draft_size: tuple[int, int] | None = None,
    limits: DecodeLimits | None = None,
    budget: PixelBudget | None = None,
) -> list[Image.Image]:
    """Return up to ``max_frames`` evenly spaced RGB frames of ``source`` (one for a still image).

    ``limits`` (default: ``max_pixels`` and ``max_bytes`` with the default frame cap and time
    budget) bound what one input may cost; ``budget`` is the request's share of decoded pixels.
    """
    limits = limits or DecodeLimits(max_pixels=max_pixels, max_bytes=max_bytes)
    if isinstance(source, Image.Image):
        if is_animated(source) and max_frames > 1:
            return _animation_frames(source, max_frames, limits, budget, draft_size)
        return [_frame_to_rgb(source)]
    if isinstance(source, np.ndarray):
        return [array_to_image(source)]
    data = _read_source(source, limits.max_bytes)
    try:
        image = _open(data, limits.max_pixels)
    except InvalidImageError:
        if not looks_like_video(data):
            raise
        frames, times = video_frames(data, max_frames, limits=limits, budget=budget, draft_size=draft_size)
        return _with_times([to_rgb(frame) for frame in frames], times)
    try:
        if is_animated(image) and max_frames > 1:
            return _animation_frames(image, max_frames, limits, budget, draft_size)
        pixels = image.width * image.height
        if budget is not None:
            budget.spend(pixels)
        with GATE.hold(pixels):
            if draft_size is not None and image.format == "JPEG":
                image.draft("RGB", draft_size)
            decoded = _decode(image, data, limits.max_pixels, draft_size)
            limits.check_frame(*decoded.size, what="The image")
            frame = _frame_to_rgb(_shrink(decoded, draft_size))
            for full_size in {id(decoded): decoded, id(image): image}.values():
                if full_size is not frame:
                    full_size.close()  # freed here, inside the gate, not when the caller lets go
            return [frame]
    except InvalidImageError:
        raise
    except Exception as err:
        logger.debug("decoder failure", exc_info=True)
        raise InvalidImageError(_damaged_message(err)) from None


def frame_time(frame: Image.Image) -> float:
    """The time in seconds of a frame from an animation or video (0 for a still image)."""
    return float(frame.info.get(FRAME_TIME, 0.0))


def _with_times(frames: list[Image.Image], times: list[float]) -> list[Image.Image]:
    for frame, seconds in zip(frames, times, strict=True):
        frame.info[FRAME_TIME] = seconds
    return frames


def _shrink(frame: Image.Image, draft_size: tuple[int, int] | None) -> Image.Image:
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
        return _reduce_in_strips(frame, factor)


def _reduce_in_strips(frame: Image.Image, factor: int) -> Image.Image:
    """``to_rgb(frame).reduce(factor)`` a strip at a time, so no full-size RGB copy is ever made
    (strips are whole multiples of ``factor`` high, so the boxes are the same as in one pass)."""
    width, height = frame.width // factor * factor, frame.height // factor * factor
    rows = max(factor, STRIP_PIXELS // max(1, width) // factor * factor)
    reduced = Image.new("RGB", (width // factor, height // factor))
    for top in range(0, height, rows):
        strip = to_rgb(frame.crop((0, top, width, min(height, top + rows))))
        reduced.paste(strip.reduce(factor), (0, top // factor))
    return reduced


def is_animated(image: Image.Image) -> bool:
    return bool(getattr(image, "is_animated", False)) and getattr(image, "n_frames", 1) > 1


def to_rgb(image: Image.Image) -> Image.Image:
    """Normalise any PIL mode to RGB: transparency on white, high bit depths scaled, CMYK converted."""
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        image = _scale_to_8bit(image)
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


def _read_source(source: ImageSource, max_bytes: int | None) -> bytes:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError(f"No image file at {path}.")
        size = path.stat().st_size
        _check_size(size, max_bytes)
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read(max_bytes + 1 if max_bytes else -1)
    else:
        raise InvalidImageError(
            f"Cannot read an image from a {type(source).__name__}; "
            "pass a path, bytes, a PIL image or a numpy array."
        )
    _check_size(len(data), max_bytes)
    if not data:
        raise InvalidImageError(f"The file is empty (0 bytes). Upload an image file ({SUPPORTED_FORMATS}).")
    return data


def _check_size(size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise InvalidImageError(
            f"The file is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB. "
            "Upload a smaller or more compressed image."
        )


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidImageError(_not_an_image_reason(data)) from None
    except Image.DecompressionBombError:
        raise InvalidImageError(
            f"The image has far more pixels than the limit of {max_pixels / 1e6:.0f} megapixels "
            "(a decompression bomb, or a huge scan). Resize it and try again."
        ) from None
    except Exception as err:  # noqa: BLE001 - any parser failure on a header means a damaged file
        if "truncated" in str(err).lower():
            raise InvalidImageError(
                "The image file is truncated: it ends inside its header, so no picture can be "
                "recovered. Upload the complete file."
            ) from None
        raise InvalidImageError(
            f"The file looks like an image but its header is damaged ({_short(err)}). "
            "Re-save or re-export it and try again."
        ) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImageError(f"The image has no pixels ({width}x{height}).")
    if width * height > max_pixels:
        raise InvalidImageError(
            f"The image is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels); "
            f"the limit is {max_pixels / 1e6:.0f} megapixels. Resize it and try again."
        )
    return image


def _decode(
    image: Image.Image, data: bytes, max_pixels: int, draft_size: tuple[int, int] | None
) -> Image.Image:
    """Decode pixel data, recovering what a truncated file still holds, or refuse it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
        return image
    except OSError as err:
        if "truncated" not in str(err).lower() and "broken data stream" not in str(err).lower():
            raise InvalidImageError(_damaged_message(err)) from None
    except (ValueError, SyntaxError, EOFError, TypeError, IndexError, MemoryError) as err:
        raise InvalidImageError(_damaged_message(err)) from None
    # A truncated file: decode what is there, and keep it only if something was recovered.
    with _truncated_lock:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            partial = _open(data, max_pixels)
            if draft_size is not None and partial.format == "JPEG":
                partial.draft("RGB", draft_size)
            partial.load()
        except Exception as err:  # noqa: BLE001 - any decoder failure here means unrecoverable
            raise InvalidImageError(_damaged_message(err)) from None
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
    extrema = partial.convert("L").getextrema()
    if extrema[0] == extrema[1]:
        raise InvalidImageError(
            "The image file is truncated and no picture could be recovered from it. Upload the complete file."
        )
    logger.info("recovered a truncated %s image", partial.format)
    return partial


def _damaged_message(err: BaseException) -> str:
    return (
        f"The image file is damaged and cannot be decoded ({_short(err)}). "
        "Re-save or re-export it and try again."
    )


def _short(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _animation_frames(
    image: Image.Image,
    max_frames: int,
    limits: DecodeLimits,
    budget: PixelBudget | None,
    draft_size: tuple[int, int] | None,
) -> list[Image.Image]:
    """Evenly spaced frames among the first ``limits.max_animation_frames``, each checked at its
    real (possibly grown) size, decoded under the pixel gate and shrunk at once, with their times."""
    deadline = limits.deadline()
    limits.check_animation_frame(*image.size)
    count = _frame_count(image, limits, deadline)
    frames: list[Image.Image] = []
    indices: list[int] = []
    durations: list[float] = []
    previous = -1
    for index in sample_indices(count, max_frames):
        width, height = image.size
        if budget is not None:
            budget.spend(width * height * (index - previous))  # a GIF decodes every frame it passes
        try:
            with warnings.catch_warnings(), GATE.hold(width * height):
                warnings.simplefilter("ignore")
                image.seek(index)
                limits.check_animation_frame(*image.size)
                small = _shrink(image, draft_size)  # never a full-size copy of a large frame
                frame = _frame_to_rgb(small if small is not image else image.copy())
        except InvalidImageError:
            raise
        except (OSError, EOFError, ValueError, SyntaxError) as err:
            if not frames:
                raise InvalidImageError(_damaged_message(err)) from None
            break  # keep the frames decoded before the damage
        limits.check_time(deadline)
        frames.append(frame)
        indices.append(index)
        durations.append(float(image.info.get("duration") or 100) / 1000)
        previous = index
    step = sum(durations) / len(durations)  # frames may differ in delay; this is their mean
    return _with_times(frames, [index * step for index in indices])


def _frame_count(image: Image.Image, limits: DecodeLimits, deadline: float) -> int:
    """Frames of an animation, counting no further than ``limits.max_animation_frames``.

    A GIF has no frame count in its header: Pillow's ``n_frames`` parses every frame (a million
    1x1 frames take seconds) and each frame may grow the canvas. Here the frames are parsed
    without decoding, the canvas is checked after each, and counting stops at the cap.
    """
    cap = max(1, limits.max_animation_frames)
    if image.format != "GIF" or not hasattr(image, "_seek"):
        return min(image.n_frames, cap)  # WebP, APNG and TIFF say how many frames they hold
    count = 1
    try:
        while count < cap:
            image._seek(count, False)  # what Pillow's own n_frames does, minus the walk to the end
            limits.check_animation_frame(*image.size)
            count += 1
            if count % 256 == 0:
                limits.check_time(deadline)
    except EOFError:
        pass
    image.seek(0)
    return count


def _frame_to_rgb(frame: Image.Image) -> Image.Image:
    try:
        transposed = ImageOps.exif_transpose(frame)
        if transposed is not None:
            frame = transposed
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the picture
        logger.debug("ignored unreadable EXIF orientation")
    try:
        return to_rgb(frame)
    except (OSError, ValueError) as err:
        raise InvalidImageError(_damaged_message(err)) from None


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    arr = np.asarray(image).astype(np.float64)
    arr = np.nan_to_num(arr)
    if image.mode == "F":
        if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0:
            arr = arr * 255.0
        elif arr.size and arr.max() > 255.0:
            arr = _stretch(arr)
    elif arr.size and arr.max() > 255.0:
        arr = arr / 257.0 if arr.max() <= 65535 and arr.min() >= 0 else _stretch(arr)
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))


def _stretch(arr: np.ndarray) -> np.ndarray:
    low, high = float(arr.min()), float(arr.max())
    return (arr - low) * (255.0 / (high - low)) if high > low else np.zeros_like(arr)


def _not_an_image_reason(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    if head.startswith(b"%pdf"):
        kind = "a PDF document"
    elif b"<svg" in head or (head.startswith(b"<?xml") and b"svg" in data[:2048].lower()):
        kind = "an SVG drawing (vector graphics are not supported; export it as PNG)"
    elif head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        kind = "an HTML page"
    elif _looks_like_text(data[:512]):
        kind = "a text file"
    else:
        kind = "not an image format we can read"
        return f"This file is {kind}. Upload a {SUPPORTED_FORMATS} image."
    return f"This file is {kind}, not an image. Upload a {SUPPORTED_FORMATS} image."


def _looks_like_text(chunk: bytes) -> bool:
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in chunk
