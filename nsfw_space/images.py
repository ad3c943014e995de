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

from .errors import InvalidImageError
from .frames import looks_like_video, video_frames

logger = logging.getLogger(__name__)

ImageSource = Union[  # noqa: UP007 - a runtime alias, must work on Python 3.10
    str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], Image.Image, np.ndarray
]

DEFAULT_MAX_PIXELS = 80_000_000
SUPPORTED_FORMATS = "JPEG, PNG, WebP, GIF, BMP, TIFF or ICO"
FRAME_TIME = "nsfw_space_frame_time"
BACKGROUND = (255, 255, 255)

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
) -> Image.Image:
    """Return ``source`` as an RGB image (the first frame of an animation).

    ``draft_size`` lets JPEG decoding skip detail finer than that size (PIL's draft mode), which
    is several times faster for large photos that will be shrunk anyway.
    Raises InvalidImageError with a sentence a person understands.
    """
    return load_frames(source, 1, max_pixels=max_pixels, max_bytes=max_bytes, draft_size=draft_size)[0]


def load_frames(
    source: ImageSource,
    max_frames: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
    draft_size: tuple[int, int] | None = None,
) -> list[Image.Image]:
    """Return up to ``max_frames`` evenly spaced RGB frames of ``source`` (one for a still image)."""
    if isinstance(source, Image.Image):
        if is_animated(source) and max_frames > 1:
            frames, times = _sample_frames(source, max_frames)
            return _with_times([_frame_to_rgb(frame) for frame in frames], times)
        return [_frame_to_rgb(source)]
    if isinstance(source, np.ndarray):
        return [array_to_image(source)]
    data = _read_source(source, max_bytes)
    try:
        image = _open(data, max_pixels)
    except InvalidImageError:
        if not looks_like_video(data):
            raise
        frames, times = video_frames(data, max_frames, max_pixels=max_pixels)
        return _with_times([to_rgb(frame) for frame in frames], times)
    try:
        if is_animated(image) and max_frames > 1:
            frames, times = _sample_frames(image, max_frames)
            return _with_times([_frame_to_rgb(frame) for frame in frames], times)
        if draft_size is not None and image.format == "JPEG":
            image.draft("RGB", draft_size)
        return [_frame_to_rgb(_decode(image, data, max_pixels, draft_size))]
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


def sample_indices(frame_count: int, wanted: int) -> list[int]:
    """Evenly spaced frame indices from first to last, at most ``wanted`` of them."""
    if frame_count <= 0:
        return []
    if wanted <= 1 or frame_count == 1:
        return [0]
    picks = np.linspace(0, frame_count - 1, num=min(wanted, frame_count)).round().astype(int)
    return sorted(set(int(i) for i in picks))


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


def _sample_frames(image: Image.Image, max_frames: int) -> tuple[list[Image.Image], list[float]]:
    """Evenly spaced frames of an animation and their (approximate) times in seconds."""
    frames: list[Image.Image] = []
    indices: list[int] = []
    durations: list[float] = []
    for index in sample_indices(image.n_frames, max_frames):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image.seek(index)
                frames.append(image.copy())
        except (OSError, EOFError, ValueError, SyntaxError) as err:
            if not frames:
                raise InvalidImageError(_damaged_message(err)) from None
            break  # keep the frames decoded before the damage
        indices.append(index)
        durations.append(float(image.info.get("duration") or 100) / 1000)
    step = sum(durations) / len(durations)  # frames may differ in delay; this is their mean
    return frames, [index * step for index in indices]


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
