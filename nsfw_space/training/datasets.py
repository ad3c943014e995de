"""Image folders as labelled data: one subfolder per label, optionally under ``train/`` and ``test/``."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from nsfw_space.bulk.scan import IMAGE_SUFFIXES
from nsfw_space.errors import ConfigError


@dataclass(frozen=True)
class LabelledFiles:
    paths: list[Path]
    labels: list[str]  # one per path

    def __len__(self) -> int:
        return len(self.paths)


def label_folders(root: Path) -> dict[str, list[Path]]:
    """{label: image files} for each subfolder of ``root`` holding images (recursively)."""
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder.")
    found = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            found[folder.name] = files
    return found


def _flatten(groups: dict[str, list[Path]]) -> LabelledFiles:
    paths, labels = [], []
    for label, files in groups.items():
        paths.extend(files)
        labels.extend([label] * len(files))
    return LabelledFiles(paths, labels)


def load_splits(
    root: str | Path, eval_split: float = 0.2, seed: int = 42
) -> tuple[LabelledFiles, LabelledFiles]:
    """(train, test): from ``train/`` and ``test/`` when present, else a stratified random split."""
    root = Path(root)
    if (root / "train").is_dir() and (root / "test").is_dir():
        train, test = label_folders(root / "train"), label_folders(root / "test")
        if set(train) != set(test):
            raise ConfigError(
                f"train/ has labels {sorted(train)} but test/ has {sorted(test)}; give both the same subfolders."
            )
    else:
        groups = label_folders(root)
        if not 0.0 < eval_split < 1.0:
            raise ConfigError("--eval-split must be between 0 and 1.")
        rng = random.Random(seed)
        train, test = {}, {}
        for label, files in groups.items():
            shuffled = files[:]
            rng.shuffle(shuffled)
            cut = max(1, round(len(shuffled) * eval_split))
            if len(shuffled) - cut < 1:
                raise ConfigError(f"The label {label!r} has too few images ({len(files)}) to split.")
            test[label], train[label] = sorted(shuffled[:cut]), sorted(shuffled[cut:])
    if len(train) < 2:
        raise ConfigError(
            f"{root} needs at least two label subfolders with images (e.g. normal/ and nsfw/); found {sorted(train)}."
        )
    return _flatten(train), _flatten(test)


def load_eval_set(root: str | Path) -> LabelledFiles:
    """The labelled files to evaluate on: ``test/`` when present, else the label subfolders."""
    root = Path(root)
    groups = label_folders(root / "test" if (root / "test").is_dir() else root)
    if not groups:
        raise ConfigError(f"{root} has no label subfolders with images (e.g. normal/ and nsfw/).")
    return _flatten(groups)
