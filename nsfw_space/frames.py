"""Frames of videos (PyAV, which bundles FFmpeg: nothing to download at run time) and the rules
that turn per-frame scores into one verdict: ``max``, ``mean``, or at least ``k`` of ``n`` frames."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .budgets import GATE, LARGE_DECODE_PIXELS, DecodeLimits, PixelBudget, release_memory
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


def sample_indices(frame_count: int, wanted: int) -> list[int]:
    """Evenly spaced frame indices from first to last, at most ``wanted`` of them."""
    if frame_count <= 0:
        return []
    if wanted <= 1 or frame_count == 1:
        return [0]
    picks = np.linspace(0, frame_count - 1, num=min(wanted, frame_count)).round().astype(int)
    return sorted(set(int(i) for i in picks))


def video_frames(
    data: bytes,
    wanted: int,
    *,
    limits: DecodeLimits | None = None,
    budget: PixelBudget | None = None,
    draft_size: tuple[int, int] | None = None,
) -> tuple[list[Image.Image], list[float]]:
    """Up to ``wanted`` evenly spaced frames of a video, with their times in seconds.

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
            count = 0
            for packet in container.demux(stream):
                count += 1 if packet.size else 0
                if count > MAX_VIDEO_FRAMES:
                    raise InvalidImageError(
                        f"The video has more than {MAX_VIDEO_FRAMES} frames. Upload a shorter clip."
                    )
            if count == 0:
                raise InvalidImageError("The video has no frames.")
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


@dataclass(frozen=True)
class Summary:
    """Per-frame NSFW scores summed up by a rule; ``score >= threshold`` is the verdict."""

    score: float
    frame: int  # the frame whose label scores represent the whole
    rule: str
    k: int = 1  # for k-of-n: the k actually applied (at most the number of frames)


def summarise(frame_scores: list[float] | tuple[float, ...], rule: str = "max", k: int = 1) -> Summary:
    """``max``: the worst frame. ``mean``: the average. ``k-of-n``: the k-th highest score, so the
    verdict is NSFW exactly when at least ``k`` frames reach the threshold.

    With fewer frames than ``k`` (a still image, a short GIF), k-of-n asks for all of them:
    ``k`` becomes the number of frames, so a still image is judged on its one frame rather than
    never flagged.
    """
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
        applied = min(k, int(scores.size))
        order = np.argsort(-scores, kind="stable")
        index = int(order[applied - 1])
        return Summary(float(scores[index]), index, rule, applied)
    raise ConfigError(f"Unknown frame rule {rule!r}; use {', '.join(RULES)}.")
