"""Frames of videos (PyAV, which bundles FFmpeg: nothing to download at run time), and the even
spacing of sampled frames shared with animated images."""

from __future__ import annotations

import io
import logging
import math

import numpy as np
from PIL import Image

from nsfw_space.errors import InvalidImageError
from nsfw_space.media.budgets import GATE, LARGE_DECODE_PIXELS, DecodeLimits, PixelBudget, release_memory

logger = logging.getLogger(__name__)

MAX_VIDEO_FRAMES = 20_000  # frames demuxed to count them; longer videos are refused


def looks_like_video(data: bytes) -> bool:
    """MP4/MOV (``ftyp``), WebM/Matroska (EBML) or AVI (RIFF ... AVI), from the first bytes."""
    return (
        data[4:8] == b"ftyp"
        or data[:4] == b"\x1a\x45\xdf\xa3"
        or (data[:4] == b"RIFF" and data[8:11] == b"AVI")
    )


def sample_indices(frame_count: int, wanted: int) -> list[int]:
    """Evenly spaced frame indices from first to last, at most ``wanted`` of them."""
    if frame_count <= 0:
        return []
    if wanted <= 1 or frame_count == 1:
        return [0]
    picks = np.linspace(0, frame_count - 1, num=min(wanted, frame_count)).round().astype(int)
    return sorted(set(int(i) for i in picks))


def frames_for_every(duration: float, every: float, cap: int) -> int:
    """How many evenly spaced frames sample a clip whose last frame starts at ``duration`` seconds
    at least every ``every`` seconds (its first and last frame included), at most ``cap``."""
    return max(1, min(cap, math.ceil(duration / every - 1e-9) + 1))


def video_frames(
    data: bytes,
    wanted: int,
    *,
    limits: DecodeLimits | None = None,
    budget: PixelBudget | None = None,
    draft_size: tuple[int, int] | None = None,
    every: float | None = None,
) -> tuple[list[Image.Image], list[float]]:
    """Up to ``wanted`` evenly spaced frames of a video, with their times in seconds (with
    ``every``: about one frame every that many seconds, at most ``limits.max_animation_frames``).

    Every decoded frame is checked at its own size (a stream may change size mid-way), kept
    frames are scaled down to ``draft_size`` by FFmpeg as they are converted, and decoding stops
    at the time limit.
    """
    try:
        import av
    except ImportError:
        raise InvalidImageError("Videos need the PyAV package: pip install av.") from None

    limits = limits or DecodeLimits()
    deadline = limits.deadline()
    largest = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise InvalidImageError("This file has no video track.")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
            limits.check_frame(width, height, what="The video")
            count, last_time = 0, 0.0
            for packet in container.demux(stream):
                count += 1 if packet.size else 0
                if packet.size and packet.pts is not None and packet.time_base is not None:
                    last_time = max(last_time, float(packet.pts * packet.time_base))
                if count > MAX_VIDEO_FRAMES:
                    raise InvalidImageError(
                        f"The video has more than {MAX_VIDEO_FRAMES} frames. Use a shorter clip."
                    )
            if count == 0:
                raise InvalidImageError("The video has no frames.")
            if every:
                wanted = frames_for_every(last_time, every, limits.max_animation_frames)
            keep = set(sample_indices(count, wanted))
            container.seek(0, stream=stream)
            frames: list[Image.Image] = []
            times: list[float] = []
            for index, frame in enumerate(container.decode(stream)):
                largest = max(largest, frame.width * frame.height)
                limits.check_frame(frame.width, frame.height, what="A frame of this video")
                limits.check_time(deadline)
                if budget is not None:
                    budget.spend(frame.width * frame.height)
                if index in keep:
                    with GATE.hold(frame.width * frame.height):
                        frames.append(frame.to_image(**_scaled(frame.width, frame.height, draft_size)))
                    times.append(float(frame.time or 0.0))
                if index >= max(keep):
                    break
    except InvalidImageError:
        raise
    except Exception as err:  # noqa: BLE001 - FFmpeg's many errors all mean: not a playable video
        raise InvalidImageError(f"This video could not be decoded ({str(err)[:80]}).") from None
    finally:
        if largest >= LARGE_DECODE_PIXELS:
            release_memory()  # FFmpeg's full-size frames were freed into the heap
    if not frames:
        raise InvalidImageError("No frame of this video could be decoded.")
    return frames, times


def _scaled(width: int, height: int, draft_size: tuple[int, int] | None) -> dict[str, int]:
    """Reformat arguments that shrink a frame by a whole factor, keeping both sides >= draft size."""
    if draft_size is None:
        return {}
    factor = min(width // max(1, draft_size[0]), height // max(1, draft_size[1]))
    return {"width": width // factor, "height": height // factor} if factor >= 2 else {}
