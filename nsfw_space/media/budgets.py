"""Hard limits on decoding: what one input, one request and the whole process may decode.

- ``DecodeLimits``: one input's limits (bytes, pixels of any one frame *after* it is decoded,
  frames looked at in an animation or video, seconds of decoding).
- ``PixelBudget``: the decoded pixels one request (a single image, or a whole batch) may spend.
- ``PixelGate``: the decoded pixels the whole process holds at full size at once; a large decode
  waits until others have shrunk theirs, so concurrent bombs cannot add up.
- ``release_memory()``: hands large freed decode buffers back to the operating system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nsfw_space.errors import InvalidImageError

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 80_000_000
DEFAULT_MAX_ANIMATION_FRAMES = 1000
DEFAULT_MAX_ANIMATION_PIXELS = 24_000_000
DEFAULT_DECODE_SECONDS = 15.0
DEFAULT_REQUEST_PIXELS = 400_000_000
DEFAULT_GATE_PIXELS = 100_000_000


@dataclass(frozen=True)
class DecodeLimits:
    """What one input may cost to decode."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    """Largest frame (width x height), checked from the header and again after each frame is read."""
    max_bytes: int | None = None
    """Largest encoded input."""
    max_animation_frames: int = DEFAULT_MAX_ANIMATION_FRAMES
    """Frames of an animation or video looked at; later frames are not read."""
    max_animation_pixels: int = DEFAULT_MAX_ANIMATION_PIXELS
    """Largest canvas of an animated image: Pillow holds a later GIF frame in about 9 bytes a
    pixel (measured: +687 MB for one 80-megapixel frame), so animations get a lower limit."""
    seconds: float = DEFAULT_DECODE_SECONDS
    """Decoding time allowed for one input."""

    def deadline(self) -> float:
        return time.monotonic() + self.seconds

    def check_frame(self, width: int, height: int, what: str = "A frame of this file") -> None:
        """Refuse a frame whose real size (after canvas growth or a size change) is over the limit."""
        if width * height > self.max_pixels:
            raise InvalidImageError(
                f"{what} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels); "
                f"the limit is {self.max_pixels / 1e6:.0f} megapixels. Resize it and try again."
            )

    def check_animation_frame(self, width: int, height: int) -> None:
        """Refuse an animation whose canvas (as it is now, after any growth) is over its limit."""
        limit = min(self.max_pixels, self.max_animation_pixels)
        if width * height > limit:
            raise InvalidImageError(
                f"A frame of this animation is {width}x{height} pixels ({width * height / 1e6:.0f} "
                f"megapixels); animations are read up to {limit / 1e6:.0f} megapixels a frame. "
                "Resize it and try again."
            )

    def check_time(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise InvalidImageError(
                f"Decoding this file took longer than {self.seconds:.0f} seconds, so it was stopped. "
                "Use a smaller or shorter file."
            )


class PixelBudget:
    """The decoded pixels one request may spend, shared by the threads that decode its files."""

    def __init__(self, pixels: int) -> None:
        self.total = int(pixels)
        self._left = int(pixels)
        self._lock = threading.Lock()

    def spend(self, pixels: int) -> None:
        with self._lock:
            if pixels > self._left:
                self._left = 0
                raise InvalidImageError(
                    f"This request has used up its decoding budget of {self.total / 1e6:.0f} megapixels; "
                    "check the remaining files in another request."
                )
            self._left -= pixels

    @property
    def left(self) -> int:
        return self._left


class PixelGate:
    """A process-wide weighted semaphore over full-size decoded pixels.

    A decode of ``n`` pixels waits while others hold more than ``capacity - n``; one decode alone
    always proceeds (its own size is already bounded by ``DecodeLimits.max_pixels``).
    """

    def __init__(self, capacity: int = DEFAULT_GATE_PIXELS) -> None:
        self.capacity = int(capacity)
        self._held = 0
        self._condition = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[HeldPixels]:
        """Hold ``pixels`` while decoding. Freed memory goes back to the OS afterwards when the
        decode was large: ``pixels`` unless the caller says what was really decoded in
        ``held.decoded`` (a JPEG decoded in draft mode is a fraction of its full size, and a trim
        after it would hand back the model's buffers too, which the next forward faults in again)."""
        with self._condition:
            while self._held and self._held + pixels > self.capacity:
                self._condition.wait()
            self._held += pixels
        held = HeldPixels(pixels)
        try:
            yield held
        finally:
            with self._condition:
                self._held -= pixels
                self._condition.notify_all()
            if held.decoded >= LARGE_DECODE_PIXELS:
                release_memory()


@dataclass
class HeldPixels:
    """What a decode inside :meth:`PixelGate.hold` really decoded (its full size until told)."""

    decoded: int


GATE = PixelGate()
LARGE_DECODE_PIXELS = 4_000_000  # after a decode this large, freed memory goes back to the OS


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


_trimmer_started = threading.Event()
_garbage_waiting = threading.Event()
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc's mallopt parameter numbers
LARGE_GARBAGE_BYTES = 1 << 20  # a request input this large is worth a collection once it is done with
BUSY_SHARE = 0.25  # of one core, over the last interval: the model is in use, its buffers stay


def note_large_garbage() -> None:
    """Say that a large request input (a ``data:`` URL, a big body) is about to become garbage:
    the memory trimmer collects and trims about a second later, whatever resident memory says."""
    _garbage_waiting.set()


def keep_buffers_in_heap() -> bool:
    """Serve every buffer from one heap that the next forward reuses, and give memory back only
    when trimmed (:func:`start_memory_trimmer` does so while the process is idle). Setting the
    same values again changes nothing; False where glibc's ``mallopt`` is missing.

    glibc maps each buffer over 32 MB on its own and unmaps it when freed, so every page of it is
    faulted in again, zeroed, on the next use: the MLP of a ViT-B/16 batch of 16 has 39 MB
    activations. A thread other than the main one (the torch thread) gets a malloc arena of its
    own, whose 64 MB heaps glibc also unmaps whenever one empties, whatever the trim threshold:
    with two arenas a process faulted 47,000 to 413,000 pages a run of 64 files, with one 0 to
    16,000. So one arena: ``python -m nsfw_space bench``'s model, int8 at batch 16 on an
    AVX2-only EPYC, faulted 1,000 to 2,600 pages a batch instead of 164,000 to 234,000 and ran at
    6.2 to 7.4 images/s instead of 4.7 to 5.8 (fresh processes, alternating); single images did
    not change. Decode threads share that arena too, where the trims reach their freed images."""
    if _LIBC is None or not hasattr(_LIBC, "mallopt"):
        return False
    _LIBC.mallopt(M_ARENA_MAX, 1)
    _LIBC.mallopt(M_MMAP_MAX, 0)  # every buffer from the heap, reused by the next forward
    _LIBC.mallopt(M_TRIM_THRESHOLD, 1 << 30)  # trims give memory back, not each free()
    return True


def start_memory_trimmer(interval: float = 5.0, growth_mb: float = 64.0, grace: float = 1.0) -> None:
    """Hand freed heap back to the OS, from a daemon thread (once per process). It catches what
    no decode of ours can: large request bodies parsed by the web server. Those sit in reference
    cycles that only a full garbage collection frees (a large string does not advance the
    collector's counters: eight refused 27 MB data: URLs took a Space from 625 to 1383 MB).

    - ``grace`` seconds after each :func:`note_large_garbage` (at most once per ``grace``), and
      once more one ``interval`` later for a request slower than the grace: a full collection
      and a trim. A collection only on measured growth was not enough: read while a request still
      held its body, the reading after a collection stood too high, and four refused data: URLs
      (137 MB) stayed for good.
    - Every ``interval`` seconds in which the process was idle: a trim, and a collection first
      when resident memory has grown by ``growth_mb`` since the last one. While the model is in
      use nothing is trimmed: its freed buffers are what its next forward reuses.

    Large buffers are kept in the heap rather than mapped one by one: mapped, each was unmapped
    when freed and every page faulted in again on the next forward (glibc maps buffers over 32 MB,
    and this trimmer used to map all over 1 MB): 344,000 page faults and 1.25 s of kernel time
    per int8 batch of 16 on an AVX2 EPYC, 3.6 s a batch against 2.8 s. A trim of an idle heap
    takes well under a millisecond."""
    if _LIBC is None or _trimmer_started.is_set():
        return
    _trimmer_started.set()
    keep_buffers_in_heap()

    def collect() -> float:
        gc.collect()
        release_memory()
        return process_rss_mb(os.getpid()) or 0.0

    def trim_forever() -> None:
        baseline = process_rss_mb(os.getpid()) or 0.0  # the lowest reading since the last collection
        follow_up = False  # a request slower than the grace still held its input: collect again
        cpu_before = time.process_time()
        while True:
            if _garbage_waiting.wait(interval):
                _garbage_waiting.clear()  # a note from now on asks for another collection
                time.sleep(grace)  # the request that sent the note finishes and lets go of it
                baseline, follow_up = collect(), True
                cpu_before = time.process_time()
                continue
            cpu_now = time.process_time()
            busy = cpu_now - cpu_before > BUSY_SHARE * interval
            cpu_before = cpu_now
            now = process_rss_mb(os.getpid()) or 0.0
            if follow_up or (not busy and now - baseline > growth_mb):
                baseline, follow_up = collect(), False
            elif not busy:
                release_memory()
                baseline = min(baseline, process_rss_mb(os.getpid()) or now)

    threading.Thread(target=trim_forever, name="nsfw-memory-trimmer", daemon=True).start()


def process_rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MB (Linux /proc), or None where it can't be read."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def release_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``); a no-op elsewhere.

    Pillow allocates large images in blocks that glibc keeps in its heap after they are freed;
    without this, one 80-megapixel decode leaves the process a few hundred MB larger for good.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
