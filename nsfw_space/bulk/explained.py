"""Explanations written to a folder: ``<name>.heat.png`` (the heat over a blurred preview),
``<name>.redacted.<ext>`` (the hot regions blurred, every other pixel as it was) and one JSON line
per input in ``explanations.jsonl``. Used by ``explain`` and by ``scan --explain-dir``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nsfw_space.config import DEFAULT_HEAT_LEVEL
from nsfw_space.errors import ConfigError
from nsfw_space.media.heat import check_level

if TYPE_CHECKING:  # torch is imported when a model explains, not when the folder is checked
    from nsfw_space.model.explain import Explanation

WRITABLE_SUFFIXES = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}
JSONL_NAME = "explanations.jsonl"


class ExplanationFiles:
    """Writes explanations into ``folder`` (made if missing); names come from the inputs' names,
    reduced to safe characters, never overwriting a file already there."""

    def __init__(
        self,
        folder: str | Path,
        *,
        level: float = DEFAULT_HEAT_LEVEL,
        strength: float | None = None,
        threshold: float = 0.5,
        review_threshold: float | None = None,
    ) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"{str(folder)!r} is a file, not a folder for explanations.")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"The folder {str(folder)!r} cannot be made: {err.strerror}.") from None
        self.level = check_level(level)
        self.strength = strength
        self.threshold = threshold
        self.review = review_threshold
        self._taken: set[str] = set()

    def write(self, name: str, explanation: Explanation) -> dict[str, Any]:
        """Write one input's files; returns its JSON line (also appended to the JSONL file)."""
        stem = self._free_stem(name)
        suffix = Path(name).suffix.lower()
        suffix = suffix if suffix in WRITABLE_SUFFIXES and not explanation.frame else ".png"
        heat_path = self.folder / f"{stem}.heat.png"
        redacted_path = self.folder / f"{stem}.redacted{suffix}"
        explanation.overlay().save(heat_path)
        redacted = explanation.redact(level=self.level, strength=self.strength)
        if WRITABLE_SUFFIXES[suffix] == "JPEG":
            redacted.convert("RGB").save(redacted_path, "JPEG", quality=95)
        else:
            redacted.save(redacted_path, WRITABLE_SUFFIXES[suffix])
        line = {
            "file": name,
            "heat": str(heat_path),
            "redacted": str(redacted_path),
            **explanation.to_dict(self.threshold, self.review, self.level),
        }
        with (self.folder / JSONL_NAME).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")
        return line

    def _free_stem(self, name: str) -> str:
        base = safe_stem(name)
        stem, counter = base, 1
        while stem in self._taken or any(self.folder.glob(f"{glob_escape(stem)}.heat.png")):
            counter += 1
            stem = f"{base}-{counter}"
        self._taken.add(stem)
        return stem


def safe_stem(name: str) -> str:
    """A file name's stem made safe to write anywhere: no folders, no leading dot, only letters,
    digits, ``.``, ``_`` and ``-``, at most 100 characters."""
    stem = Path(name.replace("\\", "/").rstrip("/")).stem or "image"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).lstrip(".") or "image"
    return stem[:100]


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
