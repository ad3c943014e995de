"""The desk as the doors use it: known-image lists checked on every answer, the review queue
filled from ``review`` decisions (and an audited share of ``allow``), moderators, and retention."""

from __future__ import annotations

import logging
import math
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nsfw_space.desk.auth import Moderators
from nsfw_space.desk.lists import KnownImages, Match, with_match
from nsfw_space.desk.queue import ReviewQueue
from nsfw_space.desk.store import open_engine, upgrade
from nsfw_space.errors import InvalidImageError
from nsfw_space.media.hashing import HASH_SIZE, PdqHash, pdq_hash
from nsfw_space.media.images import load_frames

logger = logging.getLogger(__name__)

PURGE_EVERY_S = 3600.0


@dataclass(frozen=True)
class DeskOptions:
    """The desk's settings (from ``NSFW_SPACE_DESK_*``)."""

    url: str
    retention_days: float = 30.0
    audit: float = 0.0
    lease_seconds: float = 300.0
    hub_moderators: tuple[str, ...] = ()
    max_pixels: int = 80_000_000
    frames: int = 8  # frames of an animation or video hashed and matched


class Desk:
    """One team's desk over one database (SQLite file or PostgreSQL)."""

    def __init__(self, options: DeskOptions) -> None:
        self.options = options
        self.engine = open_engine(options.url)
        upgrade(self.engine)
        self.lists = KnownImages(self.engine)
        self.queue = ReviewQueue(self.engine, options.retention_days, options.lease_seconds)
        self.moderators = Moderators(self.engine)
        self._random = random.SystemRandom()
        self._stop = threading.Event()

    @classmethod
    def from_settings(cls, settings: Any) -> Desk | None:
        """The desk named by ``settings.desk_db``, or None when the desk is off (the default)."""
        if not getattr(settings, "desk_db", ""):
            return None
        return cls(
            DeskOptions(
                url=settings.desk_db,
                retention_days=settings.desk_retention_days,
                audit=settings.desk_audit,
                lease_seconds=settings.desk_lease_seconds,
                hub_moderators=tuple(
                    name.strip() for name in settings.desk_moderators.split(",") if name.strip()
                ),
                max_pixels=settings.max_pixels,
                frames=settings.frames,
            )
        )

    # -- on every answer ------------------------------------------------------------------------
    def hash_of(self, source: str | bytes | Path) -> PdqHash | None:
        """The PDQ hash of a source's first frame, None when it cannot be decoded (the model's own
        refusal then speaks for it)."""
        hashes = self._hashes(source, 1)
        return hashes[0] if hashes else None

    def hashes_of(self, source: str | bytes | Path) -> list[PdqHash]:
        """The PDQ hashes of a source's sampled frames (one for a still image; up to ``frames``,
        evenly spaced, for an animation or a video); [] when it cannot be decoded."""
        return self._hashes(source, self.options.frames)

    def _hashes(self, source: str | bytes | Path, frames: int) -> list[PdqHash]:
        try:  # decoded at most 256 px wide: PDQ works on a 64x64 reduction anyway
            decoded = load_frames(
                source, frames, max_pixels=self.options.max_pixels, draft_size=(HASH_SIZE, HASH_SIZE)
            )
        except InvalidImageError:
            return []
        return [pdq_hash(frame) for frame in decoded]

    def match(self, source: str | bytes | Path) -> tuple[Match | None, PdqHash | None]:
        """The list match of any sampled frame (see :meth:`KnownImages.match_any`), and the first
        frame's hash."""
        hashes = self.hashes_of(source)
        return self.lists.match_any(hashes), (hashes[0] if hashes else None)

    def judge(self, source: str | bytes | Path, result: dict[str, Any]) -> dict[str, Any]:
        """Add ``match`` to a moderation answer (a match decides: block or allow whatever the
        score), then queue it for review when its decision is ``review`` (adding ``review_id``)
        or, for the audited share, when it is ``allow``."""
        match, image_hash = self.match(source)
        with_match(result, match.to_dict() if match is not None else None)
        if match is not None:
            return result
        decision = result.get("decision")
        audited = (
            decision == "allow" and self.options.audit > 0 and self._random.random() < self.options.audit
        )
        if decision == "review" or audited:
            stored_hash = image_hash.hex if image_hash is not None and image_hash.usable else None
            item_id = self.queue.pending_with_hash(stored_hash) if stored_hash else None
            if item_id is None:  # the same picture already waiting is not queued twice
                reason = "review" if decision == "review" else "audit"
                item_id = self.queue.enqueue(
                    _read(source), result["nsfw_score"], decision, reason, stored_hash
                )
            if decision == "review":  # an audited image is not announced to its sender
                result["review_id"] = item_id
        return result

    # -- housekeeping ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Counts as JSON: pending, decided by decision, the lists' sizes, decisions per
        moderator, and the miss rate of ``allow`` estimated from the audit (Wilson 95 %)."""
        counts = self.queue.counts()
        audited = counts.pop("audit_decided")
        total = audited["allow"] + audited["block"]
        return {
            **counts,
            "lists": self.lists.sizes(),
            "moderators": self.queue.decided_by(),
            "audit": {
                "share": self.options.audit,
                "decided": total,
                "allow_miss_rate": wilson(audited["block"], total),
            },
        }

    def start_purging(self, every_s: float = PURGE_EVERY_S) -> None:
        """Delete expired items now, then every ``every_s`` seconds, on a daemon thread."""

        def loop() -> None:
            while True:
                try:
                    gone = self.queue.purge_expired()
                    if gone:
                        logger.info("Desk: %d stored images past their retention deleted.", gone)
                except Exception:  # noqa: BLE001 - a database hiccup must not end the schedule
                    logger.warning("Desk: the retention purge failed; it runs again in %.0f s.", every_s)
                if self._stop.wait(every_s):
                    return

        threading.Thread(target=loop, name="desk-retention", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.engine.dispose()


def wilson(hits: int, total: int, z: float = 1.96) -> dict[str, float] | None:
    """The share ``hits/total`` with its Wilson score interval; None when nothing was counted."""
    if total <= 0:
        return None
    share = hits / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return {
        "estimate": round(share, 6),
        "low": round(max(0.0, centre - half), 6),
        "high": round(min(1.0, centre + half), 6),
    }


def _read(source: str | bytes | Path) -> bytes:
    return source if isinstance(source, bytes) else Path(source).read_bytes()
