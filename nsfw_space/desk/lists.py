"""Known-image lists: ``block`` and ``allow`` lists of PDQ hashes, matched before the model.

An image matches an entry when any of its 8 rotations and flips lies within Hamming distance 31 of
the entry's hash (ThreatExchange's PDQ threshold); hashes of quality below 50 are never added nor
matched. The lists live in the database; each process keeps a vectorised copy, reloaded when the
database's change counter moves (checked at most once a second).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from nsfw_space.desk import store
from nsfw_space.errors import DeskError
from nsfw_space.media.hashing import PdqHash, hex_to_columns, nearest_distances, normalized_hex

LISTS = ("block", "allow")
MATCH_DISTANCE = 31
RELOAD_EVERY_S = 1.0


@dataclass(frozen=True)
class Match:
    """A known image: the list it is on, how far the nearest entry's hash is, and the entry's note."""

    list: str
    distance: int
    note: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """What an answer carries (not the entry's hash: a caller learns no more of a list than
        that their own image is on it)."""
        return {"list": self.list, "distance": self.distance, "note": self.note}


def with_match(result: dict[str, Any], match: dict[str, Any] | None) -> dict[str, Any]:
    """An answer (or scan row) with the desk's ``match`` added: a known image's list is its decision."""
    result["match"] = match
    if match is not None:
        result["decision"] = match["list"]
    return result


def checked_list(name: str) -> str:
    if name not in LISTS:
        raise DeskError(f"The list must be block or allow, not {name!r}.")
    return name


class KnownImages:
    """The block and allow lists of one desk database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._version = -1
        self._checked_at = 0.0
        self._index: dict[str, tuple[np.ndarray, list[str], list[str]]] = {}

    # -- changes ------------------------------------------------------------------------------
    def add(self, name: str, hash_hex: str, note: str = "", by: str = "") -> bool:
        """Put a hash on a list; False when it was there already."""
        values = {
            "list": checked_list(name),
            "hash": normalized_hex(hash_hex),
            "note": note[:500],
            "added_by": by[:200],
            "added_at": time.time(),
        }
        try:
            with self.engine.begin() as connection:
                connection.execute(store.list_entries.insert().values(**values))
                self._bump(connection)
        except IntegrityError:
            return False
        return True

    def add_image(self, name: str, image_hash: PdqHash, note: str = "", by: str = "") -> bool:
        """Put an image's hash on a list. Raises DeskError for a hash of too low quality."""
        if not image_hash.usable:
            raise DeskError(
                f"This image's hash has quality {image_hash.quality} (below 50: a flat or tiny picture); "
                "it would match unrelated images, so it is not added."
            )
        return self.add(name, image_hash.hex, note, by)

    def remove(self, name: str, hash_hex: str) -> bool:
        """Take a hash off a list; False when it was not there."""
        with self.engine.begin() as connection:
            gone = connection.execute(
                delete(store.list_entries).where(
                    store.list_entries.c.list == checked_list(name),
                    store.list_entries.c.hash == normalized_hex(hash_hex),
                )
            ).rowcount
            if gone:
                self._bump(connection)
        return bool(gone)

    def import_lines(self, name: str, lines: Iterable[str], by: str = "") -> tuple[int, int]:
        """Read the exchange format (one hex hash per line, then optionally whitespace or a comma
        and a note; ``#`` comments and blank lines skipped). Returns (added, already there).
        Raises DeskError naming the first bad line, before anything is added."""
        entries = []
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            head, _, note = text.replace(",", " ", 1).partition(" ")
            try:
                entries.append((normalized_hex(head), note.strip()))
            except DeskError as err:
                raise DeskError(f"line {number}: {err}") from err
        added = 0
        for hash_hex, note in entries:
            added += self.add(name, hash_hex, note, by)
        return added, len(entries) - added

    def export_lines(self, name: str) -> list[str]:
        """The list in the exchange format: ``hash`` or ``hash note``, oldest first."""
        table = store.list_entries
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(table.c.hash, table.c.note)
                .where(table.c.list == checked_list(name))
                .order_by(table.c.id)
            ).all()
        return [f"{row.hash} {row.note}".rstrip() for row in rows]

    def sizes(self) -> dict[str, int]:
        table = store.list_entries
        with self.engine.connect() as connection:
            rows = connection.execute(select(table.c.list, func.count()).group_by(table.c.list)).all()
        counted = {name: 0 for name in LISTS}
        counted.update({row[0]: int(row[1]) for row in rows})
        return counted

    @staticmethod
    def _bump(connection: Any) -> None:
        connection.execute(
            update(store.counters)
            .where(store.counters.c.name == "lists")
            .values(value=store.counters.c.value + 1)
        )

    # -- matching -----------------------------------------------------------------------------
    def match(self, image_hash: PdqHash) -> Match | None:
        """The nearest entry within distance 31 of any of the image's rotations and flips, the
        block list first (a copy on both lists is blocked); None for no match or a low-quality hash."""
        if not image_hash.usable:
            return None
        index = self._current_index()
        for name in LISTS:
            columns, hashes, notes = index[name]
            if not hashes:
                continue
            distances = nearest_distances(columns, list(image_hash.dihedral))
            nearest = int(np.argmin(distances))
            if distances[nearest] <= MATCH_DISTANCE:
                return Match(name, int(distances[nearest]), notes[nearest], hashes[nearest])
        return None

    def match_any(self, hashes: list[PdqHash]) -> Match | None:
        """The nearest match over several frames' hashes: any block match first (one listed frame
        blocks a video), then the nearest allow match."""
        found = [m for m in (self.match(image_hash) for image_hash in hashes) if m is not None]
        for name in LISTS:
            candidates = [m for m in found if m.list == name]
            if candidates:
                return min(candidates, key=lambda m: m.distance)
        return None

    def _current_index(self) -> dict[str, tuple[np.ndarray, list[str], list[str]]]:
        now = time.monotonic()
        with self._lock:
            if now - self._checked_at < RELOAD_EVERY_S and self._index:
                return self._index
            self._checked_at = now
            with self.engine.connect() as connection:
                version = connection.execute(
                    select(store.counters.c.value).where(store.counters.c.name == "lists")
                ).scalar_one()
                if version != self._version or not self._index:
                    self._index = self._load(connection)
                    self._version = version
            return self._index

    @staticmethod
    def _load(connection: Any) -> dict[str, tuple[np.ndarray, list[str], list[str]]]:
        table = store.list_entries
        index = {}
        for name in LISTS:
            rows = connection.execute(
                select(table.c.hash, table.c.note).where(table.c.list == name).order_by(table.c.id)
            ).all()
            hashes = [row.hash for row in rows]
            index[name] = (hex_to_columns(hashes), hashes, [row.note for row in rows])
        return index
