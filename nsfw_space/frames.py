"""Frames of videos (PyAV, which bundles FFmpeg: nothing to download at run time) and the rules
that turn per-frame scores into one verdict: ``max``, ``mean``, or at least ``k`` of ``n`` frames."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .errors import ConfigError, InvalidImageError

logger = logging.getLogger(__name__)

RULES = ("max", "mean", "k-of-n")
MAX_VIDEO_FRAMES = 20_000  # frames demuxed to count them; longer videos are refused


def looks_like_video(data: bytes) -> bool:
    """MP4/MOV (``ftyp``), WebM/Matroska (EBML) or AVI (RIFF ... AVI), from the first bytes."""
    return (
        data[4:8] == b"ftyp"
        or data[:4] == b"\x1a\x45\xdf\xa3"
        or (data[:4] == b"RIFF" and data[8:11] == b"AVI")
    )


def video_frames(data: bytes, wanted: int, *, max_pixels: int) -> tuple[list[Image.Image], list[float]]:
    """Up to ``wanted`` evenly spaced frames of a video, with their times in seconds."""
    try:
        import av
    except ImportError:
        raise InvalidImageError("Videos need the PyAV package: pip install av.") from None
    from .images import sample_indices

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise InvalidImageError("This file has no video track.")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
            if width * height > max_pixels:
                raise InvalidImageError(
                    f"The video is {width}x{height} pixels; the limit is {max_pixels / 1e6:.0f} megapixels."
                )
            count = sum(1 for packet in container.demux(stream) if packet.size)
            if count == 0:
                raise InvalidImageError("The video has no frames.")
            if count > MAX_VIDEO_FRAMES:
                raise InvalidImageError(
                    f"The video has {count} frames; at most {MAX_VIDEO_FRAMES} are read. Upload a shorter clip."
                )
            keep = set(sample_indices(count, wanted))
            container.seek(0, stream=stream)
            frames: list[Image.Image] = []
            times: list[float] = []
            for index, frame in enumerate(container.decode(stream)):
                if index in keep:
                    frames.append(frame.to_image().convert("RGB"))
                    times.append(float(frame.time or 0.0))
                if index >= max(keep):
                    break
    except InvalidImageError:
        raise
    except Exception as err:  # noqa: BLE001 - FFmpeg's many errors all mean: not a playable video
        raise InvalidImageError(f"This video could not be decoded ({str(err)[:80]}).") from None
    if not frames:
        raise InvalidImageError("No frame of this video could be decoded.")
    return frames, times


@dataclass(frozen=True)
class Summary:
    """Per-frame NSFW scores summed up by a rule; ``score >= threshold`` is the verdict."""

    score: float
    frame: int  # the frame whose label scores represent the whole
    rule: str


def summarise(frame_scores: list[float] | tuple[float, ...], rule: str = "max", k: int = 1) -> Summary:
    """``max``: the worst frame. ``mean``: the average. ``k-of-n``: the k-th highest score, so the
    verdict is NSFW exactly when at least ``k`` frames reach the threshold."""
    scores = np.asarray(frame_scores, dtype=np.float64)
    if scores.size == 0:
        raise ConfigError("There are no frame scores to sum up.")
    if rule == "max":
        index = int(np.argmax(scores))
        return Summary(float(scores[index]), index, rule)
    if rule == "mean":
        index = int(np.argmin(np.abs(scores - scores.mean())))
        return Summary(float(scores.mean()), index, rule)
    if rule == "k-of-n":
        if k < 1:
            raise ConfigError("k must be at least 1.")
        order = np.argsort(-scores, kind="stable")
        if k > scores.size:
            return Summary(0.0, int(order[-1]), rule)  # fewer frames than k can never reach k
        index = int(order[k - 1])
        return Summary(float(scores[index]), index, rule)
    raise ConfigError(f"Unknown frame rule {rule!r}; use {', '.join(RULES)}.")
