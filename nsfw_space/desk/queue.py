"""The review queue: images whose decision is ``review`` (and the audited share of ``allow``),
stored until their retention ends, each leased to one moderator at a time.

A lease is a compare-and-set on the item's row (pending, and no lease or an expired one), so two
moderators never hold the same item on SQLite or PostgreSQL; a decision is accepted only with the
lease's token and only once, and a lease that expires (a moderator who left, or was killed
mid-decision) returns the item to the queue.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, func, or_, select, text, update

from nsfw_space.desk import store
from nsfw_space.errors import DeskError

DECISIONS = ("allow", "block")
LEASE_SECONDS = 300.0
SKIP_SECONDS = 30.0
CANDIDATES = 8  # rows tried per claim before looking again


@dataclass(frozen=True)
class Lease:
    """An item leased to one moderator until ``until`` (seconds since the epoch)."""

    item_id: str
    token: str
    moderator: str
    until: float
    image: bytes
    nsfw_score: float
    reason: str
    created_at: float


class ReviewQueue:
    """The queue of one desk database."""

    def __init__(
        self, engine: Engine, retention_days: float = 30.0, lease_seconds: float = LEASE_SECONDS
    ) -> None:
        self.engine = engine
        self.retention_s = retention_days * 86400.0
        self.lease_seconds = lease_seconds

    def enqueue(
        self,
        image: bytes,
        nsfw_score: float,
        model_decision: str,
        reason: str = "review",
        hash_hex: str | None = None,
    ) -> str:
        """Store an image for review; returns its review_id."""
        now = time.time()
        item_id = secrets.token_hex(16)
        with self.engine.begin() as connection:
            connection.execute(
                store.review_items.insert().values(
                    id=item_id,
                    created_at=now,
                    expires_at=now + self.retention_s,
                    reason=reason,
                    nsfw_score=float(nsfw_score),
                    model_decision=model_decision,
                    image=image,
                    hash=hash_hex,
                    state="pending",
                )
            )
        return item_id

    def pending_with_hash(self, hash_hex: str) -> str | None:
        """The review_id of a pending item whose picture has exactly this PDQ hash, if any."""
        table = store.review_items
        with self.engine.connect() as connection:
            return connection.execute(
                select(table.c.id).where(table.c.hash == hash_hex, table.c.state == "pending").limit(1)
            ).scalar()

    def next(self, moderator: str) -> Lease | None:
        """Lease the oldest pending item to ``moderator`` (or give back the one they already hold);
        None when nothing is waiting."""
        held = self.held(moderator)
        if held is not None:
            return held
        table = store.review_items
        while True:
            now = time.time()
            free = or_(table.c.lease_until.is_(None), table.c.lease_until <= now)
            with self.engine.connect() as connection:
                candidates = (
                    connection.execute(
                        select(table.c.id)
                        .where(table.c.state == "pending", table.c.expires_at > now, free)
                        .order_by(table.c.created_at, table.c.id)
                        .limit(CANDIDATES)
                    )
                    .scalars()
                    .all()
                )
            if not candidates:
                return None
            for item_id in candidates:
                token = secrets.token_hex(16)
                with self.engine.begin() as connection:
                    claimed = connection.execute(
                        update(table)
                        .where(table.c.id == item_id, table.c.state == "pending", free)
                        .values(
                            lease_owner=moderator, lease_token=token, lease_until=now + self.lease_seconds
                        )
                    ).rowcount
                if claimed == 1:
                    return self._lease(item_id, token)

    def held(self, moderator: str) -> Lease | None:
        """The item ``moderator`` holds a live lease on, if any."""
        table = store.review_items
        with self.engine.connect() as connection:
            row = connection.execute(
                select(table.c.id, table.c.lease_token).where(
                    table.c.state == "pending",
                    table.c.lease_owner == moderator,
                    table.c.lease_until > time.time(),
                )
            ).first()
        return None if row is None else self._lease(row.id, row.lease_token)

    def _lease(self, item_id: str, token: str) -> Lease | None:
        table = store.review_items
        with self.engine.connect() as connection:
            row = connection.execute(select(table).where(table.c.id == item_id)).first()
        if row is None:
            return None
        return Lease(
            item_id=row.id,
            token=token,
            moderator=row.lease_owner,
            until=row.lease_until,
            image=bytes(row.image),
            nsfw_score=row.nsfw_score,
            reason=row.reason,
            created_at=row.created_at,
        )

    def decide(
        self, item_id: str, token: str, moderator: str, decision: str, listed: str | None = None
    ) -> None:
        """Record ``decision`` for an item leased to ``moderator`` (and who, and when). Raises
        DeskError when the lease has run out (the item may be someone else's now) or the item was
        decided already."""
        if decision not in DECISIONS:
            raise DeskError(f"A decision is allow or block, not {decision!r}.")
        table = store.review_items
        now = time.time()
        with self.engine.begin() as connection:
            done = connection.execute(
                update(table)
                .where(
                    table.c.id == item_id,
                    table.c.state == "pending",
                    table.c.lease_token == token,
                    table.c.lease_owner == moderator,
                )
                .values(
                    state="decided", decision=decision, decided_by=moderator, decided_at=now, lease_until=None
                )
            ).rowcount
            if done != 1:
                raise DeskError(
                    "This item is no longer yours to decide (its lease ran out); take the next one."
                )
            connection.execute(
                store.decisions.insert().values(
                    item_id=item_id, moderator=moderator, decision=decision, at=now, listed=listed
                )
            )

    def skip(self, item_id: str, token: str, moderator: str, after_s: float = SKIP_SECONDS) -> None:
        """Give a leased item back undecided; it returns to the queue after ``after_s`` (by
        default SKIP_SECONDS, so the skipping moderator's next item is another one)."""
        table = store.review_items
        with self.engine.begin() as connection:
            connection.execute(
                update(table)
                .where(
                    table.c.id == item_id,
                    table.c.lease_token == token,
                    table.c.lease_owner == moderator,
                    table.c.state == "pending",
                )
                .values(lease_until=time.time() + after_s, lease_owner=None, lease_token=None)
            )

    def hash_of_item(self, item_id: str) -> str | None:
        with self.engine.connect() as connection:
            return connection.execute(
                select(store.review_items.c.hash).where(store.review_items.c.id == item_id)
            ).scalar()

    def purge_expired(self, now: float | None = None) -> int:
        """Delete every item past its retention, reviewed or not; returns how many. On SQLite the
        file is vacuumed so the images' bytes leave the disk too."""
        now = time.time() if now is None else now
        table = store.review_items
        with self.engine.begin() as connection:
            gone = connection.execute(delete(table).where(table.c.expires_at <= now)).rowcount
        if gone and self.engine.dialect.name == "sqlite":
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
                connection.execute(text("VACUUM"))
                connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        return int(gone)

    def counts(self) -> dict[str, Any]:
        """Pending items, and decided ones by decision and by reason."""
        table = store.review_items
        with self.engine.connect() as connection:
            pending = connection.execute(select(func.count()).where(table.c.state == "pending")).scalar_one()
            rows = connection.execute(
                select(table.c.decision, table.c.reason, func.count())
                .where(table.c.state == "decided")
                .group_by(table.c.decision, table.c.reason)
            ).all()
        decided: dict[str, int] = {name: 0 for name in DECISIONS}
        audited: dict[str, int] = {name: 0 for name in DECISIONS}
        for decision, reason, count in rows:
            decided[decision] += int(count)
            if reason == "audit":
                audited[decision] += int(count)
        return {"pending": int(pending), "decided": decided, "audit_decided": audited}

    def decided_items(self) -> list[tuple[str, str, float, bytes]]:
        """(item_id, decision, nsfw_score, image) of every decided item still kept, oldest first."""
        table = store.review_items
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(table.c.id, table.c.decision, table.c.nsfw_score, table.c.image)
                .where(table.c.state == "decided")
                .order_by(table.c.decided_at)
            ).all()
        return [(row.id, row.decision, row.nsfw_score, bytes(row.image)) for row in rows]

    def export(self, folder: Path) -> dict[str, int]:
        """Write the decided images as an ImageFolder (``nsfw/`` for block, ``normal/`` for allow)
        that ``train`` and ``eval`` read; returns the count per class folder."""
        written = {"normal": 0, "nsfw": 0}
        for item_id, decision, _score, image in self.decided_items():
            label = "nsfw" if decision == "block" else "normal"
            target = folder / label
            target.mkdir(parents=True, exist_ok=True)
            (target / f"{item_id}{_suffix(image)}").write_bytes(image)
            written[label] += 1
        return written

    def decided_by(self) -> dict[str, int]:
        """Decisions recorded per moderator."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(store.decisions.c.moderator, func.count()).group_by(store.decisions.c.moderator)
            ).all()
        return {row[0]: int(row[1]) for row in rows}


def _suffix(image: bytes) -> str:
    signatures = {b"\xff\xd8": ".jpg", b"\x89PNG": ".png", b"GIF8": ".gif", b"RIFF": ".webp", b"BM": ".bmp"}
    for head, suffix in signatures.items():
        if image.startswith(head):
            return suffix
    return ".img"
