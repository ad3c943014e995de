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
from PIL import Image, ImageFile, UnidentifiedImageError

from nsfw_space.errors import InvalidImageError
from nsfw_space.media.budgets import DEFAULT_MAX_PIXELS, GATE, DecodeLimits, PixelBudget
from nsfw_space.media.convert import array_to_image, frame_to_rgb, shrink, to_rgb
from nsfw_space.media.reasons import SUPPORTED_FORMATS, damaged_message, not_an_image_reason, short_reason
from nsfw_space.media.video import frames_for_every, looks_like_video, sample_indices, video_frames

logger = logging.getLogger(__name__)

ImageSource = Union[  # noqa: UP007 - a runtime alias, must work on Python 3.10
    str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], Image.Image, np.ndarray
]

FRAME_TIME = "nsfw_space_frame_time"

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
    every: float | None = None,
) -> list[Image.Image]:
    """Return up to ``max_frames`` evenly spaced RGB frames of ``source`` (one for a still image);
    with ``every``, about one frame every that many seconds instead (at most
    ``limits.max_animation_frames``).

    ``limits`` (default: ``max_pixels`` and ``max_bytes`` with the default frame cap and time
    budget) bound what one input may cost; ``budget`` is the request's share of decoded pixels.
    """
    limits = limits or DecodeLimits(max_pixels=max_pixels, max_bytes=max_bytes)
    if isinstance(source, Image.Image):
        if is_animated(source) and (max_frames > 1 or every):
            return _animation_frames(source, max_frames, limits, budget, draft_size, every)
        return [frame_to_rgb(source)]
    if isinstance(source, np.ndarray):
        return [array_to_image(source)]
    data = _read_source(source, limits.max_bytes)
    try:
        image = _open(data, limits.max_pixels)
    except InvalidImageError:
        if not looks_like_video(data):
            raise
        frames, times = video_frames(
            data, max_frames, limits=limits, budget=budget, draft_size=draft_size, every=every
        )
        return _with_times([to_rgb(frame) for frame in frames], times)
    try:
        if is_animated(image) and (max_frames > 1 or every):
            return _animation_frames(image, max_frames, limits, budget, draft_size, every)
        pixels = image.width * image.height
        if budget is not None:
            budget.spend(pixels)
        with GATE.hold(pixels) as held:
            if draft_size is not None and image.format == "JPEG":
                image.draft("RGB", draft_size)
            decoded = _decode(image, data, limits.max_pixels, draft_size)
            held.decoded = decoded.width * decoded.height
            limits.check_frame(*decoded.size, what="The image")
            frame = frame_to_rgb(shrink(decoded, draft_size))
            for full_size in {id(decoded): decoded, id(image): image}.values():
                if full_size is not frame:
                    full_size.close()  # freed here, inside the gate, not when the caller lets go
            return [frame]
    except InvalidImageError:
        raise
    except Exception as err:
        logger.debug("decoder failure", exc_info=True)
        raise InvalidImageError(damaged_message(err)) from None


def frame_time(frame: Image.Image) -> float:
    """The time in seconds of a frame from an animation or video (0 for a still image)."""
    return float(frame.info.get(FRAME_TIME, 0.0))


def _with_times(frames: list[Image.Image], times: list[float]) -> list[Image.Image]:
    for frame, seconds in zip(frames, times, strict=True):
        frame.info[FRAME_TIME] = seconds
    return frames


def is_animated(image: Image.Image) -> bool:
    """Whether ``image`` has more than one frame. Pillow's own flag only: for a GIF it looks at
    the second frame, where ``n_frames`` would parse every frame of the file before the frame
    cap could apply (4.3 s for a 22 MB GIF of 600,000 frames)."""
    return bool(getattr(image, "is_animated", False))


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
        raise InvalidImageError(f"The file is empty (0 bytes). Use an image file ({SUPPORTED_FORMATS}).")
    return data


def _check_size(size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise InvalidImageError(
            f"The file is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB. "
            "Use a smaller or more compressed image."
        )


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidImageError(not_an_image_reason(data)) from None
    except Image.DecompressionBombError:
        raise InvalidImageError(
            f"The image has far more pixels than the limit of {max_pixels / 1e6:.0f} megapixels "
            "(a decompression bomb, or a huge scan). Resize it and try again."
        ) from None
    except Exception as err:  # noqa: BLE001 - any parser failure on a header means a damaged file
        if "truncated" in str(err).lower():
            raise InvalidImageError(
                "The image file is truncated: it ends inside its header, so no picture can be "
                "recovered. Use the complete file."
            ) from None
        raise InvalidImageError(
            f"The file looks like an image but its header is damaged ({short_reason(err)}). "
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
            raise InvalidImageError(damaged_message(err)) from None
    except (ValueError, SyntaxError, EOFError, TypeError, IndexError, MemoryError) as err:
        raise InvalidImageError(damaged_message(err)) from None
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
            raise InvalidImageError(damaged_message(err)) from None
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
    extrema = partial.convert("L").getextrema()
    if extrema[0] == extrema[1]:
        raise InvalidImageError(
            "The image file is truncated and no picture could be recovered from it. Use the complete file."
        )
    logger.info("recovered a truncated %s image", partial.format)
    return partial


def _animation_frames(
    image: Image.Image,
    max_frames: int,
    limits: DecodeLimits,
    budget: PixelBudget | None,
    draft_size: tuple[int, int] | None,
    every: float | None = None,
) -> list[Image.Image]:
    """Evenly spaced frames among the first ``limits.max_animation_frames``, each checked at its
    real (possibly grown) size, decoded under the pixel gate and shrunk at once, with their times.
    With ``every``, their number follows the animation's length (first frame's delay x frames)."""
    deadline = limits.deadline()
    limits.check_animation_frame(*image.size)
    count, delays = _frame_count(image, limits, deadline)
    if every:
        length = sum(delays[: count - 1]) if delays else (count - 1) * _delay(image)
        max_frames = frames_for_every(length, every, limits.max_animation_frames)
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
                small = shrink(image, draft_size)  # never a full-size copy of a large frame
                frame = frame_to_rgb(small if small is not image else image.copy())
        except InvalidImageError:
            raise
        except (OSError, EOFError, ValueError, SyntaxError) as err:
            if not frames:
                raise InvalidImageError(damaged_message(err)) from None
            break  # keep the frames decoded before the damage
        limits.check_time(deadline)
        frames.append(frame)
        indices.append(index)
        durations.append(_delay(image))
        previous = index
    if len(delays) >= count:  # a GIF: each frame starts when the ones before it have been shown
        starts = [0.0]
        for delay in delays[: count - 1]:
            starts.append(starts[-1] + delay)
        return _with_times(frames, [starts[index] for index in indices])
    step = sum(durations) / len(durations)  # frames may differ in delay; this is their mean
    return _with_times(frames, [index * step for index in indices])


def _delay(image: Image.Image) -> float:
    """The current frame's display time in seconds (100 ms when the file does not say)."""
    return float(image.info.get("duration") or 100) / 1000


def _frame_count(image: Image.Image, limits: DecodeLimits, deadline: float) -> tuple[int, list[float]]:
    """Frames of an animation, counting no further than ``limits.max_animation_frames``, and for
    a GIF each counted frame's delay in seconds (empty for other formats).

    A GIF has no frame count in its header: Pillow's ``n_frames`` parses every frame (a million
    1x1 frames take seconds) and each frame may grow the canvas. Here the frames are parsed
    without decoding, the canvas is checked after each, and counting stops at the cap.
    """
    cap = max(1, limits.max_animation_frames)
    if image.format != "GIF" or not hasattr(image, "_seek"):
        return min(image.n_frames, cap), []  # WebP, APNG and TIFF say how many frames they hold
    count, delays = 1, [_delay(image)]
    try:
        while count < cap:
            image._seek(count, False)  # what Pillow's own n_frames does, minus the walk to the end
            limits.check_animation_frame(*image.size)
            delays.append(_delay(image))
            count += 1
            if count % 256 == 0:
                limits.check_time(deadline)
    except EOFError:
        pass
    image.seek(0)
    return count, delays
